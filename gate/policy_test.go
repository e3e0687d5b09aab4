package gate

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/peergate/peergate/acl"
)

// hookListener runs the armed hook, once, after its inner Accept returned a connection and before
// the gate judges it.
type hookListener struct {
	net.Listener
	armed atomic.Pointer[func()]
}

func (h *hookListener) Accept() (net.Conn, error) {
	c, err := h.Listener.Accept()
	if f := h.armed.Swap(nil); err == nil && f != nil {
		(*f)()
	}
	return c, err
}

// TestAcceptTag: AcceptTag returns the Tag of the policy that judged the connection, also when the
// policy changed between the inner accept and the judging, and through the PROXY path.
func TestAcceptTag(t *testing.T) {
	strict := mustACL(t, acl.Deny, acl.Deny, "allow 127.0.0.1/32")
	wide := mustACL(t, acl.Deny, acl.Deny, "allow 127.0.0.0/8", "allow 192.0.2.0/24")
	proxy := &ProxyOptions{Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}
	for _, tc := range []struct {
		name   string
		src    string
		header string
		proxy  *ProxyOptions
	}{
		{"plain", "127.0.0.2", "", nil},
		{"proxied", "127.0.0.1", "PROXY TCP4 192.0.2.7 127.0.0.1 1234 80\r\n", proxy},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inner := &hookListener{Listener: listen(t, "tcp", "127.0.0.1:0")}
			g := NewListener(inner, strict, Options{Proxy: tc.proxy, Tag: "strict"})
			defer g.Close()
			hook := func() { g.SetPolicy(wide, Options{Proxy: tc.proxy, Tag: "wide"}) }
			inner.armed.Store(&hook)
			type accepted struct {
				c   net.Conn
				tag any
				err error
			}
			ch := make(chan accepted, 1)
			go func() {
				c, tag, err := g.AcceptTag()
				ch <- accepted{c, tag, err}
			}()
			c := dialFrom(t, tc.src, inner.Addr().String())
			defer c.Close()
			io.WriteString(c, tc.header)
			select {
			case a := <-ch:
				if a.err != nil {
					t.Fatal(a.err)
				}
				a.c.Close()
				if a.tag != "wide" {
					t.Errorf("tag %v, want wide: the policy that judged the connection", a.tag)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("nothing accepted: the connection was judged by the old policy")
			}
		})
	}
}

// TestPolicyConsistent swaps two policies while clients connect: every connection handed on must
// carry the Tag of the policy whose ACL allowed it (127.0.0.2 is allowed only by "wide").
func TestPolicyConsistent(t *testing.T) {
	inner := listen(t, "tcp", "127.0.0.1:0")
	strict := mustACL(t, acl.Deny, acl.Deny, "allow 127.0.0.1/32")
	wide := mustACL(t, acl.Deny, acl.Deny, "allow 127.0.0.0/8")
	g := NewListener(inner, strict, Options{Tag: "strict"})
	var wrong, handed atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, tag, err := g.AcceptTag()
			if err != nil {
				return
			}
			handed.Add(1)
			if tag != "wide" {
				wrong.Add(1)
			}
			c.Close()
		}
	}()
	const clients, each = 4, 50
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if i%2 == 0 {
				g.SetPolicy(wide, Options{Tag: "wide"})
			} else {
				g.SetPolicy(strict, Options{Tag: "strict"})
			}
		}
	}()
	var cw sync.WaitGroup
	for range clients {
		cw.Add(1)
		go func() {
			defer cw.Done()
			for range each {
				c := dialFrom(t, "127.0.0.2", inner.Addr().String())
				readAll(c)
				c.Close()
			}
		}()
	}
	cw.Wait()
	close(stop)
	wg.Wait()
	g.Close()
	<-done
	if n := wrong.Load(); n != 0 {
		t.Errorf("%d of %d connections from 127.0.0.2 handed on with the strict policy's tag", n, handed.Load())
	}
	if s := g.Stats(); s.Allowed+s.Denied != clients*each {
		t.Errorf("stats %+v, want %d judged", s, clients*each)
	}
}

