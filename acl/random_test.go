package acl_test

import (
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/peergate/peergate/acl"
	"github.com/peergate/peergate/internal/acltest"
)

// TestRangesMatchDecide checks, on random ACLs, that the ranges partition each family in order and
// that Decide gives each range's decision at its ends, just outside them, and inside.
func TestRangesMatchDecide(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for iter := range 200 {
		shape := acltest.Shapes[iter%len(acltest.Shapes)]
		spec := acl.Spec{Default: acl.Action(r.IntN(2)), Rules: acltest.Rules(r, shape, 1+r.IntN(300))}
		for i := range spec.Rules {
			spec.Rules[i].Action = acl.Action(r.IntN(2))
		}
		a := acl.MustNew(spec)
		var prev acl.Range
		n := 0
		for rg := range a.Ranges() {
			n++
			if !rg.First.IsValid() || !rg.Last.IsValid() || rg.Last.Less(rg.First) || rg.First.Is4() != rg.Last.Is4() {
				t.Fatalf("bad range %v-%v", rg.First, rg.Last)
			}
			switch {
			case n == 1:
				if rg.First != netip.IPv4Unspecified() {
					t.Fatalf("first range starts at %v", rg.First)
				}
			case prev.Last.Is4() && rg.First.Is6():
				if prev.Last != netip.AddrFrom4([4]byte{255, 255, 255, 255}) || rg.First != netip.IPv6Unspecified() {
					t.Fatalf("family change between %v and %v", prev.Last, rg.First)
				}
			default:
				if prev.Last.Next() != rg.First {
					t.Fatalf("gap or overlap: %v then %v", prev.Last, rg.First)
				}
				if prev.Decision.Rule == rg.Decision.Rule {
					t.Fatalf("neighbours %v and %v share their rule", prev.First, rg.First)
				}
			}
			probe := []netip.Addr{rg.First, rg.Last, acltest.Between(r, rg.First, rg.Last)}
			for _, addr := range probe {
				if addr.Is4In6() {
					continue // judged by the IPv4 ranges, as documented
				}
				if d := a.Decide(addr); d != rg.Decision {
					t.Fatalf("%s: Decide(%v) = %v, range %v-%v says %v", shape, addr, d, rg.First, rg.Last, rg.Decision)
				}
			}
			prev = rg
		}
		if prev.Last != netip.AddrFrom16([16]byte{0: 0xff, 1: 0xff, 2: 0xff, 3: 0xff, 4: 0xff, 5: 0xff, 6: 0xff, 7: 0xff,
			8: 0xff, 9: 0xff, 10: 0xff, 11: 0xff, 12: 0xff, 13: 0xff, 14: 0xff, 15: 0xff}) {
			t.Fatalf("last range ends at %v", prev.Last)
		}
	}
}

// TestDecideAllocs: Decide allocates nothing, for an address a rule decides and one the default
// decides, IPv4, IPv4-mapped and IPv6, in a large ACL.
func TestDecideAllocs(t *testing.T) {
	if acltest.Race {
		t.Skip("the race detector allocates on its own; .ci/run runs this guard without -race")
	}
	a := acl.MustNew(acl.Spec{Default: acl.Allow, Rules: acltest.Seeded(acltest.Mixed, 10_000, 1)})
	addrs := append(acltest.Edges(a.Rules()[:100]), netip.MustParseAddr("fe80::1%eth0"))
	i := 0
	if n := testing.AllocsPerRun(1000, func() {
		a.Decide(addrs[i%len(addrs)])
		i++
	}); n != 0 {
		t.Errorf("Decide allocates %v times a call", n)
	}
}
