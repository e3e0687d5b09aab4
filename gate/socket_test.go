//go:build linux

package gate

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"testing"

	"github.com/peergate/peergate/acl"
	"github.com/peergate/peergate/gate/limit"
	"golang.org/x/sys/unix"
)

// acceptFD calls AcceptFD until it hands on a socket or finds none queued, and returns the
// socket (FD -1 when none) and how many it denied on the way.
func acceptFD(t *testing.T, g *Listener) (Socket, int) {
	t.Helper()
	denied := 0
	for range 100 {
		s, ok, err := g.AcceptFD()
		switch {
		case errors.Is(err, ErrNotQueued):
			return Socket{FD: -1}, denied
		case err != nil:
			t.Fatal(err)
		case ok:
			return s, denied
		}
		denied++
	}
	t.Fatal("AcceptFD denied 100 in a row")
	return Socket{}, 0
}

// TestAcceptFD: AcceptFD judges queued connections as Accept does, without making a net.Conn:
// a denied peer (127.0.0.2, and the dual-stack ::ffff:127.0.0.2) is closed and counted, an
// allowed one handed on as a non-blocking socket with its peer and the policy's Tag; a
// per-source slot is held until Release; nothing queued is ErrNotQueued; a policy that reads
// PROXY headers is ErrNeedsConn, with nothing accepted.
func TestAcceptFD(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			addr, src1, src2 := "127.0.0.1:0", "127.0.0.1", "127.0.0.2"
			if network == "tcp6" { // dual-stack: IPv4 peers arrive as ::ffff:127.0.0.x
				addr, src1, src2 = "[::]:0", "::ffff:127.0.0.1", "::ffff:127.0.0.2"
			}
			inner, err := net.Listen("tcp", addr)
			if err != nil {
				t.Skip(err)
			}
			a := mustACL(t, acl.Deny, acl.Deny, "allow 127.0.0.1/32")
			var events []Event
			g := NewListener(inner, a, Options{Tag: "t", Limiter: limit.New(limit.Config{PerSource: 1}),
				OnDecision: func(ev Event) { events = append(events, ev) }})
			defer g.Close()
			port := inner.Addr().(*net.TCPAddr).Port
			target := net.JoinHostPort("127.0.0.1", itoa(port))
			if _, _, err := g.AcceptFD(); !errors.Is(err, ErrNotQueued) {
				t.Fatalf("nothing queued: %v, want ErrNotQueued", err)
			}
			denied := dialFrom(t, src2, target)
			defer denied.Close()
			allowed := dialFrom(t, src1, target)
			defer allowed.Close()
			s, n := acceptFD(t, g)
			if n != 1 || s.FD < 0 {
				t.Fatalf("denied %d, handed on fd %d; want 1 and a socket", n, s.FD)
			}
			if _, err := readAll(denied); err != nil && !errors.Is(err, unix.ECONNRESET) {
				t.Fatalf("denied peer read %v; want its connection closed", err)
			}
			if s.Tag != "t" || s.Peer.AddrPort.Addr() != netip.MustParseAddr("127.0.0.1") {
				t.Fatalf("handed on %+v; want tag t, peer 127.0.0.1", s)
			}
			if fl, err := unix.FcntlInt(uintptr(s.FD), unix.F_GETFL, 0); err != nil || fl&unix.O_NONBLOCK == 0 {
				t.Fatalf("handed-on socket flags %#x, %v; want non-blocking", fl, err)
			}
			unix.Write(s.FD, []byte("hi"))
			if got := bufReadN(t, allowed, 2); got != "hi" {
				t.Fatalf("client read %q through the socket", got)
			}
			// The per-source slot is held: a second connection from 127.0.0.1 is refused until
			// Release.
			again := dialFrom(t, src1, target)
			defer again.Close()
			if s2, n := acceptFD(t, g); n != 1 || s2.FD >= 0 {
				t.Fatalf("over the per-source cap: denied %d, fd %d; want it refused", n, s2.FD)
			}
			unix.Close(s.FD)
			s.Release()
			third := dialFrom(t, src1, target)
			defer third.Close()
			s3, _ := acceptFD(t, g)
			if s3.FD < 0 {
				t.Fatal("refused after Release")
			}
			unix.Close(s3.FD)
			s3.Release()
			if st := g.Stats(); st.Allowed != 2 || st.Denied != 1 || st.Limited != 1 {
				t.Fatalf("stats %+v; want 2 allowed, 1 denied, 1 limited", st)
			}
			if len(events) != 4 || events[0].HandedOn || events[0].Conn.RemoteAddr().(*net.TCPAddr).IP.String() != "127.0.0.2" {
				t.Fatalf("events %+v; want 4, the first the denial of 127.0.0.2 with a stand-in Conn", events)
			}
			// A policy that reads PROXY headers takes net.Conns: nothing is accepted.
			g.SetOptions(Options{Proxy: &ProxyOptions{Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}})
			queued := dialFrom(t, src1, target)
			defer queued.Close()
			if _, _, err := g.AcceptFD(); !errors.Is(err, ErrNeedsConn) {
				t.Fatalf("with Proxy set: %v, want ErrNeedsConn", err)
			}
			g.Close()
			if _, _, err := g.AcceptFD(); err == nil || errors.Is(err, ErrNotQueued) {
				t.Fatalf("after Close: %v, want an error", err)
			}
		})
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func bufReadN(t *testing.T, c net.Conn, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// An event loop that does its own system calls takes bare sockets: AcceptFD judges a queued
// connection as Accept would and hands on an allowed one as a non-blocking descriptor. 127.0.0.2
// is turned away; 127.0.0.1 is handed on.
func ExampleListener_AcceptFD() {
	rules := acl.MustNew(acl.Spec{
		Default: acl.Deny,
		Rules:   []acl.Rule{{Prefix: netip.MustParsePrefix("127.0.0.1/32"), Action: acl.Allow}},
	})
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	ln := NewListener(inner, rules, Options{})
	defer ln.Close()
	for _, src := range []string{"127.0.0.2", "127.0.0.1"} {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := d.Dial("tcp", inner.Addr().String())
		if err != nil {
			panic(err)
		}
		defer c.Close()
	}
	for {
		s, ok, err := ln.AcceptFD() // an event loop calls it when epoll says the listener is ready
		switch {
		case errors.Is(err, ErrNotQueued):
			return
		case err != nil:
			panic(err)
		case !ok:
			fmt.Println("denied and closed")
			continue
		}
		fmt.Println("handed on", s.Peer.AddrPort.Addr())
		unix.Close(s.FD)
		s.Release()
	}
	// Output:
	// denied and closed
	// handed on 127.0.0.1
}
