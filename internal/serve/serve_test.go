package serve

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"
)

func scale(n int) int {
	if os.Getenv("PEERGATE_LONG") != "" {
		return n
	}
	return n / 10
}

// upstreamFunc runs an in-process upstream that hands each connection to serve, in a goroutine
// of its own, and closes it after; it returns the upstream's address.
func upstreamFunc(t *testing.T, serve func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				serve(c)
			}()
		}
	}()
	return ln.Addr().String()
}

// upstream runs an in-process upstream: "echo" echoes, "flood" writes without end.
func upstream(t *testing.T, kind string) string {
	t.Helper()
	return upstreamFunc(t, func(c net.Conn) {
		if kind == "flood" {
			buf := make([]byte, 64<<10)
			for {
				if _, err := c.Write(buf); err != nil {
					return
				}
			}
		}
		// Not io.Copy(c, c): that splices, and the pipes Go pools for splicing come and
		// go with the garbage collector, which would make the fd counts below wander.
		io.CopyBuffer(struct{ io.Writer }{c}, struct{ io.Reader }{c}, make([]byte, 32<<10))
	})
}

// start runs a Server for a one-service proxy config and returns its address.
func start(t *testing.T, up, extra string) (*Server, string) {
	t.Helper()
	text := fmt.Sprintf("acls:\n  lo: {default: deny, allow: [127.0.0.1]}\nservices:\n  - name: p\n    listen: [\"127.0.0.1:0\"]\n    acl: lo\n    upstream: %s\n%s", up, extra)
	s := startLogged(t, text, slog.NewTextHandler(io.Discard, nil))
	return s, s.Addrs()["p"][0].String()
}

func fds(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(ents)
}

// settle waits, up to a bound, until the goroutine and fd counts are back to (at most) the
// baseline: connections close asynchronously, so the counts drop shortly after the clients leave.
func settle(t *testing.T, goroutines, files int) {
	t.Helper()
	var g, f int
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if g, f = runtime.NumGoroutine(), fds(t); g <= goroutines && f <= files {
			t.Logf("settled: %d goroutines (baseline %d), %d fds (baseline %d)", g, goroutines, f, files)
			return
		}
	}
	t.Errorf("leak: %d goroutines (baseline %d), %d fds (baseline %d)", g, goroutines, f, files)
	buf := make([]byte, 1<<16)
	t.Logf("%s", buf[:runtime.Stack(buf, true)])
}

func dialFrom(src, addr string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err == nil {
		c.SetDeadline(time.Now().Add(10 * time.Second))
	}
	return c, err
}

// TestNoLeaks denies 10k connections and proxies 1k (100k and 10k with PEERGATE_LONG=1), then
// checks that the process's goroutines and fds return to their baseline.
func TestNoLeaks(t *testing.T) {
	_, addr := start(t, upstream(t, "echo"), "")
	warm, err := dialFrom("127.0.0.1", addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(warm, "w")
	io.ReadFull(warm, make([]byte, 1))
	warm.Close()
	settle(t, runtime.NumGoroutine()+100, fds(t)+100) // let the warm-up finish
	baseG, baseF := runtime.NumGoroutine(), fds(t)

	denials, proxied := scale(100_000), scale(10_000)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	work := func(n int, src string, proxy bool) {
		defer wg.Done()
		buf := make([]byte, 5)
		for range n {
			c, err := dialFrom(src, addr)
			if err != nil {
				errs <- err
				return
			}
			if proxy {
				if _, err = io.WriteString(c, "hello"); err == nil {
					_, err = io.ReadFull(c, buf)
				}
				if err != nil || string(buf) != "hello" {
					errs <- fmt.Errorf("proxied round trip: %q, %v", buf, err)
					c.Close()
					return
				}
			} else if n, _ := c.Read(buf); n != 0 {
				errs <- fmt.Errorf("denied client got %d bytes", n)
			}
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}
	}
	wg.Add(4)
	go work(denials/2, "127.0.0.2", false)
	go work(denials/2, "127.0.0.3", false)
	go work(proxied/2, "127.0.0.1", true)
	go work(proxied/2, "127.0.0.1", true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("%d denials, %d proxied connections", denials, proxied)
	settle(t, baseG, baseF)
}

// stable waits, up to a bound, until the goroutine and fd counts hold still, and returns them.
func stable(t *testing.T) (goroutines, files int) {
	t.Helper()
	g, f, same := -1, -1, 0
	for deadline := time.Now().Add(5 * time.Second); same < 5 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if ng, nf := runtime.NumGoroutine(), fds(t); ng == g && nf == f {
			same++
		} else {
			g, f, same = ng, nf, 0
		}
	}
	return g, f
}

// TestHostilePeers: a client that connects and sends nothing, one that resets mid-stream, and one
// that never reads while the upstream floods it are all cleaned up by the idle timeout or the
// reset, and leave no goroutine or fd behind. (The baseline is taken after a warm-up through both
// servers. Nothing here splices: peergate copies toward loopback peers, and so does the upstream.)
func TestHostilePeers(t *testing.T) {
	_, echoAddr := start(t, upstream(t, "echo"), "    idle_timeout: 200ms\n")
	_, floodAddr := start(t, upstream(t, "flood"), "    idle_timeout: 200ms\n")
	for _, addr := range []string{echoAddr, floodAddr} {
		c, err := dialFrom("127.0.0.1", addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprint(c, "warm")
		io.ReadFull(c, make([]byte, 4))
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	}
	baseG, baseF := stable(t)

	t.Run("silent", func(t *testing.T) {
		c, err := dialFrom("127.0.0.1", echoAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if b, err := io.ReadAll(c); len(b) != 0 || err != nil {
			t.Errorf("silent client: read %q, %v; want EOF from the idle timeout", b, err)
		}
	})
	t.Run("reset mid-stream", func(t *testing.T) {
		c, err := dialFrom("127.0.0.1", floodAddr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, make([]byte, 1<<20)); err != nil {
			t.Fatal(err)
		}
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	})
	t.Run("never reads", func(t *testing.T) {
		c, err := dialFrom("127.0.0.1", floodAddr)
		if err != nil {
			t.Fatal(err)
		}
		io.ReadFull(c, make([]byte, 1)) // connected and flowing; now stop reading
		// peergate's writes block once the socket buffers fill; the idle timeout must end it,
		// leaving only this client's own fd open, and the test goroutine running.
		settle(t, baseG+1, baseF+1)
		c.Close()
	})
	settle(t, baseG, baseF)
}

func TestLocalAddr(t *testing.T) {
	for _, tc := range []struct {
		addr net.Addr
		want bool
	}{
		{&net.TCPAddr{IP: net.ParseIP("127.0.0.1")}, true},
		{&net.TCPAddr{IP: net.ParseIP("127.9.9.9")}, true},
		{&net.TCPAddr{IP: net.ParseIP("::1")}, true},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:127.0.0.2")}, true},
		{&net.UnixAddr{Name: "/run/app.sock", Net: "unix"}, true},
		{&net.TCPAddr{IP: net.ParseIP("192.0.2.1")}, false}, // spliced
		{&net.TCPAddr{IP: net.ParseIP("2001:db8::1")}, false},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.1")}, false},
	} {
		if got := localAddr(tc.addr); got != tc.want {
			t.Errorf("localAddr(%v) = %v, want %v", tc.addr, got, tc.want)
		}
	}
}
