package acltest

import (
	"net/netip"

	"github.com/peergate/peergate/acl"
)

// Decide is the reference decision, written as the design states it and for nothing but
// clarity: the address loses its zone and its IPv4-mapped form; every rule is scanned, a rule
// written IPv4-mapped (::ffff:a.b.c.d/n, n ≥ 96) standing for its IPv4 prefix /n-96; the longest
// prefix containing the address decides, deny winning over allow on the same prefix; where none
// contains it, def decides. It returns the action and the deciding prefix (in its IPv4 form for a
// mapped rule; the zero Prefix when def decided).
func Decide(def acl.Action, rules []acl.Rule, addr netip.Addr) (acl.Action, netip.Prefix) {
	addr = addr.Unmap().WithZone("")
	found := false
	var bestAct acl.Action
	var best netip.Prefix
	for _, r := range rules {
		p := Normal(r.Prefix)
		if !p.Contains(addr) {
			continue
		}
		if !found || p.Bits() > best.Bits() || p.Bits() == best.Bits() && r.Action == acl.Deny {
			found, best, bestAct = true, p, r.Action
		}
	}
	if !found {
		return def, netip.Prefix{}
	}
	return bestAct, best
}

// Normal returns p as the ACL judges it: an IPv4-mapped prefix of 96 bits or more as its IPv4
// prefix, any other unchanged.
func Normal(p netip.Prefix) netip.Prefix {
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p
}
