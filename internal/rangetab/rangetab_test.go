package rangetab

import (
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sort"
	"testing"
)

func TestU128(t *testing.T) {
	max := Max6
	for _, tc := range []struct {
		name      string
		got, want U128
	}{
		{"next", U128{0, 1}.Next(), U128{0, 2}},
		{"next carries", U128{1, math.MaxUint64}.Next(), U128{2, 0}},
		{"next wraps", max.Next(), U128{}},
		{"prev", U128{0, 2}.Prev(), U128{0, 1}},
		{"prev borrows", U128{2, 0}.Prev(), U128{1, math.MaxUint64}},
		{"addlow 0", U128{0, 8}.AddLow(0), U128{0, 8}},
		{"addlow 3", U128{0, 8}.AddLow(3), U128{0, 15}},
		{"addlow 64", U128{5, 0}.AddLow(64), U128{5, math.MaxUint64}},
		{"addlow 65", U128{4, 0}.AddLow(65), U128{5, math.MaxUint64}},
		{"addlow 128", U128{}.AddLow(128), max},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, tc.got, tc.want)
		}
	}
	for _, tc := range []struct {
		x     U128
		width int
		want  int
	}{
		{U128{0, 8}, 32, 3}, {U128{}, 32, 32}, {U128{}, 128, 128}, {U128{1, 0}, 128, 64}, {U128{0, 1 << 40}, 32, 32},
	} {
		if got := tc.x.TrailingZeros(tc.width); got != tc.want {
			t.Errorf("TrailingZeros(%v, %d) = %d, want %d", tc.x, tc.width, got, tc.want)
		}
	}
	for _, tc := range []struct {
		x, y U128
		want bool
	}{
		{U128{0, 1}, U128{0, 2}, true}, {U128{0, 2}, U128{0, 1}, false}, {U128{0, math.MaxUint64}, U128{1, 0}, true},
		{U128{1, 0}, U128{0, math.MaxUint64}, false}, {U128{1, 1}, U128{1, 1}, false},
	} {
		if got := tc.x.Less(tc.y); got != tc.want {
			t.Errorf("%v.Less(%v) = %v", tc.x, tc.y, got)
		}
	}
}

func TestSpan(t *testing.T) {
	for _, tc := range []struct {
		prefix      string
		first, last U128
	}{
		{"10.0.0.0/8", U128{0, 0x0a000000}, U128{0, 0x0affffff}},
		{"0.0.0.0/0", U128{}, Max4},
		{"192.0.2.7/32", U128{0, 0xc0000207}, U128{0, 0xc0000207}},
		{"::/0", U128{}, Max6},
		{"2001:db8::/32", U128{0x20010db8 << 32, 0}, U128{0x20010db8<<32 | math.MaxUint32, math.MaxUint64}},
		{"2001:db8::/64", U128{0x20010db8 << 32, 0}, U128{0x20010db8 << 32, math.MaxUint64}},
		{"2001:db8::1/128", U128{0x20010db8 << 32, 1}, U128{0x20010db8 << 32, 1}},
		{"::ffff:0:0/96", U128{0, 0xffff << 32}, U128{0, 0xffff<<32 | math.MaxUint32}}, // IPv6, not IPv4
	} {
		p := netip.MustParsePrefix(tc.prefix)
		first, last := Span(p)
		if first != tc.first || last != tc.last {
			t.Errorf("Span(%s) = %v %v, want %v %v", p, first, last, tc.first, tc.last)
		}
		if a := Addr(first, p.Addr().Is4()); a != p.Addr() {
			t.Errorf("Addr(Span(%s)) = %v", p, a)
		}
	}
}

// item is a prefix and the value it asks for; outer: take the enclosing value instead.
type item struct {
	prefix string
	val    int
	outer  bool
}

// build compiles items (sorted by the test) with Build and returns the tables.
func build(items []item) (Table4[int], Table6[int]) {
	ps := make([]netip.Prefix, len(items))
	n4 := 0
	for i, it := range items {
		ps[i] = netip.MustParsePrefix(it.prefix)
		if ps[i].Addr().Is4() {
			n4++
		}
	}
	return Build(n4, len(items), -1,
		func(i int) (U128, U128) { return Span(ps[i]) },
		func(i int, outer int, nested bool) int {
			if nested && items[i].outer {
				return outer
			}
			return items[i].val
		})
}

// want is the value a brute-force walk of items gives addr: the innermost covering prefix's,
// or its enclosing one's where it asks for that.
func want(items []item, a netip.Addr) int {
	v := -1
	for _, it := range items { // sorted: outer prefixes first
		if netip.MustParsePrefix(it.prefix).Contains(a) {
			if !it.outer || v == -1 {
				v = it.val
			}
		}
	}
	return v
}

func lookup(t4 *Table4[int], t6 *Table6[int], a netip.Addr) int {
	if a.Is4() {
		return t4.Lookup(uint32(Of(a).Lo))
	}
	return t6.Lookup(Of(a))
}

