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

// run starts a Server for the config at path and shuts it down at the end of the test.
func run(t *testing.T, path string) *Server {
	t.Helper()
	s, err := New(path, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { s.Serve(); close(done) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
		<-done
	})
	return s
}

// freeAddr returns a loopback address with a port nothing listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
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
	strict, open := freeAddr(t), freeAddr(t)
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
	path := writeConfig(t, dir, cfg(fmt.Sprintf("%q", open)))
	s := run(t, path)
	if !echoes(t, "127.0.0.2", open) || echoes(t, "127.0.0.2", strict) || !echoes(t, "127.0.0.1", strict) {
		t.Fatal("services not as configured before the reload")
	}
	writeConfig(t, dir, bad)
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
