package acltest

import (
	"math/rand/v2"
	"net/netip"

	"github.com/peergate/peergate/acl"
)

// LastAddr returns the last address of p.
func LastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 1 << (7 - i%8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// Between returns a random address in [lo, hi], which are of one family.
func Between(r *rand.Rand, lo, hi netip.Addr) netip.Addr {
	l, h := lo.AsSlice(), hi.AsSlice()
	out := make([]byte, len(l))
	// Walk down the bytes: while the prefix equals lo's (or hi's), stay within its bound.
	atLo, atHi := true, true
	for i := range out {
		least, most := 0, 255
		if atLo {
			least = int(l[i])
		}
		if atHi {
			most = int(h[i])
		}
		out[i] = byte(least + r.IntN(most-least+1))
		atLo = atLo && out[i] == l[i]
		atHi = atHi && out[i] == h[i]
	}
	a, _ := netip.AddrFromSlice(out)
	return a
}

// Addrs returns n random addresses: IPv4 anywhere and in 10.0.0.0/14, IPv6 anywhere and in the
// clusters of V6Cluster, and IPv4-mapped ones in 10.0.0.0/14 (where V4Cluster and Mapped put
// their rules).
func Addrs(r *rand.Rand, n int) []netip.Addr {
	out := make([]netip.Addr, 0, n)
	for range n {
		var b [16]byte
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		switch r.IntN(5) {
		case 0:
			out = append(out, netip.AddrFrom4([4]byte(b[:4])))
		case 1:
			out = append(out, netip.AddrFrom4([4]byte{10, b[1] & 3, b[2], b[3]}))
		case 2:
			out = append(out, netip.AddrFrom16(b))
		case 3:
			copy(b[:], []byte{0x20, 0x01, 0x0d, 0xb8, 0, b[5] & 1, 0, b[7] & 3})
			out = append(out, netip.AddrFrom16(b))
		case 4:
			out = append(out, netip.AddrFrom16(netip.AddrFrom4([4]byte{10, b[1] & 3, b[2], b[3]}).As16()))
		}
	}
	return out
}

// Edges returns the addresses where the rules' decisions can change: the first and last address
// of every prefix and their neighbours outside it, each IPv4 one also in its IPv4-mapped form.
// Neighbours past the end of an address space are left out.
func Edges(rules []acl.Rule) []netip.Addr {
	var out []netip.Addr
	for _, rule := range rules {
		first, last := rule.Prefix.Addr(), LastAddr(rule.Prefix)
		for _, a := range []netip.Addr{first, last, first.Prev(), last.Next()} {
			if a.IsValid() {
				out = append(out, a)
				if a.Is4() {
					out = append(out, netip.AddrFrom16(a.As16()))
				}
			}
		}
	}
	return out
}

// RangeEdges returns, for every range of a (or, where it has more than most > 0 of them, for
// most ranges chosen at random), its first and last address, the neighbours outside it, and a
// random one inside; and the edges of the IPv4-mapped block ::ffff:0:0/96. Neighbours past the
// end of an address space are left out.
func RangeEdges(r *rand.Rand, a *acl.ACL, most int) []netip.Addr {
	var rs []acl.Range
	for rg := range a.Ranges() {
		rs = append(rs, rg)
	}
	out := []netip.Addr{netip.MustParseAddr("::ffff:0:0"), netip.MustParseAddr("::fffe:ffff:ffff"),
		netip.MustParseAddr("::ffff:ffff:ffff"), netip.MustParseAddr("::1:0:0:0")}
	n := len(rs)
	if most > 0 && most < n {
		n = most
	}
	for i := range n {
		rg := rs[i]
		if n < len(rs) {
			rg = rs[r.IntN(len(rs))]
		}
		for _, x := range []netip.Addr{rg.First, rg.Last, rg.First.Prev(), rg.Last.Next(), Between(r, rg.First, rg.Last)} {
			if x.IsValid() {
				out = append(out, x)
			}
		}
	}
	return out
}

// Inside returns n addresses to look up: the even ones random inside a prefix of ps picked at
// random, the odd ones random addresses of the same family. ps must not be empty.
func Inside(r *rand.Rand, ps []netip.Prefix, n int) []netip.Addr {
	out := make([]netip.Addr, n)
	for i := range out {
		p := ps[r.IntN(len(ps))]
		b := p.Addr().AsSlice()
		if i%2 == 1 {
			for j := range b {
				b[j] = byte(r.Uint32())
			}
		} else {
			for j := p.Bits(); j < len(b)*8; j++ {
				b[j/8] ^= byte(r.IntN(2)) << (7 - j%8)
			}
		}
		out[i], _ = netip.AddrFromSlice(b)
	}
	return out
}
