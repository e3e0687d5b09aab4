package sources

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/peergate/peergate/acl"
)

// benchEntry holds a 1 M-prefix list fetched from a loopback server.
func benchEntry(b *testing.B) (*Manager, *entry, *feed) {
	f, srv := newFeed(b, list(1_000_000))
	m := New(quiet(), nil)
	r := acl.Remote{URL: srv.URL + "/big.txt", Action: acl.Deny, Refresh: time.Hour, MaxShrink: 1}
	if _, err := m.For(b.TempDir()).Resolve(context.Background(), r); err != nil {
		b.Fatal(err)
	}
	return m, m.entry(r, ""), f
}

// cpuTime returns the CPU time the process has used so far, user and system: on a loaded shared
// machine a steadier figure than wall time. It counts the loopback server's share too.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports the CPU time per iteration since start, in ms.
func reportCPU(b *testing.B, start time.Duration) {
	b.ReportMetric(float64(cpuTime(b)-start)/float64(b.N)/1e6, "cpu-ms/op")
}

// BenchmarkRefresh304: refreshing a 1 M-prefix list that has not changed (a conditional request
// answered 304): no body, no parse, no reload.
func BenchmarkRefresh304(b *testing.B) {
	m, e, f := benchEntry(b)
	b.ResetTimer()
	cpu := cpuTime(b)
	for b.Loop() {
		e.fetch.Lock()
		changed, err := m.fetchLocked(context.Background(), e)
		e.fetch.Unlock()
		if err != nil || changed {
			b.Fatal(changed, err)
		}
	}
	reportCPU(b, cpu)
	if f.cond.Load() == 0 {
		b.Fatal("no 304")
	}
}

// BenchmarkRefreshChanged: refreshing a 1 M-prefix list that changed: fetch, parse and check the
// new list (the reload that follows builds the ACL: see acl's benchmarks).
func BenchmarkRefreshChanged(b *testing.B) {
	for _, cached := range []bool{true, false} {
		name := "memory"
		if cached {
			name = "state_dir" // the copy is written and synced to disk
		}
		b.Run(name, func(b *testing.B) { benchChanged(b, cached) })
	}
}

func benchChanged(b *testing.B, cached bool) {
	m, e, f := benchEntry(b)
	if !cached {
		e.dir = ""
	}
	bodies := []string{list(1_000_000 - 1), list(1_000_000)}
	b.ResetTimer()
	cpu := cpuTime(b)
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		f.set(func(f *feed) { f.body = bodies[i%2] })
		b.StartTimer()
		e.fetch.Lock()
		changed, err := m.fetchLocked(context.Background(), e)
		e.fetch.Unlock()
		if err != nil || !changed {
			b.Fatal(changed, err)
		}
	}
	reportCPU(b, cpu)
}

// BenchmarkApplyChanged: a changed 1 M-prefix list from fetch to compiled ACL, as a refresh and
// the reload it triggers do it: the fetch, parse and check of the new list, then the load of an
// ACL file that includes it by URL (Resolve answers from the fresh copy) and acl.New.
func BenchmarkApplyChanged(b *testing.B) {
	for _, cached := range []bool{true, false} {
		name := "memory"
		if cached {
			name = "state_dir"
		}
		b.Run(name, func(b *testing.B) {
			m, e, f := benchEntry(b)
			dir := b.TempDir()
			if !cached {
				e.dir, dir = "", ""
			}
			spec := []byte("default: allow\ninclude:\n  - {url: \"" + e.r.URL + "\", action: deny, refresh: 1h, max_shrink: 1}\n")
			bodies := []string{list(1_000_000 - 1), list(1_000_000)}
			b.ResetTimer()
			cpu := cpuTime(b)
			for i := 0; b.Loop(); i++ {
				b.StopTimer()
				f.set(func(f *feed) { f.body = bodies[i%2] })
				b.StartTimer()
				e.fetch.Lock()
				changed, err := m.fetchLocked(context.Background(), e)
				e.fetch.Unlock()
				if err != nil || !changed {
					b.Fatal(changed, err)
				}
				l := &acl.Loader{Resolver: m.For(dir)}
				s, err := l.ParseSpec(context.Background(), "acl.yaml", spec)
				if err != nil {
					b.Fatal(err)
				}
				a, err := acl.New(s)
				if want := 1_000_000 - 1 + i%2; err != nil || a.Len() != want {
					b.Fatal(err, a.Len(), want)
				}
			}
			b.StopTimer()
			reportCPU(b, cpu)
			// What the source holds beside the ACL once the load took its rules.
			b.ReportMetric(float64(len(e.body)+(len(e.rules)+len(e.fresh))*ruleSize)/1e6, "held-MB")
		})
	}
}
