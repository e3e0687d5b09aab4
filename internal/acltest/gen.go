// Package acltest is the test oracle of the access decision, shared by the tests of every
// implementation of it (acl.Decide, the kernel filter programs of gate/kfilter, the ban layer of
// gate/bans with the gate, the rules internal/hostsaccess converts from tcpd's files): seeded
// random rule sets of named shapes, probe addresses where decisions change, a naive reference
// decision written the obvious way, and the conformance vectors (vectors.yaml). Only tests import
// it.
package acltest

import (
	"math/rand/v2"
	"net/netip"
	"strings"

	"github.com/peergate/peergate/acl"
)

// Shape names a kind of random rule set.
type Shape string

// The shapes. Those of Shapes mix both actions at random and may repeat a prefix (so that deny
// must win over allow); the blocklists are distinct deny rules, the usual form of a large ACL.
const (
	V4        Shape = "v4"        // IPv4 anywhere, /0 to /32
	V4Cluster Shape = "v4cluster" // IPv4 in 10.0.0.0/14, /8 to /32: nested and overlapping
	V6        Shape = "v6"        // IPv6 anywhere, /0 to /128
	V6Cluster Shape = "v6cluster" // IPv6 in 2001:db8::/32 (a few /64s), /32 to /128: across the 64-bit words
	Mapped    Shape = "mapped"    // IPv4-mapped spellings (::ffff:10.x.y.0/104 to /128) and IPv6 /0 to /95 over ::ffff:0:0/96
	Nested    Shape = "nested"    // chains /8 ⊃ /9 ⊃ … ⊃ /32 around random IPv4 addresses, actions alternating; distinct
	Mixed     Shape = "mixed"     // each rule of one of the five shapes above, or an earlier rule's prefix again, either action

	Block4     Shape = "block4"     // distinct IPv4 deny rules anywhere, /16 to /32
	Block6     Shape = "block6"     // distinct IPv6 deny rules in 2000::/3, /32 to /128
	BlockMixed Shape = "blockmixed" // half Block4, half Block6
)

// Shapes are the shapes with both actions, for differential tests: every one of them is worth
// comparing implementations on.
var Shapes = []Shape{V4, V4Cluster, V6, V6Cluster, Mapped, Nested, Mixed}

// Seeded returns Rules(rand.New(rand.NewPCG(seed, 7)), s, n): the same rules for the same seed.
func Seeded(s Shape, n int, seed uint64) []acl.Rule {
	return Rules(rand.New(rand.NewPCG(seed, 7)), s, n)
}

// Rules returns n random rules of shape s drawn from r, each with the origin gen:i (i from 1).
// Prefixes are masked; Mapped rules keep their IPv4-mapped spelling, as a file may write them.
func Rules(r *rand.Rand, s Shape, n int) []acl.Rule {
	g := gen{r: r, rules: make([]acl.Rule, 0, n), n: n}
	if s == Nested || s == Block4 || s == Block6 || s == BlockMixed {
		g.seen = make(map[netip.Prefix]bool, n)
	}
	for len(g.rules) < n {
		g.one(s)
	}
	return g.rules
}

type gen struct {
	r     *rand.Rand
	rules []acl.Rule
	n     int
	seen  map[netip.Prefix]bool // non-nil: each prefix once
}

func (g *gen) add(p netip.Prefix, a acl.Action) {
	p = p.Masked()
	if len(g.rules) >= g.n || g.seen != nil && g.seen[p] {
		return
	}
	if g.seen != nil {
		g.seen[p] = true
	}
	g.rules = append(g.rules, acl.Rule{Prefix: p, Action: a, Origin: acl.Origin{File: "gen", Line: len(g.rules) + 1}})
}

func (g *gen) v4() netip.Addr {
	r := g.r
	return netip.AddrFrom4([4]byte{byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32())})
}

func (g *gen) v6() netip.Addr {
	var b [16]byte
	for i := range b {
		b[i] = byte(g.r.Uint32())
	}
	return netip.AddrFrom16(b)
}

// one adds one rule of shape s (a chain of them for Nested).
func (g *gen) one(s Shape) {
	r := g.r
	switch s {
	case V4:
		g.add(netip.PrefixFrom(g.v4(), r.IntN(33)), acl.Action(r.IntN(2)))
	case V4Cluster:
		a := netip.AddrFrom4([4]byte{10, byte(r.IntN(4)), byte(r.IntN(256)), byte(r.IntN(256))})
		g.add(netip.PrefixFrom(a, 8+r.IntN(25)), acl.Action(r.IntN(2)))
	case V6:
		g.add(netip.PrefixFrom(g.v6(), r.IntN(129)), acl.Action(r.IntN(2)))
	case V6Cluster:
		b := g.v6().As16()
		copy(b[:], []byte{0x20, 0x01, 0x0d, 0xb8, 0, b[5] & 1, 0, b[7] & 3})
		g.add(netip.PrefixFrom(netip.AddrFrom16(b), 32+r.IntN(97)), acl.Action(r.IntN(2)))
	case Mapped:
		if r.IntN(3) == 0 {
			g.add(netip.PrefixFrom(netip.IPv6Unspecified(), r.IntN(96)), acl.Action(r.IntN(2)))
		} else {
			a := netip.AddrFrom4([4]byte{10, byte(r.IntN(4)), byte(r.IntN(256)), 0})
			g.add(netip.PrefixFrom(netip.AddrFrom16(a.As16()), 96+8+r.IntN(25)), acl.Action(r.IntN(2)))
		}
	case Nested:
		a := g.v4()
		for bits := 8; bits <= 32; bits++ {
			g.add(netip.PrefixFrom(a, bits), acl.Action(bits&1))
		}
	case Mixed:
		if k := r.IntN(6); k < 5 {
			g.one([]Shape{V4, V4Cluster, V6, V6Cluster, Mapped}[k])
		} else if len(g.rules) > 0 {
			g.add(g.rules[r.IntN(len(g.rules))].Prefix, acl.Action(r.IntN(2)))
		}
	case Block4:
		g.add(netip.PrefixFrom(g.v4(), 16+r.IntN(17)), acl.Deny)
	case Block6:
		b := g.v6().As16()
		b[0] = 0x20 | b[0]&0x1f
		g.add(netip.PrefixFrom(netip.AddrFrom16(b), 32+r.IntN(97)), acl.Deny)
	case BlockMixed:
		if r.IntN(2) == 0 {
			g.one(Block4)
		} else {
			g.one(Block6)
		}
	default:
		panic("acltest: unknown shape " + string(s))
	}
}

// RulesOf parses rules written as "allow 10.0.0.0/8" or "deny 2001:db8::1", with origins t:1,
// t:2, …; it panics on a bad one (the tests' own text).
func RulesOf(specs ...string) []acl.Rule {
	rs := make([]acl.Rule, 0, len(specs))
	for i, s := range specs {
		act, pfx, _ := strings.Cut(s, " ")
		a, err := acl.ParseAction(act)
		if err != nil {
			panic(err)
		}
		p, err := acl.ParsePrefix(pfx)
		if err != nil {
			panic(err)
		}
		rs = append(rs, acl.Rule{Prefix: p, Action: a, Origin: acl.Origin{File: "t", Line: i + 1}})
	}
	return rs
}

// Prefixes returns the rules' prefixes.
func Prefixes(rules []acl.Rule) []netip.Prefix {
	out := make([]netip.Prefix, len(rules))
	for i, r := range rules {
		out[i] = r.Prefix
	}
	return out
}
