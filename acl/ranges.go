package acl

import (
	"iter"
	"net/netip"

	"github.com/peergate/peergate/internal/rangetab"
)

// Range is a run of consecutive addresses of one family, First to Last inclusive, that the ACL
// decides alike: by the same rule, or all by the default.
type Range struct {
	First, Last netip.Addr
	Decision    Decision
}

// Ranges returns the ACL's compiled form: the IPv4 space (0.0.0.0 to 255.255.255.255) and then the
// IPv6 space (:: to ffff:…:ffff), each cut into ranges in ascending order, with no gap and no
// overlap. Two neighbouring ranges never share a deciding rule, but they may share an action. It
// is what a consumer needs to translate the ACL into another form, such as a socket filter, and
// costs no more than a walk of the table Decide searches.
//
// For every address in a range, Decide returns the range's Decision, with one exception: Decide
// judges an IPv4-mapped IPv6 address (::ffff:0:0/96) as the IPv4 address it carries, whereas the
// IPv6 ranges over ::ffff:0:0/96 give what the IPv6 rules alone would decide there. A consumer
// that sees IPv6 packets must send those addresses to the IPv4 ranges.
func (a *ACL) Ranges() iter.Seq[Range] {
	return func(yield func(Range) bool) {
		t4 := &a.v4
		for i, s := range t4.Segs {
			last := uint32(1<<32 - 1)
			if i+1 < len(t4.Segs) {
				last = t4.Segs[i+1].Start - 1
			}
			r := Range{First: rangetab.Addr4(s.Start), Last: rangetab.Addr4(last), Decision: a.decision(t4.Segs[i].Val)}
			if !yield(r) {
				return
			}
		}
		t6 := &a.v6
		for i, s := range t6.Segs {
			last := rangetab.Max6
			if i+1 < len(t6.Segs) {
				last = t6.Segs[i+1].Start.Prev()
			}
			r := Range{First: rangetab.Addr6(s.Start), Last: rangetab.Addr6(last), Decision: a.decision(t6.Segs[i].Val)}
			if !yield(r) {
				return
			}
		}
	}
}
