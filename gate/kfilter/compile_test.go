package kfilter

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/peergate/peergate/acl"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
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
	src = src.WithZone("")
	var forms []netip.Addr
	switch {
	case src.Is4():
		forms = append(forms, src)
		if v.family == unix.AF_INET6 {
			forms = append(forms, netip.AddrFrom16(src.As16()))
		}
	case src.Is4In6():
		if v.family == unix.AF_INET6 {
			forms = append(forms, src, src.Unmap())
		} else {
			forms = append(forms, src.Unmap())
		}
	case v.family == unix.AF_INET6:
		forms = append(forms, src)
	}
	for _, f := range forms {
		want := a.Decide(src).Action
		if got := v.decide(t, packet(f)); got != want {
			t.Fatalf("%s packet from %v: program says %v, Decide says %v", familyName(v.family), f, got, want)
		}
	}
	return len(forms)
}

func familyName(f int) string {
	if f == unix.AF_INET {
		return "AF_INET"
	}
	return "AF_INET6"
}

// edges returns, for each range of a, its first and last address, the addresses just outside it,
// and a random one inside; and the edges of the IPv4-mapped block.
func edges(r *rand.Rand, a *acl.ACL) []netip.Addr {
	var out []netip.Addr
	for rg := range a.Ranges() {
		out = append(out, rg.First, rg.Last, rg.First.Prev(), rg.Last.Next(), between(r, rg.First, rg.Last))
	}
	mapped := netip.MustParsePrefix("::ffff:0:0/96")
	out = append(out, mapped.Addr(), mapped.Addr().Prev(), netip.MustParseAddr("::ffff:ffff:ffff"),
		netip.MustParseAddr("::1:0:0:0"))
	return out
}

// between returns a random address in [lo, hi], which are of one family.
func between(r *rand.Rand, lo, hi netip.Addr) netip.Addr {
	l, h := lo.AsSlice(), hi.AsSlice()
	out := make([]byte, len(l))
	atLo, atHi := true, true
	for i := range out {
		min, max := 0, 255
		if atLo {
			min = int(l[i])
		}
		if atHi {
			max = int(h[i])
		}
		out[i] = byte(min + r.IntN(max-min+1))
		atLo = atLo && out[i] == l[i]
		atHi = atHi && out[i] == h[i]
	}
	a, _ := netip.AddrFromSlice(out)
	return a
}

// randomAddrs returns n random addresses: IPv4, IPv6 anywhere, IPv6 in the clusters genRules uses,
// and IPv4-mapped.
func randomAddrs(r *rand.Rand, n int) []netip.Addr {
	out := make([]netip.Addr, 0, n)
	for range n {
		var b [16]byte
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		switch r.IntN(5) {
		case 0:
			out = append(out, netip.AddrFrom4([4]byte(b[:4])))
		case 1:
			out = append(out, netip.AddrFrom4([4]byte{10, b[1] & 3, b[2], b[3]}))
		case 2:
			out = append(out, netip.AddrFrom16(b))
		case 3:
			copy(b[:], []byte{0x20, 0x01, 0x0d, 0xb8, 0, b[5] & 1, 0, b[7] & 3})
			out = append(out, netip.AddrFrom16(b))
		case 4:
			out = append(out, netip.AddrFrom16(netip.AddrFrom4([4]byte{10, b[1] & 3, b[2], b[3]}).As16()))
		}
	}
	return out
}

// genRules returns n random rules of the given shape.
func genRules(r *rand.Rand, shape string, n int) []acl.Rule {
	rules := make([]acl.Rule, 0, n)
	add := func(p netip.Prefix, act acl.Action) {
		rules = append(rules, acl.Rule{Prefix: p.Masked(), Action: act})
	}
	v4 := func() netip.Addr {
		return netip.AddrFrom4([4]byte{byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32())})
	}
	v6 := func() netip.Addr {
		var b [16]byte
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return netip.AddrFrom16(b)
	}
	for len(rules) < n {
		act := acl.Action(r.IntN(2))
		switch shape {
		case "v4": // anywhere, /0 to /32
			add(netip.PrefixFrom(v4(), r.IntN(33)), act)
		case "v4cluster": // nested and overlapping, in 10.0.0.0/14
			a := netip.AddrFrom4([4]byte{10, byte(r.IntN(4)), byte(r.IntN(256)), byte(r.IntN(256))})
			add(netip.PrefixFrom(a, 8+r.IntN(25)), act)
		case "v6": // anywhere, /0 to /128
			add(netip.PrefixFrom(v6(), r.IntN(129)), act)
		case "v6cluster": // nested in 2001:db8::/32, across word boundaries
			b := v6().As16()
			copy(b[:], []byte{0x20, 0x01, 0x0d, 0xb8, 0, b[5] & 1, 0, b[7] & 3})
			add(netip.PrefixFrom(netip.AddrFrom16(b), 32+r.IntN(97)), act)
		case "mapped": // IPv4-mapped spellings, and short IPv6 prefixes covering ::ffff:0:0/96
			if r.IntN(3) == 0 {
				add(netip.PrefixFrom(netip.IPv6Unspecified(), r.IntN(96)), act)
			} else {
				a := netip.AddrFrom4([4]byte{10, byte(r.IntN(4)), byte(r.IntN(256)), 0})
				add(netip.PrefixFrom(netip.AddrFrom16(a.As16()), 96+8+r.IntN(25)), act)
			}
		case "mixed":
			add(genRules(r, []string{"v4", "v4cluster", "v6", "v6cluster", "mapped"}[r.IntN(5)], 1)[0].Prefix, act)
		}
	}
	return rules
}

