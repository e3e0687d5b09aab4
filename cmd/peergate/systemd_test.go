package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"
)

// freePort returns a loopback address nothing listens on now.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestServeSocketActivation: under systemd-socket-activate (no --accept), serve adopts the
// socket it is passed for the matching listen entry instead of binding, so the connection that
// started it is served, not dropped; a listen entry with no inherited socket is bound as usual,
// and an inherited socket no entry names is logged and closed.
func TestServeSocketActivation(t *testing.T) {
	sa, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		t.Skip("systemd-socket-activate not installed (Debian package systemd):", err)
	}
	inherited, own, stray := freePort(t), freePort(t), freePort(t)
	cfg := filepath.Join(t.TempDir(), "serve.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("acls:\n  lo: {default: deny, allow: [127.0.0.1]}\nservices:\n"+
		"  - name: a\n    listen: [%q]\n    acl: lo\n    exec: [/bin/echo, activated]\n"+
		"  - name: b\n    listen: [%q]\n    acl: lo\n    exec: [/bin/echo, bound]\n", inherited, own)), 0o644)
	p := startProc(t, sa, "-l", inherited, "-l", stray, bin, "serve", "-config", cfg, "-watch", "0")
	p.waitLog(`Listening on ` + regexp.QuoteMeta(stray))
	read := func(addr string) string {
		t.Helper()
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		b, err := io.ReadAll(c)
		if err != nil {
			t.Fatalf("%s: %v", addr, err)
		}
		return string(b)
	}
	// The first connection starts peergate: it waits in the inherited socket's backlog.
	if got := read(inherited); got != "activated\n" {
		t.Fatalf("the connection that started serve got %q, want %q", got, "activated\n")
	}
	p.waitLogs(`msg="adopted socket from systemd" listen=`+regexp.QuoteMeta(inherited)+` fd=\d`,
		`msg="inherited socket matches no listen entry; closed" fd=\d+ addr=`+regexp.QuoteMeta(stray))
	if got := read(inherited); got != "activated\n" {
		t.Errorf("second connection got %q", got)
	}
	if got := read(own); got != "bound\n" {
		t.Errorf("the bound listener answered %q", got)
	}
	// A reload keeps the adopted socket.
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLog(`msg="config reloaded"`)
	if got := read(inherited); got != "activated\n" {
		t.Errorf("after a reload the adopted socket answered %q", got)
	}
}

// TestServeNotify: with NOTIFY_SOCKET set, serve tells systemd READY=1 once it serves,
// RELOADING=1 (with MONOTONIC_USEC) and READY=1 around a reload, and STOPPING=1 at SIGTERM.
func TestServeNotify(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	next := func() string {
		t.Helper()
		ln.SetReadDeadline(time.Now().Add(10 * time.Second))
		b := make([]byte, 512)
		n, err := ln.Read(b)
		if err != nil {
			t.Fatal("no notification:", err)
		}
		return string(b[:n])
	}
	cfg := filepath.Join(t.TempDir(), "serve.yaml")
	os.WriteFile(cfg, []byte("acls:\n  lo: {default: deny, allow: [127.0.0.1]}\nservices:\n  - name: s\n    listen: [\"127.0.0.1:0\"]\n    acl: lo\n    exec: [/bin/true]\n"), 0o644)
	t.Setenv("NOTIFY_SOCKET", sock)
	p := startServe(t, cfg, "-watch", "0")
	for _, step := range []struct {
		signal syscall.Signal // sent before the notifications that follow; 0: none
		want   []string
	}{
		{0, []string{`^READY=1$`}},
		{syscall.SIGHUP, []string{`^RELOADING=1\nMONOTONIC_USEC=[1-9][0-9]*$`, `^READY=1$`}},
		{syscall.SIGTERM, []string{`^STOPPING=1$`}},
	} {
		if step.signal != 0 {
			p.cmd.Process.Signal(step.signal)
		}
		for _, re := range step.want {
			if got := next(); !regexp.MustCompile(re).MatchString(got) {
				t.Fatalf("after %v: notification %q, want %s", step.signal, got, re)
			}
		}
	}
}
