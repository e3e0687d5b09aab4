package kfilter

import (
	"fmt"
	"slices"
	"syscall"

	"github.com/peergate/peergate/acl"
	"golang.org/x/net/bpf"
)

// MaxInstructions is the longest classic BPF program the kernel takes (BPF_MAXINSNS).
const MaxInstructions = 4096

const (
	// netOff is SKF_NET_OFF (-0x100000) as a load offset: loads relative to it read the network
	// (IP) header, whatever the socket layer has pulled off the packet.
	netOff = 0xFFF00000
	keep   = 0xFFFFFFFF // return value that keeps the whole packet
	drop   = 0          // return value that drops it

	v4Src = 12 // offset of the source address in an IPv4 header
	v6Src = 8  // offset of the source address in an IPv6 header
)

// Compile translates a into a classic BPF program for a TCP listening socket of the given family,
// syscall.AF_INET or syscall.AF_INET6 (unix.AF_INET, unix.AF_INET6 on Linux), ready for Attach. The program reads the source address of each
// packet from its IP header and returns the ACL's decision for it: it keeps the packets of allowed
// peers and drops those of denied peers. For AF_INET6 it handles both IPv6 packets and the IPv4
// packets a dual-stack socket receives, and judges an IPv4-mapped IPv6 source as IPv4, as
// acl.ACL.Decide does. A packet that is neither IPv4 nor IPv6 is kept: the userspace check decides.
//
// An ACL whose program would exceed MaxInstructions gives an error wrapping ErrTooLarge. The
// program costs about one instruction per boundary between an allowed and a denied range of
// addresses for IPv4 (so a blocklist of N scattered addresses or prefixes in an allow-by-default
// ACL takes about 2N), and a few per boundary for IPv6, less where boundaries share leading
// 32-bit words. See the package documentation for the figures.
func Compile(a *acl.ACL, family int) ([]bpf.RawInstruction, error) {
	return compile(a, family, netOff)
}

// compile is Compile with the offset of the IP header as a parameter: netOff for the kernel, 0 for
// a VM that is given packets starting at the IP header.
func compile(a *acl.ACL, family int, base uint32) ([]bpf.RawInstruction, error) {
	if a == nil {
		return nil, ErrNoACL
	}
	if family != syscall.AF_INET && family != syscall.AF_INET6 {
		return nil, fmt.Errorf("%w: %d", ErrFamily, family)
	}
	v4, v6, err := spans(a, family == syscall.AF_INET6)
	if err != nil {
		return nil, err
	}
	g := &gen{ret: [2]int{-1, -1}, base: base}

	// The program is laid out as header, IPv6 part, IPv4 part, and written backwards, from the last
	// instruction to the first, because classic BPF jumps only forward: every jump's target is
	// then already placed when the jump is written.
	g.fallInto(g.search(build(v4, 0, 1), v4Src))
	v4Search := len(g.rev) - 1
	v4Load := g.emit(bpf.LoadAbsolute{Off: base + v4Src, Size: 4})
	isV4 := g.cond(bpf.JumpEqual, 4, target{at: v4Load}, target{ret: true, act: acl.Allow})
	if family == syscall.AF_INET6 {
		g.v4Search = v4Search
		v6Root := build(v6, 0, 4)
		g.fallInto(g.search(v6Root, v6Src))
		v6Load := g.emit(bpf.LoadAbsolute{Off: base + v6Src, Size: 4})
		g.cond(bpf.JumpEqual, 6, target{at: v6Load}, isV4)
	}
	g.emit(bpf.ALUOpConstant{Op: bpf.ALUOpShiftRight, Val: 4})
	g.emit(bpf.LoadAbsolute{Off: base, Size: 1}) // version and header length

	if n := len(g.rev); n > MaxInstructions {
		return nil, fmt.Errorf("%w: %d instructions for %d IPv4 and %d IPv6 ranges (the kernel takes %d)",
			ErrTooLarge, n, len(v4), len(v6), MaxInstructions)
	}
	slices.Reverse(g.rev)
	return bpf.Assemble(g.rev)
}

// An address as 32-bit words, most significant first: IPv4 uses word 0 only.
type words [4]uint32

func (x words) cmp(y words) int { return slices.Compare(x[:], y[:]) }

// with returns x with word w set to v and every word after it, up to n, set to fill.
func (x words) with(w, n int, v, fill uint32) words {
	x[w] = v
	for i := w + 1; i < n; i++ {
		x[i] = fill
	}
	return x
}

// below reports whether words w+1 … n-1 of x are all v.
func (x words) below(w, n int, v uint32) bool {
	for i := w + 1; i < n; i++ {
		if x[i] != v {
			return false
		}
	}
	return true
}

