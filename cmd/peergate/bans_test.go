package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/peergate/peergate/internal/kerneltest"
)

const bansConfig = `
acls:
  lo: {default: allow, deny: [127.0.0.3]}
never_ban: [127.0.0.1]
services:
  - name: echo
    listen: ["127.0.0.1:0"]
    acl: lo
    upstream: %s
admin:
  listen: 127.0.0.1:0
  token_file: token
%s`

// adminDo sends one admin request with the token and returns the status and body.
func adminDo(t *testing.T, method, url, token, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestServeBansAPI drives the admin API and the CLI against a running serve: a ban denies a peer
// the ACL allows, at once; never_ban refuses; unban lets it in again; the log, /explain and the
// metrics name the ban; every admin request but /healthz needs the token.
func TestServeBansAPI(t *testing.T) {
	up, _ := echoUpstream(t)
	dir := t.TempDir()
	writeFile(t, dir, "token", "s3cret\n")
	cfg := writeFile(t, dir, "serve.yaml", fmt.Sprintf(bansConfig, up, ""))
	p := startServe(t, cfg, "-watch", "0")
	addr := p.addr("echo")
	admin := p.addr("admin")
	base := "http://" + admin

	for _, tc := range []struct {
		method, path, token, body string
		want                      int
		in                        string // a substring of the body
	}{
		{"GET", "/bans", "", "", 401, "token"},
		{"GET", "/bans", "wrong", "", 401, "token"},
		{"GET", "/healthz", "", "", 200, "ok"},
		{"GET", "/bans", "s3cret", "", 200, "[]"},
		{"POST", "/bans", "s3cret", `{"prefix":"127.0.0.1"}`, 409, "never_ban"},
		{"POST", "/bans", "s3cret", `{"prefix":"127.0.0.0/8"}`, 409, "127.0.0.1/32"},
		{"POST", "/bans", "s3cret", `{"prefix":"127.0.0.2/8"}`, 400, "127.0.0.0/8"},
		{"POST", "/bans", "s3cret", `{"prefix":"nope"}`, 400, "nope"},
		{"POST", "/bans", "s3cret", `{"prefix":"127.0.0.2","for":"soon"}`, 400, "soon"},
		{"POST", "/bans", "s3cret", `{"prefix":"127.0.0.2","for":"1h","reason":"scanner"}`, 201, `"origin": "api"`},
		{"DELETE", "/bans/127.0.0.9", "s3cret", "", 404, "no ban"},
	} {
		code, body := adminDo(t, tc.method, base+tc.path, tc.token, tc.body)
		if code != tc.want || !strings.Contains(body, tc.in) {
			t.Errorf("%s %s %s: %d %q, want %d with %q", tc.method, tc.path, tc.body, code, body, tc.want, tc.in)
		}
	}
	if !refused(t, "127.0.0.2", addr) {
		t.Error("banned 127.0.0.2 was served")
	}
	if !served(t, "127.0.0.1", addr) {
		t.Error("127.0.0.1 was refused")
	}
	p.waitLog(`msg="peer denied".*peer=127\.0\.0\.2:\d+ layer=ban ban=127\.0\.0\.2/32 origin=api reason=scanner expires=20`)

	code, body := adminDo(t, "GET", base+"/explain?addr=127.0.0.2&service=echo", "s3cret", "")
	var e struct {
		Layer, Action string
		Ban           struct{ Prefix, Origin, Reason string }
	}
	json.Unmarshal([]byte(body), &e)
	if code != 200 || e.Layer != "ban" || e.Action != "deny" || e.Ban.Prefix != "127.0.0.2/32" || e.Ban.Reason != "scanner" {
		t.Errorf("explain 127.0.0.2: %d %s", code, body)
	}
	code, body = adminDo(t, "GET", base+"/explain?addr=127.0.0.3", "s3cret", "")
	if code != 200 || !strings.Contains(body, `"layer": "acl"`) || !strings.Contains(body, `"rule": "127.0.0.3/32"`) {
		t.Errorf("explain 127.0.0.3: %d %s", code, body)
	}

	// The CLI, reading the admin address and token from the config.
	for _, tc := range []struct {
		args   []string
		status int
		out    string
	}{
		{[]string{"ban", "-config", cfg, "-admin", admin, "-for", "10m", "-reason", "cli", "127.0.0.4", "::ffff:127.0.0.5"}, 0, "banned 127.0.0.5/32"},
		{[]string{"ban", "-config", cfg, "-admin", admin, "127.0.0.1"}, 1, ""},
		{[]string{"ban", "-admin", admin, "127.0.0.6"}, 2, ""}, // no token
		{[]string{"bans", "-admin", admin, "-token-file", dir + "/token"}, 0, "127.0.0.4/32  api"},
		{[]string{"unban", "-config", cfg, "-admin", admin, "127.0.0.2", "127.0.0.4"}, 0, "unbanned 127.0.0.4"},
		{[]string{"unban", "-config", cfg, "-admin", admin, "127.0.0.2"}, 1, ""},
		{[]string{"ban", "-config", cfg, "-admin", admin, "10.0.0.1/8"}, 2, ""},
	} {
		out, errs, status := runBin(t, tc.args...)
		if status != tc.status || !strings.Contains(out, tc.out) {
			t.Errorf("peergate %q: status %d, out %q, err %q; want %d and %q", tc.args, status, out, errs, tc.status, tc.out)
		}
	}
	if !served(t, "127.0.0.2", addr) {
		t.Error("unbanned 127.0.0.2 still refused")
	}
	if !refused(t, "127.0.0.5", addr) {
		t.Error("127.0.0.5, banned as ::ffff:127.0.0.5, was served")
	}
	// Metrics, with the token.
	req, _ := http.NewRequest("GET", base+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer s3cret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`peergate_bans_active{origin="api"} 1`,
		`peergate_ban_denials_total{origin="api",service="echo"} 2`,
		`peergate_connections_total{reason="ban",service="echo",verdict="deny"} 2`,
		`peergate_bans_refused_total{reason="guarded"} 3`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestServeBanExpires: a ban with a short expiry stops applying by itself.
func TestServeBanExpires(t *testing.T) {
	up, _ := echoUpstream(t)
	dir := t.TempDir()
	writeFile(t, dir, "token", "s3cret\n")
	cfg := writeFile(t, dir, "serve.yaml", fmt.Sprintf(bansConfig, up, ""))
	p := startServe(t, cfg, "-watch", "0")
	addr := p.addr("echo")
	base := "http://" + p.addr("admin")
	if code, body := adminDo(t, "POST", base+"/bans", "s3cret", `{"prefix":"127.0.0.2","for":"1s"}`); code != 201 {
		t.Fatalf("POST: %d %s", code, body)
	}
	if !refused(t, "127.0.0.2", addr) {
		t.Fatal("banned 127.0.0.2 was served")
	}
	deadline := time.Now().Add(3 * time.Second) // 1 s of ban, and it must stop within 1 s more
	for !served(t, "127.0.0.2", addr) {
		if time.Now().After(deadline) {
			t.Fatal("ban still applies 2 s after it expired")
		}
		time.Sleep(50 * time.Millisecond) // polling for a condition, with a deadline
	}
	for {
		_, body := adminDo(t, "GET", base+"/bans", "s3cret", "")
		if strings.TrimSpace(body) == "[]" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("expired ban still listed: %s", body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestServeBansKernelFilter: with the eBPF filter, a ban made through the API is mirrored into
// the kernel (the banned peer's SYN is dropped), and unbanning takes it out again.
func TestServeBansKernelFilter(t *testing.T) {
	up, _ := echoUpstream(t)
	dir := t.TempDir()
	writeFile(t, dir, "token", "s3cret\n")
	text := strings.Replace(fmt.Sprintf(bansConfig, up, ""), "    upstream: "+up+"\n", "    upstream: "+up+"\n    kernel_filter: ebpf\n", 1)
	cfg := writeFile(t, dir, "serve.yaml", text)
	p := startProc(t, bin, "serve", "-config", cfg, "-watch", "0")
	p.waitLogs(`msg=listening service=admin`)
	p.mu.Lock()
	log := strings.Join(p.log, "\n")
	p.mu.Unlock()
	if !strings.Contains(log, "backend=ebpf") {
		t.Skipf("no eBPF socket filter here: %s", log)
	}
	addr := regexp.MustCompile(`msg=listening service=echo addr=(\S+)`).FindStringSubmatch(log)[1]
	base := "http://" + regexp.MustCompile(`msg=listening service=admin addr=(\S+)`).FindStringSubmatch(log)[1]
	if code, body := adminDo(t, "POST", base+"/bans", "s3cret", `{"prefix":"127.0.0.2"}`); code != 201 {
		t.Fatalf("POST: %d %s", code, body)
	}
	deadline := time.Now().Add(2 * time.Second)
	for !kerneltest.Dropped("127.0.0.2", addr) {
		if time.Now().After(deadline) {
			t.Fatal("banned 127.0.0.2 still completes the handshake: the ban is not in the kernel filter")
		}
	}
	if !served(t, "127.0.0.1", addr) {
		t.Fatal("127.0.0.1 not served")
	}
	if code, _ := adminDo(t, "DELETE", base+"/bans/127.0.0.2", "s3cret", ""); code != 204 {
		t.Fatal("DELETE failed")
	}
	deadline = time.Now().Add(2 * time.Second)
	for !served(t, "127.0.0.2", addr) {
		if time.Now().After(deadline) {
			t.Fatal("unbanned 127.0.0.2 still not served")
		}
		time.Sleep(20 * time.Millisecond) // polling for a condition, with a deadline
	}
}

// TestServeBansPersist: bans from the API survive SIGKILL and a restart (the 201 comes after the
// state file is synced), expired ones do not come back, and check names a saved ban.
func TestServeBansPersist(t *testing.T) {
	up, _ := echoUpstream(t)
	dir := t.TempDir()
	writeFile(t, dir, "token", "s3cret\n")
	cfg := writeFile(t, dir, "serve.yaml", fmt.Sprintf(bansConfig, up, "state_dir: state\n"))
	p := startServe(t, cfg, "-watch", "0")
	base := "http://" + p.addr("admin")
	for _, body := range []string{`{"prefix":"127.0.0.2","reason":"kept"}`, `{"prefix":"127.0.0.4","for":"1h"}`, `{"prefix":"127.0.0.5","for":"1s"}`} {
		if code, out := adminDo(t, "POST", base+"/bans", "s3cret", body); code != 201 {
			t.Fatalf("POST %s: %d %s", body, code, out)
		}
	}
	if code, _ := adminDo(t, "DELETE", base+"/bans/127.0.0.4", "s3cret", ""); code != 204 {
		t.Fatal("DELETE")
	}
	p.cmd.Process.Kill() // SIGKILL: no shutdown, no last save
	<-p.done
	time.Sleep(1100 * time.Millisecond) // wall-clock time for the 1 s ban to expire while nothing runs (not synchronisation)

	out, _, status := runBin(t, "check", "-config", cfg, "127.0.0.2", "127.0.0.1")
	if status != 1 || !strings.Contains(out, "127.0.0.2  deny   ban 127.0.0.2/32") || !strings.Contains(out, `reason="kept"`) {
		t.Errorf("check: status %d\n%s", status, out)
	}
	p2 := startServe(t, cfg, "-watch", "0")
	p2.waitLog(`msg="bans restored" .* count=1`)
	addr := p2.addr("echo")
	base = "http://" + p2.addr("admin")
	if !refused(t, "127.0.0.2", addr) {
		t.Error("127.0.0.2, banned before the kill, was served after the restart")
	}
	for _, src := range []string{"127.0.0.1", "127.0.0.4", "127.0.0.5"} {
		if !served(t, src, addr) {
			t.Errorf("%s refused after the restart", src)
		}
	}
	_, body := adminDo(t, "GET", base+"/bans", "s3cret", "")
	if !strings.Contains(body, `"reason": "kept"`) || strings.Count(body, `"prefix"`) != 1 {
		t.Errorf("bans after restart: %s", body)
	}
}

// TestServeAutoBan: a real flood of denied connects, and of connects over a rate limit, bans the
// source automatically (origin auto, saved), while others still get through.
func TestServeAutoBan(t *testing.T) {
	up, _ := echoUpstream(t)
	dir := t.TempDir()
	writeFile(t, dir, "token", "s3cret\n")
	text := strings.Replace(fmt.Sprintf(bansConfig, up, "state_dir: state\n"), "    upstream: "+up+"\n",
		"    upstream: "+up+"\n    rate: 1/m\n    burst: 2\n    ban_after: {denials: 5, limit_hits: 3, within: 1m, for: 1h}\n", 1)
	cfg := writeFile(t, dir, "serve.yaml", text)
	p := startServe(t, cfg, "-watch", "0")
	addr := p.addr("echo")
	base := "http://" + p.addr("admin")
	for _, tc := range []struct {
		src    string
		tries  int // connects before the ban (each refused)
		reason string
	}{
		{"127.0.0.3", 5, "5 denials in 1m0s (service echo)"},        // denied by the ACL
		{"127.0.0.2", 2 + 3, "3 limit hits in 1m0s (service echo)"}, // burst 2, then 3 over the rate
	} {
		for i := range tc.tries {
			if tc.src == "127.0.0.2" && i < 2 {
				if !served(t, tc.src, addr) {
					t.Fatalf("%s connect %d: refused within its burst", tc.src, i)
				}
				continue
			}
			if !refused(t, tc.src, addr) {
				t.Fatalf("%s connect %d: served", tc.src, i)
			}
		}
		p.waitLog(`msg=auto-ban ban=` + strings.ReplaceAll(tc.src, ".", `\.`) + `/32 origin=auto reason="` + regexp.QuoteMeta(tc.reason) + `"`)
		_, body := adminDo(t, "GET", base+"/explain?addr="+tc.src, "s3cret", "")
		if !strings.Contains(body, `"layer": "ban"`) || !strings.Contains(body, `"origin": "auto"`) {
			t.Errorf("explain %s after the flood: %s", tc.src, body)
		}
	}
	if !served(t, "127.0.0.1", addr) {
		t.Error("127.0.0.1 refused")
	}
	if !refused(t, "127.0.0.3", addr) {
		t.Error("auto-banned 127.0.0.3 served")
	}
	_, metrics := adminDo(t, "GET", base+"/metrics", "s3cret", "")
	for _, want := range []string{`peergate_bans_active{origin="auto"} 2`, `peergate_ban_denials_total{origin="auto",service="echo"} 1`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}
