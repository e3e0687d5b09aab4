package acl

import (
	"math/big"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/peergate/peergate/internal/rangetab"
)

func TestDiffTable(t *testing.T) {
	for _, tc := range []struct {
		name     string
		old, new Spec
		want     []string // "prefix old-decision -> new-decision"
	}{
		{"same", Spec{Default: Deny, Rules: rules("allow 10.0.0.0/8")}, Spec{Default: Deny, Rules: rules("allow 10.0.0.0/8")}, nil},
		{"rule moved, same verdicts", Spec{Default: Deny, Rules: rules("allow 10.0.0.0/8")},
			Spec{Default: Deny, Rules: rules("allow 10.0.0.0/9", "allow 10.128.0.0/9")}, nil},
		{"hole punched", Spec{Default: Deny, Rules: rules("allow 10.0.0.0/8")},
			Spec{Default: Deny, Rules: rules("allow 10.0.0.0/8", "deny 10.66.0.0/16")},
			[]string{"10.66.0.0/16 allow by 10.0.0.0/8 (t:1) -> deny by 10.66.0.0/16 (t:2)"}},
		{"range split into prefixes", Spec{Default: Deny, Rules: rules("allow 10.0.0.0/8")},
			Spec{Default: Deny, Rules: rules("allow 10.0.0.0/8", "deny 10.0.0.1", "deny 10.0.0.2/31", "deny 10.0.0.4/30")},
			[]string{"10.0.0.1/32 allow by 10.0.0.0/8 (t:1) -> deny by 10.0.0.1/32 (t:2)",
				"10.0.0.2/31 allow by 10.0.0.0/8 (t:1) -> deny by 10.0.0.2/31 (t:3)",
				"10.0.0.4/30 allow by 10.0.0.0/8 (t:1) -> deny by 10.0.0.4/30 (t:4)"}},
		{"default flipped", Spec{Default: Deny, Rules: rules("allow 0.0.0.0/1", "allow ::/1")},
			Spec{Default: Allow, Rules: rules("allow 0.0.0.0/1", "allow ::/1")},
			[]string{"128.0.0.0/1 deny by default -> allow by default",
				"8000::/1 deny by default -> allow by default"}},
		{"ipv6 over the mapped block is not reported", Spec{Default: Deny},
			Spec{Default: Deny, Rules: rules("allow ::/64")},
			[]string{"::/81 deny by default -> allow by ::/64 (t:1)", "::8000:0:0/82 deny by default -> allow by ::/64 (t:1)",
				"::c000:0:0/83 deny by default -> allow by ::/64 (t:1)", "::e000:0:0/84 deny by default -> allow by ::/64 (t:1)",
				"::f000:0:0/85 deny by default -> allow by ::/64 (t:1)", "::f800:0:0/86 deny by default -> allow by ::/64 (t:1)",
				"::fc00:0:0/87 deny by default -> allow by ::/64 (t:1)", "::fe00:0:0/88 deny by default -> allow by ::/64 (t:1)",
				"::ff00:0:0/89 deny by default -> allow by ::/64 (t:1)", "::ff80:0:0/90 deny by default -> allow by ::/64 (t:1)",
				"::ffc0:0:0/91 deny by default -> allow by ::/64 (t:1)", "::ffe0:0:0/92 deny by default -> allow by ::/64 (t:1)",
				"::fff0:0:0/93 deny by default -> allow by ::/64 (t:1)", "::fff8:0:0/94 deny by default -> allow by ::/64 (t:1)",
				"::fffc:0:0/95 deny by default -> allow by ::/64 (t:1)", "::fffe:0:0/96 deny by default -> allow by ::/64 (t:1)",
				"::1:0:0:0/80 deny by default -> allow by ::/64 (t:1)", "::2:0:0:0/79 deny by default -> allow by ::/64 (t:1)",
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, c := range Diff(MustNew(tc.old), MustNew(tc.new)) {
				for _, p := range c.Prefixes() {
					got = append(got, p.String()+" "+c.Old.String()+" -> "+c.New.String())
				}
			}
			if tc.name == "ipv6 over the mapped block is not reported" {
				got = got[:min(len(got), 18)]
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got\n%q\nwant\n%q", got, tc.want)
			}
		})
	}
}

func TestRangePrefixes(t *testing.T) {
	for _, tc := range []struct {
		first, last string
		want        []string
	}{
		{"0.0.0.0", "255.255.255.255", []string{"0.0.0.0/0"}},
		{"10.0.0.1", "10.0.0.1", []string{"10.0.0.1/32"}},
		{"10.0.0.1", "10.0.0.6", []string{"10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32"}},
		{"::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", []string{"::/0"}},
		{"::1", "::2", []string{"::1/128", "::2/128"}},
		{"0:0:0:1::", "0:0:0:2:ffff:ffff:ffff:ffff", []string{"0:0:0:1::/64", "0:0:0:2::/64"}},
		{"10.0.0.2", "10.0.0.1", nil},
		{"10.0.0.1", "::1", nil},
	} {
		var got []string
		for _, p := range RangePrefixes(netip.MustParseAddr(tc.first), netip.MustParseAddr(tc.last)) {
			got = append(got, p.String())
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s-%s: got %q, want %q", tc.first, tc.last, got, tc.want)
		}
	}
}

