package hostsaccess

import (
	"net/netip"

	"github.com/peergate/peergate/acl"
)

// node is a binary trie over the bits of one address family. A node is either a leaf, which gives
// every address under it the same value, or has exactly two children. Operations take ownership
// of the tries they are given and return the result; no node is shared between two tries.
type node[T comparable] struct {
	kids *[2]*node[T]
	val  T     // leaves only
	hops uint8 // label tries, during rule generation: the actions that could decide the subtree
}

func leaf[T comparable](v T) *node[T] { return &node[T]{val: v} }

// split turns leaf n into an inner node whose two children carry its value.
func (n *node[T]) split() {
	n.kids = &[2]*node[T]{leaf(n.val), leaf(n.val)}
}

// collapse turns n back into a leaf when both children are leaves with the same value.
func (n *node[T]) collapse() *node[T] {
	if k := n.kids; k != nil && k[0].kids == nil && k[1].kids == nil && k[0].val == k[1].val {
		n.val, n.kids = k[0].val, nil
	}
	return n
}

func bitAt(b []byte, i int) int { return int(b[i/8]>>(7-i%8)) & 1 }

// paint gives every address of the prefix (bytes b, length bits) the value v.
func paint[T comparable](n *node[T], b []byte, bits, depth int, v T) *node[T] {
	if depth == bits {
		return leaf(v)
	}
	if n.kids == nil {
		if n.val == v {
			return n
		}
		n.split()
	}
	i := bitAt(b, depth)
	n.kids[i] = paint(n.kids[i], b, bits, depth+1, v)
	return n.collapse()
}

// andNot returns the set a minus the set b.
func andNot(a, b *node[bool]) *node[bool] {
	switch {
	case b.kids == nil && b.val:
		return leaf(false)
	case b.kids == nil, a.kids == nil && !a.val:
		return a
	case a.kids == nil:
		a.split()
	}
	a.kids[0] = andNot(a.kids[0], b.kids[0])
	a.kids[1] = andNot(a.kids[1], b.kids[1])
	return a.collapse()
}

// overlay gives the addresses in set m the label v, and leaves the others as dst has them.
func overlay(dst *node[label], m *node[bool], v label) *node[label] {
	if m.kids == nil {
		if m.val {
			return leaf(v)
		}
		return dst
	}
	if dst.kids == nil {
		dst.split()
	}
	dst.kids[0] = overlay(dst.kids[0], m.kids[0], v)
	dst.kids[1] = overlay(dst.kids[1], m.kids[1], v)
	return dst.collapse()
}

// set is a set of addresses: one trie per family.
type set struct{ v4, v6 *node[bool] }

func emptySet() set { return set{leaf(false), leaf(false)} }

func (s set) empty() bool {
	return s.v4.kids == nil && !s.v4.val && s.v6.kids == nil && !s.v6.val
}

// add adds the addresses of p to s.
func (s *set) add(p netip.Prefix) {
	b := p.Addr().AsSlice()
	if p.Addr().Is4() {
		s.v4 = paint(s.v4, b, p.Bits(), 0, true)
	} else {
		s.v6 = paint(s.v6, b, p.Bits(), 0, true)
	}
}

func (s set) minus(t set) set { return set{andNot(s.v4, t.v4), andNot(s.v6, t.v6)} }

// label is what tcpd does with the addresses of a region, and which entry decided it (the zero
// Origin for tcpd's final "grant"). any marks addresses no peer is ever judged as
// (::ffff:0:0/96, which peergate judges as IPv4): either action will do.
type label struct {
	act    acl.Action
	origin acl.Origin
	any    bool
}

const (
	hopDeny  = 1 << acl.Deny
	hopAllow = 1 << acl.Allow
)

// computeHops is the second pass of ORTC (Draves et al., "Constructing optimal IP routing
// tables", 1999): the set of actions that could decide each subtree with fewest rules. A leaf
// has its own action; an inner node the intersection of its children's sets if not empty, else
// their union.
func computeHops(n *node[label]) uint8 {
	if n.kids == nil {
		n.hops = 1 << n.val.act
		if n.val.any {
			n.hops = hopDeny | hopAllow
		}
		return n.hops
	}
	a, b := computeHops(n.kids[0]), computeHops(n.kids[1])
	n.hops = a & b
	if n.hops == 0 {
		n.hops = a | b
	}
	return n.hops
}

// emitter is the third pass of ORTC: walking down, a node whose hop set lacks the action it
// inherits gets a rule. It also gives each rule the origin of the largest region it decides.
type emitter struct {
	rules     []acl.Rule
	depth     []int // per rule: the prefix length of the region its origin came from
	defOrigin acl.Origin
	defDepth  int
	bad       bool // a leaf got an action other than its own: a bug
}

// walk emits the rules under n, whose prefix is the first depth bits of b, given that the action
// decided above n is act by rule cur (-1: the default).
func (e *emitter) walk(n *node[label], b []byte, depth int, act acl.Action, cur int) {
	if n.hops&(1<<act) == 0 {
		act = 1 - act
		a, _ := netip.AddrFromSlice(b)
		e.rules = append(e.rules, acl.Rule{Prefix: netip.PrefixFrom(a, depth), Action: act})
		e.depth = append(e.depth, len(b)*8+1)
		cur = len(e.rules) - 1
	}
	if n.kids == nil {
		switch {
		case n.val.any:
		case n.val.act != act:
			e.bad = true
		case cur < 0 && depth < e.defDepth:
			e.defOrigin, e.defDepth = n.val.origin, depth
		case cur >= 0 && depth < e.depth[cur]:
			e.rules[cur].Origin, e.depth[cur] = n.val.origin, depth
		}
		return
	}
	for i := range 2 {
		b[depth/8] |= byte(i) << (7 - depth%8)
		e.walk(n.kids[i], b, depth+1, act, cur)
		b[depth/8] &^= 1 << (7 - depth%8)
	}
}
