package gate

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/peergate/peergate/acl"
	"github.com/peergate/peergate/internal/acltest"
)

// mustACL builds an ACL from "allow 127.0.0.1" style rules.
func mustACL(t testing.TB, def acl.Action, unix acl.Action, rules ...string) *acl.ACL {
	t.Helper()
	return acl.MustNew(acl.Spec{Default: def, Unix: unix, Rules: acltest.RulesOf(rules...)})
}

// server runs Accept on l in the background and sends every connection it returns on the channel,
// after writing "ok\n" to it. The channel is closed when Accept fails.
func server(t *testing.T, l net.Listener) <-chan net.Conn {
	t.Helper()
	ch := make(chan net.Conn, 64)
	go func() {
		defer close(ch)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("ok\n"))
			ch <- c
		}
	}()
	t.Cleanup(func() {
		l.Close()
		for c := range ch {
			c.Close()
		}
	})
	return ch
}

// dialFrom connects to addr from the source IP src ("" for any).
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, src, err)
	}
	return c
}

// readAll reads until EOF or error, with a deadline so a test cannot hang.
func readAll(c net.Conn) (string, error) {
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	return string(b), err
}

func next(t *testing.T, ch <-chan net.Conn) net.Conn {
	t.Helper()
	select {
	case c := <-ch:
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("handler received no connection")
		return nil
	}
}

func listen(t *testing.T, network, addr string) net.Listener {
	t.Helper()
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Skipf("cannot listen on %s %s: %v", network, addr, err)
	}
	return l
}

func TestAllowAndDeny(t *testing.T) {
	for _, tc := range []struct {
		name          string
		listen        string
		rules         []string
		denied, allow string // client source addresses
		peer          string // the denied peer as the gate must see it
	}{
		{"ipv4", "127.0.0.1:0", []string{"allow 127.0.0.1"}, "127.0.0.2", "127.0.0.1", "127.0.0.2"},
		{"ipv4 rule on dual-stack listener", "[::]:0", []string{"allow 127.0.0.1"}, "127.0.0.2", "127.0.0.1", "127.0.0.2"},
		{"mapped rule on dual-stack listener", "[::]:0", []string{"allow ::ffff:127.0.0.1"}, "127.0.0.2", "127.0.0.1", "127.0.0.2"},
		{"ipv4 deny rule beats wide v6 allow", "[::]:0", []string{"allow ::/0", "allow 127.0.0.0/8", "deny 127.0.0.2"}, "127.0.0.2", "127.0.0.1", "127.0.0.2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inner := listen(t, "tcp", tc.listen)
			var mu sync.Mutex
			var events []Event
			g := NewListener(inner, mustACL(t, acl.Deny, acl.Deny, tc.rules...), Options{OnDecision: func(e Event) {
				mu.Lock()
				events = append(events, e)
				mu.Unlock()
			}})
			handled := server(t, g)
			port := inner.Addr().(*net.TCPAddr).Port
			target := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))

			denied := dialFrom(t, tc.denied, target)
			defer denied.Close()
			allowed := dialFrom(t, tc.allow, target)
			defer allowed.Close()

			// The kernel queues both; the gate must skip the first and hand on the second.
			c := next(t, handled)
			if got := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap().String(); got != tc.allow {
				t.Errorf("handler got a connection from %s, want %s", got, tc.allow)
			}
			if got, err := readAll(denied); got != "" || err != nil {
				t.Errorf("denied client read %q, %v; want EOF and nothing", got, err)
			}
			if got, _ := bufRead(allowed); got != "ok\n" {
				t.Errorf("allowed client read %q", got)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(events) != 2 || events[0].Peer.AddrPort.Addr().String() != tc.peer || events[0].HandedOn || events[0].Decision.Allowed() {
				t.Fatalf("events %+v", events)
			}
			if s := g.Stats(); s != (Stats{Allowed: 1, Denied: 1}) {
				t.Errorf("stats %+v", s)
			}
		})
	}
}

func bufRead(c net.Conn) (string, error) {
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 16)
	n, err := c.Read(b)
	return string(b[:n]), err
}

