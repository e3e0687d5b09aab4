package bans

import (
	"math/rand/v2"
	"net/netip"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/peergate/peergate/acl"
	"github.com/peergate/peergate/gate"
	"github.com/peergate/peergate/internal/acltest"
)

// genBans returns n distinct bans: IPv4 /32s with a few /24s (a blocklist of scanners), or, for
// mixed, half IPv6 /64 to /128.
func genBans(n int, mixed bool, seed uint64) []Ban {
	r := rand.New(rand.NewPCG(seed, 3))
	seen := make(map[netip.Prefix]bool, n)
	out := make([]Ban, 0, n)
	exp := time.Now().Add(time.Hour)
	reasons := []string{"ssh-bf", "http-probing", "scanner", "crowdsecurity/http-crawl-non_statics"}
	for len(out) < n {
		var p netip.Prefix
		if mixed && r.IntN(2) == 0 {
			var b [16]byte
			for i := range b {
				b[i] = byte(r.Uint32())
			}
			b[0] = 0x20 | b[0]&0x1f
			p = netip.PrefixFrom(netip.AddrFrom16(b), 64+r.IntN(65)).Masked()
		} else {
			bits := 32
			if r.IntN(50) == 0 {
				bits = 24
			}
			v := r.Uint32()
			p = netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), bits).Masked()
		}
		if seen[p] {
			continue
		}
		seen[p] = true
		out = append(out, Ban{Prefix: p, Origin: OriginCrowdSec, Reason: reasons[r.IntN(len(reasons))], Expires: exp})
	}
	return out
}

// genACL returns an ACL of n deny rules (IPv4 /16 to /32, default allow): acltest's Block4.
func genACL(b *testing.B, n int) *acl.ACL {
	a, err := acl.New(acl.Spec{Default: acl.Allow, Rules: acltest.Seeded(acltest.Block4, n, 5)})
	if err != nil {
		b.Fatal(err)
	}
	return a
}

// probeAddrs returns addresses to look up: half inside bans, half random of the same family.
func probeAddrs(bans []Ban) []netip.Addr {
	ps := make([]netip.Prefix, len(bans))
	for i, b := range bans {
		ps[i] = b.Prefix
	}
	return acltest.Inside(rand.New(rand.NewPCG(99, 1)), ps, 1<<16)
}

// loop runs op b.N times as b.Loop does and also reports cpu-ns/op: the CPU time of the thread
// running the loop, per op. On a shared machine it leaves out the time other processes hold the
// core (which ns/op counts), though not what they do to the caches.
func loop(b *testing.B, op func(i int)) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	b.ReportAllocs()
	c0 := threadCPU()
	i := 0
	for ; b.Loop(); i++ {
		op(i)
	}
	if c1 := threadCPU(); c0 >= 0 && c1 >= 0 && i > 0 {
		b.ReportMetric(float64(c1-c0)/float64(i), "cpu-ns/op")
	}
}

func filled(b *testing.B, n int, mixed bool) (*Table, []netip.Addr) {
	bans := genBans(max(n, 1), mixed, 1)
	t := New(Config{Max: 2 * DefaultMax})
	if n > 0 {
		if _, err := t.AddBatch(bans); err != nil {
			b.Fatal(err)
		}
	}
	return t, probeAddrs(bans)
}

// BenchmarkLookup is the ban layer alone: with 0 bans (one atomic load) and with 1 M.
func BenchmarkLookup(b *testing.B) {
	for _, n := range []int{0, 1_000_000} {
		for _, mixed := range []bool{false, true} {
			if n == 0 && mixed {
				continue
			}
			name := "bans=" + strconv.Itoa(n)
			if mixed {
				name += "/mixed"
			}
			b.Run(name, func(b *testing.B) {
				t, probes := filled(b, n, mixed)
				loop(b, func(i int) { t.Lookup(probes[i&(len(probes)-1)]) })
			})
		}
	}
}

// BenchmarkDecide is the decision per IP peer: the ban layer (Match), then, for a peer not banned,
// a 1 M-rule ACL. Half the probes are banned at 1 M bans. Its sub-benchmarks run side by side:
// acl-only is the baseline the ban layer adds to. bans=1M/named is what the gate does, through
// the gate.Bans interface: for a banned peer it also reads and builds the Ban, to name it in the
// log line and the metrics.
func BenchmarkDecide(b *testing.B) {
	a := genACL(b, 1_000_000)
	for _, tc := range []struct {
		name  string
		n     int
		none  bool
		named bool
	}{{"acl-only", 0, true, false}, {"bans=0", 0, false, false}, {"bans=1M", 1_000_000, false, false}, {"bans=1M/named", 1_000_000, false, true}} {
		b.Run(tc.name, func(b *testing.B) {
			t, probes := filled(b, tc.n, false)
			var layer gate.Bans = t
			loop(b, func(i int) {
				p := probes[i&(len(probes)-1)]
				switch {
				case tc.none:
				case tc.named:
					if _, ok := layer.Banned(p); ok {
						return
					}
				default:
					if _, ok := t.Match(p); ok {
						return
					}
				}
				a.Decide(p)
			})
		})
	}
}

// BenchmarkAddBatch100k applies 100 000 bans in one batch (a CrowdSec startup stream, a POST of a
// list, a state file), into an empty table and beside 900 000 others.
func BenchmarkAddBatch100k(b *testing.B) {
	bans := genBans(1_000_000, false, 2)
	for _, pre := range []int{0, 900_000} {
		b.Run("existing="+strconv.Itoa(pre), func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				t := New(Config{})
				if pre > 0 {
					t.AddBatch(bans[100_000:])
				}
				b.StartTimer()
				if n, err := t.AddBatch(bans[:100_000]); n != 100_000 || err != nil {
					b.Fatal(n, err)
				}
			}
		})
	}
}

// BenchmarkAdd is one ban added beside 0 and 1 M others: the time until it applies.
func BenchmarkAdd(b *testing.B) {
	for _, n := range []int{0, 1_000_000} {
		b.Run("bans="+strconv.Itoa(n), func(b *testing.B) {
			t, _ := filled(b, n, false)
			i := 0
			for b.Loop() {
				i++
				p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)
				if _, err := t.Add(Ban{Prefix: p, Origin: OriginAPI}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkMemory reports the live heap per ban at 1 M bans (B/ban).
func BenchmarkMemory(b *testing.B) {
	bans := genBans(1_000_000, false, 3)
	for b.Loop() {
		var m0, m1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m0)
		t := New(Config{})
		t.AddBatch(bans)
		runtime.GC()
		runtime.ReadMemStats(&m1)
		b.ReportMetric(float64(m1.HeapAlloc-m0.HeapAlloc)/float64(t.Len()), "B/ban")
		runtime.KeepAlive(t)
	}
}
