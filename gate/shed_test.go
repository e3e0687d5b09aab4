//go:build linux

package gate

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/peergate/peergate/acl"
)

// TestShedPath floods a listener with denied connects from 127.0.0.2 until it sheds, then checks
// that on the shed path denied peers are still closed, counted, logged to OnDecision with a
// stand-in Conn that has their address, reset when Reset is set; that allowed peers still get
// through as *net.TCPConn; and that a run of allowed connections turns shedding off again.
func TestShedPath(t *testing.T) {
	for _, reset := range []bool{false, true} {
		t.Run(map[bool]string{false: "close", true: "reset"}[reset], func(t *testing.T) {
			inner := listen(t, "tcp", "127.0.0.1:0")
			a := mustACL(t, acl.Deny, acl.Deny, "allow 127.0.0.1/32")
			var mu sync.Mutex
			var stand, real int // denials seen with a stand-in Conn, and with a real one
			g := NewListener(inner, a, Options{Reset: reset, OnDecision: func(ev Event) {
				if ev.HandedOn {
					return
				}
				mu.Lock()
				defer mu.Unlock()
				if _, ok := ev.Conn.(*shedConn); ok {
					stand++
					if got := ev.Conn.RemoteAddr().(*net.TCPAddr).IP.String(); got != "127.0.0.2" {
						t.Errorf("stand-in RemoteAddr %s, want 127.0.0.2", got)
					}
				} else {
					real++
				}
			}})
			defer g.Close()
			// Connections queue in the backlog before anything accepts, so that once the gate sheds
			// it finds the next ones already waiting, as under a flood.
			var flood []net.Conn
			for range shedOn + 10 {
				flood = append(flood, dialFrom(t, "127.0.0.2", inner.Addr().String()))
			}
			first := dialFrom(t, "127.0.0.1", inner.Addr().String())
			defer first.Close()
			s, err := g.Accept()
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := s.(*net.TCPConn); !ok {
				t.Fatalf("allowed peer handed on as %T, want *net.TCPConn", s)
			}
			if got := s.RemoteAddr().String(); got != first.LocalAddr().String() {
				t.Fatalf("handed-on RemoteAddr %s, want %s", got, first.LocalAddr())
			}
			s.Close()
			for _, c := range flood {
				_, err := readAll(c) // the gate closed it: EOF, or a reset
				c.Close()
				if reset != errors.Is(err, syscall.ECONNRESET) {
					t.Fatalf("reset=%v, read error %v", reset, err)
				}
			}
			if !g.Shedding() {
				t.Fatalf("not shedding after %d denials", shedOn+10)
			}
			mu.Lock()
			if stand != 10 || real != shedOn {
				t.Errorf("denials with a stand-in Conn %d (want 10), with a real one %d (want %d)", stand, real, shedOn)
			}
			mu.Unlock()
			// A run of allowed connections ends the shedding.
			accepted := server(t, g)
			for range shedMax / shedDown {
				c := dialFrom(t, "127.0.0.1", inner.Addr().String())
				next(t, accepted).Close()
				c.Close()
			}
			if g.Shedding() {
				t.Error("still shedding after a run of allowed connections")
			}
			st := g.Stats()
			if st.Denied != shedOn+10 || st.Allowed != 1+shedMax/shedDown || st.Errors != 0 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

// TestShedDryRunAndBans: in dry-run mode nothing is shed (denied peers are handed on), and a ban
// denies on the shed path as it does off it.
func TestShedDryRunAndBans(t *testing.T) {
	inner := listen(t, "tcp", "127.0.0.1:0")
	a := mustACL(t, acl.Allow, acl.Deny, "deny 127.0.0.2/32")
	g := NewListener(inner, a, Options{DryRun: true})
	defer g.Close()
	g.shed.score.Store(shedMax)
	c := dialFrom(t, "127.0.0.2", inner.Addr().String())
	defer c.Close()
	s, err := g.Accept()
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if st := g.Stats(); st.Denied != 1 {
		t.Errorf("dry run: stats %+v, want 1 denied (and handed on)", st)
	}

	bans := new(banOne)
	banned := netip.MustParseAddr("127.0.0.3")
	bans.addr.Store(&banned)
	var stand atomic.Int32 // ban denials reported with the shed path's stand-in Conn
	g.SetPolicy(a, Options{Bans: bans, OnDecision: func(ev Event) {
		if _, ok := ev.Conn.(*shedConn); ok && ev.Ban != nil {
			stand.Add(1)
		}
	}})
	g.shed.score.Store(shedMax)
	// Both queue before Accept runs, so that the shed path finds them waiting.
	b := dialFrom(t, "127.0.0.3", inner.Addr().String())
	defer b.Close()
	c = dialFrom(t, "127.0.0.1", inner.Addr().String())
	defer c.Close()
	s, err = g.Accept()
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := readAll(b); err != nil {
		t.Errorf("banned peer: read %v, want EOF", err)
	}
	if st := g.Stats(); st.Banned != 1 || st.Allowed != 1 || stand.Load() != 1 {
		t.Errorf("bans on the shed path: stats %+v, stand-in ban events %d; want 1 banned (on the shed path), 1 allowed", st, stand.Load())
		t.Errorf("bans on the shed path: stats %+v, want 1 banned, 1 allowed", st)
	}
}
