package acl

import (
	"net/netip"

	"github.com/peergate/peergate/internal/rangetab"
)

// DeniedIn reports whether a denies any address of p, and if so the first such address and the
// decision that denies it. It is what a lockout guard asks of a new ACL before it goes live.
// IPv4-mapped prefixes (::ffff:10.0.0.0/104) are checked as the IPv4 prefixes they denote.
func (a *ACL) DeniedIn(p netip.Prefix) (netip.Addr, Decision, bool) {
	p, err := normalPrefix(p.Masked())
	if err != nil {
		return netip.Addr{}, Decision{Action: Deny}, true // cannot be judged: fail closed
	}
	first, last := rangetab.Span(p)
	if p.Addr().Is4() {
		t := &a.v4
		// The segment holding first, then each one after it up to last.
		i := 0
		for i+1 < len(t.Segs) && uint64(t.Segs[i+1].Start) <= first.Lo {
			i++
		}
		for ; i < len(t.Segs) && uint64(t.Segs[i].Start) <= last.Lo; i++ {
			if t.Segs[i].Val&1 == uint32(Deny) {
				at := max(uint64(t.Segs[i].Start), first.Lo)
				return rangetab.Addr4(uint32(at)), a.decision(t.Segs[i].Val), true
			}
		}
		return netip.Addr{}, Decision{}, false
	}
	t := &a.v6
	i := 0
	for i+1 < len(t.Segs) && !first.Less(t.Segs[i+1].Start) {
		i++
	}
	for ; i < len(t.Segs) && !last.Less(t.Segs[i].Start); i++ {
		if t.Segs[i].Val&1 == uint32(Deny) {
			at := t.Segs[i].Start
			if at.Less(first) {
				at = first
			}
			return rangetab.Addr6(at), a.decision(t.Segs[i].Val), true
		}
	}
	return netip.Addr{}, Decision{}, false
}
