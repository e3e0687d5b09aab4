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
