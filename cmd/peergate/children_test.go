package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const spawnConfig = `
acls:
  lo: {default: deny, allow: [127.0.0.1]}
services:
  - name: sh
    listen: ["127.0.0.1:0"]
    acl: lo
    exec: ["/bin/sh", "-c", %q]
drain_timeout: 300ms
`

// children returns the pids of ppid's children, with their states (R, S, Z...), from /proc.
func children(t *testing.T, ppid int) map[int]string {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Skip("no /proc")
	}
	out := map[int]string{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses; it ends at the last ')'.
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(ppid) {
			out[pid] = f[0]
		}
	}
	return out
}

// TestServeReapsOrphans: handlers whose own children outlive them leave orphans, which the kernel
// hands to peergate when it runs as PID 1 (a container's init) and, since peergate makes itself a
// child subreaper, otherwise too. Every one must be reaped: before, 50 connections left 50
// zombies under a peergate running as PID 1.
func TestServeReapsOrphans(t *testing.T) {
	for _, tc := range []struct {
		name string
		pid1 bool
	}{{"pid 1", true}, {"subreaper", false}} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := writeFile(t, t.TempDir(), "serve.yaml", fmt.Sprintf(spawnConfig, "/bin/true & echo ok"))
			var p *proc
			if tc.pid1 {
				if os.Geteuid() != 0 {
					t.Skip("unshare --pid needs root")
				}
				if _, err := exec.LookPath("unshare"); err != nil {
					t.Skip("no unshare (util-linux)")
				}
				p = startProc(t, "unshare", "--pid", "--fork", "--kill-child", "--mount-proc", bin, "serve", "-config", cfg, "-watch", "0")
			} else {
				p = startServe(t, cfg)
			}
			addr := p.addr("sh")
			pg := p.cmd.Process.Pid
			if tc.pid1 { // the child unshare forked
				for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
					if kids := children(t, pg); len(kids) == 1 {
						for pid := range kids {
							pg = pid
						}
						break
					}
					if time.Now().After(deadline) {
						t.Fatal("peergate not found under unshare")
					}
				}
			}
			for range 50 {
				c := dial(t, "127.0.0.1", addr)
				if b, err := io.ReadAll(c); string(b) != "ok\n" || err != nil {
					t.Fatalf("handler: %q, %v", b, err)
				}
				c.Close()
			}
			// Every handler and orphan has closed the connection, so has exited: peergate must
			// be left with no children, zombies included.
			var kids map[int]string
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
				if kids = children(t, pg); len(kids) == 0 {
					break
				}
			}
			if len(kids) > 0 {
				t.Errorf("peergate (pid %d) still has %d children after 50 connections: %v", pg, len(kids), kids)
			}
			// The orphan reaper must never take a handler from the exec.Cmd that waits for it
			// (its Wait would fail with ECHILD, logged as a handler that exited badly).
			p.mu.Lock()
			defer p.mu.Unlock()
			for _, l := range p.log {
				if strings.Contains(l, "handler exited") {
					t.Errorf("log: %s", l)
				}
			}
		})
	}
}

// TestServeDrainEndsHandlerGroups: at the end of the drain, every handler's process group gets
// SIGTERM (then SIGKILL), so a handler's own children cannot keep the client's connection open
// after peergate is gone: neither those of a handler still running at the drain deadline nor
// those a handler that exited left behind. Before, only the handler itself was signalled.
func TestServeDrainEndsHandlerGroups(t *testing.T) {
	for _, tc := range []struct{ name, script string }{
		{"handler running", "echo ready; sleep 20 & sleep 20"},
		{"handler exited", "echo ready; sleep 20 &"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := writeFile(t, t.TempDir(), "serve.yaml", fmt.Sprintf(spawnConfig, tc.script))
			p := startServe(t, cfg)
			c := dial(t, "127.0.0.1", p.addr("sh"))
			defer c.Close()
			r := bufio.NewReader(c)
			if l, err := r.ReadString('\n'); l != "ready\n" || err != nil {
				t.Fatalf("handler: %q, %v", l, err)
			}
			p.signal(syscall.SIGTERM)
			if code := p.wait(); code != 0 {
				t.Errorf("peergate exited %d", code)
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if b, err := io.ReadAll(r); len(b) != 0 || err != nil {
				t.Errorf("after peergate stopped, the client read %q, %v; want EOF: a handler's child held the connection", b, err)
			}
		})
	}
}