func (x words) prev() words {
	for i := 3; i >= 0; i-- {
		x[i]--
		if x[i] != ^uint32(0) {
			break
		}
	}
	return x
}

func (x words) next() words {
	for i := 3; i >= 0; i-- {
		x[i]++
		if x[i] != 0 {
			break
		}
	}
	return x
}

// leaf is what a search ends in: an action, a search over the next word (node), or, for the
// IPv4-mapped IPv6 block, the IPv4 search on the last word (mapped).
type leaf struct {
	node   *node
	mapped bool
	act    acl.Action
}

func (l leaf) same(m leaf) bool {
	return l.node == nil && m.node == nil && l.mapped == m.mapped && l.act == m.act
}

// span is a range of addresses, first to last inclusive, with its leaf.
type span struct {
	first, last words
	leaf        leaf
}

// spans reads a's ranges into IPv4 and, if v6, IPv6 spans, merging neighbours of the same action.
// The IPv6 spans send ::ffff:0:0/96 to the IPv4 search. An ACL with more ranges than could ever
// fit gives ErrTooLarge before the work of compiling them.
func spans(a *acl.ACL, v6 bool) (s4, s6 []span, err error) {
	for r := range a.Ranges() {
		is4 := r.First.Is4()
		if !is4 && !v6 {
			break
		}
		s := span{leaf: leaf{act: r.Decision.Action}}
		if is4 {
			b := r.First.As4()
			s.first[0] = uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
			b = r.Last.As4()
			s.last[0] = uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
		} else {
			s.first, s.last = words16(r.First.As16()), words16(r.Last.As16())
		}
		list := &s4
		if !is4 {
			list = &s6
		}
		if n := len(*list); n > 0 && (*list)[n-1].leaf.same(s.leaf) {
			(*list)[n-1].last = s.last
			continue
		}
		// Every boundary between two ranges costs at least one compare.
		if len(s4)+len(s6) > MaxInstructions {
			return nil, nil, fmt.Errorf("%w: more than %d ranges of alternating action", ErrTooLarge, MaxInstructions)
		}
		*list = append(*list, s)
	}
	if v6 {
		mapped := span{first: words{0, 0, 0xffff, 0}, last: words{0, 0, 0xffff, ^uint32(0)}, leaf: leaf{mapped: true}}
		s6 = overlay(s6, mapped)
	}
	return s4, s6, nil
}

func words16(b [16]byte) words {
	var w words
	for i := range w {
		w[i] = uint32(b[4*i])<<24 | uint32(b[4*i+1])<<16 | uint32(b[4*i+2])<<8 | uint32(b[4*i+3])
	}
	return w
}

// overlay returns ss, a sorted partition, with the addresses of o given to o.
func overlay(ss []span, o span) []span {
	out := make([]span, 0, len(ss)+2)
	for _, s := range ss {
		if s.first.cmp(o.first) < 0 {
			t := s
			if t.last.cmp(o.first) >= 0 {
				t.last = o.first.prev()
			}
			out = append(out, t)
		}
		if s.last.cmp(o.first) >= 0 && s.first.cmp(o.last) <= 0 && (len(out) == 0 || !out[len(out)-1].leaf.same(o.leaf)) {
			out = append(out, o)
		}
		if s.last.cmp(o.last) > 0 {
			t := s
			if t.first.cmp(o.last) <= 0 {
				t.first = o.last.next()
			}
			out = append(out, t)
		}
	}
	return out
}

// node is a search over word w of the address: its segments partition the word's values.
type node struct {
	w    int
	segs []seg
}

type seg struct {
	lo, hi uint32
	leaf   leaf
}

// build turns spans, which partition a block of addresses whose words before w are fixed, into a
// search over word w (of n). Values of the word over which one span holds become segments with the
// span's leaf, neighbours of the same leaf merged; a value shared by several spans becomes a
// segment whose leaf is a search over the next word.
func build(ss []span, w, n int) *node {
	nd := &node{w: w}
	add := func(lo, hi uint32, l leaf) {
		if k := len(nd.segs); k > 0 && nd.segs[k-1].leaf.same(l) {
			nd.segs[k-1].hi = hi
			return
		}
		nd.segs = append(nd.segs, seg{lo, hi, l})
	}
	ss = slices.Clone(ss) // the first span of a run may be cut
	for i := 0; i < len(ss); {
		cur := ss[i] // starts at the start of a value of word w
		fw, lw := cur.first[w], cur.last[w]
		if cur.last.below(w, n, ^uint32(0)) { // and ends at the end of one
			add(fw, lw, cur.leaf)
			i++
			continue
		}
		if lw > fw {
			add(fw, lw-1, cur.leaf)
		}
		// Value lw is shared by cur and the spans up to the one that reaches its end.
		k := i + 1
		for ss[k].last[w] == lw && !ss[k].last.below(w, n, ^uint32(0)) {
			k++
		}
		sub := slices.Clone(ss[i : k+1])
		sub[0].first = cur.last.with(w, n, lw, 0)
		sub[len(sub)-1].last = cur.last.with(w, n, lw, ^uint32(0))
		add(lw, lw, leaf{node: build(sub, w+1, n)})
		if ss[k].last[w] == lw {
			i = k + 1
		} else {
			ss[k].first = cur.last.with(w, n, lw+1, 0)
			i = k
		}
	}
	return nd
}

