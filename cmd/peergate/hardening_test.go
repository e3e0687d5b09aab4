package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func long() bool { return os.Getenv("PEERGATE_LONG") != "" }

// TestReloadUnderLoad reloads 100 times (1000 with PEERGATE_LONG=1), alternating valid and invalid
// files, while allowed clients do request/response on new connections. No allowed connection may
// fail, an invalid file must never replace the rules in force, and once a reload is logged the
// next connection obeys the new rules.
func TestReloadUnderLoad(t *testing.T) {
	up, _ := echoUpstream(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "serve.yaml")
	versions := []string{ // 127.0.0.1 always allowed; 127.0.0.3 allowed in v0 only
		fmt.Sprintf(proxyConfig, "127.0.0.1, 127.0.0.3", up, "close"),
		fmt.Sprintf(proxyConfig, "127.0.0.1", up, "close"),
	}
	invalid := fmt.Sprintf(proxyConfig, "127.0.0.3/8", up, "close")
	if err := os.WriteFile(cfg, []byte(versions[0]), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startServe(t, cfg, "-watch", "0") // reloads by SIGHUP only, so each log line is ours
	addr := p.addr("echo")

	var stop atomic.Bool
	var ok, failed atomic.Int64
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 4)
			for !stop.Load() {
				c, err := net.DialTimeout("tcp", addr, 5*time.Second)
				if err == nil {
					c.SetDeadline(time.Now().Add(5 * time.Second))
					if _, err = io.WriteString(c, "ping"); err == nil {
						_, err = io.ReadFull(c, buf)
					}
					c.Close()
				}
				if err != nil || string(buf) != "ping" {
					failed.Add(1)
					t.Errorf("allowed client failed: %v", err)
				} else {
					ok.Add(1)
				}
			}
		}()
	}
	reloads := 100
	if long() {
		reloads = 1000
	}
	current := 0
	for i := range reloads {
		if i%2 == 0 { // a valid file: the other version
			current = 1 - current
			if err := os.WriteFile(cfg, []byte(versions[current]), 0o644); err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256([]byte(versions[current]))
			p.signal(syscall.SIGHUP)
			p.waitLog(`msg="config reloaded" .*sha256=` + hex.EncodeToString(sum[:])[:12])
		} else {
			if err := os.WriteFile(cfg, []byte(invalid), 0o644); err != nil {
				t.Fatal(err)
			}
			p.signal(syscall.SIGHUP)
			p.waitLog(`msg="config reload failed; keeping the running config"`)
		}
		if got, want := served(t, "127.0.0.3", addr), current == 0; got != want {
			t.Fatalf("reload %d: 127.0.0.3 allowed=%v, want %v under version %d", i, got, want, current)
		}
	}
	stop.Store(true)
	wg.Wait()
	t.Logf("%d reloads; %d allowed request/responses during them, %d failed", reloads, ok.Load(), failed.Load())
	if ok.Load() == 0 {
		t.Error("no allowed traffic ran during the reloads")
	}
}

// cpuTime returns the user+system CPU time of process pid.
func cpuTime(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Skip("no /proc")
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.Atoi(f[11])
	st, _ := strconv.Atoi(f[12])
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ is 100 on Linux
}

// TestFDExhaustion runs peergate with RLIMIT_NOFILE 48 and holds proxied connections open until
// it runs out of descriptors. It must back off rather than spin, and serve again once
// descriptors free up.
func TestFDExhaustion(t *testing.T) {
	up, _ := echoUpstream(t)
	cfg := writeFile(t, t.TempDir(), "serve.yaml", fmt.Sprintf(proxyConfig, "127.0.0.1", up, "close")+"    max_conns: 0\n")
	if _, err := exec.LookPath("prlimit"); err != nil {
		t.Skip("prlimit (util-linux) not found")
	}
	p := startProc(t, "prlimit", "--nofile=48:48", bin, "serve", "-config", cfg, "-watch", "0")
	addr := p.addr("echo")

	// Hold connections until some are no longer served: peergate is out of fds.
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	starved := 0
	for i := 0; i < 60 && starved < 3; i++ {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		c.SetDeadline(time.Now().Add(300 * time.Millisecond))
		io.WriteString(c, "x")
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			starved++
		}
	}
	if starved == 0 {
		t.Fatal("never ran out of descriptors")
	}
	before := cpuTime(t, p.cmd.Process.Pid)
	time.Sleep(time.Second) // out of fds, with clients waiting: measure how busy it is
	busy := cpuTime(t, p.cmd.Process.Pid) - before
	t.Logf("held %d connections, %d unserved; CPU while exhausted: %v per second", len(held), starved, busy)
	if busy > 200*time.Millisecond {
		t.Errorf("accept loop spins while out of fds: %v CPU in 1s", busy)
	}
	for _, c := range held {
		c.Close()
	}
	held = nil
	// peergate closes its side of the held connections as it notices them go, so descriptors come
	// back over a short while: it must serve again within a bound.
	for deadline := time.Now().Add(10 * time.Second); !served(t, "127.0.0.1", addr); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("not serving again 10 s after descriptors were freed")
		}
	}
}

