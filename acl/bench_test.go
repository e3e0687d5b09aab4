package acl_test

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"testing"

	"github.com/peergate/peergate/acl"
	"github.com/peergate/peergate/internal/acltest"
	"github.com/yl2chen/cidranger"
)

// Rule-set shapes for the benchmarks, by the names their results are reported under:
//   - v4: a realistic blocklist, distinct random IPv4 prefixes of /16 to /32 (acltest.Block4);
//   - nested: the worst case, chains of IPv4 prefixes nested /8 ⊃ /9 ⊃ … ⊃ /32, alternating actions;
//   - v6: random IPv6 prefixes of /32 to /128 under 2000::/3 (acltest.Block6);
//   - mixed: half v4, half v6 (acltest.BlockMixed).
var shapes = []string{"v4", "nested", "v6", "mixed"}

var benchShape = map[string]acltest.Shape{"v4": acltest.Block4, "nested": acltest.Nested, "v6": acltest.Block6, "mixed": acltest.BlockMixed}

// benchRules returns the n rules of the named benchmark shape for seed.
func benchRules(shape string, n int, seed uint64) []acl.Rule {
	return acltest.Seeded(benchShape[shape], n, seed)
}

// probes returns 65536 addresses to look up: half inside rules, half random of the same family.
func probes(rules []acl.Rule) []netip.Addr {
	return acltest.Inside(rand.New(rand.NewPCG(99, 1)), acltest.Prefixes(rules), 1<<16)
}

var (
	cacheMu sync.Mutex
	cache   = map[string]*acl.ACL{}
)

func benchACL(b *testing.B, shape string, n int) (*acl.ACL, []netip.Addr) {
	cacheMu.Lock()
	defer cacheMu.Unlock()
	key := fmt.Sprint(shape, n)
	rules := benchRules(shape, n, 1)
	if cache[key] == nil {
		cache[key] = acl.MustNew(acl.Spec{Default: acl.Allow, Rules: rules})
	}
	return cache[key], probes(rules)
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
	rules := benchRules("v4", 1_000_000, 1)
	addrs := probes(rules)
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

// BenchmarkBuild1M compiles 1 M rules into an acl.ACL and reports the heap the acl.ACL keeps.
func BenchmarkBuild1M(b *testing.B) {
	for _, shape := range shapes {
		b.Run(shape, func(b *testing.B) {
			rules := benchRules(shape, 1_000_000, 2)
			var a *acl.ACL
			var heap float64
			for b.Loop() {
				b.StopTimer()
				before := heapInUse()
				b.StartTimer()
				a = acl.MustNew(acl.Spec{Default: acl.Allow, Rules: rules})
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
	for i, r := range benchRules("v4", 1_000_000, 3) {
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
	var a *acl.ACL
	for b.Loop() {
		if a, err = acl.Load(yaml); err != nil {
			b.Fatal(err)
		}
	}
	if a.Len() != 1_000_000 {
		b.Fatalf("loaded %d rules", a.Len())
	}
}

// BenchmarkDiff1M diffs two 1 M-rule ACLs: "edit" changes 1% of the rules (a list update),
// "unrelated" diffs two independent lists (the worst case: most ranges change). BenchmarkBuild1M
// times building one such acl.ACL, for scale.
func BenchmarkDiff1M(b *testing.B) {
	for _, shape := range []string{"v4", "mixed"} {
		old := benchRules(shape, 1_000_000, 2)
		a := acl.MustNew(acl.Spec{Default: acl.Allow, Rules: old})
		edit := slices.Clone(old)
		for i := 0; i < len(edit); i += 100 {
			edit[i].Action = acl.Allow
		}
		for name, nb := range map[string]*acl.ACL{
			"edit":      acl.MustNew(acl.Spec{Default: acl.Allow, Rules: edit}),
			"unrelated": acl.MustNew(acl.Spec{Default: acl.Allow, Rules: benchRules(shape, 1_000_000, 3)}),
		} {
			b.Run(shape+"/"+name, func(b *testing.B) {
				runtime.GC()
				var n int
				for b.Loop() {
					n = len(acl.Diff(a, nb))
				}
				b.ReportMetric(float64(n), "changes")
				runtime.KeepAlive(n)
			})
		}
	}
}
