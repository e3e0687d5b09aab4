package acl

import "net/netip"

// DeniedIn reports whether a denies any address of p, and if so the first such address and the
// decision that denies it. It is what a lockout guard asks of a new ACL before it goes live.
// IPv4-mapped prefixes (::ffff:10.0.0.0/104) are checked as the IPv4 prefixes they denote.
func (a *ACL) DeniedIn(p netip.Prefix) (netip.Addr, Decision, bool) {
	p, err := normalPrefix(p.Masked())
	if err != nil {
		return netip.Addr{}, Decision{Action: Deny}, true // cannot be judged: fail closed
	}
	first, last := span(p)
	if p.Addr().Is4() {
		t := &a.v4
		// The segment holding first, then each one after it up to last.
		i := 0
		for i+1 < len(t.starts) && uint64(t.starts[i+1]) <= first.lo {
			i++
		}
		for ; i < len(t.starts) && uint64(t.starts[i]) <= last.lo; i++ {
			if t.vals[i]&1 == uint32(Deny) {
				at := max(uint64(t.starts[i]), first.lo)
				return addr4(uint32(at)), a.decision(t.vals[i]), true
			}
		}
		return netip.Addr{}, Decision{}, false
	}
	t := &a.v6
	i := 0
	for i+1 < len(t.starts) && !first.less(t.starts[i+1]) {
		i++
	}
	for ; i < len(t.starts) && !last.less(t.starts[i]); i++ {
		if t.vals[i]&1 == uint32(Deny) {
			at := t.starts[i]
			if at.less(first) {
				at = first
			}
			return addr6(at), a.decision(t.vals[i]), true
		}
	}
	return netip.Addr{}, Decision{}, false
}
