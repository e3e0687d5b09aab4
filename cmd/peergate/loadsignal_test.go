package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestServeSignalDuringFirstLoad: a SIGHUP (or SIGTERM) that comes while serve loads its config
// at start is served once the load is done: SIGHUP reloads, SIGTERM stops with status 0. Signals
// used to be caught only after the first load, and a SIGHUP during it (a big list loads for
// seconds) ended the process.
func TestServeSignalDuringFirstLoad(t *testing.T) {
	dir := t.TempDir()
	var list strings.Builder
	for i := range 100_000 {
		fmt.Fprintf(&list, "10.%d.%d.0/24\n", i>>8&255, i&255^i>>16)
	}
	if err := os.WriteFile(filepath.Join(dir, "drop.txt"), []byte(list.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := writeFile(t, dir, "serve.yaml", `
acls:
  big: {default: allow, include: [{path: drop.txt, action: deny}]}
services:
  - {name: p, listen: ["127.0.0.1:0"], acl: big, upstream: "127.0.0.1:9"}
`)
	for _, tc := range []struct {
		sig   syscall.Signal
		after string // a log line that shows it was served
	}{
		{syscall.SIGHUP, `msg="config reloaded"`},
		{syscall.SIGTERM, `msg=stopped`},
	} {
		t.Run(tc.sig.String(), func(t *testing.T) {
			p := startProc(t, bin, "serve", "-config", cfg, "-watch", "0", "-log-level", "debug")
			p.waitLog(`msg=loading`)
			p.signal(tc.sig)
			p.waitLog(tc.after)
			if tc.sig == syscall.SIGHUP {
				p.signal(syscall.SIGTERM)
			}
			if code := p.wait(); code != 0 {
				t.Errorf("peergate exited %d", code)
			}
		})
	}
}
