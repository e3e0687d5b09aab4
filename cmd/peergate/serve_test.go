package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// proc is a running `peergate serve` whose log lines the test can wait for.
type proc struct {
	t     *testing.T
	cmd   *exec.Cmd
	lines chan string
	mu    sync.Mutex
	log   []string
	done  chan struct{} // closed once the process has exited and err is set
	err   error
}

func startServe(t *testing.T, cfg string, flags ...string) *proc {
	t.Helper()
	return startProc(t, append([]string{bin, "serve", "-config", cfg, "-watch", "50ms"}, flags...)...)
}

// startProc starts argv (peergate, or a command that runs it) and collects its stderr lines.
func startProc(t *testing.T, argv ...string) *proc {
	t.Helper()
	p := &proc{t: t, cmd: exec.Command(argv[0], argv[1:]...), lines: make(chan string, 4096), done: make(chan struct{})}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.mu.Lock()
			p.log = append(p.log, sc.Text())
			p.mu.Unlock()
			p.lines <- sc.Text()
		}
		close(p.lines)
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		for range p.lines { // let the reader reach EOF and reap the process
		}
		<-p.done
		if t.Failed() {
			p.mu.Lock()
			t.Logf("peergate log:\n%s", strings.Join(p.log, "\n"))
			p.mu.Unlock()
		}
	})
	return p
}

// waitLog waits for a log line matching re and returns its submatches.
func (p *proc) waitLog(re string) []string {
	p.t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.After(10 * time.Second)
	for {
		select {
		case l, ok := <-p.lines:
			if !ok {
				p.t.Fatalf("peergate exited before logging %q", re)
			}
			if m := rx.FindStringSubmatch(l); m != nil {
				return m
			}
		case <-deadline:
			p.t.Fatalf("no log line matching %q", re)
		}
	}
}

// waitLogs waits until every one of res has matched a log line, in any order.
func (p *proc) waitLogs(res ...string) {
	p.t.Helper()
	left := map[*regexp.Regexp]bool{}
	for _, re := range res {
		left[regexp.MustCompile(re)] = true
	}
	deadline := time.After(10 * time.Second)
	for len(left) > 0 {
		select {
		case l, ok := <-p.lines:
			if !ok {
				p.t.Fatalf("peergate exited before logging %q", res)
			}
			for rx := range left {
				if rx.MatchString(l) {
					delete(left, rx)
				}
			}
		case <-deadline:
			p.t.Fatalf("no log lines matching %v", left)
		}
	}
}

// addr waits for the "listening" line of service and returns the address.
func (p *proc) addr(service string) string {
	return p.waitLog(`msg=listening service=` + service + ` addr=(\S+)`)[1]
}

func (p *proc) signal(s os.Signal) {
	if err := p.cmd.Process.Signal(s); err != nil {
		p.t.Fatal(err)
	}
}

func (p *proc) wait() int {
	p.t.Helper()
	select {
	case <-p.done:
		err := p.err
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		if err != nil {
			p.t.Fatal(err)
		}
		return 0
	case <-time.After(15 * time.Second):
		p.t.Fatal("peergate did not exit")
		return -1
	}
}

// echoUpstream runs an echo server that counts the connections it gets.
func echoUpstream(t *testing.T) (addr string, count func() int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var mu sync.Mutex
	n := 0
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			n++
			mu.Unlock()
			go func() {
				io.Copy(c, c)
				c.Close()
			}()
		}
	}()
	return ln.Addr().String(), func() int { mu.Lock(); defer mu.Unlock(); return n }
}

func dial(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, src, err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

// roundTrip writes msg and reads it back (through an echo).
func roundTrip(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
		t.Fatalf("read back %q, %v; want %q", buf, err, msg)
	}
}

// refused reports whether a connection from src to addr is closed by peergate without data.
func refused(t *testing.T, src, addr string) bool {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return true // reset during connect
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "x")
	b, err := io.ReadAll(c)
	return len(b) == 0 && (err == nil || isReset(err))
}

