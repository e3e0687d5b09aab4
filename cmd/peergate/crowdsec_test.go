package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// lapi is a CrowdSec local API of its own (Debian's crowdsec package, offline: no CAPI), on a
// loopback port, with its config, database and logs in a temporary directory.
type lapi struct {
	t        *testing.T
	dir, cfg string
	url      string
	cmd      *exec.Cmd
}

func startLAPI(t *testing.T, machines ...string) *lapi {
	t.Helper()
	for _, prog := range []string{"crowdsec", "cscli"} {
		if _, err := exec.LookPath(prog); err != nil {
			t.Skipf("CrowdSec not installed (%v): .ci/run installs Debian's crowdsec package as root", err)
		}
	}
	if _, err := os.Stat("/etc/crowdsec/profiles.yaml"); err != nil {
		t.Skipf("CrowdSec not configured: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	l := &lapi{t: t, dir: t.TempDir(), url: fmt.Sprintf("http://127.0.0.1:%d", port)}
	l.cfg = filepath.Join(l.dir, "config.yaml")
	writeFile(t, l.dir, "config.yaml", fmt.Sprintf(`common:
  daemonize: false
  log_media: file
  log_level: info
  log_dir: %[1]s/
  working_dir: .
config_paths:
  config_dir: /etc/crowdsec/
  data_dir: %[1]s/
  simulation_path: /etc/crowdsec/simulation.yaml
  hub_dir: /var/lib/crowdsec/hub/
  index_path: /var/lib/crowdsec/hub/.index.json
  notification_dir: /etc/crowdsec/notifications/
  plugin_dir: /usr/lib/crowdsec/plugins/
crowdsec_service:
  acquisition_path: /etc/crowdsec/acquis.yaml
  parser_routines: 1
cscli:
  output: human
db_config:
  log_level: info
  type: sqlite
  db_path: %[1]s/crowdsec.db
api:
  client:
    insecure_skip_verify: false
    credentials_path: %[1]s/local_api_credentials.yaml
  server:
    log_level: info
    listen_uri: 127.0.0.1:%[2]d
    profiles_path: /etc/crowdsec/profiles.yaml
    console_path: /etc/crowdsec/console.yaml
    trusted_ips: [127.0.0.1, "::1"]
prometheus:
  enabled: false
`, l.dir, port))
	l.cscli("machines", "add", "peergate-test", "--auto", "--force", "-f", filepath.Join(l.dir, "local_api_credentials.yaml"))
	for _, m := range machines { // NAME:PASSWORD, credentials written to l.dir/NAME.yaml
		name, pw, _ := strings.Cut(m, ":")
		l.cscli("machines", "add", name, "--password", pw, "--force", "-f", filepath.Join(l.dir, name+".yaml"))
	}
	l.start()
	return l
}

// cscli runs cscli against this LAPI and returns its output.
func (l *lapi) cscli(args ...string) string {
	l.t.Helper()
	cmd := exec.Command("cscli", append([]string{"-c", l.cfg}, args...)...)
	cmd.Dir = l.dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		l.t.Fatalf("cscli %q: %v\n%s", args, err, out)
	}
	return string(out)
}

func (l *lapi) start() {
	l.t.Helper()
	l.cmd = exec.Command("crowdsec", "-c", l.cfg, "-no-cs")
	l.cmd.Dir = l.dir
	if err := l.cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
	cmd := l.cmd
	l.t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(l.url + "/health")
		if err == nil {
			resp.Body.Close()
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(l.dir, "crowdsec_api.log"))
			l.t.Fatalf("CrowdSec LAPI did not come up on %s: %v\n%s", l.url, err, log)
		}
		time.Sleep(50 * time.Millisecond) // polling for a condition, with a deadline
	}
}

func (l *lapi) kill() {
	l.cmd.Process.Kill()
	l.cmd.Wait()
}

// eventually polls cond every 50 ms until it holds, failing after within.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
		time.Sleep(50 * time.Millisecond) // polling for a condition, with a deadline
	}
}

