package acl

import (
	"math"
	"math/big"
	"math/bits"
	"net/netip"
)

// Change is a run of consecutive addresses, First to Last inclusive, whose verdict differs between
// two ACLs: Old decides them all alike, and New decides them all alike, the other way.
type Change struct {
	First, Last netip.Addr
	Old, New    Decision
}

// Prefixes returns the range of c as the fewest prefixes that cover exactly it, in ascending
// order.
func (c Change) Prefixes() []netip.Prefix { return RangePrefixes(c.First, c.Last) }

// Count returns the number of addresses in c.
func (c Change) Count() *big.Int { return rangeCount(c.First, c.Last) }

// Diff returns every range of addresses that old and new decide differently (one allows, the other
// denies), in ascending order: IPv4 first, then IPv6. Ranges where only the deciding rule changes
// but not the action are not changes. Neighbouring changes differ in the deciding rule of one side.
// It is exact: set arithmetic in one merge pass over the two compiled partitions (see Ranges),
// linear in their sizes.
//
// IPv4-mapped IPv6 addresses (::ffff:0:0/96) are judged as the IPv4 addresses they carry, so their
// changes are the IPv4 changes; Diff reports no IPv6 range inside ::ffff:0:0/96. The Unix-domain
// policies are not compared: see ACL.Unix.
func Diff(old, new *ACL) []Change {
	n := 0
	diffWalk(old, new, func(first, last u128, va, vb uint32, v6 bool) { n++ })
	out := make([]Change, 0, n)
	diffWalk(old, new, func(first, last u128, va, vb uint32, v6 bool) {
		c := Change{Old: old.decision(va), New: new.decision(vb)}
		if v6 {
			c.First, c.Last = addr6(first), addr6(last)
		} else {
			c.First, c.Last = addr4(uint32(first.lo)), addr4(uint32(last.lo))
		}
		out = append(out, c)
	})
	return out
}

// diffWalk calls emit for each range of addresses that old and new decide differently, in
// ascending order, with the two segments' packed values.
func diffWalk(old, new *ACL, emit6 func(first, last u128, va, vb uint32, v6 bool)) {
	// IPv4: a merge of two sorted lists of segment starts.
	{
		ta, tb := &old.v4, &new.v4
		i, j := 0, 0
		cur := uint64(0)
		for cur <= math.MaxUint32 {
			na, nb := uint64(1<<32), uint64(1<<32)
			if i+1 < len(ta.starts) {
				na = uint64(ta.starts[i+1])
			}
			if j+1 < len(tb.starts) {
				nb = uint64(tb.starts[j+1])
			}
			end := min(na, nb)
			va, vb := ta.vals[i], tb.vals[j]
			if va&1 != vb&1 {
				emit6(u128{0, cur}, u128{0, end - 1}, va, vb, false)
			}
			if na == end {
				i++
			}
			if nb == end {
				j++
			}
			cur = end
		}
	}
	// IPv6, skipping ::ffff:0:0/96.
	{
		ta, tb := &old.v6, &new.v6
		mapped0 := u128{0, 0xffff << 32}
		mapped1 := u128{0, 0xffff<<32 | math.MaxUint32}
		emit := func(first, last u128, va, vb uint32) {
			if last.less(mapped0) || mapped1.less(first) {
				emit6(first, last, va, vb, true)
				return
			}
			if first.less(mapped0) {
				emit6(first, mapped0.prev(), va, vb, true)
			}
			if mapped1.less(last) {
				emit6(mapped1.next(), last, va, vb, true)
			}
		}
		i, j := 0, 0
		cur := u128{}
		max := u128{math.MaxUint64, math.MaxUint64}
		for {
			na, nb := max, max
			enda, endb := true, true
			if i+1 < len(ta.starts) {
				na, enda = ta.starts[i+1], false
			}
			if j+1 < len(tb.starts) {
				nb, endb = tb.starts[j+1], false
			}
			var last u128
			var stepA, stepB bool
			switch {
			case enda && endb:
				last = max
			case enda || !endb && nb.less(na):
				last, stepB = nb.prev(), true
			case endb || na.less(nb):
				last, stepA = na.prev(), true
			default: // both sides start a segment at the same address
				last, stepA, stepB = na.prev(), true, true
			}
			va, vb := ta.vals[i], tb.vals[j]
			if va&1 != vb&1 {
				emit(cur, last, va, vb)
			}
			if last == max {
				break
			}
			if stepA {
				i++
			}
			if stepB {
				j++
			}
			cur = last.next()
		}
	}
}

// RangePrefixes returns the fewest prefixes that together cover exactly the addresses first to
// last inclusive, in ascending order. The two must be of one family with first <= last;
// otherwise it returns nil. IPv4-mapped IPv6 addresses count as IPv6.
func RangePrefixes(first, last netip.Addr) []netip.Prefix {
	if !first.IsValid() || first.Is4() != last.Is4() || last.Less(first) {
		return nil
	}
	first, last = first.WithZone(""), last.WithZone("")
	width := first.BitLen()
	lo, hi := toU128(first), toU128(last)
	var out []netip.Prefix
	for {
		// The largest block starting at lo: as many trailing zero bits as lo has, and no further
		// than hi.
		n := lo.trailingZeros(width)
		for n > 0 && hi.less(lo.addLow(n)) {
			n--
		}
		blockLast := lo.addLow(n)
		if first.Is4() {
			out = append(out, netip.PrefixFrom(addr4(uint32(lo.lo)), width-n))
		} else {
			out = append(out, netip.PrefixFrom(addr6(lo), width-n))
		}
		if blockLast == hi {
			return out
		}
		lo = blockLast.next()
	}
}

// toU128 returns a as a number; IPv4 in the low 32 bits.
func toU128(a netip.Addr) u128 {
	if a.Is4() {
		b := a.As4()
		return u128{0, uint64(b[0])<<24 | uint64(b[1])<<16 | uint64(b[2])<<8 | uint64(b[3])}
	}
	b := a.As16()
	var x u128
	for i := range 8 {
		x.hi = x.hi<<8 | uint64(b[i])
		x.lo = x.lo<<8 | uint64(b[8+i])
	}
	return x
}

// trailingZeros returns the number of trailing zero bits of x, at most width.
func (x u128) trailingZeros(width int) int {
	var n int
	if x.lo != 0 {
		n = bits.TrailingZeros64(x.lo)
	} else if x.hi != 0 {
		n = 64 + bits.TrailingZeros64(x.hi)
	} else {
		n = 128
	}
	return min(n, width)
}

// addLow returns x with its low n bits set: the last address of the block of 2^n starting at x,
// which must be aligned.
func (x u128) addLow(n int) u128 {
	switch {
	case n == 0:
		return x
	case n >= 128:
		return u128{math.MaxUint64, math.MaxUint64}
	case n >= 64:
		return u128{x.hi | (1<<(n-64) - 1), math.MaxUint64}
	}
	return u128{x.hi, x.lo | (1<<n - 1)}
}

// rangeCount returns last - first + 1.
func rangeCount(first, last netip.Addr) *big.Int {
	f, l := toU128(first), toU128(last)
	bf := new(big.Int).Lsh(new(big.Int).SetUint64(f.hi), 64)
	bf.Or(bf, new(big.Int).SetUint64(f.lo))
	bl := new(big.Int).Lsh(new(big.Int).SetUint64(l.hi), 64)
	bl.Or(bl, new(big.Int).SetUint64(l.lo))
	bl.Sub(bl, bf)
	return bl.Add(bl, big.NewInt(1))
}