// gen writes a program backwards: rev[0] is its last instruction. The position of an instruction
// is its index in rev, so a jump written now to position p skips len(rev)-p-1 instructions.
type gen struct {
	rev      []bpf.Instruction
	ret      [2]int // position of the nearest return of each action, or -1
	base     uint32
	v4Search int // position of the IPv4 search, for IPv4-mapped sources
}

// target is where a jump goes: position at, or any return of act.
type target struct {
	ret bool
	act acl.Action
	at  int
}

func (g *gen) emit(ins bpf.Instruction) int {
	g.rev = append(g.rev, ins)
	p := len(g.rev) - 1
	if r, ok := ins.(bpf.RetConstant); ok {
		g.ret[actionOf(r.Val)] = p
	}
	return p
}

func actionOf(ret uint32) acl.Action {
	if ret == drop {
		return acl.Deny
	}
	return acl.Allow
}

func retOf(a acl.Action) uint32 {
	if a == acl.Allow {
		return keep
	}
	return drop
}

// skip returns how many instructions a jump written now skips to reach t, and whether a
// conditional jump (8-bit offsets) can.
func (g *gen) skip(t target) (int, bool) {
	at := t.at
	if t.ret {
		if at = g.ret[t.act]; at < 0 {
			return 0, false
		}
	}
	s := len(g.rev) - at - 1
	return s, s <= 0xff
}

// near writes, if needed, an instruction that a jump written next can reach and that leads to t:
// a return, which later jumps can share, or an unconditional jump (32-bit offset).
func (g *gen) near(t target) target {
	if t.ret {
		g.emit(bpf.RetConstant{Val: retOf(t.act)})
		return t
	}
	s, _ := g.skip(t)
	return target{at: g.emit(bpf.Jump{Skip: uint32(s)})}
}

// cond writes "if A <c> k goto t else goto f" and returns its position.
func (g *gen) cond(c bpf.JumpTest, k uint32, t, f target) target {
	for {
		st, okT := g.skip(t)
		sf, okF := g.skip(f)
		switch {
		case !okT:
			t = g.near(t)
		case !okF:
			f = g.near(f)
		default:
			return target{at: g.emit(bpf.JumpIf{Cond: c, Val: k, SkipTrue: uint8(st), SkipFalse: uint8(sf)})}
		}
	}
}

// fallInto makes the next instruction written fall through into t.
func (g *gen) fallInto(t target) {
	switch {
	case t.ret:
		g.emit(bpf.RetConstant{Val: retOf(t.act)})
	case t.at != len(g.rev)-1:
		g.near(t)
	}
}

// search writes the search of nd, whose word is in A, and returns where it starts. off is the
// offset of the address in the IP header.
func (g *gen) search(nd *node, off uint32) target {
	return g.segs(nd.segs, off)
}

// segs writes a binary search over segs, sorted and adjacent, and returns where it starts. A
// single value between two segments of the same leaf is one "jeq"; otherwise each split is one
// "jge", so the search costs one compare per boundary between segments.
func (g *gen) segs(segs []seg, off uint32) target {
	switch n := len(segs); {
	case n == 1:
		return g.leaf(segs[0].leaf, off)
	case n == 3 && segs[1].lo == segs[1].hi && segs[0].leaf.same(segs[2].leaf):
		in := g.leaf(segs[1].leaf, off)
		out := g.leaf(segs[0].leaf, off)
		return g.cond(bpf.JumpEqual, segs[1].lo, in, out)
	}
	mid := len(segs) / 2
	right := g.segs(segs[mid:], off)
	left := g.segs(segs[:mid], off)
	return g.cond(bpf.JumpGreaterOrEqual, segs[mid].lo, right, left)
}

// leaf writes what l needs, if anything, and returns where it starts.
func (g *gen) leaf(l leaf, off uint32) target {
	switch {
	case l.node != nil:
		g.fallInto(g.search(l.node, off))
		return target{at: g.emit(bpf.LoadAbsolute{Off: g.base + off + 4*uint32(l.node.w), Size: 4})}
	case l.mapped:
		g.near(target{at: g.v4Search})
		return target{at: g.emit(bpf.LoadAbsolute{Off: g.base + v6Src + 12, Size: 4})}
	}
	return target{ret: true, act: l.act}
}
