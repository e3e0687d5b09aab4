package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/peergate/peergate/gate/kfilter"
	"github.com/peergate/peergate/internal/kerneltest"
)

const filterConfig = `
acls:
  block: {default: allow, deny: [127.0.0.2, "::ffff:127.0.0.9"]}
services:
  - name: echo
    listen: ["127.0.0.1:0", "[::]:0"]
    acl: block
    upstream: %s
    kernel_filter: %s
admin:
  listen: 127.0.0.1:0
`

func TestServeKernelFilter(t *testing.T) {
	up, upCount := echoUpstream(t)
	cfg := writeFile(t, t.TempDir(), "serve.yaml", fmt.Sprintf(filterConfig, up, "auto"))
	p := startServe(t, cfg, "-watch", "0")
	// The listening lines come in any order: wait for all, then read the addresses off the log.
	p.waitLogs(`msg=listening service=echo addr=127`, `msg=listening service=echo addr=\[::\]`, `msg=listening service=admin`)
	p.mu.Lock()
	log := strings.Join(p.log, "\n")
	p.mu.Unlock()
	find := func(re string) string { return regexp.MustCompile(re).FindStringSubmatch(log)[1] }
	v4 := find(`msg=listening service=echo addr=(127\.0\.0\.1:\d+)`)
	dual := find(`msg=listening service=echo addr=(\[::\]:\d+)`)
	admin := find(`msg=listening service=admin addr=(\S+)`)
	if strings.Contains(log, "kernel filter not attached") {
		t.Skipf("the kernel takes no socket filter here: %s", log)
	}
	_, dualPort, _ := net.SplitHostPort(dual)
	if !served(t, "127.0.0.1", v4) || !served(t, "127.0.0.1", net.JoinHostPort("127.0.0.1", dualPort)) {
		t.Fatal("allowed 127.0.0.1 not served")
	}
	for _, c := range []struct{ src, addr string }{
		{"127.0.0.2", v4},
		{"127.0.0.2", net.JoinHostPort("127.0.0.1", dualPort)}, // ::ffff:127.0.0.2 on the dual-stack socket
		{"127.0.0.9", net.JoinHostPort("127.0.0.1", dualPort)}, // denied as ::ffff:127.0.0.9
	} {
		if !kerneltest.Dropped(c.src, c.addr) {
			t.Errorf("%s to %s: the handshake completed; the kernel filter should drop its SYN", c.src, c.addr)
		}
	}
	// The accept loop never saw the dropped attempts: no denial counted, only the two allowed.
	scrapeUntil(t, admin, map[string]float64{
		`peergate_connections_total{reason="acl",service="echo",verdict="deny"}`:  0,
		`peergate_connections_total{reason="acl",service="echo",verdict="allow"}`: 2,
	})
	if n := upCount(); n != 2 {
		t.Errorf("upstream saw %d connections, want 2", n)
	}
	// With the eBPF filter the drops are counted, and /config names the backend.
	if strings.Contains(log, "backend=ebpf") {
		got := scrape(t, admin)
		if n := got[`peergate_kernel_dropped_total{family="ipv4",service="echo"}`]; n < 3 {
			t.Errorf("peergate_kernel_dropped_total ipv4 = %v, want at least the 3 SYNs dropped", n)
		}
		resp, err := http.Get("http://" + admin + "/config")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body := string(b)
		if !strings.Contains(body, `"backend": "ebpf"`) || !strings.Contains(body, `"ipv4_prefixes": 3`) {
			t.Errorf("/config does not show the eBPF filter: %s", body)
		}
	}

	// Turned off by a reload on the same listeners: denied peers are refused by the gate again.
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(filterConfig, up, "off")), 0o644); err != nil {
		t.Fatal(err)
	}
	p.signal(syscall.SIGHUP)
	p.waitLog(`msg="config reloaded"`)
	if !refused(t, "127.0.0.2", v4) {
		t.Error("after kernel_filter: off, 127.0.0.2 was not refused by the gate")
	}
	p.waitLog(`msg="peer denied" service=echo .*peer=127\.0\.0\.2:`)
}