// served reports whether a connection from src to addr reaches an echo behind peergate: one byte
// goes there and back.
func served(t *testing.T, src, addr string) bool {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "x")
	n, _ := io.ReadFull(c, make([]byte, 1))
	return n == 1
}

func isReset(err error) bool { return err != nil && strings.Contains(err.Error(), "reset") }

const proxyConfig = `
acls:
  lo: {default: deny, allow: [%s]}
services:
  - name: echo
    listen: ["127.0.0.1:0"]
    acl: lo
    upstream: %s
    on_deny: %s
`

func TestServeProxy(t *testing.T) {
	for _, onDeny := range []string{"close", "reset"} {
		t.Run(onDeny, func(t *testing.T) {
			up, upCount := echoUpstream(t)
			cfg := writeFile(t, t.TempDir(), "serve.yaml", fmt.Sprintf(proxyConfig, "127.0.0.1", up, onDeny))
			p := startServe(t, cfg)
			addr := p.addr("echo")

			for i := range 3 {
				if !refused(t, "127.0.0.2", addr) {
					t.Fatalf("denied client %d was not refused", i)
				}
			}
			c := dial(t, "127.0.0.1", addr)
			roundTrip(t, c, "hello through the gate")
			// Half-close: the upstream sees EOF, finishes, and the client sees EOF in turn.
			c.(*net.TCPConn).CloseWrite()
			if rest, err := io.ReadAll(c); err != nil || len(rest) != 0 {
				t.Errorf("after half-close read %q, %v", rest, err)
			}
			c.Close()
			if n := upCount(); n != 1 {
				t.Errorf("upstream saw %d connections, want 1 (denied peers must never reach it)", n)
			}
			p.waitLog(`msg="peer denied" service=echo .*peer=127\.0\.0\.2:\d+ rule=default`)
			p.signal(syscall.SIGTERM)
			if code := p.wait(); code != 0 {
				t.Errorf("exit %d after SIGTERM", code)
			}
		})
	}
}

func TestServeUpstreamDown(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close() // nothing listens there now
	cfg := writeFile(t, t.TempDir(), "serve.yaml", fmt.Sprintf(proxyConfig, "127.0.0.1", dead, "close"))
	p := startServe(t, cfg)
	c := dial(t, "127.0.0.1", p.addr("echo"))
	defer c.Close()
	if b, err := io.ReadAll(c); len(b) != 0 || err != nil {
		t.Errorf("client read %q, %v; want a clean close", b, err)
	}
	p.waitLog(`msg="upstream connect failed" service=echo .*upstream=` + regexp.QuoteMeta(dead))
}

func TestServeSpawn(t *testing.T) {
	dir := t.TempDir()
	runs := filepath.Join(dir, "runs")
	script := writeFile(t, dir, "handler.sh", "#!/bin/sh\necho run >> "+runs+"\necho \"$PROTO $TCPREMOTEIP $TCPLOCALIP $TCPLOCALPORT\"\nread line\necho \"got $line\"\n")
	os.Chmod(script, 0o755)
	cfg := writeFile(t, dir, "serve.yaml", `
acls:
  lo: {default: deny, allow: [127.0.0.1]}
services:
  - name: spawn
    listen: ["127.0.0.1:0"]
    acl: lo
    exec: [./handler.sh]
`)
	p := startServe(t, cfg)
	addr := p.addr("spawn")
	_, port, _ := net.SplitHostPort(addr)
	if !refused(t, "127.0.0.2", addr) {
		t.Fatal("denied client was not refused")
	}
	for i := range 3 {
		c := dial(t, "127.0.0.1", addr)
		r := bufio.NewReader(c)
		if l, err := r.ReadString('\n'); err != nil || l != "TCP 127.0.0.1 127.0.0.1 "+port+"\n" {
			t.Fatalf("conn %d: handler said %q, %v", i, l, err)
		}
		fmt.Fprintf(c, "line %d\n", i)
		if l, err := r.ReadString('\n'); err != nil || l != fmt.Sprintf("got line %d\n", i) {
			t.Fatalf("conn %d: handler said %q, %v", i, l, err)
		}
		if rest, _ := io.ReadAll(r); len(rest) != 0 { // the child exited: EOF
			t.Fatalf("conn %d: trailing %q", i, rest)
		}
		c.Close()
	}
	if b, _ := os.ReadFile(runs); strings.Count(string(b), "run") != 3 {
		t.Errorf("handler ran %d times, want 3 (never for the denied peer)", strings.Count(string(b), "run"))
	}
}

