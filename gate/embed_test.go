package gate

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/peergate/peergate/acl"
	"github.com/peergate/peergate/gate/limit"
	"github.com/pires/go-proxyproto"
	"golang.org/x/net/netutil"
	"golang.org/x/sys/unix"
)

// heldConn returns the server side of a connection from 127.0.0.1 as a gate with a per-source cap
// returns it (a *Conn), and the client side.
func heldConn(t *testing.T) (*Conn, net.Conn) {
	t.Helper()
	inner := listen(t, "tcp", "127.0.0.1:0")
	ln := NewListener(inner, mustACL(t, acl.Allow, acl.Deny), Options{Limiter: limit.New(limit.Config{PerSource: 4})})
	t.Cleanup(func() { ln.Close() })
	client := dialFrom(t, "127.0.0.1", inner.Addr().String())
	t.Cleanup(func() { client.Close() })
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	gc, ok := c.(*Conn)
	if !ok {
		t.Fatalf("Accept returned %T, want *gate.Conn", c)
	}
	return gc, client
}

// sockopt reads an int socket option of c's descriptor.
func sockopt(t *testing.T, c syscall.Conn, level, opt int) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var gerr error
	if err := rc.Control(func(fd uintptr) { v, gerr = unix.GetsockoptInt(int(fd), level, opt) }); err != nil || gerr != nil {
		t.Fatal(err, gerr)
	}
	return v
}

// A *Conn answers the type assertions programs make on a *net.TCPConn, and each reaches the socket.
func TestConnPassesThrough(t *testing.T) {
	for _, tc := range []struct {
		name  string
		check func(t *testing.T, c net.Conn, client net.Conn)
	}{
		{"SetNoDelay", func(t *testing.T, c, _ net.Conn) {
			if err := c.(interface{ SetNoDelay(bool) error }).SetNoDelay(false); err != nil {
				t.Fatal(err)
			}
			if v := sockopt(t, c.(syscall.Conn), unix.IPPROTO_TCP, unix.TCP_NODELAY); v != 0 {
				t.Errorf("TCP_NODELAY %d after SetNoDelay(false)", v)
			}
		}},
		{"SetKeepAlive", func(t *testing.T, c, _ net.Conn) {
			if err := c.(interface{ SetKeepAlive(bool) error }).SetKeepAlive(true); err != nil {
				t.Fatal(err)
			}
			if v := sockopt(t, c.(syscall.Conn), unix.SOL_SOCKET, unix.SO_KEEPALIVE); v != 1 {
				t.Errorf("SO_KEEPALIVE %d after SetKeepAlive(true)", v)
			}
		}},
		{"SetKeepAlivePeriod", func(t *testing.T, c, _ net.Conn) {
			if err := c.(interface{ SetKeepAlivePeriod(time.Duration) error }).SetKeepAlivePeriod(37 * time.Second); err != nil {
				t.Fatal(err)
			}
			if v := sockopt(t, c.(syscall.Conn), unix.IPPROTO_TCP, unix.TCP_KEEPIDLE); v != 37 {
				t.Errorf("TCP_KEEPIDLE %d, want 37", v)
			}
		}},
		{"SetKeepAliveConfig", func(t *testing.T, c, _ net.Conn) {
			kc := c.(interface {
				SetKeepAliveConfig(net.KeepAliveConfig) error
			})
			if err := kc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: 41 * time.Second, Interval: 5 * time.Second, Count: 3}); err != nil {
				t.Fatal(err)
			}
			if v := sockopt(t, c.(syscall.Conn), unix.IPPROTO_TCP, unix.TCP_KEEPIDLE); v != 41 {
				t.Errorf("TCP_KEEPIDLE %d, want 41", v)
			}
		}},
		{"SetLinger", func(t *testing.T, c, _ net.Conn) {
			if err := c.(interface{ SetLinger(int) error }).SetLinger(7); err != nil {
				t.Fatal(err)
			}
			rc, _ := c.(syscall.Conn).SyscallConn()
			var l *unix.Linger
			rc.Control(func(fd uintptr) { l, _ = unix.GetsockoptLinger(int(fd), unix.SOL_SOCKET, unix.SO_LINGER) })
			if l == nil || l.Onoff == 0 || l.Linger != 7 {
				t.Errorf("SO_LINGER %+v, want on, 7", l)
			}
		}},
		{"CloseRead", func(t *testing.T, c, client net.Conn) {
			if err := c.(interface{ CloseRead() error }).CloseRead(); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if n, err := c.Read(make([]byte, 8)); n != 0 || err != io.EOF {
				t.Errorf("read after CloseRead: %d, %v; want EOF", n, err)
			}
		}},
		{"CloseWrite", func(t *testing.T, c, client net.Conn) {
			if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
				t.Fatal(err)
			}
			if s, err := readAll(client); s != "" || err != nil {
				t.Errorf("client read %q, %v; want EOF", s, err)
			}
		}},
		{"ReadFrom", func(t *testing.T, c, client net.Conn) {
			want := bytes.Repeat([]byte("0123456789"), 10000)
			rf, ok := c.(io.ReaderFrom)
			if !ok {
				t.Fatalf("%T is no io.ReaderFrom", c)
			}
			go func() {
				// A plain reader: the *net.TCPConn beneath copies it by its generic path.
				rf.ReadFrom(struct{ io.Reader }{bytes.NewReader(want)})
				c.(interface{ CloseWrite() error }).CloseWrite()
			}()
			client.SetReadDeadline(time.Now().Add(10 * time.Second))
			if got, err := io.ReadAll(client); !bytes.Equal(got, want) || err != nil {
				t.Errorf("client read %d bytes, %v; want %d", len(got), err, len(want))
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, client := heldConn(t)
			tc.check(t, c, client)
		})
	}
}