// netns is a network namespace made for a test, removed when it ends.
func netns(t *testing.T, name string) string {
	t.Helper()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Skipf("cannot make network namespaces here (%v: %s); run as root with iproute2", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	return name
}

func ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// dialInNS connects from src to dst with a socket made inside network namespace ns.
func dialInNS(ns, src, dst string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread, now in ns, exits with the goroutine
		f, err := os.Open("/var/run/netns/" + ns)
		if err == nil {
			err = unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
			f.Close()
		}
		if err != nil {
			ch <- result{nil, err}
			return
		}
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", dst)
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

// TestRealAddresses runs peergate in one network namespace and clients in another, joined by a
// veth pair with documentation addresses (192.0.2.0/24 and 2001:db8::/64); traffic never leaves
// the two namespaces. Skipped where namespaces cannot be made.
func TestRealAddresses(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for ip netns")
	}
	tag := strconv.Itoa(os.Getpid())
	srv, cli := netns(t, "pg-srv-"+tag), netns(t, "pg-cli-"+tag)
	ip(t, "link", "add", "pgs"+tag, "type", "veth", "peer", "name", "pgc"+tag)
	t.Cleanup(func() { exec.Command("ip", "link", "del", "pgs"+tag).Run() })
	ip(t, "link", "set", "pgs"+tag, "netns", srv)
	ip(t, "link", "set", "pgc"+tag, "netns", cli)
	for _, a := range [][]string{
		{srv, "pgs" + tag, "192.0.2.1/24"}, {srv, "pgs" + tag, "2001:db8::1/64"},
		{cli, "pgc" + tag, "192.0.2.2/24"}, {cli, "pgc" + tag, "192.0.2.3/24"}, {cli, "pgc" + tag, "2001:db8::2/64"}, {cli, "pgc" + tag, "2001:db8::3/64"},
	} {
		ip(t, "-n", a[0], "addr", "add", a[2], "dev", a[1], "nodad")
	}
	for _, ns := range []string{srv, cli} {
		ip(t, "-n", ns, "link", "set", "lo", "up")
	}
	ip(t, "-n", srv, "link", "set", "pgs"+tag, "up")
	ip(t, "-n", cli, "link", "set", "pgc"+tag, "up")

	cfg := writeFile(t, t.TempDir(), "serve.yaml", `
acls:
  lan: {default: deny, allow: [192.0.2.0/24, "2001:db8::/64"], deny: [192.0.2.3, "2001:db8::3"]}
services:
  - name: cat
    listen: ["192.0.2.1:7000", "[2001:db8::1]:7000"]
    acl: lan
    exec: [/bin/cat]
`)
	p := startProc(t, "ip", "netns", "exec", srv, bin, "serve", "-config", cfg, "-watch", "0")
	p.waitLogs(`msg=listening service=cat addr=192\.0\.2\.1:7000`, `msg=listening service=cat addr=\[2001:db8::1\]:7000`)

	for _, tc := range []struct {
		src, dst string
		allow    bool
	}{
		{"192.0.2.2", "192.0.2.1:7000", true},
		{"192.0.2.3", "192.0.2.1:7000", false},
		{"2001:db8::2", "[2001:db8::1]:7000", true},
		{"2001:db8::3", "[2001:db8::1]:7000", false},
	} {
		c, err := dialInNS(cli, tc.src, tc.dst)
		if err != nil {
			t.Fatalf("%s -> %s: %v", tc.src, tc.dst, err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "across namespaces\n")
		buf := make([]byte, 18)
		n, _ := io.ReadFull(c, buf)
		c.Close()
		if got := string(buf[:n]) == "across namespaces\n"; got != tc.allow {
			t.Errorf("%s -> %s: served=%v, want %v", tc.src, tc.dst, got, tc.allow)
		}
		if !tc.allow {
			p.waitLog(`msg="peer denied" service=cat .*peer=` + regexp.QuoteMeta(net.JoinHostPort(tc.src, "")))
		}
	}
}
