package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestServeLogFlags: -log-level debug logs the end of every connection; bad -log and -log-level
// values are usage errors.
func TestServeLogFlags(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "serve.yaml")
	os.WriteFile(cfg, []byte("acls:\n  lo: {default: deny, allow: [127.0.0.1]}\nservices:\n  - name: s\n    listen: [\"127.0.0.1:0\"]\n    acl: lo\n    exec: [/bin/true]\n"), 0o644)
	for _, tc := range []struct {
		flags []string
		want  string
	}{
		{[]string{"-log-level", "loud"}, `-log-level must be debug, info or warn, not "loud"`},
		{[]string{"-log", "journal"}, `-log must be stderr or syslog, not "journal"`},
	} {
		if _, errOut, status := runBin(t, append([]string{"serve", "-config", cfg}, tc.flags...)...); status != exitError || !strings.Contains(errOut, tc.want) {
			t.Errorf("serve %v: exit %d, %q; want 2 and %q", tc.flags, status, errOut, tc.want)
		}
	}
	p := startServe(t, cfg, "-log-level", "debug")
	c, err := net.Dial("tcp", p.addr("s"))
	if err != nil {
		t.Fatal(err)
	}
	c.Read(make([]byte, 1))
	c.Close()
	p.waitLog(`level=DEBUG msg="connection ended" service=s peer=127\.0\.0\.1:\d+ duration=\S+ pid=\d+ end=exited status=0`)
}
