package kfilter

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"syscall"
	"testing"

	"github.com/peergate/peergate/acl"
	"github.com/peergate/peergate/internal/acltest"
	"golang.org/x/net/bpf"
)

// The programs are checked in the classic BPF VM of golang.org/x/net/bpf, which has no SKF_NET_OFF
// base: they are compiled with base 0 and run on packets that start at the IP header. The kernel's
// programs differ only in the constant added to the offset of each load.

// packet returns the IP header of a TCP SYN from src, followed by a TCP header: IPv4 (20 bytes)
// for an IPv4 src, IPv6 (40 bytes) for any other, an IPv4-mapped src included.
func packet(src netip.Addr) []byte {
	if src.Is4() {
		p := make([]byte, 20+20)
		p[0], p[9] = 0x45, 6 // version 4, header 5 words; protocol TCP
		b := src.As4()
		copy(p[12:], b[:])
		copy(p[16:], []byte{127, 0, 0, 1})
		return p
	}
	p := make([]byte, 40+20)
	p[0], p[6], p[7] = 0x60, 6, 64 // version 6; next header TCP; hop limit
	b := src.As16()
	copy(p[8:], b[:])
	p[39] = 1 // destination ::1
	return p
}

// vm is a compiled program ready to run in the VM.
type vm struct {
	*bpf.VM
	family int
	len    int
}

func newVM(t testing.TB, a *acl.ACL, family int) *vm {
	t.Helper()
	raw, err := compile(a, family, 0)
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	return vmOf(t, raw, family)
}

func vmOf(t testing.TB, raw []bpf.RawInstruction, family int) *vm {
	t.Helper()
	if len(raw) > MaxInstructions {
		t.Fatalf("%d instructions", len(raw))
	}
	prog, ok := bpf.Disassemble(raw)
	if !ok {
		t.Fatal("program does not disassemble")
	}
	v, err := bpf.NewVM(prog) // checks that every jump lands inside and the last instruction returns
	if err != nil {
		t.Fatalf("VM: %v", err)
	}
	return &vm{v, family, len(raw)}
}

// decide runs the program on a SYN from src and returns whether it keeps the packet.
func (v *vm) decide(t testing.TB, pkt []byte) acl.Action {
	t.Helper()
	n, err := v.Run(pkt)
	switch {
	case err != nil:
		t.Fatalf("run: %v", err)
	case n == keep:
		return acl.Allow
	case n == drop:
		return acl.Deny
	}
	t.Fatalf("program returned %#x", n)
	return 0
}

// check compares the program with a.Decide for src, sent as the families of v's socket can see it:
// an IPv4 address in an IPv4 packet (and, for AF_INET6, as an IPv4-mapped source in an IPv6 packet),
// an IPv6 address in an IPv6 packet. It returns the number of comparisons.
func (v *vm) check(t testing.TB, a *acl.ACL, src netip.Addr) int {
	t.Helper()
	if !src.IsValid() {
		return 0 // the neighbour of the first or last address
	}
	return v.expect(t, src, a.Decide(src).Action, "Decide")
}

// expect checks that the program gives want for src (which must be valid) in every form of it
// v's family can see (see check); by names where want comes from. It returns the number of
// comparisons.
func (v *vm) expect(t testing.TB, src netip.Addr, want acl.Action, by string) int {
	t.Helper()
	src = src.WithZone("")
	var forms []netip.Addr
	switch {
	case src.Is4():
		forms = append(forms, src)
		if v.family == syscall.AF_INET6 {
			forms = append(forms, netip.AddrFrom16(src.As16()))
		}
	case src.Is4In6():
		if v.family == syscall.AF_INET6 {
			forms = append(forms, src, src.Unmap())
		} else {
			forms = append(forms, src.Unmap())
		}
	case v.family == syscall.AF_INET6:
		forms = append(forms, src)
	}
	for _, f := range forms {
		if got := v.decide(t, packet(f)); got != want {
			t.Fatalf("%s packet from %v: program says %v, %s says %v", familyName(v.family), f, got, by, want)
		}
	}
	return len(forms)
}

// TestCompileVectors runs the conformance vectors (internal/acltest) through the classic BPF
// programs of both families, in the VM: the action only, as a socket filter keeps or drops; the
// unix checks have no packet.
func TestCompileVectors(t *testing.T) {
	acltest.Run(t, func(t *testing.T, a *acl.ACL, cases []acltest.Case) {
		for _, family := range []int{syscall.AF_INET, syscall.AF_INET6} {
			v := newVM(t, a, family)
			for _, c := range cases {
				if !c.Unix {
					v.expect(t, c.Addr, c.Action, "the vector")
				}
			}
		}
	})
}

func familyName(f int) string {
	if f == syscall.AF_INET {
		return "AF_INET"
	}
	return "AF_INET6"
}

