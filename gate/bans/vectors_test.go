package bans_test

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/peergate/peergate/acl"
	"github.com/peergate/peergate/gate"
	"github.com/peergate/peergate/gate/bans"
	"github.com/peergate/peergate/internal/acltest"
)

// gateJudge runs a gate over a loopback listener with opts and judges peers through it: each
// judge dials the gate and sends a PROXY v1 header naming the peer (the listener trusts
// 127.0.0.1 as a proxy), and returns the Event the gate reports. With unix set, the gate guards a
// Unix-domain listener instead and the judge ignores its argument.
func gateJudge(t *testing.T, a *acl.ACL, opts gate.Options, unix bool) func(netip.Addr) gate.Event {
	t.Helper()
	network, address := "tcp", "127.0.0.1:0"
	if unix {
		dir, err := os.MkdirTemp("", "pgv") // short: a socket path has a limit of about 100 bytes
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		network, address = "unix", filepath.Join(dir, "s")
	} else {
		opts.Proxy = &gate.ProxyOptions{Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, Required: true}
	}
	inner, err := net.Listen(network, address)
	if err != nil {
		t.Fatal(err)
	}
	events := make(chan gate.Event, 1)
	opts.OnDecision = func(ev gate.Event) { ev.Conn = nil; events <- ev }
	g := gate.NewListener(inner, a, opts)
	t.Cleanup(func() { g.Close() })
	go func() {
		for {
			c, err := g.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return func(peer netip.Addr) gate.Event {
		c, err := net.DialTimeout(network, inner.Addr().String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if !unix {
			peer = peer.WithZone("")
			family, dst := "TCP4", "127.0.0.1"
			if !peer.Is4() {
				family, dst = "TCP6", "::1"
			}
			if _, err := fmt.Fprintf(c, "PROXY %s %s %s 40000 80\r\n", family, peer, dst); err != nil {
				t.Fatal(err)
			}
		}
		select {
		case ev := <-events:
			return ev
		case <-time.After(10 * time.Second):
			t.Fatalf("%v: the gate reported no decision in 10 s", peer)
			return gate.Event{}
		}
	}
}

// TestGateVectors runs the conformance vectors (internal/acltest) through a gate's accept path,
// the peer's address carried by a PROXY header: with the vector's ACL (the decision and its rule),
// and as the ban layer, with an ACL that allows everything and a ban table holding every range the
// vector's ACL denies, cut into prefixes (the action; the ban must name itself). The unix checks go
// through a gate on a Unix-domain listener, which bans do not apply to.
func TestGateVectors(t *testing.T) {
	allowAll := acl.MustNew(acl.Spec{Default: acl.Allow})
	acltest.Run(t, func(t *testing.T, a *acl.ACL, cases []acltest.Case) {
		tb := bans.New(bans.Config{})
		var denied []bans.Ban
		for rg := range a.Ranges() {
			if !rg.Decision.Allowed() {
				for _, p := range acl.RangePrefixes(rg.First, rg.Last) {
					denied = append(denied, bans.Ban{Prefix: p, Origin: bans.OriginAPI, Reason: "vector"})
				}
			}
		}
		if _, err := tb.AddBatch(denied); err != nil {
			t.Fatal(err)
		}
		byACL, byBans := gateJudge(t, a, gate.Options{}, false), gateJudge(t, allowAll, gate.Options{Bans: tb}, false)
		var byUnix func(netip.Addr) gate.Event
		for _, c := range cases {
			if c.Unix {
				if byUnix == nil {
					byUnix = gateJudge(t, a, gate.Options{}, true)
				}
				if ev := byUnix(netip.Addr{}); ev.Err != nil || ev.Decision.Action != c.Action {
					t.Errorf("%v: the gate says %v (error %v)", c, ev.Decision, ev.Err)
				}
				continue
			}
			ev := byACL(c.Addr)
			var rule netip.Prefix
			if ev.Decision.Rule != nil {
				rule = ev.Decision.Rule.Prefix
			}
			if ev.Err != nil || !ev.Proxied || ev.Decision.Action != c.Action || rule != c.Rule {
				t.Errorf("%v: the gate says %v (error %v, proxied %v)", c, ev.Decision, ev.Err, ev.Proxied)
			}
			ev = byBans(c.Addr)
			if ev.Err != nil || ev.Decision.Action != c.Action || (ev.Ban != nil) != (c.Action == acl.Deny) {
				t.Errorf("%v: the gate with bans says %v, ban %v (error %v)", c, ev.Decision, ev.Ban, ev.Err)
			}
		}
	})
}
