package config

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/peergate/peergate/acl"
	"github.com/peergate/peergate/internal/sources"
)

// BenchmarkLoadHeap loads a serve file whose ACL includes a 1 M-line list and reports the heap
// the loaded File holds (heap-B: live heap after the load minus before, both after a GC): as every
// load but lint's does (LoadSources: the compiled ACL alone), and as lint's (LoadSpecs: the rules
// too, as every load did before).
func BenchmarkLoadHeap(b *testing.B) {
	dir := b.TempDir()
	list, err := os.Create(filepath.Join(dir, "deny.txt"))
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriter(list)
	for i := range 1 << 20 {
		fmt.Fprintf(w, "10.%d.%d.%d\n", i>>16, i>>8&0xff, i&0xff)
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	list.Close()
	path := filepath.Join(dir, "serve.yaml")
	text := "acls:\n  a: {default: allow, include: [{path: deny.txt, action: deny}]}\n" +
		"services:\n  - {name: s, listen: [\"127.0.0.1:0\"], acl: a, upstream: \"127.0.0.1:1\"}\n"
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		b.Fatal(err)
	}
	for _, load := range []struct {
		name string
		fn   func(context.Context, string, *sources.Manager) (*File, []acl.Source, error)
	}{{"LoadSources", LoadSources}, {"LoadSpecs", LoadSpecs}} {
		b.Run(load.name, func(b *testing.B) {
			var before, after runtime.MemStats
			for b.Loop() {
				runtime.GC()
				runtime.ReadMemStats(&before)
				f, _, err := load.fn(context.Background(), path, nil)
				if err != nil {
					b.Fatal(err)
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				if f.ACLs[0].ACL.Len() != 1<<20 {
					b.Fatalf("%d rules", f.ACLs[0].ACL.Len())
				}
				runtime.KeepAlive(f)
			}
			b.ReportMetric(float64(after.HeapAlloc)-float64(before.HeapAlloc), "heap-B")
		})
	}
}

// TestSpecsKeptOnlyByLoadSpecs: the loads keep the compiled ACLs alone, LoadSpecs the rules too,
// for a serve file and a bare ACL file.
func TestSpecsKeptOnlyByLoadSpecs(t *testing.T) {
	dir := t.TempDir()
	serve := write(t, dir, "serve.yaml", "acls:\n  a: {default: allow, deny: [10.0.0.1]}\n", 0o644)
	bare := write(t, dir, "bare.yaml", "default: allow\ndeny: [10.0.0.1]\n", 0o644)
	for _, path := range []string{serve, bare} {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		f, err := Load(path)
		if err != nil {
			t.Fatal(err)
		}
		p, err := Parse(path, data)
		if err != nil {
			t.Fatal(err)
		}
		s, _, err := LoadSpecs(context.Background(), path, nil)
		if err != nil {
			t.Fatal(err)
		}
		for name, got := range map[string]*File{"Load": f, "Parse": p} {
			if a := got.ACLs[0]; a.Spec.Rules != nil || a.ACL.Len() != 1 {
				t.Errorf("%s %s: Spec holds %d rules, the ACL %d; want 0 and 1", name, path, len(a.Spec.Rules), a.ACL.Len())
			}
		}
		if a := s.ACLs[0]; len(a.Spec.Rules) != 1 || a.Spec.Rules[0].Origin.Line != 2 {
			t.Errorf("LoadSpecs %s: Spec %+v, want the one rule, from line 2", path, a.Spec)
		}
	}
}
