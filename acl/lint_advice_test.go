package acl_test

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/peergate/peergate/acl"
	"github.com/peergate/peergate/internal/acltest"
)

// lintBases are the addresses lintSpec builds prefixes on: they share leading bits, so prefixes of
// them nest, overlap and repeat, and they reach the corners (the /0s, the IPv4-mapped range,
// link-local, the ends of each family).
var lintBases = []netip.Addr{
	netip.MustParseAddr("0.0.0.0"), netip.MustParseAddr("10.0.0.0"), netip.MustParseAddr("10.1.2.3"),
	netip.MustParseAddr("10.1.255.255"), netip.MustParseAddr("10.128.0.0"), netip.MustParseAddr("192.0.2.1"),
	netip.MustParseAddr("255.255.255.255"), netip.MustParseAddr("::"), netip.MustParseAddr("::ffff:10.1.2.3"),
	netip.MustParseAddr("::fffe:0:0"), netip.MustParseAddr("2001:db8::"), netip.MustParseAddr("2001:db8::1"),
	netip.MustParseAddr("2001:db8:8000::"), netip.MustParseAddr("fe80::1"),
	netip.MustParseAddr("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
}

// lintSpec turns bytes into an acl.ACL: the first byte gives the default and the unix policy, then each
// pair of bytes one rule: a base address and an action, and a prefix length. At most 32 rules.
func lintSpec(data []byte) acl.Spec {
	var spec acl.Spec
	if len(data) > 0 {
		spec.Default, spec.Unix = acl.Action(data[0]&1), acl.Action(data[0]>>1&1)
		data = data[1:]
	}
	for i := 0; i+1 < len(data) && len(spec.Rules) < 32; i += 2 {
		a := lintBases[int(data[i]&0x7f)%len(lintBases)]
		p := netip.PrefixFrom(a, int(data[i+1])%(a.BitLen()+1)).Masked()
		spec.Rules = append(spec.Rules, acl.Rule{Prefix: p, Action: acl.Action(data[i] >> 7), Origin: acl.Origin{File: "r", Line: len(spec.Rules) + 1}})
	}
	return spec
}

// checkLintAdvice checks that following spec's lint advice changes no decision: deleting any one
// rule acl.Lint calls redundant, duplicate or hidden, and deleting all the redundant and duplicate
// rules at once.
func checkLintAdvice(t *testing.T, spec acl.Spec) {
	t.Helper()
	for i := range spec.Rules {
		spec.Rules[i].Origin = acl.Origin{File: "r", Line: i + 1} // one origin per rule: it names the rule to delete
	}
	fs, err := acl.Lint(spec)
	if err != nil {
		t.Fatal(err)
	}
	before := acl.MustNew(spec)
	var all []int
	for _, f := range fs {
		switch f.Kind {
		case acl.Redundant, acl.Duplicate, acl.Hidden:
			i := f.Rule.Origin.Line - 1
			sameDecisions(t, before, without(spec, i), spec, fs, "deleting "+f.String())
			if f.Kind != acl.Hidden {
				all = append(all, i)
			}
		}
	}
	if len(all) > 1 {
		sameDecisions(t, before, without(spec, all...), spec, fs, fmt.Sprintf("deleting all %d redundant and duplicate rules", len(all)))
	}
}

func without(spec acl.Spec, drop ...int) *acl.ACL {
	out := acl.Spec{Default: spec.Default, Unix: spec.Unix}
	for i, r := range spec.Rules {
		if !slices.Contains(drop, i) {
			out.Rules = append(out.Rules, r)
		}
	}
	return acl.MustNew(out)
}

// sameDecisions checks that a and b decide alike at the first address of every range of either:
// each cell of the two partitions' common refinement starts at one of them, so that is every
// address (IPv4-mapped ones are judged as the IPv4 addresses, which are probed).
func sameDecisions(t *testing.T, a, b *acl.ACL, spec acl.Spec, fs []acl.Finding, what string) {
	t.Helper()
	for _, x := range []*acl.ACL{a, b} {
		for rg := range x.Ranges() {
			for _, addr := range []netip.Addr{rg.First, rg.Last} {
				if da, db := a.Decide(addr), b.Decide(addr); da.Action != db.Action {
					t.Fatalf("%s flips %v from %v to %v\nspec: default %v, rules %v\nfindings: %v", what, addr, da, db, spec.Default, spec.Rules, fs)
				}
			}
		}
	}
	if a.Unix() != b.Unix() {
		t.Fatalf("%s changes the unix policy", what)
	}
}

// TestLintAdviceIsSafe is the seeded, deterministic run of FuzzLintAdvice's property on random
// ACLs: dense ones from lintSpec (nested, v4 and v6, conflicting and duplicate rules) and bigger
// ones of every shape of acltest with random actions and repeated rules.
func TestLintAdviceIsSafe(t *testing.T) {
	r := rand.New(rand.NewPCG(14, 10))
	lengths := []byte{0, 8, 9, 10, 16, 24, 32, 64, 95, 96, 104, 112, 128}
	for range 1500 {
		data := make([]byte, 1+2*(1+r.IntN(24)))
		data[0] = byte(r.Uint32())
		for i := 1; i+1 < len(data); i += 2 {
			data[i] = byte(r.Uint32())
			data[i+1] = lengths[r.IntN(len(lengths))]
			if r.IntN(4) == 0 {
				data[i+1] = byte(r.Uint32())
			}
		}
		checkLintAdvice(t, lintSpec(data))
	}
	for iter := range 40 {
		rs := acltest.Rules(r, acltest.Shapes[iter%len(acltest.Shapes)], 1+r.IntN(100))
		for i := range rs {
			rs[i].Action = acl.Action(r.IntN(2))
		}
		for range r.IntN(len(rs)) { // the same prefixes again, some with the other action
			x := rs[r.IntN(len(rs))]
			x.Action = acl.Action(r.IntN(2))
			rs = append(rs, x)
		}
		checkLintAdvice(t, acl.Spec{Default: acl.Action(r.IntN(2)), Rules: rs})
	}
}

// FuzzLintAdvice checks on fuzzed ACLs that deleting what acl.Lint calls redundant, duplicate or
// hidden changes no decision (see checkLintAdvice).
func FuzzLintAdvice(f *testing.F) {
	for _, s := range [][]byte{
		{0, 1, 8, 0x81, 8},                // issue 14 item 10: allow and deny 10.0.0.0/8, default deny
		{0, 0x81, 8, 0x81, 8, 1, 8, 1, 8}, // a conflict with duplicates on both sides
		{1, 0, 0, 0x87, 0, 1, 8},          // deny 0.0.0.0/0, allow ::/0, deny 10.0.0.0/8
		{0, 0x8b, 32, 0x0a, 48, 0x8c, 128, 0x0d, 10},
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkLintAdvice(t, lintSpec(data))
	})
}
