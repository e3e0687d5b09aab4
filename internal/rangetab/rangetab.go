// Package rangetab is the compiled lookup table shared by package acl and package gate/bans: each
// address family's space is cut into contiguous segments, each stored as its first address and
// a value (what decides the segment). One binary search, narrowed by a radix index over the top
// bits of the address, finds the segment of an address with no allocation.
//
// A segment's start and value sit side by side (Seg4, Seg6), so the probe that ends the search
// has the value in the cache line it has just read.
package rangetab

import (
	"encoding/binary"
	"math"
	"math/bits"
	"net/netip"
)

// U128 is an address as a 128-bit number; IPv4 addresses use Lo only (the low 32 bits).
type U128 struct{ Hi, Lo uint64 }

// Max4 and Max6 are the last addresses of the IPv4 and IPv6 spaces.
var (
	Max4 = U128{0, math.MaxUint32}
	Max6 = U128{math.MaxUint64, math.MaxUint64}
)

// Less reports whether x < y.
func (x U128) Less(y U128) bool { return x.Hi < y.Hi || x.Hi == y.Hi && x.Lo < y.Lo }

// Next returns x+1 (wrapping at the top of the space).
func (x U128) Next() U128 {
	if x.Lo == math.MaxUint64 {
		return U128{x.Hi + 1, 0}
	}
	return U128{x.Hi, x.Lo + 1}
}

// Prev returns x-1; x must not be 0.
func (x U128) Prev() U128 {
	if x.Lo == 0 {
		return U128{x.Hi - 1, math.MaxUint64}
	}
	return U128{x.Hi, x.Lo - 1}
}

// TrailingZeros returns the number of trailing zero bits of x, at most width.
func (x U128) TrailingZeros(width int) int {
	var n int
	switch {
	case x.Lo != 0:
		n = bits.TrailingZeros64(x.Lo)
	case x.Hi != 0:
		n = 64 + bits.TrailingZeros64(x.Hi)
	default:
		n = 128
	}
	return min(n, width)
}

// AddLow returns x with its low n bits set: the last address of the block of 2^n starting at x,
// which must be aligned.
func (x U128) AddLow(n int) U128 {
	switch {
	case n <= 0:
		return x
	case n >= 128:
		return Max6
	case n >= 64:
		return U128{x.Hi | (1<<(n-64) - 1), math.MaxUint64}
	}
	return U128{x.Hi, x.Lo | (1<<n - 1)}
}

// Span returns the first and last address of p as numbers.
func Span(p netip.Prefix) (first, last U128) {
	first = Of(p.Addr())
	if p.Addr().Is4() {
		return first, first.AddLow(32 - p.Bits())
	}
	return first, first.AddLow(128 - p.Bits())
}

// Of returns a as a number: an IPv4 address (not an IPv4-mapped one) in the low 32 bits.
func Of(a netip.Addr) U128 {
	if a.Is4() {
		b := a.As4()
		return U128{0, uint64(binary.BigEndian.Uint32(b[:]))}
	}
	b := a.As16()
	return U128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

// Addr4 returns the IPv4 address v.
func Addr4(v uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

// Addr6 returns the IPv6 address v.
func Addr6(v U128) netip.Addr {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], v.Hi)
	binary.BigEndian.PutUint64(b[8:], v.Lo)
	return netip.AddrFrom16(b)
}

// Addr returns v as an address of the family is4 names; the inverse of Of.
func Addr(v U128, is4 bool) netip.Addr {
	if is4 {
		return Addr4(uint32(v.Lo))
	}
	return Addr6(v)
}

// Segment is a segment being built: where it starts and what decides it.
type Segment[V comparable] struct {
	Start U128
	Val   V
}

// Flatten turns n prefixes of one family, sorted so that a prefix comes before the prefixes it
// contains, into the partition of the family's space (0 to last) by deciding value. span(i)
// returns the addresses of prefix i. val(i, outer, nested) returns the value of the part of prefix
// i that no later prefix covers, where outer is the value in force around it (def when nested
// is false): returning outer lets an outer prefix win over an inner one. Neighbouring segments
// never share a value.
//
// It is a sweep with a stack of open prefixes: prefixes either nest or are disjoint, so the top
// of the stack always contains the next prefix or ends before it.
func Flatten[V comparable](n int, def V, last U128, span func(i int) (first, last U128), val func(i int, outer V, nested bool) V) []Segment[V] {
	segs := make([]Segment[V], 1, 2*n+1) // each prefix adds at most a start and an end
	segs[0] = Segment[V]{U128{}, def}
	emit := func(at U128, v V) {
		n := len(segs)
		if segs[n-1].Start == at { // an inner prefix starting where its parent starts
			segs = segs[:n-1]
			n--
		}
		if n > 0 && segs[n-1].Val == v {
			return
		}
		segs = append(segs, Segment[V]{at, v})
	}
	type open struct {
		last U128
		val  V
	}
	var stack []open
	pop := func() {
		top := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if top.last == last {
			return
		}
		v := def
		if len(stack) > 0 {
			v = stack[len(stack)-1].val
		}
		emit(top.last.Next(), v)
	}
	for i := range n {
		first, end := span(i)
		for len(stack) > 0 && stack[len(stack)-1].last.Less(first) {
			pop()
		}
		var v V
		if len(stack) > 0 {
			v = val(i, stack[len(stack)-1].val, true)
		} else {
			v = val(i, def, false)
		}
		emit(first, v)
		stack = append(stack, open{end, v})
	}
	for len(stack) > 0 {
		pop()
	}
	return segs
}

