package acl

import (
	"encoding/binary"
	"iter"
	"net/netip"
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
		for i, s := range t4.starts {
			last := uint32(1<<32 - 1)
			if i+1 < len(t4.starts) {
				last = t4.starts[i+1] - 1
			}
			r := Range{First: addr4(s), Last: addr4(last), Decision: a.decision(t4.vals[i])}
			if !yield(r) {
				return
			}
		}
		t6 := &a.v6
		for i, s := range t6.starts {
			last := u128{^uint64(0), ^uint64(0)}
			if i+1 < len(t6.starts) {
				last = t6.starts[i+1].prev()
			}
			r := Range{First: addr6(s), Last: addr6(last), Decision: a.decision(t6.vals[i])}
			if !yield(r) {
				return
			}
		}
	}
}

func addr4(v uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

func addr6(v u128) netip.Addr {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], v.hi)
	binary.BigEndian.PutUint64(b[8:], v.lo)
	return netip.AddrFrom16(b)
}

// prev returns x-1; x must not be 0.
func (x u128) prev() u128 {
	if x.lo == 0 {
		return u128{x.hi - 1, ^uint64(0)}
	}
	return u128{x.hi, x.lo - 1}
}