// TestServeKernelFilterRequired: an ACL too big for the classic filter is refused at start with
// kernel_filter: cbpf; with auto and required it goes into the eBPF filter where eBPF is
// available, and otherwise required refuses it and auto logs it.
func TestServeKernelFilterRequired(t *testing.T) {
	dir := t.TempDir()
	var list strings.Builder
	for i := range 3000 { // scattered /32s: about 2 instructions each, over the 4096 limit
		fmt.Fprintf(&list, "10.%d.%d.1\n", i/250, i%250)
	}
	writeFile(t, dir, "big.lst", list.String())
	conf := `
acls:
  big: {default: allow, include: [{path: big.lst, action: deny}]}
services:
  - {name: echo, listen: ["127.0.0.1:0"], acl: big, upstream: "127.0.0.1:9", kernel_filter: %s}
`
	_, stderr, code := runBin(t, "serve", "-config", writeFile(t, dir, "req.yaml", fmt.Sprintf(conf, "cbpf")))
	if code != exitError || !strings.Contains(stderr, "kernel_filter cbpf") || !strings.Contains(stderr, "too large") || !strings.Contains(stderr, "req.yaml:5: \"cbpf\"") {
		t.Errorf("cbpf: exit %d, stderr %q", code, stderr)
	}
	if kfilter.EBPFAvailable() != nil {
		_, stderr, code := runBin(t, "serve", "-config", writeFile(t, dir, "req.yaml", fmt.Sprintf(conf, "required")))
		if code != exitError || !strings.Contains(stderr, "kernel_filter required") || !strings.Contains(stderr, "too large") {
			t.Errorf("required: exit %d, stderr %q", code, stderr)
		}
		p := startServe(t, writeFile(t, dir, "auto.yaml", fmt.Sprintf(conf, "auto")), "-watch", "0")
		p.waitLogs(`kernel filter not attached; the gate alone judges.*too large`, `msg=listening service=echo`)
		return
	}
	for _, mode := range []string{"required", "auto", "ebpf"} {
		p := startServe(t, writeFile(t, dir, mode+".yaml", fmt.Sprintf(conf, mode)), "-watch", "0")
		p.waitLogs(`kernel filter attached.*backend=ebpf prefixes=3002`, `msg=listening service=echo`)
	}
}

// TestServeKernelFilterNoCAPBPF: without CAP_BPF (and CAP_SYS_ADMIN), taken away with setpriv(1),
// kernel_filter: ebpf is refused with an error naming the capability, and auto falls back to the
// classic filter and says so.
func TestServeKernelFilterNoCAPBPF(t *testing.T) {
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("no setpriv(1) to drop capabilities")
	}
	if kfilter.EBPFAvailable() != nil {
		t.Skip("no eBPF here even with the test's capabilities")
	}
	drop := []string{setpriv, "--bounding-set", "-bpf,-sys_admin", "--"}
	if out, err := exec.Command(drop[0], append(drop[1:], "true")...).CombinedOutput(); err != nil {
		t.Skipf("setpriv cannot drop capabilities here: %v %s", err, out)
	}
	dir := t.TempDir()
	conf := `
acls:
  block: {default: allow, deny: [127.0.0.2]}
services:
  - {name: echo, listen: ["127.0.0.1:0"], acl: block, upstream: "127.0.0.1:9", kernel_filter: %s}
`
	cmd := exec.Command(drop[0], append(drop[1:], bin, "serve", "-config", writeFile(t, dir, "ebpf.yaml", fmt.Sprintf(conf, "ebpf")))...)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "kernel_filter ebpf") || !strings.Contains(string(out), "CAP_BPF") {
		t.Errorf("ebpf without CAP_BPF: %v, output %q; want a config error naming CAP_BPF", err, out)
	}
	p := startProc(t, append(drop, bin, "serve", "-config", writeFile(t, dir, "auto.yaml", fmt.Sprintf(conf, "auto")), "-watch", "0")...)
	p.waitLogs(`kernel filter attached.*backend=cbpf.*CAP_BPF`, `msg=listening service=echo`)
}
