package acltest

import (
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/peergate/peergate/acl"
	"github.com/yl2chen/cidranger"
)

// TestDecideVectors: the reference passes the conformance vectors, from the rules as loaded.
func TestDecideVectors(t *testing.T) {
	Run(t, func(t *testing.T, a *acl.ACL, cases []Case) {
		for _, c := range cases {
			if c.Unix {
				continue // no address: the ACL's unix policy, not a prefix match
			}
			if act, p := Decide(a.Default(), a.Rules(), c.Addr); act != c.Action || p != c.Rule {
				t.Errorf("%v: reference says %v by %v", c, act, p)
			}
		}
	})
}

// TestDecideCases are the corners of the reference, as written rules (mapped spellings kept).
func TestDecideCases(t *testing.T) {
	rules := RulesOf("allow 10.0.0.0/8", "deny 10.0.0.0/8", "allow ::ffff:10.1.0.0/112", "deny 10.1.2.0/24",
		"allow ::/0", "deny 2001:db8::/32", "allow fe80::/10")
	for _, tc := range []struct {
		addr, want, by string
	}{
		{"10.9.9.9", "deny", "10.0.0.0/8"}, // deny wins on the same prefix
		{"10.1.9.9", "allow", "10.1.0.0/16"},
		{"::ffff:10.1.9.9", "allow", "10.1.0.0/16"}, // a mapped address is its IPv4 address
		{"10.1.2.3", "deny", "10.1.2.0/24"},
		{"192.0.2.1", "deny", ""}, // ::/0 does not reach IPv4
		{"2001:db8::1", "deny", "2001:db8::/32"},
		{"2001:db9::1", "allow", "::/0"},
		{"fe80::1%eth0", "allow", "fe80::/10"}, // zones dropped
	} {
		act, p := Decide(acl.Deny, rules, netip.MustParseAddr(tc.addr))
		by := ""
		if p.IsValid() {
			by = p.String()
		}
		if act.String() != tc.want || by != tc.by {
			t.Errorf("%s: %v by %q, want %s by %q", tc.addr, act, by, tc.want, tc.by)
		}
	}
}

// TestDecideAgreesWithCidranger cross-checks the reference against an independent longest match
// built on cidranger's ContainingNetworks, for IPv4.
func TestDecideAgreesWithCidranger(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	for range 50 {
		var rules []acl.Rule
		for _, rule := range Rules(r, Mixed, 1+r.IntN(60)) {
			if p := Normal(rule.Prefix); p.Addr().Is4() {
				rules = append(rules, acl.Rule{Prefix: p, Action: rule.Action})
			}
		}
		rg := cidranger.NewPCTrieRanger()
		deny := map[netip.Prefix]bool{}
		for _, rule := range rules {
			if rule.Action == acl.Deny {
				deny[rule.Prefix] = true
			}
			ipn := net.IPNet{IP: rule.Prefix.Addr().AsSlice(), Mask: net.CIDRMask(rule.Prefix.Bits(), 32)}
			if err := rg.Insert(cidranger.NewBasicRangerEntry(ipn)); err != nil {
				t.Fatal(err)
			}
		}
		for _, addr := range append(Edges(rules), Addrs(r, 64)...) {
			if !addr.Unmap().Is4() {
				continue
			}
			a4 := addr.Unmap().As4()
			nets, err := rg.ContainingNetworks(net.IP(a4[:]))
			if err != nil {
				t.Fatal(err)
			}
			want, wantP := Decide(acl.Allow, rules, addr)
			got, gotP := acl.Allow, netip.Prefix{}
			for _, e := range nets { // the longest containing network decides
				n := e.Network()
				ones, _ := n.Mask.Size()
				if !gotP.IsValid() || ones > gotP.Bits() {
					ip, _ := netip.AddrFromSlice(n.IP.To4())
					gotP = netip.PrefixFrom(ip, ones)
				}
			}
			if gotP.IsValid() && deny[gotP] {
				got = acl.Deny
			}
			if got != want || gotP != wantP {
				t.Fatalf("%v: cidranger says %v by %v, reference %v by %v", addr, got, gotP, want, wantP)
			}
		}
	}
}