func TestIPv6Loopback(t *testing.T) {
	for _, tc := range []struct {
		rule  string
		allow bool
	}{{"allow ::1", true}, {"deny ::1", false}} {
		t.Run(tc.rule, func(t *testing.T) {
			inner := listen(t, "tcp", "[::1]:0")
			g := NewListener(inner, mustACL(t, acl.Allow, acl.Deny, tc.rule), Options{})
			handled := server(t, g)
			c := dialFrom(t, "", inner.Addr().String())
			defer c.Close()
			got, _ := bufRead(c)
			if tc.allow {
				next(t, handled)
				if got != "ok\n" {
					t.Errorf("allowed ::1 read %q", got)
				}
			} else if got != "" {
				t.Errorf("denied ::1 read %q", got)
			}
			if s := g.Stats(); (s.Allowed == 1) != tc.allow || (s.Denied == 1) == tc.allow {
				t.Errorf("stats %+v", s)
			}
		})
	}
}

// TestResetOnDeny: OnDeny: DenyReset, and the older Reset, deny with an RST (the client sees
// ECONNRESET); DenyClose with a FIN (the client reads EOF).
func TestResetOnDeny(t *testing.T) {
	for _, tc := range []struct {
		name  string
		opts  Options
		reset bool
	}{
		{"OnDeny reset", Options{OnDeny: DenyReset}, true},
		{"Reset", Options{Reset: true}, true},
		{"OnDeny close", Options{OnDeny: DenyClose}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inner := listen(t, "tcp", "127.0.0.1:0")
			g := NewListener(inner, mustACL(t, acl.Deny, acl.Deny, "allow 127.0.0.1"), tc.opts)
			handled := server(t, g)
			// The RST may arrive before connect returns, or after: either way the client sees a reset.
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: 5 * time.Second}
			denied, err := d.Dial("tcp", inner.Addr().String())
			allowed := dialFrom(t, "127.0.0.1", inner.Addr().String())
			defer allowed.Close()
			next(t, handled) // the denied one has been dealt with by now
			if err == nil {
				defer denied.Close()
				_, err = readAll(denied)
			}
			if tc.reset && !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("denied client got %v, want ECONNRESET", err)
			}
			if !tc.reset && err != nil {
				t.Errorf("denied client got %v, want EOF", err)
			}
		})
	}
}

func countFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(ents)
}

// TestDeniedFDsAreClosed denies many connections and checks that the process holds no more file
// descriptors afterwards than before: each denied socket was closed at once.
func TestDeniedFDsAreClosed(t *testing.T) {
	inner := listen(t, "tcp", "127.0.0.1:0")
	g := NewListener(inner, mustACL(t, acl.Deny, acl.Deny, "allow 127.0.0.1"), Options{})
	handled := server(t, g)
	addr := inner.Addr().String()
	warm := dialFrom(t, "127.0.0.2", addr) // let the runtime open its poller first
	readAll(warm)
	warm.Close()
	before := countFDs(t)
	const n = 500
	for i := range n {
		c := dialFrom(t, "127.0.0.2", addr)
		if got, err := readAll(c); got != "" || err != nil {
			t.Fatalf("denied conn %d read %q, %v", i, got, err)
		}
		c.Close()
	}
	if after := countFDs(t); after > before {
		t.Errorf("open fds went from %d to %d after %d denials", before, after, n)
	}
	if s := g.Stats(); s.Denied != n+1 || s.Allowed != 0 {
		t.Errorf("stats %+v", s)
	}
	select {
	case c := <-handled:
		t.Errorf("handler received a denied connection from %v", c.RemoteAddr())
	default:
	}
}