// Where the accepted connection has no such method, the passthroughs say so.
func TestConnPassthroughUnsupported(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	c := &Conn{Conn: a}
	if _, err := c.SyscallConn(); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("SyscallConn: %v", err)
	}
	for name, err := range map[string]error{
		"SetNoDelay":         c.SetNoDelay(true),
		"SetKeepAlive":       c.SetKeepAlive(true),
		"SetKeepAlivePeriod": c.SetKeepAlivePeriod(time.Second),
		"SetKeepAliveConfig": c.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true}),
		"SetLinger":          c.SetLinger(0),
		"CloseRead":          c.CloseRead(),
	} {
		if !errors.Is(err, errors.ErrUnsupported) {
			t.Errorf("%s on a pipe: %v, want errors.ErrUnsupported", name, err)
		}
	}
	go io.Copy(io.Discard, b)
	if n, err := c.ReadFrom(bytes.NewReader(make([]byte, 1000))); n != 1000 || err != nil {
		t.Errorf("ReadFrom on a pipe: %d, %v", n, err)
	}
}

// sendfileConn is the inner listener's *net.TCPConn with its ReadFrom observed: it records the
// readers it is given, to show that http.ServeFile's file reaches it, where sendfile(2) happens.
type sendfileConn struct {
	*net.TCPConn
	files *atomic.Int64 // ReadFrom calls whose reader is the file (or a LimitedReader of it)
}

func (c sendfileConn) ReadFrom(r io.Reader) (int64, error) {
	src := r
	if lr, ok := r.(*io.LimitedReader); ok {
		src = lr.R
	}
	if _, ok := src.(*os.File); ok {
		c.files.Add(1)
	}
	return c.TCPConn.ReadFrom(r)
}

type sendfileListener struct {
	net.Listener
	files *atomic.Int64
}

func (l sendfileListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return sendfileConn{c.(*net.TCPConn), l.files}, nil
}

// http.ServeFile through a gate that returns *Conn (a per-source cap) still hands the file itself
// to the TCP connection's ReadFrom, which sends it with sendfile(2); without Conn.ReadFrom,
// net/http copied it through a buffer.
func TestServeFileKeepsSendfile(t *testing.T) {
	want := make([]byte, 1<<20)
	rand.Read(want)
	path := filepath.Join(t.TempDir(), "blob")
	if err := os.WriteFile(path, want, 0o644); err != nil {
		t.Fatal(err)
	}
	var files atomic.Int64
	inner := listen(t, "tcp", "127.0.0.1:0")
	ln := NewListener(sendfileListener{inner, &files}, mustACL(t, acl.Allow, acl.Deny), Options{Limiter: limit.New(limit.Config{PerSource: 8})})
	var types atomic.Value
	srv := &http.Server{
		Handler:     http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, path) }),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context { types.Store(c); return ctx },
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + inner.Addr().String() + "/blob")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Equal(got, want) || err != nil {
		t.Fatalf("got %d bytes, %v; want the file's %d", len(got), err, len(want))
	}
	if _, ok := types.Load().(*Conn); !ok {
		t.Fatalf("the server was given a %T, want *gate.Conn", types.Load())
	}
	if files.Load() == 0 {
		t.Error("the file never reached the TCP connection's ReadFrom: no sendfile")
	}
}

// netConnWrapper hides the socket behind a NetConn method, as *tls.Conn does.
type netConnWrapper struct{ net.Conn }

func (w netConnWrapper) NetConn() net.Conn { return w.Conn }

type netConnListener struct{ net.Listener }

func (l netConnListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return netConnWrapper{c}, nil
}

