//go:build linux

package evloop

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// recorder is a Handler that reports what it hears.
type recorder struct {
	connected chan time.Duration
	failed    chan error
	ended     chan End
}

func newRecorder() *recorder {
	return &recorder{connected: make(chan time.Duration, 1), failed: make(chan error, 1), ended: make(chan End, 1)}
}

func (r *recorder) Connected(d time.Duration) { r.connected <- d }
func (r *recorder) Failed(err error)          { r.failed <- err }
func (r *recorder) Ended(e End)               { r.ended <- e }

func (r *recorder) end(t *testing.T) End {
	t.Helper()
	select {
	case e := <-r.ended:
		return e
	case err := <-r.failed:
		t.Fatalf("failed: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the connection did not end")
	}
	return End{}
}

func startLoop(t *testing.T) *Loop {
	t.Helper()
	l, err := New()
	if err != nil {
		t.Fatal(err)
	}
	go l.Run()
	t.Cleanup(func() { l.Stop(); <-l.Done() })
	return l
}

func listen(t *testing.T) *net.TCPListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.(*net.TCPListener)
}

// accepted connects a client with d and returns its end and the accepted socket, non-blocking,
// as a loop takes it.
func accepted(t *testing.T, d *net.Dialer) (client net.Conn, fd int) {
	t.Helper()
	front := listen(t)
	client, err := d.Dial("tcp", front.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	fc, err := front.Accept()
	if err != nil {
		t.Fatal(err)
	}
	f, err := fc.(*net.TCPConn).File() // a copy of the socket, blocking: made non-blocking below
	fc.Close()
	if err != nil {
		t.Fatal(err)
	}
	fd, err = unix.Dup(int(f.Fd()))
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	unix.SetNonblock(fd, true)
	return client, fd
}

// proxied connects a client to a socket the loop proxies to up, and returns the client's end and
// the upstream's accepted end.
func proxied(t *testing.T, l *Loop, up *net.TCPListener, u Upstream, h Handler) (client, upstream net.Conn) {
	t.Helper()
	client, fd := accepted(t, &net.Dialer{})
	var err error
	if up == nil {
		l.Do(func() { l.Proxy(fd, u, h) })
		return client, nil
	}
	u.Addr = up.Addr().(*net.TCPAddr).AddrPort()
	l.Do(func() { l.Proxy(fd, u, h) })
	upstream, err = up.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { upstream.Close() })
	return client, upstream
}

// TestProxyBothWays: bytes pass both ways, a half-close passes on while the other way goes on,
// and the Handler hears the byte counts and who closed first.
func TestProxyBothWays(t *testing.T) {
	for _, splice := range []bool{false, true} {
		t.Run(map[bool]string{false: "copy", true: "splice"}[splice], func(t *testing.T) {
			l := startLoop(t)
			r := newRecorder()
			c, u := proxied(t, l, listen(t), Upstream{SpliceToClient: splice, SpliceToUpstream: splice}, r)
			if _, err := c.Write([]byte("hello")); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, 5)
			if _, err := io.ReadFull(u, got); err != nil || string(got) != "hello" {
				t.Fatalf("upstream read %q, %v", got, err)
			}
			c.(*net.TCPConn).CloseWrite()
			if n, err := u.Read(got); n != 0 || err != io.EOF {
				t.Fatalf("upstream: after the client's half-close, read %d, %v; want EOF", n, err)
			}
			// The other way still works after the half-close.
			if _, err := u.Write([]byte("world!")); err != nil {
				t.Fatal(err)
			}
			back := make([]byte, 6)
			if _, err := io.ReadFull(c, back); err != nil || string(back) != "world!" {
				t.Fatalf("client read %q, %v", back, err)
			}
			u.Close()
			if n, err := c.Read(back); n != 0 || err != io.EOF {
				t.Fatalf("client: read %d, %v; want EOF", n, err)
			}
			e := r.end(t)
			if e != (End{In: 5, Out: 6, Why: Done, ClientFirst: true}) {
				t.Fatalf("ended %+v", e)
			}
			select {
			case <-r.connected:
			default:
				t.Fatal("Connected not heard")
			}
		})
	}
}

