package acl

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/yl2chen/cidranger"
)

// Rule-set shapes for the benchmarks:
//   - v4: a realistic blocklist, disjoint-ish random IPv4 prefixes of /16 to /32;
//   - nested: the worst case, chains of IPv4 prefixes nested /8 ⊃ /9 ⊃ … ⊃ /32, alternating actions;
//   - v6: random IPv6 prefixes of /32 to /128 under 2000::/3;
//   - mixed: half v4, half v6.
var shapes = []string{"v4", "nested", "v6", "mixed"}

func genRules(shape string, n int, seed uint64) []Rule {
	r := rand.New(rand.NewPCG(seed, 7))
	seen := make(map[netip.Prefix]bool, n)
	rules := make([]Rule, 0, n)
	add := func(p netip.Prefix, a Action) {
		if p = p.Masked(); !seen[p] && len(rules) < n {
			seen[p] = true
			rules = append(rules, Rule{Prefix: p, Action: a, Origin: Origin{"gen", len(rules) + 1}})
		}
	}
	v4 := func() netip.Addr {
		return netip.AddrFrom4([4]byte{byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32())})
	}
	v6 := func() netip.Addr {
		var b [16]byte
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		b[0] = 0x20 | b[0]&0x1f
		return netip.AddrFrom16(b)
	}
	for len(rules) < n {
		switch s := shape; {
		case s == "v4" || s == "mixed" && r.IntN(2) == 0:
			add(netip.PrefixFrom(v4(), 16+r.IntN(17)), Deny)
		case s == "v6" || s == "mixed":
			add(netip.PrefixFrom(v6(), 32+r.IntN(97)), Deny)
		case s == "nested":
			a := v4()
			for bits := 8; bits <= 32; bits++ {
				add(netip.PrefixFrom(a, bits), Action(bits&1))
			}
		}
	}
	return rules
}

// probes returns addresses to look up: half inside rules, half random.
func probes(rules []Rule, shape string) []netip.Addr {
	r := rand.New(rand.NewPCG(99, 1))
	out := make([]netip.Addr, 1<<16)
	for i := range out {
		p := rules[r.IntN(len(rules))].Prefix
		b := p.Addr().AsSlice()
		if i%2 == 1 { // random address of the same family
			for j := range b {
				b[j] = byte(r.Uint32())
			}
		} else { // a random address inside p: randomise the host bits
			for j := p.Bits(); j < len(b)*8; j++ {
				b[j/8] ^= byte(r.IntN(2)) << (7 - j%8)
			}
		}
		out[i], _ = netip.AddrFromSlice(b)
	}
	return out
}

var (
	cacheMu sync.Mutex
	cache   = map[string]*ACL{}
)

func benchACL(b *testing.B, shape string, n int) (*ACL, []netip.Addr) {
	cacheMu.Lock()
	defer cacheMu.Unlock()
	key := fmt.Sprint(shape, n)
	rules := genRules(shape, n, 1)
	if cache[key] == nil {
		cache[key] = MustNew(Spec{Default: Allow, Rules: rules})
	}
	return cache[key], probes(rules, shape)
}

func benchDecide(b *testing.B, n int) {
	for _, shape := range shapes {
		b.Run(shape, func(b *testing.B) {
			a, addrs := benchACL(b, shape, n)
			b.ReportAllocs()
			b.ResetTimer()
			var allowed int
			for i := 0; b.Loop(); i++ {
				if a.Decide(addrs[i&(len(addrs)-1)]).Allowed() {
					allowed++
				}
			}
			runtime.KeepAlive(allowed)
		})
	}
}

func BenchmarkDecide10(b *testing.B)   { benchDecide(b, 10) }
func BenchmarkDecide1k(b *testing.B)   { benchDecide(b, 1_000) }
func BenchmarkDecide100k(b *testing.B) { benchDecide(b, 100_000) }
func BenchmarkDecide1M(b *testing.B)   { benchDecide(b, 1_000_000) }

// BenchmarkCidranger1M is the alternative that was measured and rejected for the hot path:
// cidranger's Contains on the same 1 M IPv4 blocklist (the allow/deny answer only, no rule).
func BenchmarkCidranger1M(b *testing.B) {
	rules := genRules("v4", 1_000_000, 1)
	addrs := probes(rules, "v4")
	before := heapInUse()
	rg := cidranger.NewPCTrieRanger()
	for _, r := range rules {
		if err := rg.Insert(cidranger.NewBasicRangerEntry(net.IPNet{IP: r.Prefix.Addr().AsSlice(), Mask: net.CIDRMask(r.Prefix.Bits(), 32)})); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(heapInUse()-before)/(1<<20), "heap-MB")
	ips := make([]net.IP, len(addrs))
	for i, a := range addrs {
		ips[i] = a.AsSlice()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, err := rg.Contains(ips[i&(len(ips)-1)]); err != nil {
			b.Fatal(err)
		}
	}
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// BenchmarkBuild1M compiles 1 M rules into an ACL and reports the heap the ACL keeps.
func BenchmarkBuild1M(b *testing.B) {
	for _, shape := range shapes {
		b.Run(shape, func(b *testing.B) {
			rules := genRules(shape, 1_000_000, 2)
			var a *ACL
			var heap float64
			for b.Loop() {
				b.StopTimer()
				before := heapInUse()
				b.StartTimer()
				a = MustNew(Spec{Default: Allow, Rules: rules})
				b.StopTimer()
				heap = float64(heapInUse()-before) / (1 << 20)
				b.StartTimer()
			}
			b.ReportMetric(heap, "heap-MB")
			runtime.KeepAlive(a)
		})
	}
}

// BenchmarkLoadList1M loads a 1 M-line list file (Spamhaus DROP style) and compiles it.
func BenchmarkLoadList1M(b *testing.B) {
	dir := b.TempDir()
	path := filepath.Join(dir, "drop.txt")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriter(f)
	for i, r := range genRules("v4", 1_000_000, 3) {
		fmt.Fprintf(w, "%s ; SBL%d\n", r.Prefix, i)
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	f.Close()
	yaml := filepath.Join(dir, "acl.yaml")
	if err := os.WriteFile(yaml, []byte("default: allow\ninclude: [{path: drop.txt, action: deny}]\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	var a *ACL
	for b.Loop() {
		if a, err = Load(yaml); err != nil {
			b.Fatal(err)
		}
	}
	if a.Len() != 1_000_000 {
		b.Fatalf("loaded %d rules", a.Len())
	}
}
