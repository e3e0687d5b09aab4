package serve

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/peergate/peergate/internal/safefile"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// startFiles writes files (serve.yaml among them; %s in it becomes an echo upstream) into a new
// directory and serves serve.yaml, watching its files every 20ms when watch is set. It returns the
// server, the address of service p and the directory.
func startFiles(t *testing.T, files map[string]string, watch bool, setup func(*Server)) (*Server, string, string) {
	t.Helper()
	dir := t.TempDir()
	for name, text := range files {
		if name == "serve.yaml" {
			text = fmt.Sprintf(text, upstream(t, "echo"))
		}
		replace(t, dir, name, text)
	}
	s, err := New(filepath.Join(dir, "serve.yaml"), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if setup != nil {
		setup(s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); s.Serve() }()
	if watch {
		wg.Add(1)
		go func() { defer wg.Done(); s.Watch(ctx, 20*time.Millisecond) }()
	}
	t.Cleanup(func() {
		cancel()
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		s.Shutdown(sctx)
		wg.Wait()
	})
	return s, s.Addrs()["p"][0].String(), dir
}

// replace writes text to dir/name the safe way: a temporary file renamed over the old one.
func replace(t *testing.T, dir, name, text string) {
	t.Helper()
	tmp := filepath.Join(dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

// admits reports whether a connection from src reaches the echo behind addr: a byte goes there
// and back. A denied peer is closed without a byte.
func admits(t *testing.T, src, addr string) bool {
	t.Helper()
	c, err := dialFrom(src, addr)
	if err != nil {
		return false
	}
	defer c.Close()
	io.WriteString(c, "x")
	n, _ := io.ReadFull(c, make([]byte, 1))
	return n == 1
}

// eventually waits, up to a bound, until 127.0.0.2 is refused at addr, and checks that 127.0.0.1
// is still let in.
func eventuallyDenied(t *testing.T, addr, why string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); admits(t, "127.0.0.2", addr); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("127.0.0.2 still let in 10s after %s", why)
		}
	}
	if !admits(t, "127.0.0.1", addr) {
		t.Fatal("127.0.0.1 refused")
	}
}

const serveHead = "services:\n  - {name: p, listen: [\"127.0.0.1:0\"], acl: lo, upstream: %s}\nacls:\n"

// TestWatchEveryFileRead: the watcher reloads on a change to any file the load read, not only to
// files that rules came from (issue 14, item 1): an include that was empty, an ACL file that only
// set a default, an ACL file whose rules all came from includes, and an include that a failed
// reload named and that is fixed alone afterwards. Each case starts with 127.0.0.2 let in, makes
// its edits (atomic renames, as the README asks), and waits for 127.0.0.2 to be refused.
func TestWatchEveryFileRead(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files map[string]string
		edits [][2]string // name, new text; applied in order, each seen by the watcher first
	}{
		{"include empty at the load",
			map[string]string{"serve.yaml": serveHead + "  lo: {default: allow, include: [{path: deny.txt, action: deny}]}\n", "deny.txt": ""},
			[][2]string{{"deny.txt", "127.0.0.2\n"}}},
		{"ACL file with only default",
			map[string]string{"serve.yaml": serveHead + "  lo: lo.yaml\n", "lo.yaml": "default: allow\n"},
			[][2]string{{"lo.yaml", "default: allow\ndeny: [127.0.0.2]\n"}}},
		{"ACL file whose rules come from includes",
			map[string]string{"serve.yaml": serveHead + "  lo: lo.yaml\n", "lo.yaml": "default: allow\ninclude: [{path: deny.txt, action: deny}]\n",
				"deny.txt": "127.0.0.9\n"},
			[][2]string{{"lo.yaml", "default: allow\ndeny: [127.0.0.2]\ninclude: [{path: deny.txt, action: deny}]\n"}}},
		{"include fixed after a failed reload",
			map[string]string{"serve.yaml": serveHead + "  lo: {default: allow}\n"},
			[][2]string{
				{"serve.yaml", serveHead + "  lo: {default: allow, include: [{path: deny.txt, action: deny}]}\n"}, // deny.txt missing: fails
				{"deny.txt", "127.0.0.2\n"}, // the fix, alone
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, addr, dir := startFiles(t, tc.files, true, nil)
			if !admits(t, "127.0.0.2", addr) || !admits(t, "127.0.0.1", addr) {
				t.Fatal("127.0.0.2 or 127.0.0.1 refused before the edit")
			}
			for _, e := range tc.edits {
				before := s.reloadCount()
				text := e[1]
				if e[0] == "serve.yaml" {
					s.mu.Lock()
					text = strings.Replace(text, "%s", s.cfg.Services[0].Upstream, 1)
					s.mu.Unlock()
				}
				replace(t, dir, e[0], text)
				for deadline := time.Now().Add(10 * time.Second); s.reloadCount() == before; time.Sleep(10 * time.Millisecond) {
					if time.Now().After(deadline) {
						t.Fatalf("no reload attempt 10s after %s changed", e[0])
					}
				}
			}
			eventuallyDenied(t, addr, "the edit")
		})
	}
}

// reloadCount returns how many reloads ran to an outcome (success or failure).
func (s *Server) reloadCount() float64 {
	return testutil.ToFloat64(s.m.reloads.WithLabelValues("success")) + testutil.ToFloat64(s.m.reloads.WithLabelValues("failure"))
}

