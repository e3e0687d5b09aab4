package acl

import (
	"encoding/binary"

	"github.com/peergate/peergate/internal/rangetab"
)

// The compiled form of an ACL. Rules are flattened into a partition of each address family into
// contiguous segments, each decided by one rule (or the default). A segment is stored as its first
// address and a value packing the action and the deciding rule, so one binary search answers both
// "allow or deny?" and "which rule?" with no allocation. A radix index over the top bits of the
// address narrows the search to a few segments. The table is package rangetab's, shared with the
// ban layer (gate/bans).
//
// cidranger was measured for this job and rejected for the hot path: at 1 M disjoint IPv4 prefixes
// its Contains took ~3.6-4.0 µs and 1 alloc per lookup and its trie held ~420 MB, against ~0.1 µs,
// 0 allocs and ~16 MB for this table (see BenchmarkDecide1M and bench/ACL.md).

// u128 is an address as a 128-bit number; IPv4 addresses use the low 32 bits.
type u128 = rangetab.U128

// packVal encodes a segment's decider: bit 0 is the action, the rest is the index of the rule + 1,
// with 0 meaning the default decided.
func packVal(rule int, act Action) uint32 { return uint32(rule+1)<<1 | uint32(act) }

func (a *ACL) decision(v uint32) Decision {
	d := Decision{Action: Action(v & 1)}
	if r := v >> 1; r != 0 {
		d.Rule = &a.rules[r-1]
	}
	return d
}

// compile builds the lookup tables from a.rules, which New has sorted: IPv4 rules first, and a
// prefix before the prefixes it contains.
func (a *ACL) compile() {
	n4 := 0
	for n4 < len(a.rules) && a.rules[n4].Prefix.Addr().Is4() {
		n4++
	}
	a.v4, a.v6 = rangetab.Build(n4, len(a.rules), packVal(-1, a.def),
		func(i int) (first, last u128) { return rangetab.Span(a.rules[i].Prefix) },
		func(i int, outer uint32, nested bool) uint32 {
			if nested && a.rules[i].Prefix == a.rules[i-1].Prefix {
				return outer // same prefix again: the first one, deny before allow, decides
			}
			return packVal(i, a.rules[i].Action)
		})
}

func be32(b [4]byte) uint32 { return binary.BigEndian.Uint32(b[:]) }

func be128(b [16]byte) u128 {
	return u128{Hi: binary.BigEndian.Uint64(b[:8]), Lo: binary.BigEndian.Uint64(b[8:])}
}