// TestServeReload changes the rules under an open connection: by SIGHUP, by rewriting the file
// alone, and with an invalid file, which must keep the rules in force.
func TestServeReload(t *testing.T) {
	up, _ := echoUpstream(t)
	cfg := writeFile(t, t.TempDir(), "serve.yaml", fmt.Sprintf(proxyConfig, "127.0.0.1", up, "close"))
	p := startServe(t, cfg)
	addr := p.addr("echo")
	open := dial(t, "127.0.0.1", addr)
	defer open.Close()
	roundTrip(t, open, "before")

	// 1. SIGHUP: now 127.0.0.3 is allowed and 127.0.0.1 is not.
	writeFile(t, filepath.Dir(cfg), "serve.yaml", fmt.Sprintf(proxyConfig, "127.0.0.3", up, "close"))
	p.signal(syscall.SIGHUP)
	p.waitLog(`msg="config reloaded"`)
	if !refused(t, "127.0.0.1", addr) {
		t.Error("127.0.0.1 still allowed after reload")
	}
	c := dial(t, "127.0.0.3", addr)
	roundTrip(t, c, "new rules")
	c.Close()
	roundTrip(t, open, "still up") // the listener and the open connection survived

	// 2. An invalid file: logged with file:line, the rules in force stay.
	writeFile(t, filepath.Dir(cfg), "serve.yaml", fmt.Sprintf(proxyConfig, "127.0.0.1/8", up, "close"))
	p.signal(syscall.SIGHUP)
	p.waitLog(`msg="config reload failed; keeping the running config".*serve\.yaml:3: \\"127\.0\.0\.1/8\\": prefix has host bits set`)
	c = dial(t, "127.0.0.3", addr)
	roundTrip(t, c, "old rules kept")
	c.Close()

	// 3. No signal: the file watcher sees the change.
	writeFile(t, filepath.Dir(cfg), "serve.yaml", fmt.Sprintf(proxyConfig, "127.0.0.4", up, "close"))
	p.waitLog(`msg="config reloaded"`)
	if !refused(t, "127.0.0.3", addr) {
		t.Error("127.0.0.3 still allowed after the file changed")
	}
	c = dial(t, "127.0.0.4", addr)
	roundTrip(t, c, "watched")
	c.Close()
	roundTrip(t, open, "survived three reloads")
}

// TestServeDrain stops peergate with a connection open: it stops accepting at once, lets the open
// connection finish, and exits 0.
func TestServeDrain(t *testing.T) {
	up, _ := echoUpstream(t)
	cfg := writeFile(t, t.TempDir(), "serve.yaml", fmt.Sprintf(proxyConfig, "127.0.0.1", up, "close")+"drain_timeout: 30s\n")
	p := startServe(t, cfg)
	addr := p.addr("echo")
	c := dial(t, "127.0.0.1", addr)
	defer c.Close()
	roundTrip(t, c, "before")
	p.signal(syscall.SIGTERM)
	p.waitLog(`msg="stopped accepting; draining open connections" open=1`)
	if nc, err := net.DialTimeout("tcp", addr, 5*time.Second); err == nil {
		nc.Close()
		t.Error("still accepting after SIGTERM")
	}
	roundTrip(t, c, "during drain")
	c.Close()
	if code := p.wait(); code != 0 {
		t.Errorf("exit %d", code)
	}
}

