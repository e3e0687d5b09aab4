package serve

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"
)

// recordHandler keeps every record with its attributes as strings.
type recordHandler struct {
	mu   *sync.Mutex
	recs *[]record
}

type record struct {
	level slog.Level
	msg   string
	attrs map[string]string
}

func newRecorder() recordHandler { return recordHandler{&sync.Mutex{}, &[]record{}} }

func (h recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h recordHandler) Handle(_ context.Context, r slog.Record) error {
	rec := record{r.Level, r.Message, map[string]string{}}
	r.Attrs(func(a slog.Attr) bool { rec.attrs[a.Key] = a.Value.String(); return true })
	h.mu.Lock()
	*h.recs = append(*h.recs, rec)
	h.mu.Unlock()
	return nil
}
func (h recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h recordHandler) WithGroup(string) slog.Handler      { return h }

// find returns the first record with msg.
func (h recordHandler) find(msg string) (record, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range *h.recs {
		if r.msg == msg {
			return r, true
		}
	}
	return record{}, false
}

// closingUpstream writes "bye" to each client and closes.
func closingUpstream(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("bye"))
			c.Close()
		}
	}()
	return ln.Addr().String()
}

// TestAccessLog: log_allowed logs each allowed connection and its end, with the bytes each way
// and how it ended; without it, no start line and the end line at debug.
func TestAccessLog(t *testing.T) {
	for _, tc := range []struct {
		name    string
		service func(t *testing.T) string // the service's keys past listen and acl
		talk    func(c net.Conn)          // what the client does
		level   slog.Level                // of the end line
		allowed bool                      // an "allowed" line is expected
		want    map[string]string         // attributes of the end line
	}{
		{"client closes", func(t *testing.T) string {
			return "    log_allowed: true\n    upstream: " + upstream(t, "echo") + "\n"
		}, func(c net.Conn) {
			c.Write([]byte("hello"))
			io.ReadFull(c, make([]byte, 5))
		}, slog.LevelInfo, true, map[string]string{"end": "client_closed", "in": "5", "out": "5"}},
		{"upstream closes", func(t *testing.T) string {
			return "    log_allowed: true\n    upstream: " + closingUpstream(t) + "\n"
		}, func(c net.Conn) { io.Copy(io.Discard, c) }, slog.LevelInfo, true, map[string]string{"end": "upstream_closed", "in": "0", "out": "3"}},
		{"idle timeout", func(t *testing.T) string {
			return "    log_allowed: true\n    idle_timeout: 100ms\n    upstream: " + upstream(t, "echo") + "\n"
		}, func(c net.Conn) { io.Copy(io.Discard, c) }, slog.LevelInfo, true, map[string]string{"end": "idle_timeout"}},
		{"spawn", func(t *testing.T) string {
			return "    log_allowed: true\n    exec: [/bin/sh, -c, \"echo hi; exit 3\"]\n"
		}, func(c net.Conn) { io.Copy(io.Discard, c) }, slog.LevelInfo, true, map[string]string{"end": "exited", "status": "3"}},
		{"off", func(t *testing.T) string {
			return "    upstream: " + upstream(t, "echo") + "\n"
		}, func(c net.Conn) {
			c.Write([]byte("hello"))
			io.ReadFull(c, make([]byte, 5))
		}, slog.LevelDebug, false, map[string]string{"end": "client_closed", "in": "5", "out": "5"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newRecorder()
			s := startLogged(t, "acls:\n  lo: {default: deny, allow: [127.0.0.1]}\nservices:\n  - name: p\n    listen: [\"127.0.0.1:0\"]\n    acl: lo\n"+tc.service(t), h)
			c, err := dialFrom("127.0.0.1", s.Addrs()["p"][0].String())
			if err != nil {
				t.Fatal(err)
			}
			tc.talk(c)
			c.Close()
			var end record
			waitFor(t, "the end line", func() (ok bool) { end, ok = h.find("connection ended"); return ok })
			if end.level != tc.level {
				t.Errorf("end line at %v, want %v", end.level, tc.level)
			}
			for k, v := range tc.want {
				if end.attrs[k] != v {
					t.Errorf("end line %s=%q, want %q (%v)", k, end.attrs[k], v, end.attrs)
				}
			}
			if end.attrs["duration"] == "" || end.attrs["peer"] == "" {
				t.Errorf("end line without duration or peer: %v", end.attrs)
			}
			start, ok := h.find("allowed")
			if ok != tc.allowed {
				t.Fatalf("allowed line logged: %v, want %v", ok, tc.allowed)
			}
			if ok && (start.level != slog.LevelInfo || start.attrs["peer"] == "" || start.attrs["listen"] != s.Addrs()["p"][0].String()) {
				t.Errorf("allowed line: %v %v", start.level, start.attrs)
			}
		})
	}
}

// TestAccessLogDrain: a connection closed by the drain deadline ends with end=drain.
func TestAccessLogDrain(t *testing.T) {
	h := newRecorder()
	s := startLogged(t, fmt.Sprintf("drain_timeout: 50ms\nacls:\n  lo: {default: deny, allow: [127.0.0.1]}\nservices:\n  - name: p\n    listen: [\"127.0.0.1:0\"]\n    acl: lo\n    log_allowed: true\n    upstream: %s\n", upstream(t, "echo")), h)
	c, err := dialFrom("127.0.0.1", s.Addrs()["p"][0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("x"))
	io.ReadFull(c, make([]byte, 1)) // proxied: the pipe runs
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	s.Shutdown(ctx)
	var end record
	waitFor(t, "the end line", func() (ok bool) { end, ok = h.find("connection ended"); return ok })
	if end.attrs["end"] != "drain" {
		t.Errorf("end=%q, want drain", end.attrs["end"])
	}
}