// TestProxyBulk: 16 MiB each way at once, with the receivers slower than the senders (so that
// writes block and wait for EPOLLOUT), arrive intact.
func TestProxyBulk(t *testing.T) {
	const size = 16 << 20
	for _, splice := range []bool{false, true} {
		t.Run(map[bool]string{false: "copy", true: "splice"}[splice], func(t *testing.T) {
			l := startLoop(t)
			r := newRecorder()
			c, u := proxied(t, l, listen(t), Upstream{SpliceToClient: splice, SpliceToUpstream: splice}, r)
			data := make([]byte, size)
			for i := range data {
				data[i] = byte(i*7 + i>>12)
			}
			errs := make(chan error, 4)
			send := func(w net.Conn) {
				_, err := w.Write(data)
				w.(*net.TCPConn).CloseWrite()
				errs <- err
			}
			recv := func(rd net.Conn) {
				got, err := io.ReadAll(rd)
				if err == nil && !bytes.Equal(got, data) {
					err = errors.New("the stream arrived changed")
				}
				errs <- err
			}
			go send(c)
			go send(u)
			go recv(c)
			go recv(u)
			for range 4 {
				if err := <-errs; err != nil {
					t.Fatal(err)
				}
			}
			if e := r.end(t); e.In != size || e.Out != size || e.Why != Done {
				t.Fatalf("ended %+v", e)
			}
		})
	}
}

// TestConnectRefused: an upstream that refuses fails the connection, which closes the client.
func TestConnectRefused(t *testing.T) {
	l := startLoop(t)
	r := newRecorder()
	gone := listen(t)
	gone.Close()
	c, _ := proxied(t, l, nil, Upstream{Addr: gone.Addr().(*net.TCPAddr).AddrPort()}, r)
	select {
	case err := <-r.failed:
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("failed with %v, want ECONNREFUSED", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Failed not heard")
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || os.IsTimeout(err) {
		t.Fatalf("client read: %v; want its connection closed", err)
	}
}

// TestIdleAndStall: a connection quiet both ways is closed after the idle timeout; one whose
// upstream stops reading while the client writes is reset after it.
func TestIdleAndStall(t *testing.T) {
	const idle = 100 * time.Millisecond
	t.Run("idle", func(t *testing.T) {
		l := startLoop(t)
		r := newRecorder()
		c, _ := proxied(t, l, listen(t), Upstream{IdleTimeout: idle}, r)
		t0 := time.Now()
		if e := r.end(t); e.Why != Idle {
			t.Fatalf("ended %+v, want Idle", e)
		}
		if d := time.Since(t0); d < idle {
			t.Fatalf("closed after %v, before the idle timeout %v", d, idle)
		}
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("client read %v, want EOF (a close, not a reset)", err)
		}
	})
	t.Run("stall", func(t *testing.T) {
		l := startLoop(t)
		r := newRecorder()
		c, _ := proxied(t, l, listen(t), Upstream{IdleTimeout: idle}, r)
		go func() { // the upstream never reads: the client's writes stall
			buf := make([]byte, 64<<10)
			for {
				if _, err := c.Write(buf); err != nil {
					return
				}
			}
		}()
		if e := r.end(t); e.Why != Write {
			t.Fatalf("ended %+v, want Write", e)
		}
	})
}

// TestAbort: Abort resets open connections (Drain).
func TestAbort(t *testing.T) {
	l := startLoop(t)
	r := newRecorder()
	c, u := proxied(t, l, listen(t), Upstream{}, r)
	c.Write([]byte("x"))
	io.ReadFull(u, make([]byte, 1))
	l.Abort()
	if e := r.end(t); e.Why != Drain {
		t.Fatalf("ended %+v, want Drain", e)
	}
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("client read %v, want a reset", err)
	}
}