// TestCompileMatchesDecide compares the programs with ACL.Decide on random ACLs of every shape and
// of sizes from 0 to 1000 rules (3 of each), at the edges of every range and at random addresses.
func TestCompileMatchesDecide(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	checks, acls := 0, 0
	for _, n := range []int{0, 1, 2, 5, 10, 50, 200, 1000} {
		for _, shape := range acltest.Shapes {
			for range 3 {
				a := acl.MustNew(acl.Spec{Default: acl.Action(r.IntN(2)), Rules: acltest.Rules(r, shape, n)})
				probes := append(acltest.RangeEdges(r, a, 0), acltest.Addrs(r, 2000)...)
				for _, family := range []int{syscall.AF_INET, syscall.AF_INET6} {
					raw, err := compile(a, family, 0)
					if errors.Is(err, ErrTooLarge) {
						t.Logf("%s, %d rules, %s: %v", shape, n, familyName(family), err)
						continue
					}
					if err != nil {
						t.Fatal(err)
					}
					v := vmOf(t, raw, family)
					for _, p := range probes {
						checks += v.check(t, a, p)
					}
					acls++
				}
			}
		}
	}
	t.Logf("%d programs, %d packets compared with Decide", acls, checks)
}

func TestCompileEdgeCases(t *testing.T) {
	for _, tc := range []struct {
		name  string
		spec  acl.Spec
		addrs []string
	}{
		{"allow all", acl.Spec{Default: acl.Allow}, []string{"0.0.0.0", "255.255.255.255", "::", "::1"}},
		{"deny all", acl.Spec{Default: acl.Deny}, []string{"0.0.0.0", "::ffff:1.2.3.4", "::1"}},
		{"whole spaces", acl.Spec{Default: acl.Deny, Rules: []acl.Rule{
			{Prefix: netip.MustParsePrefix("0.0.0.0/0"), Action: acl.Allow},
			{Prefix: netip.MustParsePrefix("::/0"), Action: acl.Allow},
			{Prefix: netip.MustParsePrefix("255.255.255.255/32"), Action: acl.Deny},
			{Prefix: netip.MustParsePrefix("0.0.0.0/32"), Action: acl.Deny},
			{Prefix: netip.MustParsePrefix("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"), Action: acl.Deny},
			{Prefix: netip.MustParsePrefix("::/128"), Action: acl.Deny},
		}}, []string{"0.0.0.0", "0.0.0.1", "255.255.255.254", "255.255.255.255", "::", "::1",
			"ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "::ffff:0.0.0.0"}},
		{"v6 rules cover the mapped block, v4 rules decide it", acl.Spec{Default: acl.Allow, Rules: []acl.Rule{
			{Prefix: netip.MustParsePrefix("::/0"), Action: acl.Deny},
			{Prefix: netip.MustParsePrefix("::ffff:0:0/96"), Action: acl.Deny}, // the IPv4 /0
			{Prefix: netip.MustParsePrefix("127.0.0.0/8"), Action: acl.Allow},
		}}, []string{"127.0.0.1", "::ffff:127.0.0.1", "::ffff:128.0.0.1", "::fffe:ffff:ffff", "::1:0:0:0", "::1"}},
		{"one address", acl.Spec{Default: acl.Allow, Rules: []acl.Rule{
			{Prefix: netip.MustParsePrefix("127.0.0.2/32"), Action: acl.Deny},
			{Prefix: netip.MustParsePrefix("::1/128"), Action: acl.Deny},
		}}, []string{"127.0.0.1", "127.0.0.2", "127.0.0.3", "::ffff:127.0.0.2", "::", "::1", "::2", "::1:0:0:1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := acl.MustNew(tc.spec)
			for _, family := range []int{syscall.AF_INET, syscall.AF_INET6} {
				v := newVM(t, a, family)
				for _, s := range tc.addrs {
					v.check(t, a, netip.MustParseAddr(s))
				}
			}
		})
	}
}

// TestCompileOtherPackets: what is not IPv4 or IPv6 is kept, for the userspace check to decide.
func TestCompileOtherPackets(t *testing.T) {
	a := acl.MustNew(acl.Spec{Default: acl.Deny})
	for _, family := range []int{syscall.AF_INET, syscall.AF_INET6} {
		v := newVM(t, a, family)
		for _, first := range []byte{0x00, 0x50, 0x70, 0xf5} {
			pkt := make([]byte, 60)
			pkt[0] = first
			if got := v.decide(t, pkt); got != acl.Allow {
				t.Errorf("%s: version %d: %v, want kept", familyName(family), first>>4, got)
			}
		}
		// An IPv6 packet on an AF_INET socket cannot happen; the IPv4 program leaves it to userspace.
		if family == syscall.AF_INET {
			if got := v.decide(t, packet(netip.MustParseAddr("2001:db8::1"))); got != acl.Allow {
				t.Errorf("AF_INET: IPv6 packet: %v, want kept", got)
			}
		}
	}
}

func TestCompileErrors(t *testing.T) {
	a := acl.MustNew(acl.Spec{Default: acl.Allow})
	if _, err := Compile(a, syscall.AF_UNIX); !errors.Is(err, ErrFamily) {
		t.Errorf("AF_UNIX: %v, want ErrFamily", err)
	}
	if _, err := Compile(nil, syscall.AF_INET); !errors.Is(err, ErrNoACL) {
		t.Errorf("nil ACL: %v, want ErrNoACL", err)
	}
	// A 1M-rule blocklist is refused at once, before any code is generated.
	rules := acltest.Seeded(acltest.V4, 100_000, 1)
	if _, err := Compile(acl.MustNew(acl.Spec{Default: acl.Allow, Rules: rules}), syscall.AF_INET); !errors.Is(err, ErrTooLarge) {
		t.Errorf("100k rules: %v, want ErrTooLarge", err)
	}
}

// TestCompileUsesNetOff: the kernel's program loads every byte through SKF_NET_OFF.
func TestCompileUsesNetOff(t *testing.T) {
	a := acl.MustNew(acl.Spec{Default: acl.Deny, Rules: acltest.Seeded(acltest.Mixed, 200, 5)})
	raw, err := Compile(a, syscall.AF_INET6)
	if err != nil {
		t.Fatal(err)
	}
	prog, _ := bpf.Disassemble(raw)
	loads := 0
	for i, ins := range prog {
		if l, ok := ins.(bpf.LoadAbsolute); ok {
			loads++
			if l.Off < netOff || l.Off >= netOff+40 {
				t.Fatalf("instruction %d: %v: offset not within the IP header at SKF_NET_OFF", i, ins)
			}
		}
	}
	if loads == 0 {
		t.Fatal("no loads")
	}
}

// blocklist returns n distinct deny rules of the given kind, scattered at random, for an
// allow-by-default ACL: the usual shape of a large ACL. The first n of a longer list are the same.
func blocklist(kind string, n int) []acl.Rule {
	r := rand.New(rand.NewPCG(42, uint64(len(kind))))
	seen := map[netip.Prefix]bool{}
	var rules []acl.Rule
	for len(rules) < n {
		var b [16]byte
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		var p netip.Prefix
		switch kind {
		case "v4/32":
			p = netip.PrefixFrom(netip.AddrFrom4([4]byte(b[:4])), 32)
		case "v4/24":
			p = netip.PrefixFrom(netip.AddrFrom4([4]byte(b[:4])), 24)
		case "v6/128":
			b[0] = 0x20 | b[0]&0x1f // global unicast, 2000::/3
			p = netip.PrefixFrom(netip.AddrFrom16(b), 128)
		case "v6/64":
			b[0] = 0x20 | b[0]&0x1f
			p = netip.PrefixFrom(netip.AddrFrom16(b), 64)
		case "v6/48":
			b[0] = 0x20 | b[0]&0x1f
			p = netip.PrefixFrom(netip.AddrFrom16(b), 48)
		case "v6/128 in one /64": // one subnet's hosts
			copy(b[:8], []byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1})
			p = netip.PrefixFrom(netip.AddrFrom16(b), 128)
		}
		if p = p.Masked(); !seen[p] {
			seen[p] = true
			rules = append(rules, acl.Rule{Prefix: p, Action: acl.Deny})
		}
	}
	return rules
}

// TestLargestThatFits finds, for blocklists of each kind, the largest that compiles, checks it in
// the VM, and checks that one more rule gives ErrTooLarge.
func TestLargestThatFits(t *testing.T) {
	for _, tc := range []struct {
		kind   string
		family int
	}{
		{"v4/32", syscall.AF_INET},
		{"v4/24", syscall.AF_INET},
		{"v4/32", syscall.AF_INET6},
		{"v6/128", syscall.AF_INET6},
		{"v6/64", syscall.AF_INET6},
		{"v6/48", syscall.AF_INET6},
		{"v6/128 in one /64", syscall.AF_INET6},
	} {
		t.Run(fmt.Sprintf("%s/%s", familyName(tc.family), tc.kind), func(t *testing.T) {
			all := blocklist(tc.kind, 8192)
			fits := func(n int) ([]bpf.RawInstruction, *acl.ACL, error) {
				a := acl.MustNew(acl.Spec{Default: acl.Allow, Rules: all[:n]})
				raw, err := compile(a, tc.family, 0)
				if err != nil && !errors.Is(err, ErrTooLarge) {
					t.Fatal(err)
				}
				return raw, a, err
			}
			lo, hi := 0, len(all) // fits(lo), not fits(hi)
			if _, _, err := fits(hi); err == nil {
				t.Fatalf("%d rules fit", hi)
			}
			for hi-lo > 1 {
				if mid := (lo + hi) / 2; func() bool { _, _, err := fits(mid); return err == nil }() {
					lo = mid
				} else {
					hi = mid
				}
			}
			raw, a, _ := fits(lo)
			if _, _, err := fits(lo + 1); !errors.Is(err, ErrTooLarge) {
				t.Fatalf("%d rules: %v, want ErrTooLarge", lo+1, err)
			}
			v := vmOf(t, raw, tc.family)
			checks := 0
			r := rand.New(rand.NewPCG(1, 1))
			for _, p := range append(acltest.RangeEdges(r, a, 0), acltest.Addrs(r, 5000)...) {
				checks += v.check(t, a, p)
			}
			t.Logf("largest that fits: %d rules, %d instructions; %d packets compared with Decide", lo, len(raw), checks)
		})
	}
}
