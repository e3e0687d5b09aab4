package serve

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// pythonHTTP serves dir with "python3 -m http.server" on a loopback port and returns its URL.
func pythonHTTP(t *testing.T, dir string) (url string, stop func()) {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not installed")
	}
	addr := closedPort(t)
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(py, "-m", "http.server", "--bind", "127.0.0.1", "--directory", dir, port)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cmd.Process.Kill()
			cmd.Wait()
		}
	}
	t.Cleanup(stop)
	url = "http://" + addr
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if resp, err := http.Get(url + "/"); err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("python3 -m http.server did not answer in 10s")
		}
	}
	return url, stop
}

// TestURLInclude, end to end through a real python3 http.server: a url include is fetched at
// start, refreshed (304s change nothing), a changed list reloads the service, the deciding rule
// names the URL and line, and after the source goes away a restart uses the copy cached in
// state_dir, while without state_dir it fails closed.
func TestURLInclude(t *testing.T) {
	www := t.TempDir()
	writeList := func(text string, age time.Duration) {
		replace(t, www, "drop.txt", text)
		// http.server compares If-Modified-Since in whole seconds: move the mtime clearly.
		mt := time.Now().Add(age)
		os.Chtimes(filepath.Join(www, "drop.txt"), mt, mt)
	}
	writeList("127.0.0.3/32 ; one\n", -time.Hour)
	url, stop := pythonHTTP(t, www)
	state := t.TempDir()
	conf := "state_dir: " + state + "\nservices:\n  - {name: p, listen: [\"127.0.0.1:0\"], acl: lo, upstream: %s}\n" +
		"acls:\n  lo:\n    default: allow\n    include:\n      - {url: \"" + url + "/drop.txt\", action: deny, refresh: 1s}\n"
	s, addr, dir := startFiles(t, map[string]string{"serve.yaml": conf}, false, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.RefreshSources(ctx, 20*time.Millisecond); close(done) }()
	defer func() { cancel(); <-done }()
	if !admits(t, "127.0.0.2", addr) {
		t.Fatal("127.0.0.2 refused before it is listed")
	}
	writeList("127.0.0.3/32 ; one\n127.0.0.2/32 ; two\n", time.Hour)
	eventuallyDenied(t, addr, "the remote list changed")
	s.mu.Lock()
	d := s.cfg.ACLs[0].ACL.Decide(netip.MustParseAddr("127.0.0.2"))
	s.mu.Unlock()
	if got, want := d.Rule.Origin.String(), url+"/drop.txt:2"; got != want {
		t.Errorf("deciding rule from %q, want %q", got, want)
	}
	metrics := scrape(t, s)
	for _, want := range []string{`peergate_source_entries{source="` + url + `/drop.txt"} 2`, "peergate_source_last_success_timestamp_seconds", `result="changed"`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	cancel()
	<-done
	stop()
	// The source is down: a new process starts from the cached copy...
	s2, err := New(filepath.Join(dir, "serve.yaml"), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("restart with the source down and a cached copy: %v", err)
	}
	s2.mu.Lock()
	d = s2.cfg.ACLs[0].ACL.Decide(netip.MustParseAddr("127.0.0.2"))
	s2.mu.Unlock()
	s2.closeAll()
	if d.Action.String() != "deny" {
		t.Errorf("restart from the cache: 127.0.0.2 %v", d)
	}
	// ...and without state_dir (nothing cached) it does not start.
	replace(t, dir, "serve.yaml", strings.Replace(fmt.Sprintf(conf, "127.0.0.1:1"), "state_dir: "+state+"\n", "", 1))
	if _, err := New(filepath.Join(dir, "serve.yaml"), slog.New(slog.NewTextHandler(io.Discard, nil))); err == nil || !strings.Contains(err.Error(), "drop.txt") {
		t.Errorf("start with the source down and no cache: %v, want an error naming the URL", err)
	}
}

// scrape returns the server's metrics in the text format.
func scrape(t *testing.T, s *Server) string {
	t.Helper()
	mfs, err := s.m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
			fmt.Fprintf(&b, "%s{%s} %g\n", mf.GetName(), strings.Join(labels, ","), v)
		}
	}
	return b.String()
}