func TestDryRun(t *testing.T) {
	inner := listen(t, "tcp", "127.0.0.1:0")
	var logs bytes.Buffer
	var mu sync.Mutex
	g := NewListener(inner, mustACL(t, acl.Deny, acl.Deny, "allow 127.0.0.1"),
		Options{DryRun: true, Logger: slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &mu}, nil))})
	handled := server(t, g)
	c := dialFrom(t, "127.0.0.2", inner.Addr().String())
	defer c.Close()
	if got := next(t, handled).RemoteAddr().(*net.TCPAddr).IP.String(); got != "127.0.0.2" {
		t.Errorf("handed on %s", got)
	}
	if s := g.Stats(); s != (Stats{Denied: 1}) {
		t.Errorf("stats %+v", s)
	}
	mu.Lock()
	defer mu.Unlock()
	if l := logs.String(); !strings.Contains(l, "dry run") || !strings.Contains(l, "peer=127.0.0.2:") || !strings.Contains(l, "rule=default") {
		t.Errorf("log %q", l)
	}
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

func TestDenialLogNamesRule(t *testing.T) {
	inner := listen(t, "tcp", "127.0.0.1:0")
	var logs bytes.Buffer
	var mu sync.Mutex
	g := NewListener(inner, mustACL(t, acl.Allow, acl.Deny, "deny 127.0.0.2"),
		Options{Logger: slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &mu}, nil))})
	handled := server(t, g)
	c := dialFrom(t, "127.0.0.2", inner.Addr().String())
	readAll(c)
	c.Close()
	ok := dialFrom(t, "127.0.0.1", inner.Addr().String())
	defer ok.Close()
	next(t, handled)
	mu.Lock()
	defer mu.Unlock()
	if l := logs.String(); !strings.Contains(l, `msg="peer denied"`) || !strings.Contains(l, "rule=127.0.0.2/32") || !strings.Contains(l, "origin=t:1") {
		t.Errorf("log %q", l)
	}
}

func TestUnixListener(t *testing.T) {
	for _, tc := range []struct {
		policy acl.Action
		allow  bool
	}{{acl.Allow, true}, {acl.Deny, false}} {
		t.Run(tc.policy.String(), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "s.sock")
			inner := listen(t, "unix", path)
			g := NewListener(inner, mustACL(t, acl.Allow, tc.policy), Options{})
			handled := server(t, g)
			c, err := net.Dial("unix", path)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			got, _ := bufRead(c)
			if tc.allow {
				next(t, handled)
			}
			if (got == "ok\n") != tc.allow {
				t.Errorf("unix: %v: client read %q", tc.policy, got)
			}
		})
	}
}

// TestSetACLWhileAccepting swaps the ACL between allow-all and deny-all while clients connect;
// under -race it shows the swap is safe, and every connection is counted once.
func TestSetACLWhileAccepting(t *testing.T) {
	inner := listen(t, "tcp", "127.0.0.1:0")
	open, shut := mustACL(t, acl.Allow, acl.Deny), mustACL(t, acl.Deny, acl.Deny)
	g := NewListener(inner, open, Options{})
	handled := server(t, g)
	go func() {
		for c := range handled {
			c.Close()
		}
	}()
	const clients, each = 4, 50
	var wg sync.WaitGroup
	wg.Add(clients + 1)
	go func() {
		defer wg.Done()
		for i := range 500 {
			if i%2 == 0 {
				g.SetACL(shut)
			} else {
				g.SetACL(open)
			}
		}
	}()
	for range clients {
		go func() {
			defer wg.Done()
			for range each {
				c, err := net.DialTimeout("tcp", inner.Addr().String(), 5*time.Second)
				if err != nil {
					t.Error(err)
					return
				}
				readAll(c) // "ok" or nothing; either way the gate has judged it
				c.Close()
			}
		}()
	}
	wg.Wait()
	if s := g.Stats(); s.Allowed+s.Denied != clients*each || s.Errors != 0 {
		t.Errorf("stats %+v, want %d judged", s, clients*each)
	}
	if g.ACL() != open && g.ACL() != shut {
		t.Error("ACL() returned neither ACL")
	}
}

