package serve

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/peergate/peergate/internal/config"
)

// writeConfig writes text as dir/serve.yaml and returns its path.
func writeConfig(t *testing.T, dir, text string) string {
	t.Helper()
	path := filepath.Join(dir, "serve.yaml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// echoes reports whether a client from src reaches an echoing upstream through addr (true), or is
// closed without a byte (false).
func echoes(t *testing.T, src, addr string) bool {
	t.Helper()
	c, err := dialFrom(src, addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, src, err)
	}
	defer c.Close()
	io.WriteString(c, "x")
	n, _ := io.ReadFull(c, make([]byte, 1))
	return n == 1
}

// TestListenOverlapServe: a config in which two services listen on the same address is refused at
// start and at reload; the running service keeps its port and its ACL. (The later service used to
// take the listener, and with it the earlier one's clients.)
func TestListenOverlapServe(t *testing.T) {
	up := upstream(t, "echo")
	strict, open := closedPort(t), closedPort(t)
	cfg := func(openListen string) string {
		return fmt.Sprintf("acls:\n  lo1: {default: deny, allow: [127.0.0.1]}\n  lo: {default: deny, allow: [127.0.0.0/8]}\n"+
			"services:\n  - name: strict\n    listen: [%q]\n    acl: lo1\n    upstream: %s\n"+
			"  - name: open\n    listen: [%s]\n    acl: lo\n    upstream: %s\n", strict, up, openListen, up)
	}
	dir := t.TempDir()
	bad := cfg(fmt.Sprintf("%q, %q", open, strict))
	if s, err := New(writeConfig(t, dir, bad), slog.New(slog.NewTextHandler(io.Discard, nil))); !errors.Is(err, config.ErrListenOverlap) {
		if s != nil {
			s.closeAll()
		}
		t.Fatalf("New with an overlap: %v", err)
	}
	s := startLogged(t, cfg(fmt.Sprintf("%q", open)), slog.NewTextHandler(io.Discard, nil))
	if !echoes(t, "127.0.0.2", open) || echoes(t, "127.0.0.2", strict) || !echoes(t, "127.0.0.1", strict) {
		t.Fatal("services not as configured before the reload")
	}
	writeConfig(t, filepath.Dir(s.path), bad)
	if err := s.Reload(); !errors.Is(err, config.ErrListenOverlap) {
		t.Fatalf("Reload with an overlap: %v", err)
	}
	if echoes(t, "127.0.0.2", strict) {
		t.Error("127.0.0.2 reached the strict service's port after a refused reload")
	}
	if !echoes(t, "127.0.0.1", strict) || !echoes(t, "127.0.0.2", open) {
		t.Error("services lost after a refused reload")
	}
}

// namedUpstream runs an upstream that writes its name to each client and closes.
func namedUpstream(t *testing.T, name string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sayName(t, ln, name)
	return ln.Addr().String()
}

// sayName writes name to each client of ln and closes it, until the test ends.
func sayName(t *testing.T, ln net.Listener, name string) {
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, name)
			c.Close()
		}
	}()
}

// hookListener runs the armed hook, once, after its inner Accept returned a connection and before
// the gate judges it: the moment between the accept loop choosing a service and the gate judging.
type hookListener struct {
	net.Listener
	armed *atomic.Pointer[func()]
}

func (h hookListener) Accept() (net.Conn, error) {
	c, err := h.Listener.Accept()
	if f := h.armed.Swap(nil); err == nil && f != nil {
		(*f)()
	}
	return c, err
}

