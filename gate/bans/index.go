package bans

import (
	"encoding/binary"
	"math"
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
// 0: no ban) and that ban's expiry in whole seconds (Unix, rounded down; 0: never; maxExp: at
// or after 2106), so that an IPv4 segment packs into 12 bytes and a lookup learns whether the
// ban still applies from the cache line in which it found it. Only in the second a ban expires
// does the lookup read its entry for the exact time.
type hit struct{ idx, exp uint32 }

const maxExp = math.MaxUint32

func newHit(i int, expires int64) hit {
	h := hit{idx: uint32(i + 1)}
	if expires != 0 {
		h.exp = uint32(min(max(expires/1e9, 1), maxExp))
	}
	return h
}

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
			if nested && outlasts(es[outer.idx-1].expires, es[i].expires) {
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
	if h.exp != 0 {
		switch sec := now / 1e9; {
		case int64(h.exp) < sec: // expired in an earlier second
			return 0, false
		case int64(h.exp) == sec || h.exp == maxExp: // the second it expires in: to the nanosecond
			if e := &s.entries[h.idx-1]; e.expires <= now {
				return 0, false
			}
		}
	}
	return int(h.idx - 1), true
}