// radix narrows the binary search over sorted segment starts. Every start but the first (which
// is always 0) shares its top skip bits with the others: keys with other top bits fall before or
// after all of them. The next bits index idx, which bounds the search for keys in that bucket.
// The index is sized to the table: about four segments a bucket, 2^20 buckets at most.
type radix struct {
	skip, bits uint
	common     uint64 // the shared top skip bits, right-aligned
	idx        []uint32
}

// newRadix builds the index for n sorted starts whose top 64 bits key(i) returns.
func newRadix(n int, key func(i int) uint64) radix {
	if n < 2 {
		return radix{idx: []uint32{1, 1}}
	}
	var r radix
	r.skip = uint(bits.LeadingZeros64(key(1) ^ key(n-1)))
	r.bits = min(uint(max(bits.Len(uint(n))-2, 0)), 20, 64-r.skip)
	r.common = key(1) >> (64 - r.skip) // Go shifts by 64 to 0
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

// bounds returns the range [i, j) of segments, within [1, n], in which the first segment
// starting after key lies.
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

// Seg4 is a segment of the IPv4 space.
type Seg4[V any] struct {
	Start uint32
	Val   V
}

// Seg6 is a segment of the IPv6 space.
type Seg6[V any] struct {
	Start U128
	Val   V
}

// Table4 is the IPv4 space cut into segments; build it with New4.
type Table4[V any] struct {
	Segs  []Seg4[V] // sorted by Start; Segs[0].Start is 0
	radix radix
}

// Table6 is the IPv6 space cut into segments; build it with New6.
type Table6[V any] struct {
	Segs  []Seg6[V] // sorted by Start; Segs[0].Start is 0
	radix radix
}

// New4 returns the table of segs, a partition of the IPv4 space as Flatten returns it.
func New4[V comparable](segs []Segment[V]) Table4[V] {
	t := Table4[V]{Segs: make([]Seg4[V], len(segs))}
	for i, s := range segs {
		t.Segs[i] = Seg4[V]{uint32(s.Start.Lo), s.Val}
	}
	t.radix = newRadix(len(t.Segs), func(i int) uint64 { return uint64(t.Segs[i].Start) << 32 })
	collapse(t.Segs)
	collapse(t.radix.idx)
	return t
}

// New6 returns the table of segs, a partition of the IPv6 space as Flatten returns it.
func New6[V comparable](segs []Segment[V]) Table6[V] {
	t := Table6[V]{Segs: make([]Seg6[V], len(segs))}
	for i, s := range segs {
		t.Segs[i] = Seg6[V](s)
	}
	t.radix = newRadix(len(t.Segs), func(i int) uint64 { return t.Segs[i].Start.Hi })
	collapse(t.Segs)
	collapse(t.radix.idx)
	return t
}

// Find returns the index of the segment holding a.
func (t *Table4[V]) Find(a uint32) int {
	i, j := t.radix.bounds(uint64(a)<<32, len(t.Segs))
	for i < j {
		h := int(uint(i+j) >> 1)
		if t.Segs[h].Start <= a {
			i = h + 1
		} else {
			j = h
		}
	}
	return i - 1 // Segs[0].Start == 0, so the segment exists
}

// Lookup returns the value of the segment holding a.
func (t *Table4[V]) Lookup(a uint32) V { return t.Segs[t.Find(a)].Val }

// Find returns the index of the segment holding a.
func (t *Table6[V]) Find(a U128) int {
	i, j := t.radix.bounds(a.Hi, len(t.Segs))
	for i < j {
		h := int(uint(i+j) >> 1)
		if s := t.Segs[h].Start; s.Hi < a.Hi || s.Hi == a.Hi && s.Lo <= a.Lo {
			i = h + 1
		} else {
			j = h
		}
	}
	return i - 1
}

// Lookup returns the value of the segment holding a.
func (t *Table6[V]) Lookup(a U128) V { return t.Segs[t.Find(a)].Val }

// Build flattens prefixes 0 to n4-1 (IPv4) and n4 to n-1 (IPv6), each family sorted as Flatten
// wants, and returns the two tables; def decides the addresses no prefix covers.
func Build[V comparable](n4, n int, def V, span func(i int) (first, last U128), val func(i int, outer V, nested bool) V) (Table4[V], Table6[V]) {
	t4 := New4(Flatten(n4, def, Max4, span, val))
	t6 := New6(Flatten(n-n4, def, Max6,
		func(i int) (U128, U128) { return span(n4 + i) },
		func(i int, outer V, nested bool) V { return val(n4+i, outer, nested) }))
	return t4, t6
}
