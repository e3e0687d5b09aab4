package bans

import (
	"encoding/binary"
	"math"
	"math/bits"
	"net/netip"
)

// The compiled form of a snapshot, as in package acl: each family's address space is cut into
// segments, each stored as its first address and a value naming the ban that decides it (the
// index of its entry + 1; 0: no ban). One binary search, narrowed by a radix index over the top
// bits of the address, answers a lookup with no allocation.

// u128 is an address as a number; IPv4 addresses use lo only.
type u128 struct{ hi, lo uint64 }

func (x u128) less(y u128) bool { return x.hi < y.hi || x.hi == y.hi && x.lo < y.lo }

func (x u128) next() u128 {
	if x.lo == math.MaxUint64 {
		return u128{x.hi + 1, 0}
	}
	return u128{x.hi, x.lo + 1}
}

// span returns the first and last address of p as numbers.
func span(p netip.Prefix) (first, last u128) {
	if p.Addr().Is4() {
		b := p.Addr().As4()
		v := uint64(binary.BigEndian.Uint32(b[:]))
		return u128{0, v}, u128{0, v | (1<<(32-p.Bits()) - 1)}
	}
	b := p.Addr().As16()
	first = u128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
	last = first
	if n := 128 - p.Bits(); n >= 64 {
		last.lo = math.MaxUint64
		last.hi |= 1<<(n-64) - 1
	} else {
		last.lo |= 1<<n - 1
	}
	return first, last
}

// radix narrows the binary search over sorted segment starts: every start but the first (always
// 0) shares its top skip bits with the others, and the next bits index idx, which bounds the
// search for keys in that bucket (about four segments a bucket, 2^20 buckets at most).
type radix struct {
	skip, bits uint
	common     uint64
	idx        []uint32
}

func newRadix(n int, key func(i int) uint64) radix {
	if n < 2 {
		return radix{idx: []uint32{1, 1}}
	}
	var r radix
	r.skip = uint(bits.LeadingZeros64(key(1) ^ key(n-1)))
	r.bits = min(uint(max(bits.Len(uint(n))-2, 0)), 20, 64-r.skip)
	r.common = key(1) >> (64 - r.skip)
	r.idx = make([]uint32, 1<<r.bits+1)
	i := 1
	for k := range r.idx {
		for i < n && r.bucket(key(i)) < uint64(k) {
			i++
		}
		r.idx[k] = uint32(i)
	}
	return r
}

func (r *radix) bucket(key uint64) uint64 { return key << r.skip >> (64 - r.bits) }

func (r *radix) bounds(key uint64, n int) (i, j int) {
	switch top := key >> (64 - r.skip); {
	case top < r.common:
		return 1, 1
	case top > r.common:
		return n, n
	}
	k := r.bucket(key)
	return int(r.idx[k]), int(r.idx[k+1])
}

type table4 struct {
	starts []uint32
	vals   []uint32
	radix  radix
}

func (t *table4) lookup(a uint32) uint32 {
	i, j := t.radix.bounds(uint64(a)<<32, len(t.starts))
	for i < j {
		h := int(uint(i+j) >> 1)
		if t.starts[h] <= a {
			i = h + 1
		} else {
			j = h
		}
	}
	return t.vals[i-1]
}

type table6 struct {
	starts []u128
	vals   []uint32
	radix  radix
}

func (t *table6) lookup(a u128) uint32 {
	i, j := t.radix.bounds(a.hi, len(t.starts))
	for i < j {
		h := int(uint(i+j) >> 1)
		if s := t.starts[h]; s.hi < a.hi || s.hi == a.hi && s.lo <= a.lo {
			i = h + 1
		} else {
			j = h
		}
	}
	return t.vals[i-1]
}

type segment struct {
	start u128
	val   uint32
}

// flatten turns es[lo:hi], all of one family and sorted so that a prefix comes before the
// prefixes it contains, into the partition of the family's space by deciding ban. Where bans
// nest, the one that lasts longest decides (no expiry outlasts any; on a tie the inner one): so
// when the deciding ban has expired, so have all the bans around it, and a lookup that finds an
// expired ban may rightly answer "not banned".
func flatten(es []entry, lo, hi int, max u128) []segment {
	segs := make([]segment, 1, 2*(hi-lo)+1)
	emit := func(at u128, v uint32) {
		n := len(segs)
		if segs[n-1].start == at {
			segs = segs[:n-1]
			n--
		}
		if n > 0 && segs[n-1].val == v {
			return
		}
		segs = append(segs, segment{at, v})
	}
	type open struct {
		last u128
		val  uint32
	}
	var stack []open
	pop := func() {
		top := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if top.last == max {
			return
		}
		v := uint32(0)
		if len(stack) > 0 {
			v = stack[len(stack)-1].val
		}
		emit(top.last.next(), v)
	}
	for i := lo; i < hi; i++ {
		first, last := es[i].span()
		for len(stack) > 0 && stack[len(stack)-1].last.less(first) {
			pop()
		}
		v := uint32(i + 1)
		if len(stack) > 0 {
			if outer := stack[len(stack)-1].val; es[outer-1].outlasts(&es[i]) {
				v = outer
			}
		}
		emit(first, v)
		stack = append(stack, open{last, v})
	}
	for len(stack) > 0 {
		pop()
	}
	return segs
}

// compile builds the lookup tables of es, sorted with IPv4 entries first.
func compile(es []entry) (t4 table4, t6 table6) {
	n4 := 0
	for n4 < len(es) && !es[n4].v6 {
		n4++
	}
	s4 := flatten(es, 0, n4, u128{0, math.MaxUint32})
	t4.starts = make([]uint32, len(s4))
	t4.vals = make([]uint32, len(s4))
	for i, s := range s4 {
		t4.starts[i], t4.vals[i] = uint32(s.start.lo), s.val
	}
	t4.radix = newRadix(len(s4), func(i int) uint64 { return uint64(t4.starts[i]) << 32 })
	s6 := flatten(es, n4, len(es), u128{math.MaxUint64, math.MaxUint64})
	t6.starts = make([]u128, len(s6))
	t6.vals = make([]uint32, len(s6))
	for i, s := range s6 {
		t6.starts[i], t6.vals[i] = s.start, s.val
	}
	t6.radix = newRadix(len(s6), func(i int) uint64 { return t6.starts[i].hi })
	return t4, t6
}