// TestWriteDuringReload: a list written while a reload runs, after the reload read it, is applied
// by the next reload (issue 14, item 2): what the watcher compares with is the file as the load
// read it, not the file as it is when the reload ends.
func TestWriteDuringReload(t *testing.T) {
	var once sync.Once
	var dir string
	files := map[string]string{"serve.yaml": serveHead + "  lo: {default: allow, include: [{path: deny.txt, action: deny}]}\n", "deny.txt": "127.0.0.9\n"}
	_, addr, d := startFiles(t, files, true, func(s *Server) {
		// During the reload that the first edit brings, between load and apply: the second write.
		s.afterLoad = func() { once.Do(func() { replace(t, dir, "deny.txt", "127.0.0.9\n127.0.0.2\n") }) }
	})
	dir = d
	if !admits(t, "127.0.0.2", addr) {
		t.Fatal("127.0.0.2 refused before the edit")
	}
	replace(t, dir, "deny.txt", "127.0.0.8\n127.0.0.9\n")
	eventuallyDenied(t, addr, "the write during a reload")
}

// TestRewriteInPlaceDuringLoad: a list rewritten in place while a reload reads it is never applied
// half-written (issue 14, item 3). The rewrite is made deterministic with safefile.AfterReadHook,
// which runs after the reader has read the file and before it checks the file again: the test
// truncates the list (the writer's open with O_TRUNC), starts the reload, and in the hook the
// writer finishes. The half-written (empty) list must not be applied; either the finished list
// is, or, for a writer that never stops, the running rules stay and the reload fails.
func TestRewriteInPlaceDuringLoad(t *testing.T) {
	for _, tc := range []struct {
		name    string
		write   func(path string, call int) // in the hook
		applied bool                        // the finished list is in force after the reload
	}{
		{"writer finishes", func(path string, call int) {
			if call == 1 {
				os.WriteFile(path, []byte("127.0.0.2\n127.0.0.3\n"), 0o644)
			}
		}, true},
		{"writer never stops", func(path string, call int) {
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
			if err == nil {
				fmt.Fprintf(f, "127.0.0.%d\n", 2+call%2)
				f.Close()
			}
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files := map[string]string{"serve.yaml": serveHead + "  lo: {default: allow, include: [{path: deny.txt, action: deny}]}\n", "deny.txt": "127.0.0.2\n"}
			s, addr, dir := startFiles(t, files, false, nil)
			if admits(t, "127.0.0.2", addr) || !admits(t, "127.0.0.3", addr) {
				t.Fatal("want 127.0.0.2 refused and 127.0.0.3 let in before the rewrite")
			}
			list := filepath.Join(dir, "deny.txt")
			if err := os.Truncate(list, 0); err != nil { // the writer has begun
				t.Fatal(err)
			}
			calls := 0
			safefile.AfterReadHook = func(path string) {
				if path == list {
					calls++
					tc.write(path, calls)
				}
			}
			defer func() { safefile.AfterReadHook = nil }()
			err := s.Reload()
			safefile.AfterReadHook = nil
			if calls == 0 {
				t.Fatal("the hook never ran")
			}
			if tc.applied != (err == nil) {
				t.Fatalf("reload: %v", err)
			}
			if !tc.applied && !errors.Is(err, safefile.ErrUnsettled) {
				t.Errorf("reload failed with %v; want %v", err, safefile.ErrUnsettled)
			}
			if admits(t, "127.0.0.2", addr) {
				t.Fatal("127.0.0.2 let in: the half-written list was applied")
			}
			if got := !admits(t, "127.0.0.3", addr); got != tc.applied {
				t.Errorf("127.0.0.3 refused: %v, want %v", got, tc.applied)
			}
			if !admits(t, "127.0.0.1", addr) {
				t.Error("127.0.0.1 refused")
			}
		})
	}
}

// TestReloadCancelled: a reload whose context ends while it reads files stops there and changes
// nothing; this is how SIGTERM ends a load that is still running (issue 14, item 7).
func TestReloadCancelled(t *testing.T) {
	files := map[string]string{"serve.yaml": serveHead + "  lo: {default: allow, include: [{path: a.txt, action: deny}, {path: b.txt, action: deny}]}\n",
		"a.txt": "127.0.0.9\n", "b.txt": "127.0.0.8\n"}
	s, addr, dir := startFiles(t, files, false, nil)
	replace(t, dir, "b.txt", "127.0.0.2\n")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	safefile.AfterReadHook = func(path string) {
		if filepath.Base(path) == "a.txt" {
			cancel() // SIGTERM, while the load is on its way
		}
	}
	defer func() { safefile.AfterReadHook = nil }()
	err := s.ReloadContext(ctx)
	safefile.AfterReadHook = nil
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("reload: %v; want %v", err, context.Canceled)
	}
	if !admits(t, "127.0.0.2", addr) {
		t.Error("the cancelled load was applied")
	}
}

// TestRunningConfigHoldsNoSpec: a server keeps the compiled ACLs and not the Specs they were built
// from, a second copy of every rule (issue 19: 131 MiB of heap for a 1 M-rule list with the Spec,
// 70 MiB without), at start and after a reload.
func TestRunningConfigHoldsNoSpec(t *testing.T) {
	files := map[string]string{"serve.yaml": serveHead + "  lo: {default: allow, include: [{path: deny.txt, action: deny}]}\n", "deny.txt": "127.0.0.2\n"}
	s, addr, _ := startFiles(t, files, false, nil)
	for i, step := range []string{"start", "reload"} {
		if i == 1 {
			if err := s.Reload(); err != nil {
				t.Fatal(err)
			}
		}
		s.mu.Lock()
		a := s.cfg.ACLs[0]
		s.mu.Unlock()
		if a.Spec.Rules != nil || a.ACL.Len() != 1 {
			t.Errorf("%s: Spec holds %d rules, the ACL %d; want 0 and 1", step, len(a.Spec.Rules), a.ACL.Len())
		}
		if admits(t, "127.0.0.2", addr) || !admits(t, "127.0.0.1", addr) {
			t.Errorf("%s: the rules are not in force", step)
		}
	}
}
