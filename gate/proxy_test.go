package gate

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/peergate/peergate/acl"
	"github.com/pires/go-proxyproto"
)

// proxyHeader returns a PROXY header of version v naming client as the source and dst as the
// destination.
func proxyHeader(t testing.TB, v byte, client, dst string) []byte {
	t.Helper()
	h := proxyproto.HeaderProxyFromAddrs(v, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(client)),
		net.TCPAddrFromAddrPort(netip.MustParseAddrPort(dst)))
	b, err := h.Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// proxyGate listens on 127.0.0.1 behind a gate that trusts 127.0.0.5 as a proxy, allows the
// clients 10.0.0.1 and 127.0.0.6 and denies the rest. Its handler records what each allowed
// connection sends (until EOF); events records every decision.
type proxyGate struct {
	ln     *Listener
	addr   string
	got    chan handled
	events chan Event
}

type handled struct {
	remote net.Addr
	data   string
	typ    string
}

func newProxyGate(t *testing.T, po *ProxyOptions) *proxyGate {
	t.Helper()
	inner := listen(t, "tcp", "127.0.0.1:0")
	g := &proxyGate{addr: inner.Addr().String(), got: make(chan handled, 16), events: make(chan Event, 512)}
	g.ln = NewListener(inner, mustACL(t, acl.Deny, acl.Deny, "allow 10.0.0.1", "allow 127.0.0.6"), Options{
		Proxy:      po,
		OnDecision: func(ev Event) { ev.Conn = nil; g.events <- ev },
	})
	go func() {
		for {
			c, err := g.ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				b, _ := io.ReadAll(c)
				typ := "other"
				switch c.(type) {
				case *net.TCPConn:
					typ = "tcp"
				case *Conn:
					typ = "gate"
				}
				g.got <- handled{c.RemoteAddr(), string(b), typ}
			}()
		}
	}()
	t.Cleanup(func() { g.ln.Close() })
	return g
}

func (g *proxyGate) event(t *testing.T) Event {
	t.Helper()
	select {
	case ev := <-g.events:
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no decision")
		return Event{}
	}
}

// send connects from src, writes data, half-closes, waits for the gate's decision and returns it,
// with what the handler got when the gate handed the connection on (ok).
func (g *proxyGate) send(t *testing.T, src string, data []byte) (ev Event, h handled, ok bool) {
	t.Helper()
	c := dialFrom(t, src, g.addr)
	defer c.Close()
	c.Write(data)
	c.(*net.TCPConn).CloseWrite()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	io.ReadAll(c) // EOF once the handler or the gate has closed
	if ev = g.event(t); !ev.HandedOn {
		return ev, handled{}, false
	}
	select {
	case h = <-g.got:
		return ev, h, true
	case <-time.After(10 * time.Second):
		t.Fatal("handed on, but the handler got nothing")
		return ev, h, false
	}
}