// TestRangePrefixesExact checks on random IPv4 ranges that the prefixes tile the range exactly, in
// order, and are the fewest: no two neighbours could merge into one prefix.
func TestRangePrefixesExact(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 2000 {
		a, b := r.Uint32(), r.Uint32()
		if r.IntN(2) == 0 {
			b = a + uint32(r.IntN(5000))
		}
		if b < a {
			a, b = b, a
		}
		ps := RangePrefixes(rangetab.Addr4(a), rangetab.Addr4(b))
		next := uint64(a)
		for i, p := range ps {
			f, l := rangetab.Span(p)
			if f.Lo != next {
				t.Fatalf("%v-%v: prefix %d %v starts at %d, want %d", rangetab.Addr4(a), rangetab.Addr4(b), i, p, f.Lo, next)
			}
			next = l.Lo + 1
			if i > 0 && ps[i-1].Bits() == p.Bits() {
				if m := netip.PrefixFrom(ps[i-1].Addr(), p.Bits()-1).Masked(); m.Addr() == ps[i-1].Addr() {
					t.Fatalf("%v-%v: %v and %v could be one prefix %v", rangetab.Addr4(a), rangetab.Addr4(b), ps[i-1], p, m)
				}
			}
		}
		if next != uint64(b)+1 {
			t.Fatalf("%v-%v: prefixes end at %d", rangetab.Addr4(a), rangetab.Addr4(b), next-1)
		}
		if got := rangeCount(rangetab.Addr4(a), rangetab.Addr4(b)); got.Cmp(big.NewInt(int64(b)-int64(a)+1)) != 0 {
			t.Fatalf("count %v", got)
		}
	}
}

// smallRules returns random rules confined to 10.0.0.0/24, ::ffff:10.0.0.0/120 (mapped spelling of
// the same /24, which New stores as IPv4) and 2001:db8::/120, with random actions.
func smallRules(r *rand.Rand, n int) []Rule {
	var out []Rule
	for i := range n {
		bits := 24 + r.IntN(9)
		var p netip.Prefix
		switch r.IntN(3) {
		case 0:
			p = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(r.IntN(256))}), bits).Masked()
		case 1:
			b := netip.MustParseAddr("2001:db8::").As16()
			b[15] = byte(r.IntN(256))
			p = netip.PrefixFrom(netip.AddrFrom16(b), bits+96).Masked()
		default:
			b := netip.MustParseAddr("::ffff:10.0.0.0").As16()
			b[15] = byte(r.IntN(256))
			p = netip.PrefixFrom(netip.AddrFrom16(b), bits+96).Masked()
		}
		out = append(out, Rule{Prefix: p, Action: Action(r.IntN(2)), Origin: Origin{"r", i + 1}})
	}
	return out
}

// checkDiff checks Diff(a, b) against brute-force Decide: every address of the windows that the
// two decide differently lies in exactly one change, whose decisions are Decide's; every address
// the two decide alike lies in none; and every change is sorted, disjoint, of one family, outside
// ::ffff:0:0/96, and agrees with Decide at its ends.
func checkDiff(t *testing.T, a, b *ACL, windows []netip.Prefix) {
	t.Helper()
	changes := Diff(a, b)
	for i, c := range changes {
		if c.Old.Action == c.New.Action {
			t.Fatalf("change %d %v-%v: no verdict change (%v, %v)", i, c.First, c.Last, c.Old, c.New)
		}
		if c.First.Is4() != c.Last.Is4() || c.Last.Less(c.First) {
			t.Fatalf("change %d: bad range %v-%v", i, c.First, c.Last)
		}
		if i > 0 && !changes[i-1].Last.Less(c.First) {
			t.Fatalf("changes %d and %d overlap or are out of order", i-1, i)
		}
		mapped := netip.MustParsePrefix("::ffff:0:0/96")
		if mapped.Contains(c.First) || mapped.Contains(c.Last) || c.First.Less(mapped.Addr()) && mapped.Addr().Less(c.Last) {
			t.Fatalf("change %d %v-%v touches the mapped block", i, c.First, c.Last)
		}
		for _, x := range []netip.Addr{c.First, c.Last} {
			if a.Decide(x) != c.Old || b.Decide(x) != c.New {
				t.Fatalf("change %d at %v: %v -> %v, Decide gives %v -> %v", i, x, c.Old, c.New, a.Decide(x), b.Decide(x))
			}
		}
	}
	find := func(x netip.Addr) *Change {
		if x.Is4In6() {
			x = x.Unmap()
		}
		i, _ := slices.BinarySearchFunc(changes, x, func(c Change, x netip.Addr) int {
			switch {
			case c.Last.Less(x):
				return -1
			case x.Less(c.First):
				return 1
			}
			return 0
		})
		if i < len(changes) && !x.Less(changes[i].First) && !changes[i].Last.Less(x) {
			return &changes[i]
		}
		return nil
	}
	for _, w := range windows {
		for x := w.Addr(); w.Contains(x); x = x.Next() {
			da, db := a.Decide(x), b.Decide(x)
			c := find(x)
			switch {
			case da.Action == db.Action && c != nil:
				t.Fatalf("%v: same verdict %v / %v, but in change %v-%v", x, da, db, c.First, c.Last)
			case da.Action != db.Action && c == nil:
				t.Fatalf("%v: %v -> %v, in no change", x, da, db)
			case c != nil && (c.Old != da || c.New != db):
				t.Fatalf("%v: change says %v -> %v, Decide %v -> %v", x, c.Old, c.New, da, db)
			}
			if !x.Next().IsValid() {
				break
			}
		}
	}
}

