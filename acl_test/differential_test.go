package acl_test

import (
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/peergate/peergate/acl"
	"github.com/peergate/peergate/internal/acltest"
)

// check compares Decide with the reference (acltest.Decide) on every probe: the edges of every
// rule and random addresses, plain and IPv4-mapped.
func check(t *testing.T, r *rand.Rand, def acl.Action, rules []acl.Rule) {
	t.Helper()
	a, err := acl.New(acl.Spec{Default: def, Rules: rules})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	for _, addr := range append(acltest.Edges(rules), acltest.Addrs(r, 64)...) {
		wantAct, wantP := acltest.Decide(def, rules, addr)
		d := a.Decide(addr)
		var gotP netip.Prefix
		if d.Rule != nil {
			gotP = d.Rule.Prefix
		}
		if d.Action != wantAct || gotP != wantP {
			t.Fatalf("Decide(%v) = %v by %v; reference says %v by %v\nrules (default %v): %v", addr, d.Action, gotP, wantAct, wantP, def, rules)
		}
	}
}

func TestDifferential(t *testing.T) {
	r := rand.New(rand.NewPCG(2026, 11))
	for i := range 300 {
		n := 1 + r.IntN(40)
		if i%50 == 0 {
			n = 400
		}
		check(t, r, acl.Action(r.IntN(2)), acltest.Rules(r, acltest.Shapes[i%len(acltest.Shapes)], n))
	}
}

// FuzzDifferential derives a rule set and probe addresses from the fuzzer's numbers.
func FuzzDifferential(f *testing.F) {
	f.Add(uint64(1), uint8(5), false)
	f.Add(uint64(42), uint8(60), true)
	f.Fuzz(func(t *testing.T, seed uint64, n uint8, allow bool) {
		r := rand.New(rand.NewPCG(seed, uint64(n)))
		def := acl.Deny
		if allow {
			def = acl.Allow
		}
		check(t, r, def, acltest.Rules(r, acltest.Shapes[int(n)%len(acltest.Shapes)], 1+int(n%80)))
	})
}
