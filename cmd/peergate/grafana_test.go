package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
)

// dashboardQueries returns every PromQL expression of a Grafana dashboard: panel targets and
// templating queries, wherever they are nested.
func dashboardQueries(v any) []string {
	var out []string
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if s, ok := x.(string); ok && (k == "expr" || k == "definition" || k == "query") {
				out = append(out, s)
				continue
			}
			out = append(out, dashboardQueries(x)...)
		}
	case []any:
		for _, x := range v {
			out = append(out, dashboardQueries(x)...)
		}
	}
	return out
}

// TestGrafanaDashboard: every peergate_ metric that examples/grafana/peergate.json queries is
// exposed by a running serve once it has seen traffic of each kind (allowed, denied by a rule,
// banned, an upstream that fails, an idle abort). A renamed metric fails here, not on a blank
// panel.
func TestGrafanaDashboard(t *testing.T) {
	data, err := os.ReadFile("../../examples/grafana/peergate.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash any
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("examples/grafana/peergate.json: %v", err)
	}
	names := map[string]bool{}
	name := regexp.MustCompile(`\bpeergate_[a-zA-Z0-9_]+`)
	for _, q := range dashboardQueries(dash) {
		for _, n := range name.FindAllString(q, -1) {
			names[n] = true
		}
	}
	for _, must := range []string{"peergate_denials_total", "peergate_connections_total", "peergate_connections_active",
		"peergate_config_reloads_total", "peergate_bans_active"} {
		if !names[must] {
			t.Errorf("the dashboard does not show %s", must)
		}
	}

	up, _ := echoUpstream(t)
	cfg := writeFile(t, t.TempDir(), "serve.yaml", fmt.Sprintf(`
acls:
  lo: {default: deny, allow: [127.0.0.0/8], deny: [127.0.0.3]}
services:
  - name: echo
    listen: ["127.0.0.1:0"]
    acl: lo
    idle_timeout: 100ms
    upstream: %s
  - name: dead
    listen: [%q]
    acl: lo
    upstream: %s
admin:
  listen: 127.0.0.1:0
`, up, freePort(t), freePort(t)))
	p := startServe(t, cfg, "-watch", "0")
	addrs := map[string]string{}
	for range 3 {
		m := p.waitLog(`msg=listening service=(\S+) addr=(\S+)`)
		addrs[m[1]] = m[2]
	}
	echo, dead, admin := addrs["echo"], addrs["dead"], addrs["admin"]
	if echo == "" || dead == "" || admin == "" {
		t.Fatalf("listeners: %v", addrs)
	}
	c := dial(t, "127.0.0.1", echo)
	roundTrip(t, c, "ping")
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.Copy(io.Discard, c) // until the idle timeout closes it: an abort
	c.Close()
	if !refused(t, "127.0.0.3", echo) {
		t.Fatal("127.0.0.3 was not refused")
	}
	resp, err := http.Post("http://"+admin+"/bans", "application/json", bytes.NewBufferString(`{"prefix":"127.0.0.4","reason":"test"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /bans: %s", resp.Status)
	}
	if !refused(t, "127.0.0.4", echo) {
		t.Fatal("banned 127.0.0.4 was not refused")
	}
	c = dial(t, "127.0.0.1", dead)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.Copy(io.Discard, c) // closed once the upstream connect fails
	c.Close()

	var missing []string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		exposed := map[string]bool{}
		for series := range scrape(t, admin) {
			n, _, _ := strings.Cut(series, "{")
			exposed[n] = true
		}
		missing = missing[:0]
		for n := range names {
			if !exposed[n] {
				missing = append(missing, n)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("the dashboard queries metrics that serve does not expose: %v", missing)
	}
}