// A gate around a listener whose connections lead to no socket (netutil.LimitListener,
// proxyproto.Listener) cannot judge anyone: its Accept returns ErrWrappedListener, after closing
// the connection, instead of denying every connection while Accept seemed to wait. Connections
// with a NetConn method are judged by the connection it returns.
func TestWrappedInnerListener(t *testing.T) {
	for _, tc := range []struct {
		name   string
		wrap   func(net.Listener) net.Listener
		judged bool
	}{
		{"netutil.LimitListener", func(l net.Listener) net.Listener { return netutil.LimitListener(l, 4) }, false},
		{"proxyproto.Listener", func(l net.Listener) net.Listener { return &proxyproto.Listener{Listener: l} }, false},
		{"no way to the socket", func(l net.Listener) net.Listener { return hidingListener{l} }, false},
		{"NetConn", func(l net.Listener) net.Listener { return netConnListener{l} }, true},
	} {
		for _, po := range []*ProxyOptions{nil, {Trusted: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}} {
			t.Run(tc.name+map[bool]string{false: "", true: " with Proxy"}[po != nil], func(t *testing.T) {
				inner := listen(t, "tcp", "127.0.0.1:0")
				ln := NewListener(tc.wrap(inner), mustACL(t, acl.Deny, acl.Deny, "allow 127.0.0.1"), Options{Proxy: po})
				t.Cleanup(func() { ln.Close() })
				type result struct {
					c   net.Conn
					err error
				}
				res := make(chan result, 1)
				go func() { c, err := ln.Accept(); res <- result{c, err} }()
				if tc.judged { // a denied peer first: closed, and Accept goes on
					denied := dialFrom(t, "127.0.0.2", inner.Addr().String())
					defer denied.Close()
					if s, err := readAll(denied); s != "" || err != nil {
						t.Errorf("denied peer read %q, %v; want EOF", s, err)
					}
				}
				allowed := dialFrom(t, "127.0.0.1", inner.Addr().String())
				defer allowed.Close()
				var r result
				select {
				case r = <-res:
				case <-time.After(10 * time.Second):
					t.Fatal("Accept neither returned a connection nor an error")
				}
				if !tc.judged {
					if r.c != nil || !errors.Is(r.err, ErrWrappedListener) {
						t.Fatalf("Accept = %v, %v; want ErrWrappedListener", r.c, r.err)
					}
					if s := ln.Stats(); s.Errors != 1 || s.Allowed+s.Denied != 0 {
						t.Errorf("stats %+v", s)
					}
					if s, err := readAll(allowed); s != "" || err != nil {
						t.Errorf("client read %q, %v; want EOF", s, err)
					}
					return
				}
				if r.err != nil {
					t.Fatal(r.err)
				}
				defer r.c.Close()
				if _, ok := r.c.(netConnWrapper); !ok {
					t.Errorf("Accept returned %T, want the inner listener's netConnWrapper", r.c)
				}
				if s := ln.Stats(); s.Allowed != 1 || s.Denied != 1 {
					t.Errorf("stats %+v", s)
				}
			})
		}
	}
}

// The plain accept path allocates nothing of its own: a gate's Accept allocates what the inner
// listener's does, plus the one 8-byte syscall.RawConn that (*net.TCPConn).SyscallConn allocates
// for getpeername, for a connection it allows and for one it denies.
func TestAcceptAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own (a run under load counted one more a connection); .ci/run runs this guard without -race")
	}
	a := mustACL(t, acl.Deny, acl.Deny, "allow 127.0.0.1")
	for _, tc := range []struct {
		name string
		srcs []string // the gate denies all but the last
		opts Options
	}{
		{"allowed", []string{"127.0.0.1"}, Options{}},
		{"denied then allowed", []string{"127.0.0.2", "127.0.0.1"}, Options{}},
		// The ban layer asked about every peer, banning none; a ban that denies allocates its Event.Ban.
		{"allowed, bans consulted", []string{"127.0.0.1"}, Options{Bans: noBans{}}},
		{"denied then allowed, bans consulted", []string{"127.0.0.2", "127.0.0.1"}, Options{Bans: noBans{}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inner := listen(t, "tcp", "127.0.0.1:0")
			defer inner.Close()
			bare := acceptAllocs(t, inner, "127.0.0.1") * float64(len(tc.srcs))
			ln := NewListener(listen(t, "tcp", "127.0.0.1:0"), a, tc.opts)
			defer ln.Close()
			rawConns := float64(len(tc.srcs))
			if gated := acceptAllocs(t, ln, tc.srcs...); gated > bare+rawConns {
				t.Errorf("%v allocations per Accept through the gate, %v for the bare listener's accepts and %v SyscallConn", gated, bare, rawConns)
			}
		})
	}
}

// noBans is a ban layer that bans nothing and allocates nothing, as gate/bans's Table does
// (its own TestLookupAllocs guards that).
type noBans struct{}

func (noBans) Banned(netip.Addr) (Ban, bool) { return Ban{}, false }

// acceptAllocs returns the allocations of one call of ln.Accept, with connections from srcs in
// turn dialled beforehand. AllocsPerRun counts the whole process's allocations, and goroutines
// that earlier tests left winding down can only add to them: the least of a few tries counts.
func acceptAllocs(t *testing.T, ln net.Listener, srcs ...string) float64 {
	const runs = 50
	least := math.Inf(1)
	for range 5 {
		var clients []net.Conn
		for range runs + 1 { // AllocsPerRun calls once more to warm up
			for _, src := range srcs {
				clients = append(clients, dialFrom(t, src, ln.Addr().String()))
			}
		}
		least = min(least, testing.AllocsPerRun(runs, func() {
			c, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
		}))
		for _, c := range clients {
			c.Close()
		}
	}
	return least
}