// TestSetACLAndOptionsConcurrently: SetACL and SetOptions each replace their half of the policy
// and keep the other, even when they race.
func TestSetACLAndOptionsConcurrently(t *testing.T) {
	a, b := mustACL(t, acl.Allow, acl.Deny), mustACL(t, acl.Deny, acl.Deny)
	g := NewListener(listen(t, "tcp", "127.0.0.1:0"), b, Options{})
	defer g.Close()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := range 1001 { // ends with a
			g.SetACL([]*acl.ACL{a, b}[i%2])
		}
	}()
	go func() {
		defer wg.Done()
		for i := range 1001 {
			g.SetOptions(Options{Tag: i})
		}
	}()
	wg.Wait()
	if p := g.policy.Load(); p.acl != a || p.opts.Tag != 1000 {
		t.Errorf("ACL %p, tag %v; want the last of each (%p, 1000)", p.acl, p.opts.Tag, a)
	}
}

// TestProxyDistrustedWhileReading: a header whose read began while its proxy was trusted is not
// believed once a new policy no longer trusts that proxy (or reads no headers): the connection is
// denied. The gate used to judge the client the header named by the new policy's ACL, so a proxy
// just dropped from trusted_proxies could still name allowed clients on connections it held open.
func TestProxyDistrustedWhileReading(t *testing.T) {
	a := mustACL(t, acl.Deny, acl.Deny, "allow 192.0.2.0/24")
	trusted := &ProxyOptions{Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}
	other := &ProxyOptions{Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.9/32")}}
	for _, tc := range []struct {
		name string
		next *ProxyOptions // the proxy options of the policy set while the header is read
		want bool          // handed on
	}{
		{"still trusted", trusted, true},
		{"no longer trusted", other, false},
		{"no headers read", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			decided := make(chan Event, 1)
			g := NewListener(listen(t, "tcp", "127.0.0.1:0"), a, Options{Proxy: trusted, OnDecision: func(ev Event) {
				t.Errorf("judged before the policy changed: %+v", ev)
			}})
			defer g.Close()
			accepted := make(chan net.Conn, 1)
			go func() {
				if c, err := g.Accept(); err == nil {
					accepted <- c
				}
			}()
			c := dialFrom(t, "127.0.0.1", g.Addr().String())
			defer c.Close()
			// Wait until a goroutine waits for the header, under the policy that trusts the proxy.
			deadline := time.Now().Add(10 * time.Second)
			buf := make([]byte, 1<<20)
			for !strings.Contains(string(buf[:runtime.Stack(buf, true)]), "gate.ReadProxyHeader(") {
				if time.Now().After(deadline) {
					t.Fatal("the header read never started")
				}
				runtime.Gosched()
			}
			g.SetPolicy(a, Options{Proxy: tc.next, OnDecision: func(ev Event) { decided <- ev }})
			io.WriteString(c, "PROXY TCP4 192.0.2.7 127.0.0.1 1234 80\r\n")
			var ev Event
			select {
			case ev = <-decided:
			case <-time.After(10 * time.Second):
				t.Fatal("no decision")
			}
			if ev.HandedOn != tc.want {
				t.Errorf("handed on %v, want %v (peer %v, err %v)", ev.HandedOn, tc.want, ev.Peer, ev.Err)
			}
			if !tc.want && !errors.Is(ev.Err, ErrProxyHeader) {
				t.Errorf("err %v, want one wrapping ErrProxyHeader", ev.Err)
			}
			if tc.want {
				(<-accepted).Close()
			}
		})
	}
}

// banOne is a Bans that bans one address once set.
type banOne struct{ addr atomic.Pointer[netip.Addr] }

func (b *banOne) Banned(a netip.Addr) (Ban, bool) {
	if p := b.addr.Load(); p != nil && *p == a {
		return Ban{Prefix: netip.PrefixFrom(a, a.BitLen()), Origin: "test"}, true
	}
	return Ban{}, false
}