// TestRules: every shape gives exactly n masked rules, the same for the same seed, inside the
// space it promises; blocklists and Nested repeat no prefix, blocklists only deny.
func TestRules(t *testing.T) {
	within := map[Shape][]netip.Prefix{
		V4:         {netip.MustParsePrefix("0.0.0.0/0")},
		V4Cluster:  {netip.MustParsePrefix("10.0.0.0/8")},
		V6:         {netip.MustParsePrefix("::/0")},
		V6Cluster:  {netip.MustParsePrefix("2001:db8::/32")},
		Mapped:     {netip.MustParsePrefix("::/0")},
		Nested:     {netip.MustParsePrefix("0.0.0.0/0")},
		Mixed:      {netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")},
		Block4:     {netip.MustParsePrefix("0.0.0.0/0")},
		Block6:     {netip.MustParsePrefix("2000::/3")},
		BlockMixed: {netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("2000::/3")},
	}
	for s, spaces := range within {
		for _, n := range []int{0, 1, 7, 500} {
			rules := Seeded(s, n, 3)
			if len(rules) != n {
				t.Fatalf("%s: %d rules, want %d", s, len(rules), n)
			}
			if again := Seeded(s, n, 3); !slices.Equal(rules, again) {
				t.Fatalf("%s: not the same for the same seed", s)
			}
			seen := map[netip.Prefix]bool{}
			for _, r := range rules {
				if r.Prefix != r.Prefix.Masked() || !slices.ContainsFunc(spaces, func(sp netip.Prefix) bool {
					return sp.Overlaps(r.Prefix) && sp.Bits() <= r.Prefix.Bits()
				}) {
					t.Fatalf("%s: %v outside %v or not masked", s, r.Prefix, spaces)
				}
				block := s == Block4 || s == Block6 || s == BlockMixed
				if (block || s == Nested) && seen[r.Prefix] || block && r.Action != acl.Deny {
					t.Fatalf("%s: %v repeated or not deny", s, r)
				}
				seen[r.Prefix] = true
			}
		}
	}
	if _, err := acl.New(acl.Spec{Default: acl.Deny, Rules: Seeded(Mixed, 2000, 1)}); err != nil {
		t.Fatalf("acl.New refuses a Mixed rule set: %v", err)
	}
}

// TestAddrHelpers: Between stays in its bounds, LastAddr is the last address, Edges and
// RangeEdges give only valid addresses, and RangeEdges covers every range's ends.
func TestAddrHelpers(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 1000 {
		lo, hi := Addrs(r, 1)[0], Addrs(r, 1)[0]
		if lo.BitLen() != hi.BitLen() {
			continue
		}
		if hi.Less(lo) {
			lo, hi = hi, lo
		}
		if x := Between(r, lo, hi); x.Less(lo) || hi.Less(x) {
			t.Fatalf("Between(%v, %v) = %v", lo, hi, x)
		}
	}
	for _, tc := range [][2]string{{"10.0.0.0/8", "10.255.255.255"}, {"0.0.0.0/0", "255.255.255.255"},
		{"2001:db8::/63", "2001:db8:0:1:ffff:ffff:ffff:ffff"}, {"::1/128", "::1"}} {
		if got := LastAddr(netip.MustParsePrefix(tc[0])); got.String() != tc[1] {
			t.Errorf("LastAddr(%s) = %v", tc[0], got)
		}
	}
	rules := RulesOf("deny 0.0.0.0/0", "allow 10.0.0.0/8", "allow ffff::/16")
	for _, x := range Edges(rules) {
		if !x.IsValid() {
			t.Fatal("Edges gave an invalid address")
		}
	}
	a := acl.MustNew(acl.Spec{Default: acl.Allow, Rules: rules})
	edges := RangeEdges(r, a, 0)
	for rg := range a.Ranges() {
		if !slices.Contains(edges, rg.First) || !slices.Contains(edges, rg.Last) {
			t.Errorf("RangeEdges misses the ends of %v-%v", rg.First, rg.Last)
		}
	}
	if n := len(RangeEdges(r, acl.MustNew(acl.Spec{Default: acl.Allow, Rules: Seeded(Block4, 1000, 1)}), 10)); n > 4+5*10 {
		t.Errorf("RangeEdges with most 10: %d addresses", n)
	}
}