var diffWindows = []netip.Prefix{
	netip.MustParsePrefix("9.255.255.0/24"), netip.MustParsePrefix("10.0.0.0/24"), netip.MustParsePrefix("10.0.1.0/28"),
	netip.MustParsePrefix("2001:db8::/120"), netip.MustParsePrefix("::ffff:10.0.0.0/120"),
	netip.MustParsePrefix("2001:db7:ffff:ffff:ffff:ffff:ffff:ff00/120"),
}

// TestDiffDifferential checks Diff against brute-force Decide on random small ACLs.
func TestDiffDifferential(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for range 300 {
		a := MustNew(Spec{Default: Action(r.IntN(2)), Rules: smallRules(r, r.IntN(20))})
		b := MustNew(Spec{Default: Action(r.IntN(2)), Rules: smallRules(r, r.IntN(20))})
		checkDiff(t, a, b, diffWindows)
		checkDiff(t, a, a, diffWindows)
	}
}

// FuzzDiff builds two small ACLs from the fuzzer's bytes and checks Diff against Decide.
func FuzzDiff(f *testing.F) {
	f.Add([]byte{1, 0, 3, 24, 1, 0, 0}, []byte{0, 1, 3, 25, 0, 128, 1})
	f.Add([]byte{}, []byte{1})
	f.Fuzz(func(t *testing.T, x, y []byte) {
		build := func(b []byte) *ACL {
			spec := Spec{}
			if len(b) > 0 {
				spec.Default = Action(b[0] & 1)
				b = b[1:]
			}
			for len(b) >= 3 && len(spec.Rules) < 64 {
				var p netip.Prefix
				bits := 24 + int(b[1])%9
				switch b[0] % 3 {
				case 0:
					p = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, 0, b[2]}), bits).Masked()
				case 1:
					a := netip.MustParseAddr("2001:db8::").As16()
					a[15] = b[2]
					p = netip.PrefixFrom(netip.AddrFrom16(a), bits+96).Masked()
				default:
					p = netip.PrefixFrom(netip.IPv6Unspecified(), int(b[2])%129).Masked()
				}
				spec.Rules = append(spec.Rules, Rule{Prefix: p, Action: Action(b[1] >> 7), Origin: Origin{"f", len(spec.Rules) + 1}})
				b = b[3:]
			}
			return MustNew(spec)
		}
		checkDiff(t, build(x), build(y), diffWindows[:4])
	})
}

// TestDeniedIn checks DeniedIn against brute-force Decide over every address of small prefixes
// of random ACLs: it reports a denied address exactly when one exists, and that it is the first.
func TestDeniedIn(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for range 300 {
		a := MustNew(Spec{Default: Action(r.IntN(2)), Rules: smallRules(r, r.IntN(20))})
		for range 10 {
			var p netip.Prefix
			if r.IntN(2) == 0 {
				p = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(r.IntN(256))}), 24+r.IntN(9)).Masked()
			} else {
				b := netip.MustParseAddr("2001:db8::").As16()
				b[15] = byte(r.IntN(256))
				p = netip.PrefixFrom(netip.AddrFrom16(b), 120+r.IntN(9)).Masked()
			}
			var first netip.Addr
			for x := p.Addr(); p.Contains(x); x = x.Next() {
				if !a.Decide(x).Allowed() {
					first = x
					break
				}
			}
			at, d, denied := a.DeniedIn(p)
			if denied != first.IsValid() || denied && (at != first || d != a.Decide(first)) {
				t.Fatalf("%v: DeniedIn = %v %v %v, brute force first denied %v", p, at, d, denied, first)
			}
		}
	}
}
