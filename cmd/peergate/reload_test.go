package main

import (
	"fmt"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
)

const includeConfig = `
acls:
  lo:
    default: deny
    allow: [127.0.0.1]
    include: [{path: %q, action: allow}]
services:
  - {name: echo, listen: ["127.0.0.1:0"], acl: lo, upstream: %s}
`

// TestServeSpecialInclude: a FIFO, a device or a directory named as an include is refused with an
// error naming the config line and the file, at startup and on reload (issue 14, item 7). On
// reload the running server keeps serving with its rules; /dev/zero once ran it out of memory, and
// a FIFO hung the reload and, with it, the signal loop, so that SIGTERM was ignored. Here SIGTERM
// comes right after the SIGHUP and must stop the server.
func TestServeSpecialInclude(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	up, _ := echoUpstream(t)
	for _, tc := range []struct {
		path, kind string
	}{
		{"/dev/zero", "a character device"},
		{"/dev/urandom", "a character device"},
		{fifo, "a FIFO"},
		{t.TempDir(), "a directory"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			// q: a quote as the error has it; the log line escapes it.
			want := func(q string) string {
				return fmt.Sprintf(`serve\.yaml:6: %s%s%s: cannot read include: %s: not a regular file \(%s\)`,
					q, regexp.QuoteMeta(tc.path), q, regexp.QuoteMeta(tc.path), tc.kind)
			}
			dir := t.TempDir()
			bad := fmt.Sprintf(includeConfig, tc.path, up)
			cfg := writeFile(t, dir, "serve.yaml", bad)
			if _, errOut, status := runBin(t, "serve", "-config", cfg); status != 2 || !regexp.MustCompile(want(`"`)).MatchString(errOut) {
				t.Errorf("startup: exit %d, stderr %q; want 2 and %s", status, errOut, want(`"`))
			}

			writeFile(t, dir, "empty.txt", "")
			writeFile(t, dir, "serve.yaml", fmt.Sprintf(includeConfig, "empty.txt", up))
			p := startServe(t, cfg, "-watch", "0")
			addr := p.addr("echo")
			writeFile(t, dir, "serve.yaml", bad)
			p.signal(syscall.SIGHUP)
			p.waitLog(`msg="config reload failed; keeping the running config".*` + want(`\\"`))
			if !served(t, "127.0.0.1", addr) || !refused(t, "127.0.0.2", addr) {
				t.Error("the running rules were not kept")
			}
			p.signal(syscall.SIGHUP)
			p.signal(syscall.SIGTERM)
			if code := p.wait(); code != 0 {
				t.Errorf("exit %d after SIGHUP and SIGTERM", code)
			}
		})
	}
}

// TestServeMaxFileSize: max_file_size bounds every file a load reads; a list over it fails the
// reload, and the running rules stay.
func TestServeMaxFileSize(t *testing.T) {
	up, _ := echoUpstream(t)
	dir := t.TempDir()
	writeFile(t, dir, "allow.txt", "127.0.0.3\n")
	cfg := writeFile(t, dir, "serve.yaml", fmt.Sprintf(includeConfig, "allow.txt", up)+"max_file_size: 16\n")
	p := startServe(t, cfg, "-watch", "0")
	addr := p.addr("echo")
	if !served(t, "127.0.0.3", addr) {
		t.Fatal("127.0.0.3 refused")
	}
	writeFile(t, dir, "allow.txt", "127.0.0.3\n127.0.0.2\n") // 20 bytes
	p.signal(syscall.SIGHUP)
	p.waitLog(`msg="config reload failed; keeping the running config".*allow\.txt: file too big \(20 bytes, over the bound of 16\)`)
	if !served(t, "127.0.0.3", addr) || !refused(t, "127.0.0.2", addr) {
		t.Error("the running rules were not kept")
	}
}