// TestReloadDispatch: a connection goes to the handler of the config whose ACL admitted it. A
// reload lands after the accept loop has gone into Accept and before the gate judges; the
// connection, judged by the new ACL, must reach the new upstream. (It reached the old one: the
// loop chose its service before blocking in Accept, so a reload that widened the ACL let new
// peers into the old, more sensitive, handler.)
func TestReloadDispatch(t *testing.T) {
	var armed atomic.Pointer[func()]
	wrapListener = func(ln net.Listener) net.Listener { return hookListener{ln, &armed} }
	t.Cleanup(func() { wrapListener = nil })
	oldUp, newUp := namedUpstream(t, "old"), namedUpstream(t, "new")
	const header = "PROXY TCP4 192.0.2.7 127.0.0.1 1234 80\r\n"
	for _, tc := range []struct {
		name          string
		src, header   string // the client's address, and what it sends first
		before, after string // ACL allow lists of the running config and the reloaded one
		extra         string // more service keys, in both configs
		want          string // what the client reads: the upstream's name, or "" when denied
	}{
		{"widened", "127.0.0.2", "", "[127.0.0.1]", "[127.0.0.0/8]", "", "new"},
		{"allowed by both", "127.0.0.1", "", "[127.0.0.1]", "[127.0.0.0/8]", "", "new"},
		{"narrowed", "127.0.0.2", "", "[127.0.0.0/8]", "[127.0.0.1]", "", ""},
		{"widened, behind a proxy", "127.0.0.1", header, "[127.0.0.1]", "[192.0.2.0/24]",
			"    trusted_proxies: [127.0.0.1]\n", "new"},
		{"narrowed, behind a proxy", "127.0.0.1", header, "[192.0.2.0/24]", "[127.0.0.1]",
			"    trusted_proxies: [127.0.0.1]\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := func(allow, up string) string {
				return fmt.Sprintf("acls:\n  a: {default: deny, allow: %s}\nservices:\n  - name: s\n    listen: [\"127.0.0.1:0\"]\n"+
					"    acl: a\n    upstream: %s\n%s", allow, up, tc.extra)
			}
			s := startLogged(t, cfg(tc.before, oldUp), slog.NewTextHandler(io.Discard, nil))
			addr := s.Addrs()["s"][0].String()
			writeConfig(t, filepath.Dir(s.path), cfg(tc.after, newUp))
			reloaded := make(chan error, 1)
			hook := func() { reloaded <- s.Reload() }
			armed.Store(&hook)
			c, err := dialFrom(tc.src, addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			io.WriteString(c, tc.header)
			got, _ := io.ReadAll(c)
			select {
			case err := <-reloaded:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the reload hook never ran")
			}
			if string(got) != tc.want {
				t.Errorf("client from %s read %q after the reload; want %q", tc.src, got, tc.want)
			}
		})
	}
}

// unixServer serves on the Unix socket path, writing name to each client, until the test ends.
func unixServer(t *testing.T, path, name string) {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false) // what the test left there is checked after
	sayName(t, ln, name)
}

// unixAnswer returns what the server on the Unix socket path says, or "" when it says nothing.
func unixAnswer(t *testing.T, path string) string {
	t.Helper()
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return ""
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "x")
	c.(*net.UnixConn).CloseWrite() // the echo ends, passed on through peergate
	b, _ := io.ReadAll(c)
	return string(b)
}

