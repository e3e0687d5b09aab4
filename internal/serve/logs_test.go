package serve

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
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
	s, _ := serving(t, text, h)
	return s
}

// serving runs a Server for the config text, logging to h, and returns it with a channel closed
// when its Serve returns. The test's cleanup shuts it down unless Serve has returned already.
func serving(t *testing.T, text string, h slog.Handler) (*Server, <-chan struct{}) {
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
		select {
		case <-done:
			return
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
		<-done
	})
	return s, done
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

// TestConfigHidesExecArgs: /config, open to every local user the admin ACL lets in, shows a
// handler's program but not its arguments (a --password=… there was readable by anyone on the
// host). ?exec_args=1 shows them only behind the admin token.
func TestConfigHidesExecArgs(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("s3cret-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := "acls:\n  lo: {default: deny, allow: [127.0.0.1]}\nservices:\n  - name: p\n    listen: [\"127.0.0.1:0\"]\n" +
		"    acl: lo\n    exec: [/bin/echo, --password=hunter2, -v]\n"
	for _, tc := range []struct {
		name, admin, query, token string
		status                    int
		shown                     bool
	}{
		{"default", "admin: {listen: \"127.0.0.1:0\"}\n", "", "", 200, false},
		{"asked without a token", "admin: {listen: \"127.0.0.1:0\"}\n", "?exec_args=1", "", 403, false},
		{"token, not asked", "admin: {listen: \"127.0.0.1:0\", token_file: " + tokenFile + "}\n", "", "s3cret-token", 200, false},
		{"token, asked", "admin: {listen: \"127.0.0.1:0\", token_file: " + tokenFile + "}\n", "?exec_args=1", "s3cret-token", 200, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startLogged(t, base+tc.admin, slog.DiscardHandler)
			req, _ := http.NewRequest("GET", "http://"+s.AdminAddr().String()+"/config"+tc.query, nil)
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			if shown := strings.Contains(string(body), "hunter2"); shown != tc.shown {
				t.Errorf("arguments shown %v, want %v:\n%s", shown, tc.shown, body)
			}
			if tc.status == 200 && !strings.Contains(string(body), `"/bin/echo"`) {
				t.Errorf("program not shown:\n%s", body)
			}
			if tc.status == 200 && !tc.shown && !strings.Contains(string(body), `"exec_args_hidden": 2`) {
				t.Errorf("no count of the hidden arguments:\n%s", body)
			}
		})
	}
}