func TestNilACLDeniesAll(t *testing.T) {
	inner := listen(t, "tcp", "127.0.0.1:0")
	g := NewListener(inner, nil, Options{})
	server(t, g)
	c := dialFrom(t, "127.0.0.1", inner.Addr().String())
	defer c.Close()
	if got, err := readAll(c); got != "" || err != nil {
		t.Errorf("read %q, %v", got, err)
	}
	if s := g.Stats(); s.Errors != 1 {
		t.Errorf("stats %+v", s)
	}
}

// plainConn hides the *net.TCPConn it wraps, as some middleware does: the gate cannot reach a file
// descriptor and must fail closed.
type plainConn struct{ net.Conn }

type hidingListener struct{ net.Listener }

func (l hidingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return plainConn{c}, nil
}

func TestNoFDFailsClosed(t *testing.T) {
	inner := listen(t, "tcp", "127.0.0.1:0")
	errs := make(chan error, 1)
	g := NewListener(hidingListener{inner}, mustACL(t, acl.Allow, acl.Allow), Options{OnDecision: func(e Event) { errs <- e.Err }})
	server(t, g)
	c := dialFrom(t, "127.0.0.1", inner.Addr().String())
	defer c.Close()
	if s, err := readAll(c); s != "" || err != nil {
		t.Errorf("read %q, %v", s, err)
	}
	if s := g.Stats(); s.Errors != 1 || s.Allowed != 0 {
		t.Errorf("stats %+v", s)
	}
	if got := <-errs; !errors.Is(got, ErrNoFD) {
		t.Errorf("event error %v, want ErrNoFD", got)
	}
}

// TestResetBeforeAccept connects, then resets, before the gate accepts: getpeername may fail with
// ENOTCONN. Accept must neither fail nor return anything but the next good connection.
func TestResetBeforeAccept(t *testing.T) {
	inner := listen(t, "tcp", "127.0.0.1:0")
	g := NewListener(inner, mustACL(t, acl.Deny, acl.Deny, "allow 127.0.0.1"), Options{})
	const n = 20
	for range n {
		c := dialFrom(t, "127.0.0.1", inner.Addr().String())
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	}
	good := dialFrom(t, "127.0.0.3", inner.Addr().String()) // denied, then the last one allowed
	defer good.Close()
	last := dialFrom(t, "127.0.0.1", inner.Addr().String())
	defer last.Close()
	last.Write([]byte("x"))
	for i := 0; ; i++ {
		c, err := g.Accept()
		if err != nil {
			t.Fatalf("Accept failed: %v", err)
		}
		b := make([]byte, 1)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, rerr := c.Read(b)
		c.Close()
		if rerr == nil && b[0] == 'x' {
			break // the good connection; the reset ones were skipped or read as dead
		}
		if i > n {
			t.Fatal("Accept kept returning dead connections")
		}
	}
	s := g.Stats()
	if s.Denied != 1 || s.Allowed+s.Errors != n+1 {
		t.Errorf("stats %+v", s)
	}
	g.Close()
	if _, err := g.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close = %v, want the inner listener's net.ErrClosed", err)
	}
}

func TestPeerFromFD(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if _, err := PeerFromFD(int(r.Fd())); !errors.Is(err, ErrNotSocket) {
		t.Errorf("pipe: %v, want ErrNotSocket", err)
	}
	if _, err := PeerFromFD(1 << 20); err == nil || errors.Is(err, ErrNotSocket) {
		t.Errorf("bad fd: %v, want EBADF", err)
	}

	inner := listen(t, "tcp", "127.0.0.1:0")
	defer inner.Close()
	c := dialFrom(t, "127.0.0.5", inner.Addr().String())
	defer c.Close()
	f, err := c.(*net.TCPConn).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// The client's peer is the server: 127.0.0.1 and the listening port.
	p, err := PeerFromFD(int(f.Fd()))
	if err != nil || p.AddrPort.String() != inner.Addr().String() || p.Unix {
		t.Errorf("PeerFromFD = %v, %v; want %v", p, err, inner.Addr())
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	if _, err := PeerFromFD(int(must(ln.(*net.TCPListener).File()).Fd())); err == nil {
		t.Error("a listening socket has no peer, want ENOTCONN")
	}
	ln.Close()
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