func TestServeDrainDeadline(t *testing.T) {
	up, _ := echoUpstream(t)
	cfg := writeFile(t, t.TempDir(), "serve.yaml", fmt.Sprintf(proxyConfig, "127.0.0.1", up, "close")+"drain_timeout: 200ms\n")
	p := startServe(t, cfg)
	c := dial(t, "127.0.0.1", p.addr("echo"))
	defer c.Close()
	roundTrip(t, c, "held open")
	p.signal(syscall.SIGTERM)
	p.waitLog(`msg="drain deadline passed; closed the remaining connections" open=1`)
	if code := p.wait(); code != 0 {
		t.Errorf("exit %d", code)
	}
	if b, err := io.ReadAll(c); len(b) != 0 || (err != nil && !isReset(err)) {
		t.Errorf("held connection read %q, %v after the deadline", b, err)
	}
}

func TestServeBadConfig(t *testing.T) {
	cfg := writeFile(t, t.TempDir(), "serve.yaml", "acls:\n  a: {default: deny}\nservices:\n  - name: s\n    listen: [\"127.0.0.1:0\"]\n    acl: b\n    upstream: x:1\n")
	_, errOut, status := runBin(t, "serve", "-config", cfg)
	if status != 2 || !strings.Contains(errOut, cfg+`:6: "b": invalid config: no ACL of that name under acls (have a)`) {
		t.Errorf("exit %d, stderr %q", status, errOut)
	}
	acl := writeFile(t, t.TempDir(), "acl.yaml", "default: deny\n")
	if _, errOut, status := runBin(t, "serve", "-config", acl); status != 2 || !strings.Contains(errOut, "no services") {
		t.Errorf("bare ACL: exit %d, stderr %q", status, errOut)
	}
}

// TestServeMaxConns: with max_conns 1, a second client waits in the backlog until the first
// leaves, and is then served.
func TestServeMaxConns(t *testing.T) {
	up, upCount := echoUpstream(t)
	cfg := writeFile(t, t.TempDir(), "serve.yaml", fmt.Sprintf(proxyConfig, "127.0.0.1", up, "close")+"    max_conns: 1\n")
	p := startServe(t, cfg)
	addr := p.addr("echo")
	first := dial(t, "127.0.0.1", addr)
	roundTrip(t, first, "first")
	second := dial(t, "127.0.0.1", addr) // the kernel completes the handshake; peergate must not accept
	defer second.Close()
	io.WriteString(second, "second")
	second.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := second.Read(make([]byte, 8)); n != 0 || !os.IsTimeout(err) {
		t.Fatalf("second client was served while the first held the only slot: %d bytes, %v", n, err)
	}
	if n := upCount(); n != 1 {
		t.Fatalf("upstream saw %d connections with max_conns 1", n)
	}
	first.Close()
	second.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 6)
	if _, err := io.ReadFull(second, buf); err != nil || string(buf) != "second" {
		t.Fatalf("second client after the first left: %q, %v", buf, err)
	}
}

// TestServeIdleTimeout: a proxied connection quiet in both directions is closed, idle_timeout
// after the last traffic.
func TestServeIdleTimeout(t *testing.T) {
	up, _ := echoUpstream(t)
	const idle = 300 * time.Millisecond
	cfg := writeFile(t, t.TempDir(), "serve.yaml", fmt.Sprintf(proxyConfig, "127.0.0.1", up, "close")+"    idle_timeout: 300ms\n")
	p := startServe(t, cfg)
	c := dial(t, "127.0.0.1", p.addr("echo"))
	defer c.Close()
	start := time.Now()
	var last time.Time
	for i := range 5 { // traffic more often than the timeout keeps it open longer than the timeout
		if i > 0 {
			time.Sleep(idle / 3) // pacing, not synchronisation
		}
		roundTrip(t, c, "keepalive")
		last = time.Now()
	}
	if open := last.Sub(start); open < idle {
		t.Fatalf("traffic lasted only %v", open)
	}
	b, err := io.ReadAll(c)
	if len(b) != 0 || err != nil {
		t.Fatalf("read %q, %v; want EOF", b, err)
	}
	// The client reads the last echo a little after peergate wrote it, where peergate's clock
	// starts: allow it a few milliseconds.
	if waited := time.Since(last); waited < idle-10*time.Millisecond {
		t.Errorf("closed after %v of quiet, before the %v idle timeout", waited, idle)
	}
}