// TestRecheckWhileWaiting: a connection judged allowed that then waits for Accept (with Proxy set,
// judged connections queue until the caller accepts, which a server at its connection cap may
// not do for long) is judged again when Accept takes it: a ban added, or a policy set, meanwhile
// denies it. It used to be handed on as judged, minutes later, ban or no ban.
func TestRecheckWhileWaiting(t *testing.T) {
	a := mustACL(t, acl.Deny, acl.Deny, "allow 192.0.2.0/24")
	strict := mustACL(t, acl.Deny, acl.Deny, "allow 192.0.2.8/32")
	proxy := &ProxyOptions{Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}
	banned := netip.MustParseAddr("192.0.2.7")
	for _, tc := range []struct {
		name   string
		change func(g *Listener, b *banOne, o Options)
		pass   bool // 192.0.2.7's connection is handed on
	}{
		{"nothing changed", func(*Listener, *banOne, Options) {}, true},
		{"banned", func(_ *Listener, b *banOne, _ Options) { b.addr.Store(&banned) }, false},
		{"policy narrowed", func(g *Listener, _ *banOne, o Options) { g.SetPolicy(strict, o) }, false},
		{"dry run", func(g *Listener, b *banOne, o Options) {
			b.addr.Store(&banned)
			o.DryRun = true
			g.SetPolicy(a, o)
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := &banOne{}
			events := make(chan Event, 8)
			opts := Options{Proxy: proxy, Bans: b, OnDecision: func(ev Event) { events <- ev }}
			g := NewListener(listen(t, "tcp", "127.0.0.1:0"), a, opts)
			defer g.Close()
			decided := func(client string) Event {
				t.Helper()
				select {
				case ev := <-events:
					if ev.Peer.AddrPort.Addr().String() != client {
						t.Fatalf("decided %v, want %s", ev.Peer, client)
					}
					return ev
				case <-time.After(10 * time.Second):
					t.Fatalf("no decision for %s", client)
				}
				return Event{}
			}
			send := func(client string) net.Conn {
				c := dialFrom(t, "127.0.0.1", g.Addr().String())
				io.WriteString(c, "PROXY TCP4 "+client+" 127.0.0.1 1234 80\r\n")
				return c
			}
			// Start the accepting goroutine with a first connection.
			first := make(chan net.Conn, 1)
			go func() {
				c, _ := g.Accept()
				first <- c
			}()
			c0 := send("192.0.2.1")
			defer c0.Close()
			decided("192.0.2.1")
			if c := <-first; c != nil {
				c.Close()
			}
			// Judged allowed, and waiting for Accept.
			c1 := send("192.0.2.7")
			defer c1.Close()
			if ev := decided("192.0.2.7"); !ev.HandedOn {
				t.Fatalf("192.0.2.7 not allowed: %+v", ev)
			}
			tc.change(g, b, opts)
			c2 := send("192.0.2.8")
			defer c2.Close()
			decided("192.0.2.8")
			// Accept on, as a server does: 192.0.2.7's and 192.0.2.8's judging goroutines race
			// to hand their connections over, so either may come first.
			accepted := make(chan net.Conn, 2)
			go func() {
				for {
					c, err := g.Accept()
					if err != nil {
						return
					}
					accepted <- c
				}
			}()
			got := map[string]bool{}
			for range map[bool]int{true: 2, false: 1}[tc.pass] { // both, or 192.0.2.8 alone
				select {
				case c := <-accepted:
					defer c.Close()
					got[c.RemoteAddr().(*net.TCPAddr).IP.String()] = true
				case <-time.After(10 * time.Second):
					t.Fatalf("Accept returned only %v", got)
				}
			}
			if !tc.pass { // Accept took 192.0.2.7 too, before or after: judged again, and denied
				if ev := decided("192.0.2.7"); ev.HandedOn || (tc.name == "banned") != (ev.Ban != nil) {
					t.Errorf("second decision for 192.0.2.7: %+v", ev)
				}
			}
			select {
			case c := <-accepted: // only after a denial above, which would be a contradiction
				defer c.Close()
				got[c.RemoteAddr().(*net.TCPAddr).IP.String()] = true
			default:
			}
			if !got["192.0.2.8"] || got["192.0.2.7"] != tc.pass {
				t.Errorf("Accept returned the connections of %v; 192.0.2.7's handed on: want %v", got, tc.pass)
			}
			if tc.pass {
				return
			}
			c1.SetReadDeadline(time.Now().Add(10 * time.Second))
			if n, err := c1.Read(make([]byte, 1)); n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("192.0.2.7's connection: read %d, %v; want it closed", n, err)
			}
		})
	}
}

