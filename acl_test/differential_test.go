package acl_test

import (
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"

	"github.com/peergate/peergate/acl"
	"github.com/yl2chen/cidranger"
)

// reference is the naive evaluator the design describes, written for clarity and nothing else:
// scan every rule, keep the longest prefix containing the (unmapped) address, prefer deny on equal
// prefixes, and fall back to the default.
func reference(def acl.Action, rules []acl.Rule, addr netip.Addr) (acl.Action, netip.Prefix) {
	addr = addr.Unmap().WithZone("")
	found := false
	var bestAct acl.Action
	var best netip.Prefix
	for _, r := range rules {
		p := normal(r.Prefix)
		if !p.Contains(addr) {
			continue
		}
		if !found || p.Bits() > best.Bits() || p.Bits() == best.Bits() && r.Action == acl.Deny {
			found, best, bestAct = true, p, r.Action
		}
	}
	if !found {
		return def, netip.Prefix{}
	}
	return bestAct, best
}

// genRules derives a rule set from r: mixed families, nested chains, exact duplicates with
// conflicting actions, and IPv4-mapped spellings of IPv4 rules.
func genRules(r *rand.Rand, n int) []acl.Rule {
	var rules []acl.Rule
	add := func(p netip.Prefix) {
		rules = append(rules, acl.Rule{Prefix: p.Masked(), Action: acl.Action(r.IntN(2))})
	}
	for len(rules) < n {
		switch r.IntN(6) {
		case 0, 1: // IPv4, clustered in 10.0.0.0/8 so rules overlap
			a := netip.AddrFrom4([4]byte{10, byte(r.IntN(4)), byte(r.IntN(256)), byte(r.IntN(256))})
			add(netip.PrefixFrom(a, 8+r.IntN(25)))
		case 2: // IPv4 anywhere, short prefixes included
			add(netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(r.Uint32()), byte(r.Uint32()), 0, 0}), r.IntN(17)))
		case 3: // IPv6, clustered in 2001:db8::/32
			var b [16]byte
			b[0], b[1], b[2], b[3], b[4], b[7], b[15] = 0x20, 0x01, 0x0d, 0xb8, byte(r.IntN(3)), byte(r.IntN(256)), byte(r.IntN(256))
			add(netip.PrefixFrom(netip.AddrFrom16(b), 16+r.IntN(113)))
		case 4: // an IPv4-mapped spelling of an IPv4 prefix
			a := netip.AddrFrom4([4]byte{10, byte(r.IntN(4)), byte(r.IntN(256)), 0})
			add(netip.PrefixFrom(netip.AddrFrom16(a.As16()), 96+8+r.IntN(17)))
		case 5: // the same prefix as an earlier rule, any action
			if len(rules) > 0 {
				p := rules[r.IntN(len(rules))].Prefix
				rules = append(rules, acl.Rule{Prefix: p, Action: acl.Action(r.IntN(2))})
			}
		}
	}
	return rules
}

// probes returns addresses around the edges of the rules (first, last, and their neighbours) and
// random ones, in plain and IPv4-mapped forms.
func probes(r *rand.Rand, rules []acl.Rule) []netip.Addr {
	var out []netip.Addr
	for _, rule := range rules {
		first := rule.Prefix.Addr()
		last := lastAddr(rule.Prefix)
		out = append(out, first, last, first.Prev(), last.Next())
	}
	for range 64 {
		out = append(out, netip.AddrFrom4([4]byte{10, byte(r.IntN(4)), byte(r.Uint32()), byte(r.Uint32())}))
		var b [16]byte
		b[0], b[1], b[2], b[3], b[4], b[7], b[15] = 0x20, 0x01, 0x0d, 0xb8, byte(r.IntN(3)), byte(r.IntN(256)), byte(r.Uint32())
		out = append(out, netip.AddrFrom16(b))
	}
	var mapped []netip.Addr
	for _, a := range out {
		if a.Is4() {
			mapped = append(mapped, netip.AddrFrom16(a.As16()))
		}
	}
	return append(out, mapped...)
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 1 << (7 - i%8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// check compares Decide with the reference on every probe.
func check(t *testing.T, def acl.Action, rules []acl.Rule, addrs []netip.Addr) {
	t.Helper()
	a, err := acl.New(acl.Spec{Default: def, Rules: rules})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	for _, addr := range addrs {
		if !addr.IsValid() {
			continue
		}
		wantAct, wantP := reference(def, rules, addr)
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

func normal(p netip.Prefix) netip.Prefix {
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p
}

func TestDifferential(t *testing.T) {
	r := rand.New(rand.NewPCG(2026, 11))
	for i := range 300 {
		n := 1 + r.IntN(40)
		if i%50 == 0 {
			n = 400
		}
		rules := genRules(r, n)
		check(t, acl.Action(r.IntN(2)), rules, probes(r, rules))
	}
}

// FuzzDifferential derives a rule set and probe addresses from the fuzzer's bytes.
func FuzzDifferential(f *testing.F) {
	f.Add(uint64(1), uint8(5), false)
	f.Add(uint64(42), uint8(60), true)
	f.Fuzz(func(t *testing.T, seed uint64, n uint8, allow bool) {
		r := rand.New(rand.NewPCG(seed, uint64(n)))
		rules := genRules(r, 1+int(n%80))
		def := acl.Deny
		if allow {
			def = acl.Allow
		}
		check(t, def, rules, probes(r, rules))
	})
}

// TestReferenceAgreesWithCidranger cross-checks the naive reference itself against an
// independent longest-match built on cidranger's ContainingNetworks, for IPv4.
func TestReferenceAgreesWithCidranger(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	for range 50 {
		var rules []acl.Rule
		for _, rule := range genRules(r, 1+r.IntN(60)) {
			if p := normal(rule.Prefix); p.Addr().Is4() {
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
			rg.Insert(cidranger.NewBasicRangerEntry(ipn))
		}
		for _, addr := range probes(r, rules) {
			if !addr.Unmap().Is4() || !addr.IsValid() {
				continue
			}
			a4 := addr.Unmap().As4()
			nets, err := rg.ContainingNetworks(net.IP(a4[:]))
			if err != nil {
				t.Fatal(err)
			}
			want, wantP := reference(acl.Allow, rules, addr)
			got, gotP := acl.Allow, netip.Prefix{}
			for _, e := range nets { // the longest containing network decides
				n := e.Network()
				ones, _ := n.Mask.Size()
				if !gotP.IsValid() || ones > gotP.Bits() {
					ip, _ := netip.AddrFromSlice(n.IP.To4())
					gotP = netip.PrefixFrom(ip, ones)
				}
			}
			if gotP.IsValid() {
				got = acl.Allow
				if deny[gotP] {
					got = acl.Deny
				}
			}
			if got != want || gotP != wantP {
				t.Fatalf("%v: cidranger says %v by %v, reference %v by %v", addr, got, gotP, want, wantP)
			}
		}
	}
}