// TestServeCrowdSec runs peergate serve as a bouncer of a real CrowdSec LAPI: decisions made with
// cscli deny within the interval, deletions let the peer in again, ranges spare never_ban
// addresses, and with the LAPI down the known bans stay and accepts go on.
func TestServeCrowdSec(t *testing.T) {
	l := startLAPI(t)
	key := strings.TrimSpace(l.cscli("bouncers", "add", "peergate", "-o", "raw"))
	up, _ := echoUpstream(t)
	dir := t.TempDir()
	writeFile(t, dir, "token", "s3cret\n")
	writeFile(t, dir, "key", key+"\n")
	cfg := writeFile(t, dir, "serve.yaml", fmt.Sprintf(bansConfig, up,
		"crowdsec: {url: \""+l.url+"\", api_key_file: key, interval: 1s}\n"))
	p := startServe(t, cfg, "-watch", "0")
	addr := p.addr("echo")
	base := "http://" + p.addr("admin")
	metric := func(name string) string {
		_, m := adminDo(t, "GET", base+"/metrics", "s3cret", "")
		for _, line := range strings.Split(m, "\n") {
			if strings.HasPrefix(line, name+" ") {
				return strings.TrimPrefix(line, name+" ")
			}
		}
		return ""
	}
	eventually(t, 3*time.Second, "peergate_crowdsec_up 1", func() bool { return metric("peergate_crowdsec_up") == "1" })

	// interval (1 s) + 1 s: a ban is effective, a deletion too.
	l.cscli("decisions", "add", "--ip", "127.0.0.2", "--duration", "1m", "--reason", "test-scan")
	eventually(t, 2*time.Second, "127.0.0.2 refused after cscli decisions add", func() bool { return !served(t, "127.0.0.2", addr) })
	if !served(t, "127.0.0.1", addr) {
		t.Fatal("127.0.0.1 refused")
	}
	_, body := adminDo(t, "GET", base+"/explain?addr=127.0.0.2", "s3cret", "")
	if !strings.Contains(body, `"origin": "crowdsec"`) || !strings.Contains(body, `"reason": "test-scan"`) {
		t.Errorf("explain: %s", body)
	}
	l.cscli("decisions", "delete", "--ip", "127.0.0.2")
	eventually(t, 2*time.Second, "127.0.0.2 served after cscli decisions delete", func() bool { return served(t, "127.0.0.2", addr) })

	// A range over the never_ban address 127.0.0.1: the rest of it is banned, 127.0.0.1 is not.
	l.cscli("decisions", "add", "--range", "127.0.0.0/29", "--duration", "1m")
	eventually(t, 2*time.Second, "127.0.0.5 refused after a --range decision", func() bool { return !served(t, "127.0.0.5", addr) })
	if !refused(t, "127.0.0.2", addr) || !served(t, "127.0.0.1", addr) {
		t.Error("range: 127.0.0.2 must be refused and the guarded 127.0.0.1 served")
	}

	// LAPI down: bans stay, accepts go on, the metric says so, the outage is logged once.
	l.kill()
	eventually(t, 3*time.Second, "peergate_crowdsec_up 0", func() bool { return metric("peergate_crowdsec_up") == "0" })
	if !refused(t, "127.0.0.5", addr) || !served(t, "127.0.0.1", addr) {
		t.Error("with the LAPI down: known bans must stay and allowed peers get through")
	}
	// LAPI back (same database): resync, and new decisions arrive again.
	l.start()
	l.cscli("decisions", "add", "--ip", "127.0.0.9", "--duration", "1m")
	eventually(t, 3*time.Second, "127.0.0.9 refused after the LAPI came back", func() bool { return !served(t, "127.0.0.9", addr) })
	if metric("peergate_crowdsec_up") != "1" || !refused(t, "127.0.0.5", addr) {
		t.Error("after the resync: up must be 1 and the range still banned")
	}
	p.mu.Lock()
	logs := strings.Join(p.log, "\n")
	p.mu.Unlock()
	if n := strings.Count(logs, "crowdsec LAPI unreachable"); n != 1 {
		t.Errorf("outage logged %d times, want once", n)
	}
}

// TestServeCrowdSecReport: the whole-fleet loop. Gate A auto-bans a flooding source and reports
// it to the LAPI as a registered machine; gate B, which never saw the source, pulls the decision
// and denies it too.
func TestServeCrowdSecReport(t *testing.T) {
	l := startLAPI(t, "gatea:gateapassword1")
	// One bouncer key per gate: the LAPI keeps the stream's position per key, so two gates on one
	// key would split the deltas between them.
	key := strings.TrimSpace(l.cscli("bouncers", "add", "peergate-a", "-o", "raw"))
	keyB := strings.TrimSpace(l.cscli("bouncers", "add", "peergate-b", "-o", "raw"))
	dir := t.TempDir()
	creds, _ := os.ReadFile(filepath.Join(l.dir, "gatea.yaml"))
	writeFile(t, dir, "machine.yaml", string(creds))
	writeFile(t, dir, "token", "s3cret\n")
	writeFile(t, dir, "key", key+"\n")
	writeFile(t, dir, "keyb", keyB+"\n")
	up, _ := echoUpstream(t)
	cs := "crowdsec: {url: \"" + l.url + "\", api_key_file: key, interval: 1s%s}\n"
	a := strings.Replace(fmt.Sprintf(bansConfig, up, fmt.Sprintf(cs, ", report: true, credentials_file: machine.yaml")),
		"    upstream: "+up+"\n", "    upstream: "+up+"\n    ban_after: {denials: 3, within: 1m, for: 1h}\n", 1)
	b := strings.Replace(fmt.Sprintf(bansConfig, up, strings.Replace(fmt.Sprintf(cs, ""), "api_key_file: key", "api_key_file: keyb", 1)),
		"deny: [127.0.0.3]", "deny: []", 1)
	pa := startServe(t, writeFile(t, dir, "a.yaml", a), "-watch", "0")
	pb := startServe(t, writeFile(t, dir, "b.yaml", b), "-watch", "0")
	addrA, addrB := pa.addr("echo"), pb.addr("echo")
	if !served(t, "127.0.0.3", addrB) {
		t.Fatal("gate B refused 127.0.0.3 before any ban")
	}
	for range 3 {
		if served(t, "127.0.0.3", addrA) {
			t.Fatal("gate A served 127.0.0.3, which its ACL denies")
		}
	}
	pa.waitLog(`msg="crowdsec: auto-bans reported" count=1`)
	eventually(t, 3*time.Second, "gate B refuses 127.0.0.3, banned by gate A through the LAPI", func() bool { return !served(t, "127.0.0.3", addrB) })
	if !served(t, "127.0.0.1", addrB) {
		t.Error("gate B refused 127.0.0.1")
	}
	_, body := adminDo(t, "GET", "http://"+pb.addr("admin")+"/explain?addr=127.0.0.3", "s3cret", "")
	if !strings.Contains(body, `"origin": "crowdsec"`) || !strings.Contains(body, `"reason": "peergate/auto-ban"`) {
		t.Errorf("gate B's explain: %s", body)
	}
}
