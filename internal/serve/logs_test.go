package serve

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// countingHandler counts log records by message.
type countingHandler struct {
	mu *sync.Mutex
	n  map[string]int
}

func (h countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h countingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.n[r.Message]++
	h.mu.Unlock()
	return nil
}
func (h countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h countingHandler) WithGroup(string) slog.Handler      { return h }

func (h countingHandler) count(msg string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n[msg]
}

// startLogged runs a Server for the config text, logging to h, and returns it.
func startLogged(t *testing.T, text string, h slog.Handler) *Server {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "serve.yaml")
	if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg, slog.New(h))
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

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestPerConnectionLogsLimited: every line logged for a connection goes through log_rate, not
// only the gate's denials: the admin listener's denials (at the default rate), failed upstream
// connects, handlers that exit non-zero. Before, each logged one line per connection.
func TestPerConnectionLogsLimited(t *testing.T) {
	for _, tc := range []struct {
		name, msg string
		rate      int
		conns     int
		config    func(t *testing.T) string
		addr      func(s *Server) string
		src       string
	}{
		{"admin denials", "peer denied", 100, 600, func(t *testing.T) string {
			return "acls:\n  lo: {default: deny, allow: [127.0.0.1]}\n  adm: {default: deny, allow: [127.0.0.1]}\n" +
				"services:\n  - name: p\n    listen: [\"127.0.0.1:0\"]\n    acl: lo\n    upstream: " + closedPort(t) + "\n" +
				"admin: {listen: \"127.0.0.1:0\", acl: adm}\n"
		}, func(s *Server) string { return s.AdminAddr().String() }, "127.0.0.2"},
		{"upstream connect failed", "upstream connect failed", 5, 300, func(t *testing.T) string {
			return "acls:\n  lo: {default: deny, allow: [127.0.0.1]}\nservices:\n  - name: p\n    listen: [\"127.0.0.1:0\"]\n" +
				"    acl: lo\n    log_rate: 5\n    upstream: " + closedPort(t) + "\n"
		}, func(s *Server) string { return s.Addrs()["p"][0].String() }, "127.0.0.1"},
		{"handler exited", "handler exited", 5, 150, func(t *testing.T) string {
			return "acls:\n  lo: {default: deny, allow: [127.0.0.1]}\nservices:\n  - name: p\n    listen: [\"127.0.0.1:0\"]\n" +
				"    acl: lo\n    log_rate: 5\n    exec: [/bin/false]\n"
		}, func(s *Server) string { return s.Addrs()["p"][0].String() }, "127.0.0.1"},
		{"log_allowed", "allowed", 5, 150, func(t *testing.T) string {
			return "acls:\n  lo: {default: deny, allow: [127.0.0.1]}\nservices:\n  - name: p\n    listen: [\"127.0.0.1:0\"]\n" +
				"    acl: lo\n    log_rate: 5\n    log_allowed: true\n    exec: [/bin/true]\n"
		}, func(s *Server) string { return s.Addrs()["p"][0].String() }, "127.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := countingHandler{&sync.Mutex{}, map[string]int{}}
			s := startLogged(t, tc.config(t), h)
			addr := tc.addr(s)
			connect := func() {
				c, err := dialFrom(tc.src, addr)
				if err != nil {
					t.Fatal(err)
				}
				c.Read(make([]byte, 1)) // until peergate closes it
				c.Close()
			}
			t0 := time.Now()
			for range tc.conns {
				connect()
			}
			// The count of dropped lines goes out ahead of the next line let through: connect
			// until it does.
			const dropped = "log lines dropped by log_rate"
			for deadline := time.Now().Add(10 * time.Second); h.count(dropped) == 0; time.Sleep(50 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("no line said how many were dropped")
				}
				connect()
			}
			// A handler's line comes when it exits: the bound allows for lines still to come.
			elapsed := time.Since(t0)
			bound := tc.rate + int(elapsed.Seconds()*float64(tc.rate)) + 1
			if n := h.count(tc.msg); n > bound {
				t.Errorf("%d %q lines for %d connections in %v; log_rate %d allows %d", n, tc.msg, tc.conns, elapsed, tc.rate, bound)
			}
		})
	}
}
