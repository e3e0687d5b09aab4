package acl

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestLint(t *testing.T) {
	for _, tc := range []struct {
		name string
		def  Action
		unix Action
		// rules as "allow 10.0.0.0/8"; their origin is t:<index+1>
		rules []string
		want  []string // findings as "t:line kind"
	}{
		{"clean", Deny, Deny, []string{"allow 10.0.0.0/8", "deny 10.66.0.0/16"}, nil},
		{"conflict", Allow, Deny, []string{"allow 10.0.0.0/8", "deny 10.0.0.0/8"}, []string{"t:1 conflict"}},
		// Issue 14 item 10: the deny of a conflict is not "redundant" under default deny (deleting it
		// would let the allow decide), and a conflict is reported once, further rules as duplicates.
		{"conflict under default deny", Deny, Deny, []string{"allow 10.0.0.0/8", "deny 10.0.0.0/8"}, []string{"t:1 conflict", "denies-all"}},
		{"conflict under denying parent", Allow, Deny, []string{"deny 10.0.0.0/8", "allow 10.1.0.0/16", "deny 10.1.0.0/16"}, []string{"t:2 conflict"}},
		{"conflict once, then duplicates", Deny, Deny, []string{"allow 10.0.0.0/8", "allow 10.0.0.0/8", "deny 10.0.0.0/8", "deny 10.0.0.0/8"},
			[]string{"t:1 conflict", "t:2 duplicate", "t:4 duplicate", "denies-all"}},
		{"duplicate", Deny, Deny, []string{"allow 10.0.0.0/8", "allow 10.0.0.0/8"}, []string{"t:2 duplicate"}},
		{"redundant under default", Deny, Deny, []string{"allow 10.0.0.0/8", "deny 192.0.2.0/24"}, []string{"t:2 redundant"}},
		{"redundant under parent", Deny, Deny, []string{"allow 10.0.0.0/8", "allow 10.1.0.0/16"}, []string{"t:2 redundant"}},
		{"not redundant when parent differs", Deny, Deny, []string{"allow 10.0.0.0/8", "deny 10.1.0.0/16", "allow 10.1.1.0/24"}, nil},
		{"hidden", Deny, Deny, []string{"deny 10.0.0.0/8", "allow 10.0.0.0/9", "allow 10.128.0.0/9"}, []string{"t:1 hidden"}},
		{"v6 rule does not cover v4", Deny, Deny, []string{"allow ::/0"}, []string{"t:1 not-ipv4"}},
		{"v6 rule outside mapped range", Deny, Deny, []string{"allow 2001:db8::/32"}, nil},
		// Issue 15: both /0 rules written is not "not-ipv4"; a lone deny 0.0.0.0/0 leaves IPv6 open.
		{"both /0 rules", Allow, Deny, []string{"deny 0.0.0.0/0", "deny ::/0", "allow 10.0.0.0/8"}, nil},
		{"both /0 rules, v6 allowed", Deny, Deny, []string{"deny 0.0.0.0/0", "allow ::/0"}, []string{"t:1 redundant"}},
		{"lone deny 0.0.0.0/0", Allow, Deny, []string{"deny 0.0.0.0/0", "allow 10.0.0.0/8"}, []string{"t:1 not-ipv6"}},
		{"lone deny 0.0.0.0/0 written mapped", Allow, Deny, []string{"deny ::ffff:0.0.0.0/96"}, []string{"t:1 not-ipv6"}},
		{"lone deny 0.0.0.0/0 under default deny", Deny, Allow, []string{"deny 0.0.0.0/0"}, []string{"t:1 redundant"}},
		{"lone allow 0.0.0.0/0", Deny, Deny, []string{"allow 0.0.0.0/0"}, nil},
		{"link-local prefix", Deny, Deny, []string{"allow fe80::/10", "allow 2001:db8::/32"}, []string{"t:1 link-local"}},
		{"link-local address", Deny, Deny, []string{"allow fe80::1"}, []string{"t:1 link-local"}},
		{"link-local deny", Allow, Deny, []string{"deny fe80::/64"}, []string{"t:1 link-local"}},
		{"wider than link-local", Deny, Deny, []string{"allow fe00::/7"}, nil},
		{"denies all", Deny, Deny, []string{"deny 10.0.0.0/8"}, []string{"t:1 redundant", "denies-all"}},
		{"unix allowed is not denies-all", Deny, Allow, nil, nil},
		{"empty default allow", Allow, Deny, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs, err := Lint(Spec{Default: tc.def, Unix: tc.unix, Rules: rules(tc.rules...)})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, f := range fs {
				s := string(f.Kind)
				if f.Rule != nil {
					s = f.Rule.Origin.String() + " " + s
				}
				got = append(got, s)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("findings %q, want %q\n%v", got, tc.want, fs)
			}
		})
	}
}