// TestUnixListen: peergate takes a Unix socket path only when nothing is there or a stale socket
// (one that refuses connections); a regular file, a directory or another server's live socket is
// an error and stays as it was; on exit it removes only the socket it made; unix:@name is an
// abstract socket and touches no file. (It used to remove whatever was at the path, and the file
// ./@name for unix:@name.)
func TestUnixListen(t *testing.T) {
	up := upstream(t, "echo")
	abstract := fmt.Sprintf("@peergate-test-%d", os.Getpid())
	for _, tc := range []struct {
		name   string
		listen string                       // "" for unix:DIR/s.sock
		before func(t *testing.T, p string) // puts something at the path
		during func(t *testing.T, p string) // runs while peergate serves
		want   error                        // from New; nil: it serves
		after  string                       // "gone": the path is gone after Shutdown; "other": another server answers there; "file"; "dir"
	}{
		{name: "nothing there", after: "gone"},
		{name: "stale socket", before: func(t *testing.T, p string) {
			ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: p, Net: "unix"})
			if err != nil {
				t.Fatal(err)
			}
			ln.SetUnlinkOnClose(false)
			ln.Close() // the file stays; connecting to it is refused
		}, after: "gone"},
		{name: "live socket", before: func(t *testing.T, p string) { unixServer(t, p, "other") }, want: ErrSocketInUse, after: "other"},
		{name: "regular file", before: func(t *testing.T, p string) {
			if err := os.WriteFile(p, []byte("keep"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, want: ErrNotSocket, after: "file"},
		{name: "empty directory", before: func(t *testing.T, p string) {
			if err := os.Mkdir(p, 0o755); err != nil {
				t.Fatal(err)
			}
		}, want: ErrNotSocket, after: "dir"},
		{name: "replaced while running", during: func(t *testing.T, p string) {
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
			unixServer(t, p, "other")
		}, after: "other"},
		{name: "abstract", listen: "unix:" + abstract, before: func(t *testing.T, p string) {
			// A file named like the abstract socket, in the current directory: never touched.
			if err := os.WriteFile(abstract, []byte("keep"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, after: "abstract"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			t.Chdir(dir)
			sock := filepath.Join(dir, "s.sock")
			if tc.listen == "" {
				tc.listen = "unix:" + sock
			}
			if tc.before != nil {
				tc.before(t, sock)
			}
			path := writeConfig(t, dir, fmt.Sprintf("acls:\n  u: {default: deny, unix: allow}\nservices:\n  - name: s\n    listen: [%q]\n    acl: u\n    upstream: %s\n", tc.listen, up))
			s, err := New(path, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if tc.want != nil {
				if s != nil {
					s.closeAll()
				}
				if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), sock) {
					t.Fatalf("New = %v; want %v naming %s", err, tc.want, sock)
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				done := make(chan struct{})
				go func() { s.Serve(); close(done) }()
				dial := sock
				if tc.listen != "unix:"+sock {
					dial = abstract
				}
				if got := unixAnswer(t, dial); got != "x" {
					t.Errorf("client on %s read %q; want the echo", dial, got)
				}
				if tc.during != nil {
					tc.during(t, sock)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				s.Shutdown(ctx)
				cancel()
				<-done
			}
			switch tc.after {
			case "gone":
				if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("after shutdown: %s: %v; want it removed", sock, err)
				}
			case "other":
				if got := unixAnswer(t, sock); got != "other" {
					t.Errorf("the other server's socket answers %q; want it kept", got)
				}
			case "file", "abstract":
				name := sock
				if tc.after == "abstract" {
					name = filepath.Join(dir, abstract)
				}
				if b, err := os.ReadFile(name); string(b) != "keep" {
					t.Errorf("%s: %q, %v; want it kept", name, b, err)
				}
			case "dir":
				if fi, err := os.Stat(sock); err != nil || !fi.IsDir() {
					t.Errorf("%s: %v; want the directory kept", sock, err)
				}
			}
		})
	}
}

// TestUnixListenReload: a reload that adds a Unix socket path where a regular file is fails, keeps
// the file and the running config.
func TestUnixListenReload(t *testing.T) {
	up := upstream(t, "echo")
	cfg := func(listen string) string {
		return fmt.Sprintf("acls:\n  u: {default: deny, allow: [127.0.0.1], unix: allow}\nservices:\n  - name: s\n    listen: [%s]\n    acl: u\n    upstream: %s\n", listen, up)
	}
	s := startLogged(t, cfg(`"127.0.0.1:0"`), slog.NewTextHandler(io.Discard, nil))
	addr := s.Addrs()["s"][0].String()
	file := filepath.Join(t.TempDir(), "s.sock")
	if err := os.WriteFile(file, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	writeConfig(t, filepath.Dir(s.path), cfg(fmt.Sprintf(`"127.0.0.1:0", "unix:%s"`, file)))
	if err := s.Reload(); !errors.Is(err, ErrNotSocket) || !strings.Contains(err.Error(), file) {
		t.Fatalf("Reload = %v; want ErrNotSocket naming %s", err, file)
	}
	if b, err := os.ReadFile(file); string(b) != "keep" {
		t.Errorf("%s: %q, %v; want it kept", file, b, err)
	}
	if !echoes(t, "127.0.0.1", addr) {
		t.Error("the running service stopped after a failed reload")
	}
}
