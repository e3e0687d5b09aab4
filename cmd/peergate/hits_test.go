package main

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestCheckHits runs "peergate check -hits" against a running serve: the rules that decided
// connections, with counts, the default, and the rule that never matched.
func TestCheckHits(t *testing.T) {
	up, _ := echoUpstream(t)
	dir := t.TempDir()
	writeFile(t, dir, "token", "s3cret\n")
	cfg := writeFile(t, dir, "serve.yaml", fmt.Sprintf(`
acls:
  lo: {default: deny, allow: [127.0.0.1], deny: [127.0.0.3, 10.0.0.0/8]}
services:
  - name: echo
    listen: ["127.0.0.1:0"]
    acl: lo
    upstream: %s
admin:
  listen: 127.0.0.1:0
  token_file: token
`, up))
	p := startServe(t, cfg, "-watch", "0")
	addr, admin := p.addr("echo"), p.addr("admin")
	for _, src := range []string{"127.0.0.1", "127.0.0.1", "127.0.0.2"} {
		if !served(t, src, addr) && src == "127.0.0.1" {
			t.Fatalf("%s refused", src)
		}
	}
	if !refused(t, "127.0.0.3", addr) {
		t.Fatal("127.0.0.3 served")
	}
	want := []*regexp.Regexp{
		regexp.MustCompile(`(?m)^127\.0\.0\.1/32\s+\S+serve\.yaml:3\s+allow\s+2\s+20`),
		regexp.MustCompile(`(?m)^default\s+-\s+deny\s+1\s+`),
		regexp.MustCompile(`(?m)^127\.0\.0\.3/32\s+\S+serve\.yaml:3\s+deny\s+1\s+`),
		regexp.MustCompile(`(?m)^never matched since \S+: 1 rules\n  deny 10\.0\.0\.0/8 \(\S+serve\.yaml:3\)$`),
	}
	var out, errOut string
	var status int
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		out, errOut, status = runBin(t, "check", "-hits", "-config", cfg, "-admin", admin, "-service", "echo")
		ok := status == 0
		for _, re := range want {
			ok = ok && re.MatchString(out)
		}
		if ok {
			break
		}
	}
	for _, re := range want {
		if !re.MatchString(out) {
			t.Errorf("check -hits: exit %d, stdout lacks %v:\n%s\nstderr: %s", status, re, out, errOut)
		}
	}
	// Without the token (no -config): refused by the admin API.
	if _, stderr, status := runBin(t, "check", "-hits", "-admin", admin); status != 2 || !strings.Contains(stderr, "token") {
		t.Errorf("no token: exit %d, %s", status, stderr)
	}
}

// TestWhatIf asks a running serve which of its recent peers a candidate ACL file and a candidate
// serve file would decide the other way, and checks that nothing was applied.
func TestWhatIf(t *testing.T) {
	up, _ := echoUpstream(t)
	dir := t.TempDir()
	writeFile(t, dir, "token", "s3cret\n")
	cfg := writeFile(t, dir, "serve.yaml", fmt.Sprintf(`
acls:
  lo: {default: deny, allow: [127.0.0.0/8], deny: [127.0.0.3]}
services:
  - name: echo
    listen: ["127.0.0.1:0"]
    acl: lo
    upstream: %s
admin:
  listen: 127.0.0.1:0
  token_file: token
`, up))
	p := startServe(t, cfg, "-watch", "0")
	addr, admin := p.addr("echo"), p.addr("admin")
	for _, src := range []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"} {
		if served(t, src, addr) == (src == "127.0.0.3") {
			t.Fatalf("%s: wrong verdict before the change", src)
		}
	}
	bare := writeFile(t, dir, "cand.yaml", "default: deny\nallow: [127.0.0.0/8, 127.0.0.3]\ndeny: [127.0.0.2]\n")
	serveCand := writeFile(t, dir, "cand-serve.yaml", "acls:\n  other: {default: allow}\n  x: {default: deny}\nservices: []\n")
	for _, tc := range []struct {
		name   string
		file   string
		status int
		want   []string
	}{
		{"bare ACL file", bare, 1, []string{
			"service echo (acl lo -> cand): 2 of 3 recent peers change verdict: 1 now denied, 1 now allowed",
			"127.0.0.2  allow -> deny  127.0.0.0/8 " + cfg + ":3  127.0.0.2/32 " + bare + ":3",
			"127.0.0.3  deny -> allow  127.0.0.3/32 " + cfg + ":3  127.0.0.3/32 " + bare + ":2",
			"(recent peers: up to 10000 distinct a service; 192 bytes held now)"}},
		{"serve file without the service or ACL", serveCand, 0, []string{`service echo: skipped: the candidate has no service "echo" and no ACL "lo"`}},
		{"same as running", cfg, 0, []string{"service echo (acl lo -> lo): 0 of 3 recent peers change verdict"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, stderr, status := runBin(t, "whatif", "-config", cfg, "-admin", admin, tc.file)
			if status != tc.status {
				t.Fatalf("exit %d, want %d\n%s\n%s", status, tc.status, out, stderr)
			}
			rest := strings.Join(strings.Fields(out), " ") // tabwriter's padding aside
			for _, w := range tc.want {
				w = strings.Join(strings.Fields(w), " ")
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("stdout lacks %q (in order):\n%s", w, out)
				}
				rest = rest[i+len(w):]
			}
		})
	}
	// Nothing was applied.
	if !served(t, "127.0.0.2", addr) || !refused(t, "127.0.0.3", addr) {
		t.Error("whatif changed the running policy")
	}
	if _, stderr, status := runBin(t, "whatif", "-config", cfg, "-admin", admin, writeFile(t, dir, "bad.yaml", "default: deny\nallow: [10.0.0.1/8]\n")); status != 2 || !strings.Contains(stderr, "bad.yaml:2") {
		t.Errorf("bad candidate: exit %d, %s", status, stderr)
	}
}
