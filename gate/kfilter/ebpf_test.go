//go:build linux

package kfilter

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/peergate/peergate/acl"
	"github.com/peergate/peergate/internal/acltest"
	"github.com/peergate/peergate/internal/kerneltest"
)

var (
	ebpfOnce sync.Once
	ebpfErr  error
)

// needEBPF skips t, with the reason, where the eBPF filter cannot be loaded (no CAP_BPF, a
// sandbox without bpf(2)).
func needEBPF(t testing.TB) {
	t.Helper()
	ebpfOnce.Do(func() { ebpfErr = EBPFAvailable() })
	if ebpfErr != nil {
		t.Skipf("eBPF socket filter unavailable here: %v", ebpfErr)
	}
}

func newEBPF(t testing.TB) *EBPF {
	t.Helper()
	needEBPF(t)
	f, err := NewEBPF()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// frame returns an Ethernet frame carrying a TCP segment from src with the given TCP flags. For
// IPv4, opts words of IP options (IHL = 5 + opts); for IPv6, ext makes a hop-by-hop extension
// header sit between the fixed header and TCP.
func frame(src netip.Addr, flags byte, opts int, ext bool) []byte {
	eth := make([]byte, 14)
	eth[0] = 2 // a locally administered destination MAC
	var ip []byte
	if src.Is4() {
		ip = make([]byte, 20+4*opts+20)
		ip[0], ip[8], ip[9] = 0x45+byte(opts), 64, 6
		for i := range 4 * opts {
			ip[20+i] = 1 // NOP options
		}
		b := src.As4()
		copy(ip[12:], b[:])
		copy(ip[16:], []byte{127, 0, 0, 1})
		ip[2], ip[3] = byte(len(ip)>>8), byte(len(ip))
		ip[20+4*opts+12] = 5 << 4
		ip[20+4*opts+13] = flags
		eth[12], eth[13] = 0x08, 0x00
	} else {
		hdr := 40
		if ext {
			hdr += 8
		}
		ip = make([]byte, hdr+20)
		ip[0], ip[6], ip[7] = 0x60, 6, 64
		if ext {
			ip[6] = 0  // hop-by-hop options
			ip[40] = 6 // then TCP
			ip[42] = 1 // PadN
			ip[43] = 4 // of 4 bytes
		}
		ip[4], ip[5] = byte((len(ip)-40)>>8), byte(len(ip)-40)
		b := src.As16()
		copy(ip[8:], b[:])
		ip[39] = 1
		ip[hdr+12] = 5 << 4
		ip[hdr+13] = flags
		eth[12], eth[13] = 0x86, 0xdd
	}
	return append(eth, ip...)
}

const (
	flagSYN = 0x02
	flagACK = 0x10
)

// run runs the filter's program on pkt with BPF_PROG_TEST_RUN and reports whether it kept it.
func run(t testing.TB, f *EBPF, pkt []byte) bool {
	t.Helper()
	ret, err := f.prog.Run(&ebpf.RunOptions{Data: pkt})
	if err != nil {
		t.Fatalf("BPF_PROG_TEST_RUN: %v", err)
	}
	return ret != 0
}

// judge returns what the program does with a SYN from src, sent as the kernel would carry it: an
// IPv4 packet for an IPv4 or IPv4-mapped source (a dual-stack socket receives IPv4), and also as
// as an IPv6 packet from the IPv4-mapped address too (which the kernel drops before any socket
// sees it, but the program judges it as Decide does); opts words of IPv4 options.
func judge(t testing.TB, f *EBPF, src netip.Addr, opts int) acl.Action {
	t.Helper()
	kept := run(t, f, frame(src.Unmap(), flagSYN, opts, false))
	if src.Unmap().Is4() {
		mapped := netip.AddrFrom16(src.As16())
		if v6 := run(t, f, frame(mapped, flagSYN, 0, false)); v6 != kept {
			t.Errorf("%s: as IPv4 kept=%v, as IPv6 kept=%v", src, kept, v6)
		}
	}
	if kept {
		return acl.Allow
	}
	return acl.Deny
}

func check(t testing.TB, f *EBPF, a *acl.ACL, src netip.Addr, opts int) int {
	t.Helper()
	if !src.IsValid() {
		return 0 // the neighbour of the first or last address
	}
	src = src.WithZone("")
	if got, want := judge(t, f, src, opts), a.Decide(src).Action; got != want {
		t.Errorf("%s (IPv4 options %d words): filter says %v, Decide says %v", src, opts, got, want)
	}
	return 1
}

// TestEBPFDecideVectors runs the vectors of acl's TestDecide through the eBPF program.
func TestEBPFDecideVectors(t *testing.T) {
	f := newEBPF(t)
	office := acltest.RulesOf("allow 10.0.0.0/8", "deny 10.66.0.0/16", "allow 10.66.1.0/24", "allow 10.66.1.7",
		"allow 2001:db8::/32", "deny 2001:db8:bad::/48", "allow 2001:db8:bad::1")
	for _, tc := range []struct {
		def   acl.Action
		rules []acl.Rule
		addr  string
	}{
		{acl.Deny, nil, "10.1.2.3"},
		{acl.Allow, nil, "::1"},
		{acl.Deny, office, "10.1.2.3"},
		{acl.Deny, office, "10.66.2.3"},
		{acl.Deny, office, "10.66.1.9"},
		{acl.Deny, office, "10.66.1.7"},
		{acl.Deny, office, "10.66.0.0"},
		{acl.Deny, office, "10.66.255.255"},
		{acl.Deny, office, "10.67.0.0"},
		{acl.Deny, office, "10.65.255.255"},
		{acl.Deny, office, "11.0.0.0"},
		{acl.Deny, office, "::ffff:10.66.2.3"},
		{acl.Deny, office, "::ffff:10.1.1.1"},
		{acl.Deny, office, "2001:db8::1"},
		{acl.Deny, office, "2001:db8:bad::2"},
		{acl.Deny, office, "2001:db8:bad::1"},
		{acl.Allow, office, "2001:db9::1"},
		{acl.Deny, acltest.RulesOf("allow ::ffff:127.0.0.0/104"), "127.0.0.2"},
		{acl.Deny, acltest.RulesOf("allow ::ffff:127.0.0.2"), "::ffff:127.0.0.2"},
		{acl.Allow, acltest.RulesOf("deny 0.0.0.0/0"), "255.255.255.255"},
		{acl.Allow, acltest.RulesOf("deny 0.0.0.0/0"), "::1"},
		{acl.Allow, acltest.RulesOf("deny ::/0"), "127.0.0.1"},
		{acl.Allow, acltest.RulesOf("deny ::/0"), "::ffff:127.0.0.1"},
		{acl.Allow, acltest.RulesOf("deny ::/0"), "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
		{acl.Deny, acltest.RulesOf("allow ::/0", "allow 0.0.0.0/0"), "1.2.3.4"},
		{acl.Deny, acltest.RulesOf("allow ::/0", "allow 0.0.0.0/0"), "2001:db8::1"},
		{acl.Allow, acltest.RulesOf("allow 10.0.0.0/8", "deny 10.0.0.0/8"), "10.0.0.1"},
		{acl.Allow, acltest.RulesOf("deny 10.0.0.0/8", "allow 10.0.0.0/8"), "10.0.0.1"},
		{acl.Allow, acltest.RulesOf("deny 0.0.0.0/0", "allow 0.0.0.0/0"), "10.0.0.1"},
		{acl.Deny, acltest.RulesOf("deny 10.66.0.0/16", "allow 10.0.0.0/8"), "10.1.0.0"},
		{acl.Deny, acltest.RulesOf("allow 10.0.0.0/25", "allow 10.0.0.128/25"), "10.0.0.128"},
		{acl.Deny, acltest.RulesOf("allow 255.255.255.255"), "255.255.255.255"},
		{acl.Deny, acltest.RulesOf("allow 255.255.255.255"), "255.255.255.254"},
		{acl.Deny, acltest.RulesOf("allow ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
		{acl.Deny, acltest.RulesOf("allow 2001:db8::/63"), "2001:db8:0:1:ffff:ffff:ffff:ffff"},
		{acl.Deny, acltest.RulesOf("allow 2001:db8::/63"), "2001:db8:0:2::"},
	} {
		t.Run(fmt.Sprint(tc.def, tc.rules, tc.addr), func(t *testing.T) {
			a := acl.MustNew(acl.Spec{Default: tc.def, Rules: tc.rules})
			if err := f.Load(a); err != nil {
				t.Fatal(err)
			}
			for _, opts := range []int{0, 1, 10} {
				check(t, f, a, netip.MustParseAddr(tc.addr), opts)
			}
		})
	}
}

// TestEBPFConformanceVectors runs the conformance vectors (internal/acltest) through the eBPF
// program with BPF_PROG_TEST_RUN, each ACL loaded in turn into one filter: the action only, as a
// socket filter keeps or drops; the unix checks have no packet.
func TestEBPFConformanceVectors(t *testing.T) {
	f := newEBPF(t)
	acltest.Run(t, func(t *testing.T, a *acl.ACL, cases []acltest.Case) {
		if err := f.Load(a); err != nil {
			t.Fatal(err)
		}
		for _, c := range cases {
			if c.Unix {
				continue
			}
			for _, opts := range []int{0, 1} {
				if got := judge(t, f, c.Addr.WithZone(""), opts); got != c.Action {
					t.Errorf("%v: filter says %v (IPv4 options %d words)", c, got, opts)
				}
			}
		}
	})
}

// TestEBPFOtherPackets: segments without SYN are kept (they belong to accepted connections, or
// meet a listener that answers them with a reset), so are non-IP packets; IPv6 with extension
// headers is judged.
func TestEBPFOtherPackets(t *testing.T) {
	f := newEBPF(t)
	if err := f.Load(acl.MustNew(acl.Spec{Default: acl.Deny})); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		pkt  []byte
		kept bool
	}{
		{"v4 SYN", frame(netip.MustParseAddr("192.0.2.1"), flagSYN, 0, false), false},
		{"v4 SYN with options", frame(netip.MustParseAddr("192.0.2.1"), flagSYN, 10, false), false},
		{"v4 ACK", frame(netip.MustParseAddr("192.0.2.1"), flagACK, 0, false), true},
		{"v4 ACK with options", frame(netip.MustParseAddr("192.0.2.1"), flagACK, 3, false), true},
		{"v6 SYN", frame(netip.MustParseAddr("2001:db8::1"), flagSYN, 0, false), false},
		{"v6 ACK", frame(netip.MustParseAddr("2001:db8::1"), flagACK, 0, false), true},
		{"v6 SYN, extension header", frame(netip.MustParseAddr("2001:db8::1"), flagSYN, 0, true), false},
		{"v6 ACK, extension header: judged", frame(netip.MustParseAddr("2001:db8::1"), flagACK, 0, true), false},
		{"ARP", append(make([]byte, 12), 0x08, 0x06, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), true},
	} {
		if got := run(t, f, tc.pkt); got != tc.kept {
			t.Errorf("%s: kept = %v, want %v", tc.name, got, tc.kept)
		}
	}
	v4, v6, err := f.Dropped()
	if err != nil {
		t.Fatal(err)
	}
	if v4 != 2 || v6 != 3 {
		t.Errorf("Dropped() = %d IPv4, %d IPv6; want 2, 3", v4, v6)
	}
}

// TestEBPFMatchesDecide compares the program with ACL.Decide on random ACLs of every shape and of
// sizes up to 100 000 rules, loaded one after the other into the same filter (so every Load after
// the first goes by difference), at the edges of every range and at random addresses.
func TestEBPFMatchesDecide(t *testing.T) {
	f := newEBPF(t)
	r := rand.New(rand.NewPCG(5, 6))
	checks, acls := 0, 0
	sizes := []int{0, 1, 2, 5, 10, 50, 200, 1000, 10000}
	if !testing.Short() {
		sizes = append(sizes, 100000)
	}
	for _, n := range sizes {
		for k, shape := range acltest.Shapes {
			reps := 2
			if n >= 10000 { // one ACL of each shape, in turn
				reps = 0
				if k == n/10000%len(acltest.Shapes) || shape == acltest.Mixed {
					reps = 1
				}
			}
			for range reps {
				a := acl.MustNew(acl.Spec{Default: acl.Action(r.IntN(2)), Rules: acltest.Rules(r, shape, n)})
				if err := f.Load(a); err != nil {
					t.Fatal(err)
				}
				probes := append(acltest.Addrs(r, 300), acltest.RangeEdges(r, a, 300)...)
				for _, p := range probes {
					checks += check(t, f, a, p, r.IntN(3))
				}
				acls++
				if t.Failed() {
					t.Fatalf("%s, %d rules: mismatches", shape, n)
				}
			}
		}
	}
	t.Logf("%d ACLs, %d probes compared with Decide", acls, checks)
}

// TestEBPFReloadSteps applies the steps of each Load one at a time and checks, after every step,
// that no peer both the old and the new ACL deny is kept, and that a peer allowed only by the new
// ACL is kept only from the moment the old ACL's allow prefixes are gone.
func TestEBPFReloadSteps(t *testing.T) {
	f := newEBPF(t)
	r := rand.New(rand.NewPCG(7, 8))
	var old *acl.ACL
	probes := 0
	for i := range 25 {
		shape := acltest.Shapes[i%len(acltest.Shapes)]
		a := acl.MustNew(acl.Spec{Default: acl.Action(r.IntN(2)), Rules: acltest.Rules(r, shape, 1+r.IntN(20))})
		if old == nil {
			if err := f.Load(a); err != nil {
				t.Fatal(err)
			}
			old = a
			continue
		}
		addrs := append(acltest.RangeEdges(r, a, 0), acltest.RangeEdges(r, old, 0)...)
		addrs = append(addrs, acltest.Addrs(r, 20)...)
		n4, n6 := entries(a)
		for k, st := range f.plan(n4, n6) {
			if err := st(); err != nil {
				t.Fatal(err)
			}
			for _, p := range addrs {
				if !p.IsValid() {
					continue
				}
				p = p.WithZone("")
				was, now := old.Decide(p).Action, a.Decide(p).Action
				got := acl.Deny
				if run(t, f, frame(p.Unmap(), flagSYN, 0, false)) {
					got = acl.Allow
				}
				probes++
				if got == acl.Allow && was == acl.Deny && now == acl.Deny {
					t.Fatalf("reload %d, after step %d: %s kept, denied by the old and the new ACL", i, k, p)
				}
				if got == acl.Allow && now == acl.Deny && k >= 4 {
					t.Fatalf("reload %d, after step %d: %s kept, denied by the new ACL", i, k, p)
				}
			}
		}
		f.cur4, f.cur6 = n4, n6
		old = a
	}
	t.Logf("%d probes between steps", probes)
}

// TestEBPFBans: a ban drops its peers whatever the ACL says, until it is removed; a mapped ban
// stands for its IPv4 prefix; bans survive a Load.
func TestEBPFBans(t *testing.T) {
	f := newEBPF(t)
	allow := acl.MustNew(acl.Spec{Default: acl.Allow})
	if err := f.Load(allow); err != nil {
		t.Fatal(err)
	}
	pfx := func(ss ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, s := range ss {
			out = append(out, netip.MustParsePrefix(s))
		}
		return out
	}
	kept := func(s string) bool { return judge(t, f, netip.MustParseAddr(s), 0) == acl.Allow }
	if err := f.UpdateBans(pfx("192.0.2.0/24", "2001:db8::/32", "::ffff:198.51.100.7/128"), nil); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		addr string
		kept bool
	}{
		{"192.0.2.9", false}, {"192.0.3.1", true}, {"2001:db8::1", false}, {"2001:db9::1", true},
		{"198.51.100.7", false}, {"::ffff:198.51.100.7", false}, {"198.51.100.8", true},
	} {
		if got := kept(tc.addr); got != tc.kept {
			t.Errorf("%s: kept = %v, want %v", tc.addr, got, tc.kept)
		}
	}
	if err := f.Load(acl.MustNew(acl.Spec{Default: acl.Allow, Rules: acltest.RulesOf("allow 192.0.2.0/24")})); err != nil {
		t.Fatal(err)
	}
	if kept("192.0.2.9") {
		t.Error("a ban lost to an ACL that allows, or to a Load")
	}
	// Removed and added at once: stays banned.
	if err := f.UpdateBans(pfx("192.0.2.0/24"), pfx("192.0.2.0/24", "2001:db8::/32", "198.51.100.7/32")); err != nil {
		t.Fatal(err)
	}
	if kept("192.0.2.9") || !kept("2001:db8::1") || !kept("198.51.100.7") {
		t.Error("after removal: want 192.0.2.9 dropped, 2001:db8::1 and 198.51.100.7 kept")
	}
	st, err := f.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Bans4 != 1 || st.Bans6 != 0 || st.ACL4 != 2 || st.ACL6 != 1 || st.MapBytes == 0 {
		t.Errorf("Stats() = %+v", st)
	}
	if err := f.UpdateBans(pfx("192.0.2.0/24"), nil); err != nil { // already there: no error
		t.Error(err)
	}
	if err := f.UpdateBans([]netip.Prefix{{}}, nil); err == nil {
		t.Error("an invalid prefix: no error")
	}
}

// BenchmarkEBPFLoad1M builds the filter for an allow-by-default ACL denying a million scattered
// IPv4 /32s (NewEBPF, Load, Attach to a listener) and reports the time (build-s), the kernel
// memory of its maps (map-MB), and the time of a reload in which 1 % of the prefixes change (5000
// removed, 5000 added: reload-ms). Compiling the ACL itself (acl.New) is not counted; go test
// -bench 1M ./acl/ measures it.
func BenchmarkEBPFLoad1M(b *testing.B) {
	needEBPF(b)
	const n = 1_000_000
	rules := blocklist("v4/32", n+5000)
	a := acl.MustNew(acl.Spec{Default: acl.Allow, Rules: rules[:n]})
	a2 := acl.MustNew(acl.Spec{Default: acl.Allow, Rules: rules[5000:]})
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		b.Skip(err)
	}
	defer ln.Close()
	rc, _ := ln.(syscall.Conn).SyscallConn()
	var build, reload, buildCPU, reloadCPU time.Duration
	var bytes uint64
	var slab int64
	for range b.N {
		runtime.GC()
		slab0 := kerneltest.SlabKB()
		t0, c0 := time.Now(), kerneltest.CPUTime()
		f, err := NewEBPF()
		if err != nil {
			b.Fatal(err)
		}
		if err := f.Load(a); err != nil {
			b.Fatal(err)
		}
		if err := f.Attach(rc); err != nil {
			b.Fatal(err)
		}
		build += time.Since(t0)
		buildCPU += kerneltest.CPUTime() - c0
		slab += kerneltest.SlabKB() - slab0
		t0, c0 = time.Now(), kerneltest.CPUTime()
		if err := f.Load(a2); err != nil {
			b.Fatal(err)
		}
		reload += time.Since(t0)
		reloadCPU += kerneltest.CPUTime() - c0
		st, _ := f.Stats()
		bytes = st.MapBytes
		if st.ACL4 != n+1 {
			b.Fatalf("%d IPv4 entries, want %d", st.ACL4, n+1)
		}
		f.Close()
	}
	b.ReportMetric(build.Seconds()/float64(b.N), "build-s")
	b.ReportMetric(buildCPU.Seconds()/float64(b.N), "build-cpu-s")
	b.ReportMetric(float64(reload.Milliseconds())/float64(b.N), "reload-ms")
	b.ReportMetric(float64(reloadCPU.Milliseconds())/float64(b.N), "reload-cpu-ms")
	b.ReportMetric(float64(bytes)/1e6, "memlock-MB")
	b.ReportMetric(float64(slab)/1e3/float64(b.N), "slab-MB")
}

// BenchmarkEBPFProgram runs the filter program in the kernel (BPF_PROG_TEST_RUN, repeated) on a
// SYN from a denied and from an allowed IPv4 and IPv6 source and on a non-SYN segment, with the
// maps holding a million IPv4 /32s and 100 000 IPv6 /64s, and reports the kernel's time per run:
// the cost the filter adds to each packet on the listener.
func BenchmarkEBPFProgram(b *testing.B) {
	needEBPF(b)
	rules := append(blocklist("v4/32", 1_000_000), blocklist("v6/64", 100_000)...)
	denied4, denied6 := rules[7].Prefix.Addr(), rules[1_000_007].Prefix.Addr()
	f, err := NewEBPF()
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := f.Load(acl.MustNew(acl.Spec{Default: acl.Allow, Rules: rules})); err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		pkt  []byte
		kept bool
	}{
		{"v4-denied-SYN", frame(denied4, flagSYN, 0, false), false},
		{"v4-allowed-SYN", frame(netip.MustParseAddr("127.0.0.1"), flagSYN, 0, false), true},
		{"v4-ACK", frame(denied4, flagACK, 0, false), true},
		{"v6-denied-SYN", frame(denied6, flagSYN, 0, false), false},
		{"v6-allowed-SYN", frame(netip.MustParseAddr("::1"), flagSYN, 0, false), true},
	} {
		b.Run(tc.name, func(b *testing.B) {
			ret, d, err := f.prog.Benchmark(tc.pkt, b.N, b.ResetTimer)
			if err != nil {
				b.Fatal(err)
			}
			if (ret != 0) != tc.kept {
				b.Fatalf("returned %d", ret)
			}
			b.ReportMetric(float64(d.Nanoseconds()), "kernel-ns/run")
		})
	}
}
