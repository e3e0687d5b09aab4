package sources

import (
	"context"
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

// BenchmarkRefresh304: refreshing a 1 M-prefix list that has not changed (a conditional request
// answered 304): no body, no parse, no reload.
func BenchmarkRefresh304(b *testing.B) {
	m, e, f := benchEntry(b)
	b.ResetTimer()
	for b.Loop() {
		e.fetch.Lock()
		changed, err := m.fetchLocked(context.Background(), e)
		e.fetch.Unlock()
		if err != nil || changed {
			b.Fatal(changed, err)
		}
	}
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
			// What the source holds beside the ACL once the load took its rules.
			b.ReportMetric(float64(len(e.body)+(len(e.rules)+len(e.fresh))*ruleSize)/1e6, "held-MB")
		})
	}
}