func TestProxyProtocol(t *testing.T) {
	dst := "127.0.0.1:80"
	for _, tc := range []struct {
		name     string
		src      string // the direct peer
		data     []byte
		required bool
		served   bool
		client   string // the peer the gate judged
		proxied  bool
		errIs    error
		typ      string // of the conn the handler got
		handled  string // what the handler read
	}{
		{"v1 allowed client", "127.0.0.5", append(proxyHeader(t, 1, "10.0.0.1:4000", dst), "hello"...), false, true, "10.0.0.1:4000", true, nil, "gate", "hello"},
		{"v2 allowed client", "127.0.0.5", append(proxyHeader(t, 2, "10.0.0.1:4000", dst), "hello"...), false, true, "10.0.0.1:4000", true, nil, "gate", "hello"},
		{"v2 allowed IPv6-mapped client", "127.0.0.5", append(proxyHeader(t, 2, "[::ffff:10.0.0.1]:4000", "[::1]:80"), "hi"...), false, true, "10.0.0.1:4000", true, nil, "gate", "hi"},
		{"v1 denied client", "127.0.0.5", append(proxyHeader(t, 1, "10.0.0.2:4000", dst), "hello"...), false, false, "10.0.0.2:4000", true, nil, "", ""},
		{"v2 denied client", "127.0.0.5", append(proxyHeader(t, 2, "10.0.0.2:4000", dst), "hello"...), false, false, "10.0.0.2:4000", true, nil, "", ""},
		{"v2 denied IPv6 client", "127.0.0.5", proxyHeader(t, 2, "[2001:db8::1]:4000", "[::1]:80"), false, false, "[2001:db8::1]:4000", true, nil, "", ""},
		{"untrusted forged header is data", "127.0.0.6", append(proxyHeader(t, 1, "10.0.0.1:4000", dst), "x"...), false, true, "127.0.0.6", false, nil, "tcp", string(proxyHeader(t, 1, "10.0.0.1:4000", dst)) + "x"},
		{"untrusted forged v2 header is data", "127.0.0.6", proxyHeader(t, 2, "10.0.0.1:4000", dst), false, true, "127.0.0.6", false, nil, "tcp", string(proxyHeader(t, 2, "10.0.0.1:4000", dst))},
		{"untrusted denied when required", "127.0.0.6", proxyHeader(t, 1, "10.0.0.1:4000", dst), true, false, "127.0.0.6", false, ErrProxyRequired, "", ""},
		{"trusted without header", "127.0.0.5", []byte("GET / HTTP/1.0\r\n\r\n"), false, false, "127.0.0.5", false, ErrProxyHeader, "", ""},
		{"malformed v1", "127.0.0.5", []byte("PROXY TCP4 10.0.0.1 nonsense\r\n"), false, false, "127.0.0.5", false, ErrProxyHeader, "", ""},
		{"v1 too long", "127.0.0.5", []byte("PROXY TCP4 " + strings.Repeat("1", 200) + "\r\n"), false, false, "127.0.0.5", false, ErrProxyHeader, "", ""},
		{"partial v1 line", "127.0.0.5", []byte("PROXY TCP4 10.0.0.1 "), false, false, "127.0.0.5", false, ErrProxyHeader, "", ""},
		{"truncated v2", "127.0.0.5", proxyHeader(t, 2, "10.0.0.1:4000", dst)[:20], false, false, "127.0.0.5", false, ErrProxyHeader, "", ""},
		{"v2 LOCAL judges the proxy", "127.0.0.5", append([]byte("\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00"), "ping"...), false, false, "127.0.0.5", false, nil, "", ""},
		{"v1 UNKNOWN judges the proxy", "127.0.0.5", []byte("PROXY UNKNOWN\r\nping"), false, false, "127.0.0.5", false, nil, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newProxyGate(t, &ProxyOptions{Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.5/32")}, Required: tc.required})
			ev, h, ok := g.send(t, tc.src, tc.data)
			if ok != tc.served {
				t.Fatalf("served %v, want %v (event %+v)", ok, tc.served, ev)
			}
			if !errors.Is(ev.Err, tc.errIs) || (tc.errIs == nil) != (ev.Err == nil) {
				t.Errorf("err %v, want %v", ev.Err, tc.errIs)
			}
			if ev.Err == nil {
				want := tc.client
				if !tc.proxied {
					want = ev.Direct.String() // the direct peer: its port is the dialer's
				}
				if ev.Peer.String() != want || ev.Proxied != tc.proxied {
					t.Errorf("judged %v (proxied %v), want %v (proxied %v)", ev.Peer, ev.Proxied, want, tc.proxied)
				}
				if ev.Direct.AddrPort.Addr() != netip.MustParseAddr(tc.src) {
					t.Errorf("direct peer %v, want %v", ev.Direct, tc.src)
				}
			}
			if ok {
				if h.data != tc.handled || h.typ != tc.typ {
					t.Errorf("handler got %q as %s, want %q as %s", h.data, h.typ, tc.handled, tc.typ)
				}
				if tc.proxied && h.remote.String() != tc.client {
					t.Errorf("handler's RemoteAddr %v, want %v", h.remote, tc.client)
				}
			}
		})
	}
}

// A trusted proxy that sends part of a header and stalls is denied after the timeout, and holds
// up no other connection meanwhile. (A partial v1 line is refused at once: go-proxyproto wants
// the line in one read, as the spec lets a receiver.)
func TestProxyProtocolSlowHeader(t *testing.T) {
	g := newProxyGate(t, &ProxyOptions{Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.5/32")}, Timeout: 500 * time.Millisecond})
	slow := dialFrom(t, "127.0.0.5", g.addr)
	defer slow.Close()
	slow.Write([]byte("\r\n\r\n\x00")) // the start of a v2 signature
	t0 := time.Now()
	// Meanwhile an untrusted, allowed client and a prompt proxied one get through at once.
	if _, h, ok := g.send(t, "127.0.0.6", []byte("quick")); !ok || h.data != "quick" {
		t.Fatalf("quick client behind a slow proxy: %+v, %v", h, ok)
	}
	if _, h, ok := g.send(t, "127.0.0.5", append(proxyHeader(t, 2, "10.0.0.1:1", "127.0.0.1:2"), "prompt"...)); !ok || h.data != "prompt" {
		t.Fatalf("prompt proxied client behind a slow proxy: %+v, %v", h, ok)
	}
	if d := time.Since(t0); d > 400*time.Millisecond {
		t.Errorf("other clients waited %v behind a slow header", d)
	}
	ev := g.event(t)
	if !errors.Is(ev.Err, ErrProxyHeader) || !strings.Contains(ev.Err.Error(), "within") {
		t.Errorf("slow header: err %v", ev.Err)
	}
	slow.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, err := io.ReadAll(slow); len(b) != 0 || err != nil {
		t.Errorf("slow proxy read %q, %v; want EOF", b, err)
	}
}

// Without PROXY options, and for peers that are not trusted proxies, Accept returns the
// *net.TCPConn itself, so io.Copy still splices.
func TestProxyProtocolKeepsTCPConn(t *testing.T) {
	for _, po := range []*ProxyOptions{nil, {Trusted: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}} {
		inner := listen(t, "tcp", "127.0.0.1:0")
		ln := NewListener(inner, mustACL(t, acl.Allow, acl.Deny), Options{Proxy: po})
		ch := server(t, ln)
		c := dialFrom(t, "127.0.0.1", inner.Addr().String())
		got := next(t, ch)
		if _, ok := got.(*net.TCPConn); !ok {
			t.Errorf("proxy %v: Accept returned %T", po, got)
		}
		c.Close()
	}
}

// Close stops a Listener reading PROXY headers: Accept returns net.ErrClosed.
func TestProxyProtocolClose(t *testing.T) {
	inner := listen(t, "tcp", "127.0.0.1:0")
	ln := NewListener(inner, mustACL(t, acl.Allow, acl.Deny), Options{Proxy: &ProxyOptions{}})
	errc := make(chan error, 1)
	go func() { _, err := ln.Accept(); errc <- err }()
	ln.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Accept did not return after Close")
	}
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Accept after Close: %v", err)
	}
}

// Closing the inner listener directly (not through the gate) must still close the connections
// that were judged and are waiting for an Accept that will never come.
func TestProxyProtocolInnerClosed(t *testing.T) {
	inner := listen(t, "tcp", "127.0.0.1:0")
	events := make(chan Event, 16)
	ln := NewListener(inner, mustACL(t, acl.Allow, acl.Deny), Options{
		Proxy:      &ProxyOptions{Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.5/32")}},
		OnDecision: func(ev Event) { events <- ev },
	})
	first := make(chan net.Conn, 1)
	go func() { c, _ := ln.Accept(); first <- c }() // starts the accepting goroutine
	var clients []net.Conn
	for i := range 4 {
		c := dialFrom(t, "127.0.0.5", inner.Addr().String())
		defer c.Close()
		c.Write(proxyHeader(t, 2, fmt.Sprintf("10.0.0.%d:1000", i+1), "127.0.0.1:80"))
		clients = append(clients, c)
		<-events // judged and allowed
	}
	if c := <-first; c != nil {
		c.Close() // the one handed on: its client sees EOF too
	}
	inner.Close() // three allowed connections are waiting to be handed on
	closed := 0
	for _, c := range clients {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == io.EOF {
			closed++
		}
	}
	if closed != 4 {
		t.Errorf("%d of the 4 connections were closed, want all (3 were left waiting)", closed)
	}
}

// First bytes from a trusted proxy that cannot start a PROXY header are refused as soon as they
// come, not when the header timeout runs out (go-proxyproto waits for 5 or 12 bytes).
func TestProxyProtocolRefusesNonHeaderAtOnce(t *testing.T) {
	for _, first := range []string{"P", "PX", "PROXZ", "PROXYjunk", "\r\n\r\n\x01", "\r", "\r\nQUIT", "G"} {
		t.Run(fmt.Sprintf("%q", first), func(t *testing.T) {
			// A minute to send the header: the test's 10 s waits fail if the gate waits for it.
			g := newProxyGate(t, &ProxyOptions{Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.5/32")}, Timeout: time.Minute})
			c := dialFrom(t, "127.0.0.5", g.addr)
			defer c.Close()
			c.Write([]byte(first))
			if first == "P" || first == "\r" { // a prefix of a signature: wait for what follows it
				c.Write([]byte("x"))
			}
			ev := g.event(t)
			if !errors.Is(ev.Err, ErrProxyHeader) || ev.HandedOn {
				t.Fatalf("event %+v, want a denial with ErrProxyHeader", ev)
			}
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if b, err := io.ReadAll(c); len(b) != 0 || err != nil {
				t.Errorf("client read %q, %v; want EOF", b, err)
			}
		})
	}
}

// Connections a trusted proxy opens and stalls take at most MaxHeaderReadsPerProxy read slots,
// and all proxies together MaxHeaderReads; past that they are denied at once (ErrProxyBusy).
// Peers that need no header, and other proxies, are judged at once meanwhile: they never wait
// behind stalled header reads (they did, for the header timeout, once MaxPending were stalled).
func TestProxyHeaderReadBounds(t *testing.T) {
	pfx := func(s ...string) (out []netip.Prefix) {
		for _, a := range s {
			out = append(out, netip.MustParsePrefix(a+"/32"))
		}
		return out
	}
	g := newProxyGate(t, &ProxyOptions{Trusted: pfx("127.0.0.5", "127.0.0.7", "127.0.0.8"), Timeout: time.Minute})
	var stalled []net.Conn
	t.Cleanup(func() {
		for _, c := range stalled {
			c.Close()
		}
	})
	stall := func(src string, n int) {
		for range n {
			stalled = append(stalled, dialFrom(t, src, g.addr))
		}
	}
	// busy waits for n denials with ErrProxyBusy from src, and no other decision.
	busy := func(src string, n int) {
		t.Helper()
		for i := range n {
			ev := g.event(t)
			if !errors.Is(ev.Err, ErrProxyBusy) || !errors.Is(ev.Err, ErrProxyHeader) || ev.Direct.AddrPort.Addr() != netip.MustParseAddr(src) {
				t.Fatalf("decision %d: %+v, want a denial of %s with ErrProxyBusy", i, ev, src)
			}
		}
	}
	served := func(src string, data []byte, want string) {
		t.Helper()
		if ev, h, ok := g.send(t, src, data); !ok || h.data != want {
			t.Fatalf("from %s: served %v (%+v), got %q", src, ok, ev, h.data)
		}
	}
	hdr := append(proxyHeader(t, 2, "10.0.0.1:4000", "127.0.0.1:80"), "proxied"...)

	stall("127.0.0.5", MaxPending+8) // more than the gate holds
	busy("127.0.0.5", MaxPending+8-MaxHeaderReadsPerProxy)
	served("127.0.0.6", []byte("direct"), "direct")
	served("127.0.0.7", hdr, "proxied") // another proxy has its own slots

	stall("127.0.0.7", MaxHeaderReads-MaxHeaderReadsPerProxy) // now MaxHeaderReads in all
	stall("127.0.0.8", 1)
	busy("127.0.0.8", 1)
	refused := stalled[len(stalled)-1]
	refused.SetReadDeadline(time.Now().Add(10 * time.Second))
	if b, err := io.ReadAll(refused); len(b) != 0 || err != nil {
		t.Errorf("refused connection read %q, %v; want EOF", b, err)
	}
	served("127.0.0.6", []byte("direct again"), "direct again")
	if s := g.ln.Stats(); s.Errors != MaxPending+8-MaxHeaderReadsPerProxy+1 || s.Allowed != 3 {
		t.Errorf("stats %+v", s)
	}
}
