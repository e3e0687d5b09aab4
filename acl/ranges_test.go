package acl

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
)

func TestRangesExample(t *testing.T) {
	a := MustNew(Spec{Default: Deny, Rules: rules(
		"allow 10.0.0.0/8", "deny 10.1.0.0/16", "allow 10.1.0.0/16", "allow 2001:db8::/32",
		"deny ::ffff:10.0.0.0/104",
	)})
	var got []string
	for r := range a.Ranges() {
		got = append(got, fmt.Sprintf("%v-%v %v", r.First, r.Last, r.Decision))
	}
	want := []string{
		"0.0.0.0-9.255.255.255 deny by default",
		"10.0.0.0-10.0.255.255 deny by 10.0.0.0/8 (t:5)", // the mapped spelling is the IPv4 /8; deny wins
		"10.1.0.0-10.1.255.255 deny by 10.1.0.0/16 (t:2)",
		"10.2.0.0-10.255.255.255 deny by 10.0.0.0/8 (t:5)",
		"11.0.0.0-255.255.255.255 deny by default",
		"::-2001:db7:ffff:ffff:ffff:ffff:ffff:ffff deny by default",
		"2001:db8::-2001:db8:ffff:ffff:ffff:ffff:ffff:ffff allow by 2001:db8::/32 (t:4)",
		"2001:db9::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff deny by default",
	}
	if len(got) != len(want) {
		t.Fatalf("got %d ranges:\n%q\nwant %d:\n%q", len(got), got, len(want), want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("range %d: got %q, want %q", i, got[i], want[i])
		}
	}
}

func TestRangesEmptyACL(t *testing.T) {
	n := 0
	for r := range MustNew(Spec{Default: Allow}).Ranges() {
		n++
		if r.Decision.Rule != nil || !r.Decision.Allowed() {
			t.Errorf("%v: %v, want allow by default", r.First, r.Decision)
		}
	}
	if n != 2 {
		t.Errorf("got %d ranges, want 2 (one a family)", n)
	}
}

func TestRangesStopsEarly(t *testing.T) {
	a := MustNew(Spec{Default: Deny, Rules: rules("allow 10.0.0.0/8", "allow 2001:db8::/32")})
	n := 0
	for range a.Ranges() {
		n++
		if n == 2 {
			break
		}
	}
	if n != 2 {
		t.Errorf("n = %d", n)
	}
}

// TestRangesMatchDecide checks, on random ACLs, that the ranges partition each family in order and
// that Decide gives each range's decision at its ends, just outside them, and inside.
func TestRangesMatchDecide(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for iter := range 200 {
		shape := shapes[iter%len(shapes)]
		spec := Spec{Default: Action(r.IntN(2)), Rules: genRules(shape, 1+r.IntN(300), r.Uint64())}
		for i := range spec.Rules {
			spec.Rules[i].Action = Action(r.IntN(2))
		}
		a := MustNew(spec)
		var prev Range
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
			probe := []netip.Addr{rg.First, rg.Last, randBetween(r, rg.First, rg.Last)}
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

// randBetween returns a random address in [lo, hi], which are of one family.
func randBetween(r *rand.Rand, lo, hi netip.Addr) netip.Addr {
	l, h := lo.AsSlice(), hi.AsSlice()
	out := make([]byte, len(l))
	// Walk down the bytes: while the prefix equals lo's (or hi's), stay within its bound.
	atLo, atHi := true, true
	for i := range out {
		min, max := 0, 255
		if atLo {
			min = int(l[i])
		}
		if atHi {
			max = int(h[i])
		}
		out[i] = byte(min + r.IntN(max-min+1))
		atLo = atLo && out[i] == l[i]
		atHi = atHi && out[i] == h[i]
	}
	a, _ := netip.AddrFromSlice(out)
	return a
}
