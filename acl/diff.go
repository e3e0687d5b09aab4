package acl

import (
	"math"
	"math/big"
	"net/netip"

	"github.com/peergate/peergate/internal/rangetab"
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
			c.First, c.Last = rangetab.Addr6(first), rangetab.Addr6(last)
		} else {
			c.First, c.Last = rangetab.Addr4(uint32(first.Lo)), rangetab.Addr4(uint32(last.Lo))
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
			if i+1 < len(ta.Segs) {
				na = uint64(ta.Segs[i+1].Start)
			}
			if j+1 < len(tb.Segs) {
				nb = uint64(tb.Segs[j+1].Start)
			}
			end := min(na, nb)
			va, vb := ta.Segs[i].Val, tb.Segs[j].Val
			if va&1 != vb&1 {
				emit6(u128{Lo: cur}, u128{Lo: end - 1}, va, vb, false)
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
		mapped0 := u128{Lo: 0xffff << 32}
		mapped1 := u128{Lo: 0xffff<<32 | math.MaxUint32}
		emit := func(first, last u128, va, vb uint32) {
			if last.Less(mapped0) || mapped1.Less(first) {
				emit6(first, last, va, vb, true)
				return
			}
			if first.Less(mapped0) {
				emit6(first, mapped0.Prev(), va, vb, true)
			}
			if mapped1.Less(last) {
				emit6(mapped1.Next(), last, va, vb, true)
			}
		}
		i, j := 0, 0
		cur := u128{}
		max := rangetab.Max6
		for {
			na, nb := max, max
			enda, endb := true, true
			if i+1 < len(ta.Segs) {
				na, enda = ta.Segs[i+1].Start, false
			}
			if j+1 < len(tb.Segs) {
				nb, endb = tb.Segs[j+1].Start, false
			}
			var last u128
			var stepA, stepB bool
			switch {
			case enda && endb:
				last = max
			case enda || !endb && nb.Less(na):
				last, stepB = nb.Prev(), true
			case endb || na.Less(nb):
				last, stepA = na.Prev(), true
			default: // both sides start a segment at the same address
				last, stepA, stepB = na.Prev(), true, true
			}
			va, vb := ta.Segs[i].Val, tb.Segs[j].Val
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
			cur = last.Next()
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
	lo, hi := rangetab.Of(first), rangetab.Of(last)
	var out []netip.Prefix
	for {
		// The largest block starting at lo: as many trailing zero bits as lo has, and no further
		// than hi.
		n := lo.TrailingZeros(width)
		for n > 0 && hi.Less(lo.AddLow(n)) {
			n--
		}
		blockLast := lo.AddLow(n)
		if first.Is4() {
			out = append(out, netip.PrefixFrom(rangetab.Addr4(uint32(lo.Lo)), width-n))
		} else {
			out = append(out, netip.PrefixFrom(rangetab.Addr6(lo), width-n))
		}
		if blockLast == hi {
			return out
		}
		lo = blockLast.Next()
	}
}

// rangeCount returns last - first + 1.
func rangeCount(first, last netip.Addr) *big.Int {
	f, l := rangetab.Of(first), rangetab.Of(last)
	bf := new(big.Int).Lsh(new(big.Int).SetUint64(f.Hi), 64)
	bf.Or(bf, new(big.Int).SetUint64(f.Lo))
	bl := new(big.Int).Lsh(new(big.Int).SetUint64(l.Hi), 64)
	bl.Or(bl, new(big.Int).SetUint64(l.Lo))
	bl.Sub(bl, bf)
	return bl.Add(bl, big.NewInt(1))
}
