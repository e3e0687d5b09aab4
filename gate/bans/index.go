package bans

import (
	"encoding/binary"
	"net/netip"

	"github.com/peergate/peergate/internal/rangetab"
)

// The compiled form of a snapshot is package rangetab's table, as in package acl: each family's
// address space is cut into segments, each stored as its first address and a hit naming the ban
// that decides it. One binary search, narrowed by a radix index over the top bits of the
// address, answers a lookup with no allocation.

// u128 is an address as a number; IPv4 addresses use the low 32 bits.
type u128 = rangetab.U128

// hit is what a segment holds: the ban that decides it (its index in the snapshot's entries + 1;
// 0: no ban) and that ban's expiry (Unix nanoseconds, 0: never), split in halves so that an IPv4
// segment packs into 16 bytes. A lookup learns whether the ban still applies from the cache line
// in which it found it, and reads the entry only to report the ban.
type hit struct{ idx, expLo, expHi uint32 }

func newHit(i int, expires int64) hit {
	return hit{uint32(i + 1), uint32(expires), uint32(uint64(expires) >> 32)}
}

func (h hit) expires() int64 { return int64(uint64(h.expHi)<<32 | uint64(h.expLo)) }

// outlasts reports whether a ban expiring at a expires no earlier than one expiring at b (0:
// never; no expiry outlasts everything).
func outlasts(a, b int64) bool {
	switch {
	case a == 0:
		return true
	case b == 0:
		return false
	}
	return a > b
}

// compile builds the lookup tables of es, sorted with IPv4 entries first. Where bans nest, the
// one that lasts longest decides (on a tie the inner one): so when the deciding ban has expired,
// so have all the bans around it, and a lookup that finds an expired ban may rightly answer "not
// banned".
func compile(es []entry) (rangetab.Table4[hit], rangetab.Table6[hit]) {
	n4 := 0
	for n4 < len(es) && !es[n4].v6 {
		n4++
	}
	return rangetab.Build(n4, len(es), hit{},
		func(i int) (first, last u128) { return es[i].span() },
		func(i int, outer hit, nested bool) hit {
			if nested && outlasts(outer.expires(), es[i].expires) {
				return outer
			}
			return newHit(i, es[i].expires)
		})
}

// find returns the index in s.entries of the ban that decides addr, if it is live at now (Unix
// nanoseconds).
func (s *snapshot) find(addr netip.Addr, now int64) (int, bool) {
	var h hit
	switch {
	case addr.Is4() || addr.Is4In6():
		b := addr.Unmap().As4()
		h = s.t4.Lookup(binary.BigEndian.Uint32(b[:]))
	case addr.Is6():
		b := addr.As16()
		h = s.t6.Lookup(u128{Hi: binary.BigEndian.Uint64(b[:8]), Lo: binary.BigEndian.Uint64(b[8:])})
	default:
		return 0, false
	}
	if h.idx == 0 {
		return 0, false
	}
	if exp := h.expires(); exp != 0 && exp <= now {
		return 0, false
	}
	return int(h.idx - 1), true
}
