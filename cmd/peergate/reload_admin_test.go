package main

import (
	"fmt"
	"strings"
	"testing"
)

// TestServeAdminReloadGuard: a reload through the admin API that would deny the requester's own
// address (on the admin listener or on a service that lets it in now) is refused with 409 and
// keeps the running config; force applies it; a harmless change goes through. The CLI maps the
// answers to exit statuses 0, 1 and 2.
func TestServeAdminReloadGuard(t *testing.T) {
	up, _ := echoUpstream(t)
	dir := t.TempDir()
	const tmpl = `acls:
  lo: {default: deny, allow: [127.0.0.0/8], deny: [%s]}
  adm: {default: deny, allow: [127.0.0.0/8], deny: [%s]}
services:
  - name: echo
    listen: ["127.0.0.1:0"]
    acl: lo
    upstream: %s
admin:
  listen: 127.0.0.1:0
  acl: adm
`
	write := func(svcDeny, admDeny string) string {
		return writeFile(t, dir, "serve.yaml", fmt.Sprintf(tmpl, svcDeny, admDeny, up))
	}
	cfg := write("127.0.0.9", "127.0.0.9")
	p := startServe(t, cfg, "-watch", "0")
	addr := p.addr("echo")
	admin := p.addr("admin")
	for _, tc := range []struct {
		svcDeny, admDeny string
		force            bool
		code, exit       int
		in               string
		served           bool // 127.0.0.1 on echo afterwards
	}{
		{"127.0.0.1", "127.0.0.9", false, 409, 1, "service echo: 127.0.0.1, the peer of this reload request", true},
		{"127.0.0.9", "127.0.0.0/30", false, 409, 1, "admin listener's ACL adm would deny 127.0.0.1", true},
		{"127.0.0.2", "127.0.0.9", false, 200, 0, `"reloaded": true`, true},
		{"127.0.0.1", "127.0.0.9", true, 200, 0, `"forced": true`, false},
	} {
		write(tc.svcDeny, tc.admDeny)
		url := "http://" + admin + "/reload"
		if tc.force {
			url += "?force=true"
		}
		code, body := adminDo(t, "POST", url, "", "")
		if code != tc.code || !strings.Contains(body, tc.in) {
			t.Errorf("deny %s / admin deny %s (force %v): %d %s, want %d with %q", tc.svcDeny, tc.admDeny, tc.force, code, body, tc.code, tc.in)
		}
		if got := served(t, "127.0.0.1", addr); got != tc.served {
			t.Errorf("deny %s (force %v): 127.0.0.1 served = %v, want %v", tc.svcDeny, tc.force, got, tc.served)
		}
	}
	// The CLI: refused is 1, an unreachable admin is 2.
	write("127.0.0.9", "127.0.0.0/30")
	if _, errOut, status := runBin(t, "reload", "-admin", admin); status != 1 || !strings.Contains(errOut, "lockout guard") {
		t.Errorf("peergate reload: exit %d, %s; want 1 and the lockout guard", status, errOut)
	}
	if _, errOut, status := runBin(t, "reload", "-admin", "127.0.0.1:1"); status != 2 {
		t.Errorf("peergate reload to nothing: exit %d, %s; want 2", status, errOut)
	}
	write("127.0.0.9", "127.0.0.9")
	if out, errOut, status := runBin(t, "reload", "-admin", admin); status != 0 || !strings.Contains(out, "reloaded") {
		t.Errorf("peergate reload: exit %d, %s%s; want 0", status, out, errOut)
	}
}
