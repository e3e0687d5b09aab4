package kfilter

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"syscall"
	"testing"

	"github.com/peergate/peergate/acl"
	"github.com/peergate/peergate/internal/acltest"
)

// FuzzCompile builds an ACL from arbitrary bytes, compiles it for both families and compares the
// programs, run in the BPF VM, with ACL.Decide at the edges of every range, at addresses taken from
// the input, and at random ones.
//
// Input: byte 0 is the default action; then records of 18 bytes: flags (bit 0 action, bit 1 IPv6,
// bit 2 written IPv4-mapped), prefix length, 16 address bytes (IPv4 uses the first 4). A last
// short record is an address to probe.
func FuzzCompile(f *testing.F) {
	rec := func(flags, bits byte, addr string) []byte {
		b := netip.MustParseAddr(addr).AsSlice()
		return append(append([]byte{flags, bits}, b...), make([]byte, 16-len(b))...)
	}
	cat := func(parts ...[]byte) []byte {
		var out []byte
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	f.Add([]byte{1})
	f.Add(cat([]byte{1}, rec(0, 32, "127.0.0.2"), rec(2, 128, "::1")))
	f.Add(cat([]byte{0}, rec(1, 8, "10.0.0.0"), rec(0, 16, "10.1.0.0"), rec(3, 32, "2001:db8::"), rec(4, 16, "10.2.0.0")))
	f.Add(cat([]byte{1}, rec(2, 0, "::"), rec(1, 96, "::ffff:0:0"), rec(3, 64, "2001:db8:1:2::"), []byte{0xff, 0xff, 0, 0}))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		spec := acl.Spec{Default: acl.Action(data[0] & 1)}
		data = data[1:]
		for len(data) >= 18 && len(spec.Rules) < 300 {
			flags, bits, b := data[0], int(data[1]), [16]byte(data[2:18])
			data = data[18:]
			var p netip.Prefix
			switch {
			case flags&2 != 0:
				p = netip.PrefixFrom(netip.AddrFrom16(b), bits%129)
			case flags&4 != 0:
				p = netip.PrefixFrom(netip.AddrFrom16(netip.AddrFrom4([4]byte(b[:4])).As16()), 96+bits%33)
			default:
				p = netip.PrefixFrom(netip.AddrFrom4([4]byte(b[:4])), bits%33)
			}
			spec.Rules = append(spec.Rules, acl.Rule{Prefix: p.Masked(), Action: acl.Action(flags & 1)})
		}
		a, err := acl.New(spec)
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		r := rand.New(rand.NewPCG(uint64(len(spec.Rules)), 1))
		probes := append(acltest.RangeEdges(r, a, 0), acltest.Addrs(r, 200)...)
		if len(data) >= 4 {
			probes = append(probes, netip.AddrFrom4([4]byte(data[:4])))
		}
		if len(data) >= 16 {
			probes = append(probes, netip.AddrFrom16([16]byte(data[:16])))
		}
		for _, family := range []int{syscall.AF_INET, syscall.AF_INET6} {
			raw, err := compile(a, family, 0)
			if errors.Is(err, ErrTooLarge) {
				continue
			}
			if err != nil {
				t.Fatalf("compile: %v", err)
			}
			v := vmOf(t, raw, family)
			for _, p := range probes {
				v.check(t, a, p)
			}
		}
	})
}