// TestWatch: a watched listener's ready func runs while connections are queued, not while paused.
func TestWatch(t *testing.T) {
	l := startLoop(t)
	ln := listen(t)
	rc, err := ln.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan int, 8)
	w := l.Watch(rc, func(w *Watch) bool {
		var fd int
		rc.Control(func(lfd uintptr) { fd, _, _ = unix.Accept4(int(lfd), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC) })
		if fd > 0 {
			unix.Close(fd)
			accepted <- fd
			w.Pause()
		}
		return true
	})
	dial := func() {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
	}
	dial()
	select {
	case <-accepted:
	case <-time.After(10 * time.Second):
		t.Fatal("ready not called for a queued connection")
	}
	dial()        // queued while paused: ready must not run until Resume
	for range 2 { // two rounds of the loop
		done := make(chan struct{})
		l.Do(func() { close(done) })
		<-done
	}
	select {
	case <-accepted:
		t.Fatal("ready ran while paused")
	default:
	}
	l.Do(func() { w.Resume() })
	select {
	case <-accepted:
	case <-time.After(10 * time.Second):
		t.Fatal("ready not called after Resume")
	}
}

// hold keeps the loop busy in a Do func until release is called: what happens meanwhile reaches
// it as one round of events.
func hold(l *Loop) (release func()) {
	entered, block := make(chan struct{}), make(chan struct{})
	l.Do(func() { close(entered); <-block })
	<-entered
	return func() { close(block) }
}

// TestFINWhileHeld: the upstream's data and FIN reach the loop in one round, and the loop holds
// bytes the client (a small receive buffer) does not take yet: once the client reads, the EOF
// must still pass, not wait for an edge that came already.
func TestFINWhileHeld(t *testing.T) {
	l := startLoop(t)
	r := newRecorder()
	up := listen(t)
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		c.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 4096) })
		return nil
	}}
	client, fd := accepted(t, &d)
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 4096) // the loop's writes to the client block soon
	addr := up.Addr().(*net.TCPAddr).AddrPort()
	l.Do(func() { l.Proxy(fd, Upstream{Addr: addr}, r) })
	u, err := up.Accept()
	if err != nil {
		t.Fatal(err)
	}
	<-r.connected
	const size = 41000 // more than the client's buffer, less than the loop's socket's: not a multiple of the loop's reads
	release := hold(l)
	u.Write(make([]byte, size))
	u.Close()
	release()
	hold(l)() // a round later: the loop took the events, and holds what the client has no room for
	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := io.Copy(io.Discard, client)
	if err != nil || n != size {
		t.Fatalf("client read %d bytes, %v; want %d and EOF", n, err, size)
	}
	client.Close()
	if e := r.end(t); e.Why != Done || e.Out != size {
		t.Fatalf("ended %+v", e)
	}
}

// TestResetPassedOn: an upstream's bytes and reset reach the loop in one round: the client gets
// the bytes, then a reset, never a clean EOF (which would pass a truncated stream off as whole).
func TestResetPassedOn(t *testing.T) {
	l := startLoop(t)
	r := newRecorder()
	c, u := proxied(t, l, listen(t), Upstream{}, r)
	c.Write([]byte("x"))
	io.ReadFull(u, make([]byte, 1))
	release := hold(l)
	u.Write([]byte("abc"))
	u.(*net.TCPConn).SetLinger(0)
	u.Close()
	release()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(c)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("client read %q, %v; want a reset", got, err)
	}
	if e := r.end(t); e.Why != Read {
		t.Fatalf("ended %+v, want Read", e)
	}
}

// TestWatchCloseSharedSocket: Watch.Close takes a listener out of the loop's epoll set even when
// another descriptor keeps its socket open (as systemd's does for a socket it passed), so the
// loop hears nothing of it after.
func TestWatchCloseSharedSocket(t *testing.T) {
	l := startLoop(t)
	ln := listen(t)
	f, err := ln.File() // another descriptor of the socket, kept open
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rc, _ := ln.SyscallConn()
	calls := make(chan struct{}, 16)
	w := l.Watch(rc, func(*Watch) bool { calls <- struct{}{}; return true })
	w.Close()
	ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String()) // queued on the socket f keeps open
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for range 2 { // two rounds of the loop
		done := make(chan struct{})
		l.Do(func() { close(done) })
		<-done
	}
	if len(calls) != 0 {
		t.Fatalf("ready called %d times after Close", len(calls))
	}
}
