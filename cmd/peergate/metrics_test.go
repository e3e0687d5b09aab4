package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const adminConfig = `
acls:
  lo: {default: deny, allow: [127.0.0.1], deny: [127.0.0.3]}
services:
  - name: echo
    listen: ["127.0.0.1:0"]
    acl: lo
    upstream: %s
admin:
  listen: 127.0.0.1:0
`

// scrape fetches /metrics from admin and returns each sample line's value by its series
// ("name{label="v",...}" as exposed, labels in name order).
func scrape(t *testing.T, admin string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics: %s", resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad sample line %q", line)
		}
		out[line[:i]] = v
	}
	return out
}

// scrapeUntil scrapes until every series in want has its value, or fails after a few seconds
// (proxied bytes are counted when the proxy finishes, just after the client has its answer).
func scrapeUntil(t *testing.T, admin string, want map[string]float64) map[string]float64 {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := scrape(t, admin)
		var wrong []string
		for k, v := range want {
			if got[k] != v {
				wrong = append(wrong, fmt.Sprintf("%s = %v, want %v", k, got[k], v))
			}
		}
		if len(wrong) == 0 {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics never matched:\n%s", strings.Join(wrong, "\n"))
		}
		time.Sleep(20 * time.Millisecond) // polling for a condition, with a deadline
	}
}

func TestServeMetrics(t *testing.T) {
	up, _ := echoUpstream(t)
	dir := t.TempDir()
	text := fmt.Sprintf(adminConfig, up)
	cfg := writeFile(t, dir, "serve.yaml", text)
	p := startServe(t, cfg, "-watch", "0")
	addr := p.addr("echo")
	admin := p.addr("admin")

	for range 3 {
		c := dial(t, "127.0.0.1", addr)
		roundTrip(t, c, "ping") // 4 bytes each way
		c.Close()
	}
	for _, src := range []string{"127.0.0.2", "127.0.0.2", "127.0.0.3"} {
		if !refused(t, src, addr) {
			t.Fatalf("%s was not refused", src)
		}
	}
	sum := sha256.Sum256([]byte(text))
	hash := hex.EncodeToString(sum[:])
	got := scrapeUntil(t, admin, map[string]float64{
		`peergate_connections_total{reason="acl",service="echo",verdict="allow"}`:           3,
		`peergate_connections_total{reason="acl",service="echo",verdict="deny"}`:            3,
		`peergate_denials_total{origin="",rule="default",service="echo"}`:                   2,
		`peergate_denials_total{origin="` + cfg + `:3",rule="127.0.0.3/32",service="echo"}`: 1,
		`peergate_proxied_bytes_total{direction="in",service="echo"}`:                       12,
		`peergate_proxied_bytes_total{direction="out",service="echo"}`:                      12,
		`peergate_connections_active{service="echo"}`:                                       0,
		`peergate_upstream_connect_duration_seconds_count{service="echo"}`:                  3,
		`peergate_acl_rules{acl="lo"}`:                                                      2,
		`peergate_config_info{file="` + cfg + `",sha256="` + hash + `"}`:                    1,
		`peergate_config_reloads_total{result="success"}`:                                   0,
		`peergate_config_reloads_total{result="failure"}`:                                   0,
	})
	if got["peergate_config_loaded_timestamp_seconds"] < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Errorf("config loaded timestamp %v is not recent", got["peergate_config_loaded_timestamp_seconds"])
	}
	if _, ok := got[`peergate_connections_total{reason="peer_error",service="echo",verdict="deny"}`]; !ok {
		t.Error("no peer_error series: a dashboard needs it at 0 before the first failure")
	}
	var build, pgBuild bool
	for k, v := range got {
		build = build || strings.HasPrefix(k, "go_build_info{")
		pgBuild = pgBuild || strings.HasPrefix(k, "peergate_build_info{") && strings.Contains(k, `goversion="go1.`) && v == 1
	}
	if !build || !pgBuild {
		t.Errorf("go_build_info %v, peergate_build_info %v: want both", build, pgBuild)
	}

	// The admin listener has its own ACL: loopback by default, and 127.0.0.2 is loopback.
	// Health and the effective config.
	resp, err := http.Get("http://" + admin + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("/healthz: %v %v", resp, err)
	}
	resp.Body.Close()
	resp, err = http.Get("http://" + admin + "/config")
	if err != nil {
		t.Fatal(err)
	}
	var eff struct {
		Version  struct{ Version, Go string }
		SHA256   string
		Services []struct{ Name, ACL, Upstream string }
		ACLs     []struct {
			Name  string
			Rules int
		}
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err := json.Unmarshal(body, &eff); err != nil {
		t.Fatalf("/config: %v in %s", err, body)
	}
	if eff.Version.Version == "" || !strings.HasPrefix(eff.Version.Go, "go1.") || eff.SHA256 != hash || len(eff.Services) != 1 || eff.Services[0].ACL != "lo" || eff.Services[0].Upstream != up ||
		len(eff.ACLs) != 1 || eff.ACLs[0].Rules != 2 {
		t.Errorf("/config = %s", body)
	}

	// A failed reload and a good one are both counted; the good one changes the config's hash.
	if err := os.WriteFile(cfg, []byte(text+"bogus: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p.signal(syscall.SIGHUP)
	p.waitLog(`config reload failed`)
	text2 := strings.Replace(text, "127.0.0.3]", "127.0.0.3, 127.0.0.4]", 1)
	if err := os.WriteFile(cfg, []byte(text2), 0o644); err != nil {
		t.Fatal(err)
	}
	p.signal(syscall.SIGHUP)
	p.waitLog(`msg="config reloaded"`)
	sum = sha256.Sum256([]byte(text2))
	got = scrapeUntil(t, admin, map[string]float64{
		`peergate_config_reloads_total{result="success"}`:                                      1,
		`peergate_config_reloads_total{result="failure"}`:                                      1,
		`peergate_config_info{file="` + cfg + `",sha256="` + hex.EncodeToString(sum[:]) + `"}`: 1,
		`peergate_acl_rules{acl="lo"}`:                                                         3,
		`peergate_connections_total{reason="acl",service="echo",verdict="allow"}`:              3, // kept across the reload
	})
	if _, ok := got[`peergate_config_info{file="`+cfg+`",sha256="`+hash+`"}`]; ok {
		t.Error("the old config's info series is still exposed")
	}
}

// TestServeAdminACL: the admin listener judges its peers with its own ACL.
func TestServeAdminACL(t *testing.T) {
	up, _ := echoUpstream(t)
	text := fmt.Sprintf(adminConfig, up) + "  acl: ops\n"
	text = strings.Replace(text, "acls:\n", "acls:\n  ops: {default: deny, allow: [127.0.0.5]}\n", 1)
	cfg := writeFile(t, t.TempDir(), "serve.yaml", text)
	p := startServe(t, cfg, "-watch", "0")
	admin := p.addr("admin")
	if !refused(t, "127.0.0.1", admin) {
		t.Error("127.0.0.1 reached the admin listener, whose ACL allows only 127.0.0.5")
	}
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.5")}}
	client := http.Client{Transport: &http.Transport{DialContext: d.DialContext}, Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + admin + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("/healthz from 127.0.0.5: %v %v", resp, err)
	}
	resp.Body.Close()
	p.waitLog(`msg="peer denied" service=admin .*peer=127\.0\.0\.1:`)
}
