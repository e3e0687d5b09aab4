package serve

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/peergate/peergate/internal/evloop"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func needLoops(t *testing.T) {
	t.Helper()
	if !evloop.Available || !useLoops {
		t.Skip("no event loops on this platform")
	}
}

// onLoops reports whether the port of service name is watched by the event loops.
func onLoops(s *Server, name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.ports {
		if p.svc.Load().Name == name {
			return len(p.watches) > 0 && !p.goMode
		}
	}
	return false
}

// TestLoopPath: a plain TCP proxy service is served by the event loops: an allowed peer is
// proxied (bytes both ways, half-close, counted), a denied one is closed before the upstream sees
// it, and the active gauge returns to zero.
func TestLoopPath(t *testing.T) {
	needLoops(t)
	upConns := make(chan struct{}, 16)
	up := upstreamFunc(t, func(c net.Conn) {
		upConns <- struct{}{}
		io.Copy(c, c) // echo until EOF, then close
	})
	s, addr := start(t, up, "")
	waitFor(t, "the service on the event loops", func() bool { return onLoops(s, "p") })
	c, err := dialFrom("127.0.0.1", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "hello")
	c.(*net.TCPConn).CloseWrite() // the upstream's echo ends on this EOF and closes
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "hello" {
		t.Fatalf("read %q, %v; want the echo, then EOF", got, err)
	}
	svc := s.m.service("p")
	waitFor(t, "the connection's end counted", func() bool {
		return testutil.ToFloat64(svc.bytesIn) == 5 && testutil.ToFloat64(svc.bytesOut) == 5 && testutil.ToFloat64(svc.active) == 0
	})
	<-upConns
	d, err := dialFrom("127.0.0.2", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if n, err := d.Read(make([]byte, 1)); n != 0 || err == nil || os.IsTimeout(err) {
		t.Fatalf("denied peer read %d, %v; want its connection closed", n, err)
	}
	select {
	case <-upConns:
		t.Fatal("the upstream saw a connection of the denied peer")
	default:
	}
}

// TestLoopMaxConns: with max_conns 1, a second client waits in the backlog while the first is
// proxied by a loop (the loop pauses its watch and a goroutine waits for the slot), and is let in
// once the first leaves.
func TestLoopMaxConns(t *testing.T) {
	needLoops(t)
	s, addr := start(t, upstream(t, "echo"), "    max_conns: 1\n")
	waitFor(t, "the service on the event loops", func() bool { return onLoops(s, "p") })
	first, err := dialFrom("127.0.0.1", addr)
	if err != nil {
		t.Fatal(err)
	}
	if !echo(first, "a") {
		t.Fatal("the first client got no echo")
	}
	second, err := dialFrom("127.0.0.1", addr) // the kernel completes the handshake: it queues
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	io.WriteString(second, "b")
	second.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := second.Read(make([]byte, 1)); n != 0 || !os.IsTimeout(err) {
		t.Fatalf("second client read %d, %v while the first held the one slot; want it to wait", n, err)
	}
	first.Close()
	second.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := second.Read(make([]byte, 1)); n != 1 {
		t.Fatalf("second client read %d, %v after the first left; want its echo", n, err)
	}
}

func echo(c net.Conn, s string) bool {
	io.WriteString(c, s)
	got := make([]byte, len(s))
	_, err := io.ReadFull(c, got)
	return err == nil && string(got) == s
}

// TestLoopHandsOn: what a loop does not proxy itself is handed to a goroutine: a PROXY header for
// the upstream (send_proxy) after a reload of a loop-served port; and a listener whose reloaded
// policy reads PROXY headers (trusted_proxies) leaves the loops for the goroutine path.
func TestLoopHandsOn(t *testing.T) {
	needLoops(t)
	lines := make(chan string, 4)
	up := upstreamFunc(t, func(c net.Conn) {
		line, _ := bufio.NewReader(c).ReadString('\n')
		lines <- line
		io.WriteString(c, "ok")
	})
	cfg := func(extra string) string {
		return fmt.Sprintf("acls:\n  a: {default: deny, allow: [127.0.0.1, 192.0.2.0/24]}\nservices:\n  - name: s\n    listen: [\"127.0.0.1:0\"]\n"+
			"    acl: a\n    upstream: %s\n%s", up, extra)
	}
	s := startLogged(t, cfg(""), slog.NewTextHandler(io.Discard, nil))
	addr := s.Addrs()["s"][0].String()
	ask := func(send string) string {
		t.Helper()
		c, err := dialFrom("127.0.0.1", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, send)
		got, _ := io.ReadAll(c)
		if string(got) != "ok" {
			t.Fatalf("client read %q; want the upstream's ok", got)
		}
		select {
		case l := <-lines:
			return l
		case <-time.After(10 * time.Second):
			t.Fatal("the upstream read no line")
		}
		return ""
	}
	waitFor(t, "the service on the event loops", func() bool { return onLoops(s, "s") })
	if l := ask("plain\n"); l != "plain\n" || !onLoops(s, "s") {
		t.Fatalf("upstream read %q (on loops: %v); want the client's line from a loop", l, onLoops(s, "s"))
	}
	writeConfig(t, filepath.Dir(s.path), cfg("    send_proxy: v1\n"))
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if l := ask("plain\n"); !strings.HasPrefix(l, "PROXY TCP4 127.0.0.1 ") || !onLoops(s, "s") {
		t.Fatalf("upstream read %q (on loops: %v); want the PROXY header send_proxy adds", l, onLoops(s, "s"))
	}
	writeConfig(t, filepath.Dir(s.path), cfg("    trusted_proxies: [127.0.0.1]\n"))
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	// The header names 192.0.2.7, whom the ACL allows; the upstream gets what follows it.
	if l := ask("PROXY TCP4 192.0.2.7 127.0.0.1 1234 80\r\nbehind\n"); l != "behind\n" {
		t.Fatalf("upstream read %q; want the line after the PROXY header", l)
	}
	waitFor(t, "the port on the goroutine path", func() bool { return !onLoops(s, "s") })
}

// TestLoopDrain: Serve runs until Shutdown (no accept goroutine holds it when the loops serve
// every port); at shutdown a loop's open connection may finish until the drain deadline, and is
// reset then.
func TestLoopDrain(t *testing.T) {
	needLoops(t)
	text := fmt.Sprintf("acls:\n  lo: {default: deny, allow: [127.0.0.1]}\nservices:\n  - {name: p, listen: [\"127.0.0.1:0\"], acl: lo, upstream: %s}\n", upstream(t, "echo"))
	s, done := serving(t, text, slog.NewTextHandler(io.Discard, nil))
	c, err := dialFrom("127.0.0.1", s.Addrs()["p"][0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !echo(c, "x") {
		t.Fatal("no echo")
	}
	select {
	case <-done:
		t.Fatal("Serve returned before Shutdown")
	default:
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(ctx) }()
	if !echo(c, "y") { // draining: the open connection still works
		t.Fatal("no echo while draining")
	}
	select {
	case err := <-shut:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Shutdown: %v; want the drain deadline", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return after the drain deadline")
	}
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("client read %v after the drain deadline; want a reset", err)
	}
	<-done
}