var shapes = []string{"v4", "v4cluster", "v6", "v6cluster", "mapped", "mixed"}

// TestCompileMatchesDecide compares the programs with ACL.Decide on random ACLs of every shape and
// of sizes from 0 to 1000 rules, at the edges of every range and at random addresses.
func TestCompileMatchesDecide(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	checks, acls := 0, 0
	for _, n := range []int{0, 1, 2, 5, 10, 50, 200, 1000} {
		for _, shape := range shapes {
			for range 4 {
				a := acl.MustNew(acl.Spec{Default: acl.Action(r.IntN(2)), Rules: genRules(r, shape, n)})
				probes := append(edges(r, a), randomAddrs(r, 2000)...)
				for _, family := range []int{unix.AF_INET, unix.AF_INET6} {
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
			for _, family := range []int{unix.AF_INET, unix.AF_INET6} {
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
	for _, family := range []int{unix.AF_INET, unix.AF_INET6} {
		v := newVM(t, a, family)
		for _, first := range []byte{0x00, 0x50, 0x70, 0xf5} {
			pkt := make([]byte, 60)
			pkt[0] = first
			if got := v.decide(t, pkt); got != acl.Allow {
				t.Errorf("%s: version %d: %v, want kept", familyName(family), first>>4, got)
			}
		}
		// An IPv6 packet on an AF_INET socket cannot happen; the IPv4 program leaves it to userspace.
		if family == unix.AF_INET {
			if got := v.decide(t, packet(netip.MustParseAddr("2001:db8::1"))); got != acl.Allow {
				t.Errorf("AF_INET: IPv6 packet: %v, want kept", got)
			}
		}
	}
}

func TestCompileErrors(t *testing.T) {
	a := acl.MustNew(acl.Spec{Default: acl.Allow})
	if _, err := Compile(a, unix.AF_UNIX); !errors.Is(err, ErrFamily) {
		t.Errorf("AF_UNIX: %v, want ErrFamily", err)
	}
	if _, err := Compile(nil, unix.AF_INET); !errors.Is(err, ErrNoACL) {
		t.Errorf("nil ACL: %v, want ErrNoACL", err)
	}
	// A 1M-rule blocklist is refused at once, before any code is generated.
	rules := genRules(rand.New(rand.NewPCG(1, 1)), "v4", 100_000)
	if _, err := Compile(acl.MustNew(acl.Spec{Default: acl.Allow, Rules: rules}), unix.AF_INET); !errors.Is(err, ErrTooLarge) {
		t.Errorf("100k rules: %v, want ErrTooLarge", err)
	}
}

// TestCompileUsesNetOff: the kernel's program loads every byte through SKF_NET_OFF.
func TestCompileUsesNetOff(t *testing.T) {
	a := acl.MustNew(acl.Spec{Default: acl.Deny, Rules: genRules(rand.New(rand.NewPCG(5, 5)), "mixed", 200)})
	raw, err := Compile(a, unix.AF_INET6)
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
		{"v4/32", unix.AF_INET},
		{"v4/24", unix.AF_INET},
		{"v4/32", unix.AF_INET6},
		{"v6/128", unix.AF_INET6},
		{"v6/64", unix.AF_INET6},
		{"v6/48", unix.AF_INET6},
		{"v6/128 in one /64", unix.AF_INET6},
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
			for _, p := range append(edges(r, a), randomAddrs(r, 5000)...) {
				checks += v.check(t, a, p)
			}
			t.Logf("largest that fits: %d rules, %d instructions; %d packets compared with Decide", lo, len(raw), checks)
		})
	}
}