// TestRecheckProxyDistrusted: a connection whose client a trusted proxy named, judged allowed and
// waiting for Accept, is denied when Accept takes it if the policy of now no longer trusts that
// proxy, as it is when the header is read under such a policy.
func TestRecheckProxyDistrusted(t *testing.T) {
	a := mustACL(t, acl.Deny, acl.Deny, "allow 192.0.2.0/24", "allow 127.0.0.3/32")
	trusted := &ProxyOptions{Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}
	events := make(chan Event, 8)
	g := NewListener(listen(t, "tcp", "127.0.0.1:0"), a, Options{Proxy: trusted, OnDecision: func(ev Event) { events <- ev }})
	defer g.Close()
	decided := func() Event {
		t.Helper()
		select {
		case ev := <-events:
			return ev
		case <-time.After(10 * time.Second):
			t.Fatal("no decision")
		}
		return Event{}
	}
	first := make(chan net.Conn, 1)
	go func() {
		c, _ := g.Accept()
		first <- c
	}()
	c0 := dialFrom(t, "127.0.0.1", g.Addr().String())
	defer c0.Close()
	io.WriteString(c0, "PROXY TCP4 192.0.2.1 127.0.0.1 1234 80\r\n")
	decided()
	if c := <-first; c != nil {
		c.Close()
	}
	c1 := dialFrom(t, "127.0.0.1", g.Addr().String())
	defer c1.Close()
	io.WriteString(c1, "PROXY TCP4 192.0.2.7 127.0.0.1 1234 80\r\n")
	if ev := decided(); !ev.HandedOn || !ev.Proxied {
		t.Fatalf("192.0.2.7 through the proxy: %+v", ev)
	}
	g.SetPolicy(a, Options{OnDecision: func(ev Event) { events <- ev }}) // no proxy trusted now
	c2 := dialFrom(t, "127.0.0.3", g.Addr().String())
	defer c2.Close()
	c, err := g.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := c.RemoteAddr().String(); !strings.HasPrefix(got, "127.0.0.3:") {
		t.Errorf("Accept returned %s's connection, want 127.0.0.3's", got)
	}
	ev := decided() // 127.0.0.3's, and 192.0.2.7's again, in either order
	if ev.Peer.AddrPort.Addr().String() != "192.0.2.7" {
		ev = decided()
	}
	if ev.HandedOn || !errors.Is(ev.Err, ErrProxyHeader) || ev.Peer.AddrPort.Addr().String() != "192.0.2.7" {
		t.Errorf("192.0.2.7 judged again: %+v; want denied, ErrProxyHeader", ev)
	}
}

// TestNoHeaderReadInAccept: a policy that reads PROXY headers, set while Accept waits on the path
// that reads none, does not make Accept read a header itself (a trusted proxy slow to send it
// held up every other peer for up to the header timeout, and every later connection the same
// Accept call judged): the connection is denied at once, as when too many headers are being
// read (ErrProxyBusy), and Accept goes on to the path that reads headers off the accept path.
func TestNoHeaderReadInAccept(t *testing.T) {
	a := mustACL(t, acl.Deny, acl.Deny, "allow 127.0.0.2/32", "allow 192.0.2.0/24")
	events := make(chan Event, 8)
	opts := Options{OnDecision: func(ev Event) { events <- ev }}
	g := NewListener(listen(t, "tcp", "127.0.0.1:0"), a, opts)
	defer g.Close()
	type accepted struct {
		c   net.Conn
		err error
	}
	ch := make(chan accepted, 1)
	go func() {
		c, err := g.Accept()
		ch <- accepted{c, err}
	}()
	deadline := time.Now().Add(10 * time.Second)
	buf := make([]byte, 1<<20)
	for !strings.Contains(string(buf[:runtime.Stack(buf, true)]), "net.(*TCPListener).Accept(") {
		if time.Now().After(deadline) {
			t.Fatal("Accept never waited on the inner listener")
		}
		runtime.Gosched()
	}
	opts.Proxy = &ProxyOptions{Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, Timeout: time.Minute}
	g.SetPolicy(a, opts)
	slow := dialFrom(t, "127.0.0.1", g.Addr().String()) // a trusted proxy that sends nothing
	defer slow.Close()
	// The waiting Accept takes it, denies it at once, and goes on. (The next client is dialled only
	// then: dialled together, the two may reach the accept queue in either order.)
	select {
	case ev := <-events:
		if !errors.Is(ev.Err, ErrProxyBusy) || ev.HandedOn || ev.Direct.AddrPort.Addr() != netip.MustParseAddr("127.0.0.1") {
			t.Errorf("the slow proxy's connection: %+v; want denied with ErrProxyBusy", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Accept held up behind the header of a slow proxy")
	}
	c := dialFrom(t, "127.0.0.2", g.Addr().String())
	defer c.Close()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatal(r.err)
		}
		defer r.c.Close()
		if got := r.c.RemoteAddr().String(); !strings.HasPrefix(got, "127.0.0.2:") {
			t.Errorf("Accept returned %s's connection, want 127.0.0.2's", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Accept did not return the next client")
	}
}