func TestBuild(t *testing.T) {
	for _, tc := range []struct {
		name   string
		items  []item
		probes []string
		segs4  int // segments expected in the IPv4 table (0: not checked)
	}{
		{"empty", nil, []string{"0.0.0.0", "255.255.255.255", "::", "ffff::"}, 1},
		{"disjoint", []item{{"10.0.0.0/8", 1, false}, {"192.168.0.0/16", 2, false}},
			[]string{"9.255.255.255", "10.0.0.0", "10.255.255.255", "11.0.0.0", "192.168.3.4", "192.169.0.0"}, 5},
		{"nested", []item{{"10.0.0.0/8", 1, false}, {"10.1.0.0/16", 2, false}, {"10.1.2.3/32", 3, false}},
			[]string{"10.0.0.0", "10.1.0.0", "10.1.2.2", "10.1.2.3", "10.1.2.4", "10.2.0.0", "11.0.0.0"}, 7},
		{"same start", []item{{"10.0.0.0/8", 1, false}, {"10.0.0.0/16", 2, false}},
			[]string{"10.0.0.0", "10.0.255.255", "10.1.0.0", "9.9.9.9"}, 4},
		{"whole space", []item{{"0.0.0.0/0", 1, false}, {"255.255.255.255/32", 2, false}, {"::/0", 3, false}, {"ffff::/16", 4, false}},
			[]string{"0.0.0.0", "255.255.255.254", "255.255.255.255", "::", "fffe::", "ffff::", "ffff:ffff::"}, 2},
		{"outer wins", []item{{"10.0.0.0/8", 1, false}, {"10.1.0.0/16", 2, true}, {"10.1.2.0/24", 3, false}},
			[]string{"10.0.0.0", "10.1.0.0", "10.1.2.0", "10.1.3.0"}, 5},
		{"duplicate", []item{{"10.0.0.0/8", 1, false}, {"10.0.0.0/8", 2, true}},
			[]string{"10.0.0.0", "10.255.255.255", "11.0.0.0"}, 3},
		{"ipv6", []item{{"2001:db8::/32", 1, false}, {"2001:db8::/48", 2, false}, {"2001:db8:0:1::/64", 3, false}, {"2001:db9::1/128", 4, false}},
			[]string{"::", "2001:db8::", "2001:db8:0:1::5", "2001:db8:1::", "2001:db9::", "2001:db9::1", "2001:db9::2"}, 1},
	} {
		t4, t6 := build(tc.items)
		if tc.segs4 != 0 && len(t4.Segs) != tc.segs4 {
			t.Errorf("%s: %d IPv4 segments, want %d: %v", tc.name, len(t4.Segs), tc.segs4, t4.Segs)
		}
		for _, segs := range [][]int{vals4(t4.Segs), vals6(t6.Segs)} {
			for i := 1; i < len(segs); i++ {
				if segs[i] == segs[i-1] {
					t.Errorf("%s: neighbouring segments share value %d", tc.name, segs[i])
				}
			}
		}
		for _, p := range tc.probes {
			a := netip.MustParseAddr(p)
			if got, w := lookup(&t4, &t6, a), want(tc.items, a); got != w {
				t.Errorf("%s: %s: %d, want %d", tc.name, a, got, w)
			}
		}
	}
}

func vals4(s []Seg4[int]) []int {
	var out []int
	for _, x := range s {
		out = append(out, x.Val)
	}
	return out
}

func vals6(s []Seg6[int]) []int {
	var out []int
	for _, x := range s {
		out = append(out, x.Val)
	}
	return out
}

// TestFind checks the radix-narrowed search against a linear one, on tables of every small size
// and some large ones (huge pages asked for), with starts clustered (a shared top) or spread.
func TestFind(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, n := range []int{1, 2, 3, 4, 5, 17, 100, 1000, 20000, 1 << 19} { // the last, over 4 MiB, is collapsed into huge pages
		for _, clustered := range []bool{false, true} {
			starts4 := []uint32{0}
			starts6 := []U128{{}}
			for len(starts4) < n {
				v := r.Uint32()
				h := r.Uint64()
				if clustered {
					v = 0x0a000000 | v&0xffff
					h = 0x20010db8<<32 | h&0xffff
				}
				starts4 = append(starts4, v)
				starts6 = append(starts6, U128{h, r.Uint64()})
			}
			slices.Sort(starts4)
			starts4 = slices.Compact(starts4)
			slices.SortFunc(starts6, func(a, b U128) int {
				if a.Less(b) {
					return -1
				} else if b.Less(a) {
					return 1
				}
				return 0
			})
			starts6 = slices.Compact(starts6)
			var s4, s6 []Segment[int]
			for i, s := range starts4 {
				s4 = append(s4, Segment[int]{U128{0, uint64(s)}, i})
			}
			for i, s := range starts6 {
				s6 = append(s6, Segment[int]{s, i})
			}
			t4, t6 := New4(s4), New6(s6)
			probe4 := func(a uint32) {
				want := sort.Search(len(starts4), func(i int) bool { return starts4[i] > a }) - 1
				if got := t4.Find(a); got != want || t4.Lookup(a) != want {
					t.Fatalf("n=%d clustered=%v: Find4(%#x) = %d, want %d", n, clustered, a, got, want)
				}
			}
			probe6 := func(a U128) {
				want := sort.Search(len(starts6), func(i int) bool { return a.Less(starts6[i]) }) - 1
				if got := t6.Find(a); got != want || t6.Lookup(a) != want {
					t.Fatalf("n=%d clustered=%v: Find6(%v) = %d, want %d", n, clustered, a, got, want)
				}
			}
			probe4(0)
			probe4(math.MaxUint32)
			probe6(U128{})
			probe6(Max6)
			for range 200 {
				i := r.IntN(len(starts4))
				probe4(starts4[i])
				probe4(starts4[i] - 1)
				probe4(starts4[i] + 1)
				probe4(r.Uint32())
				j := r.IntN(len(starts6))
				probe6(starts6[j])
				probe6(starts6[j].Prev())
				probe6(starts6[j].Next())
				probe6(U128{r.Uint64(), r.Uint64()})
			}
		}
	}
}