func TestLintMessage(t *testing.T) {
	fs, _ := Lint(Spec{Default: Deny, Rules: rules("allow 10.0.0.0/8", "allow 10.1.0.0/16")})
	if len(fs) != 1 || !strings.Contains(fs[0].String(), "t:2: redundant: allow 10.1.0.0/16: changes nothing: 10.0.0.0/8 at t:1 already allows it") {
		t.Errorf("findings %v", fs)
	}
}

func ExampleLint() {
	spec, _ := ParseSpec("office.yaml", []byte(`default: deny
allow: [10.0.0.0/8, 10.1.0.0/16]
deny: [10.0.0.0/8]
`))
	findings, _ := Lint(spec)
	for _, f := range findings {
		fmt.Println(f)
	}
	// Output:
	// office.yaml:2: conflict: allow 10.0.0.0/8: same prefix is denied at office.yaml:3; deny wins, so this rule never decides
}

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

// lintSpec turns bytes into an ACL: the first byte gives the default and the unix policy, then each
// pair of bytes one rule: a base address and an action, and a prefix length. At most 32 rules.
func lintSpec(data []byte) Spec {
	var spec Spec
	if len(data) > 0 {
		spec.Default, spec.Unix = Action(data[0]&1), Action(data[0]>>1&1)
		data = data[1:]
	}
	for i := 0; i+1 < len(data) && len(spec.Rules) < 32; i += 2 {
		a := lintBases[int(data[i]&0x7f)%len(lintBases)]
		p := netip.PrefixFrom(a, int(data[i+1])%(a.BitLen()+1)).Masked()
		spec.Rules = append(spec.Rules, Rule{p, Action(data[i] >> 7), Origin{"r", len(spec.Rules) + 1}})
	}
	return spec
}

// checkLintAdvice checks that following spec's lint advice changes no decision: deleting any one
// rule Lint calls redundant, duplicate or hidden, and deleting all the redundant and duplicate
// rules at once.
func checkLintAdvice(t *testing.T, spec Spec) {
	t.Helper()
	for i := range spec.Rules {
		spec.Rules[i].Origin = Origin{"r", i + 1} // one origin per rule: it names the rule to delete
	}
	fs, err := Lint(spec)
	if err != nil {
		t.Fatal(err)
	}
	before := MustNew(spec)
	var all []int
	for _, f := range fs {
		switch f.Kind {
		case Redundant, Duplicate, Hidden:
			i := f.Rule.Origin.Line - 1
			sameDecisions(t, before, without(spec, i), spec, fs, "deleting "+f.String())
			if f.Kind != Hidden {
				all = append(all, i)
			}
		}
	}
	if len(all) > 1 {
		sameDecisions(t, before, without(spec, all...), spec, fs, fmt.Sprintf("deleting all %d redundant and duplicate rules", len(all)))
	}
}

func without(spec Spec, drop ...int) *ACL {
	out := Spec{Default: spec.Default, Unix: spec.Unix}
	for i, r := range spec.Rules {
		if !slices.Contains(drop, i) {
			out.Rules = append(out.Rules, r)
		}
	}
	return MustNew(out)
}

// sameDecisions checks that a and b decide alike at the first address of every range of either:
// each cell of the two partitions' common refinement starts at one of them, so that is every
// address (IPv4-mapped ones are judged as the IPv4 addresses, which are probed).
func sameDecisions(t *testing.T, a, b *ACL, spec Spec, fs []Finding, what string) {
	t.Helper()
	for _, x := range []*ACL{a, b} {
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
// ones from genRules with random actions and repeated rules.
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
		rs := genRules(shapes[iter%len(shapes)], 1+r.IntN(100), r.Uint64())
		for i := range rs {
			rs[i].Action = Action(r.IntN(2))
		}
		for range r.IntN(len(rs)) { // the same prefixes again, some with the other action
			x := rs[r.IntN(len(rs))]
			x.Action = Action(r.IntN(2))
			rs = append(rs, x)
		}
		checkLintAdvice(t, Spec{Default: Action(r.IntN(2)), Rules: rs})
	}
}

// FuzzLintAdvice checks on fuzzed ACLs that deleting what Lint calls redundant, duplicate or
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
