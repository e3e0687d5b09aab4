//go:build linux

package evloop

import (
	"errors"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Available reports whether event loops run on this platform: only on Linux.
const Available = true

const (
	bufSize   = 16 << 10 // a copy buffer, one per direction that copies
	maxEvents = 256
	busyFor   = 50 * time.Millisecond // after the last event, wait without giving up the P this long
	rawWaitMS = 10                    // the longest such wait, in ms: the runtime's other work waits this long
	minTick   = 5 * time.Millisecond  // the timeout sweep runs at most this often
	maxTick   = time.Second
)

// Loop is one event loop: an epoll instance served by one goroutine (Run). Its methods are for
// that goroutine (in Handler and Watch callbacks), except Run, Do, Stop, Abort, SetRawWaits,
// Watch, Watch.Close and Done; "the loop's thread" below means it.
type Loop struct {
	ep, wake int // the epoll instance and the eventfd that Do writes to
	mu       sync.Mutex
	queue    []func()
	dead     bool // under mu: Run has returned, wake is closed
	stopped  bool // set on the loop's thread by Stop's func
	done     chan struct{}
	raw      atomic.Bool // wait in raw epoll_wait calls while busy (SetRawWaits)

	socks   []*side // by descriptor
	watches []*Watch
	conns   conn // the list head of open connections
	n       int  // open connections
	evs     []unix.EpollEvent
	base    time.Time
	now     int64 // nanoseconds since base, read once a round
	busy    int64 // until when to wait raw
	sweep   int64 // when to sweep next
	tick    int64 // sweep interval: an eighth of the smallest timeout of the open connections
	bufs    [][]byte
	pipes   []*Pipe
	closing []int // sockets of connections ended this round, closed once its events are handled
}

// New makes a Loop; Run serves it.
func New() (*Loop, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(ep)
		return nil, os.NewSyscallError("eventfd", err)
	}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, wake, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: tokenWake}); err != nil {
		unix.Close(ep)
		unix.Close(wake)
		return nil, os.NewSyscallError("epoll_ctl", err)
	}
	l := &Loop{ep: ep, wake: wake, done: make(chan struct{}), evs: make([]unix.EpollEvent, maxEvents), base: time.Now(), tick: int64(maxTick)}
	l.conns.next, l.conns.prev = &l.conns, &l.conns
	l.raw.Store(true)
	return l, nil
}

// SetRawWaits says whether a busy loop waits for events in raw epoll_wait calls, keeping its P
// (the default), or hands the P back to the runtime on every wait. Raw waits save the runtime's
// hand-offs (about a tenth of a short connection's CPU, BENCHMARKS.md) but leave other goroutines
// and the runtime's poller to the gaps between waits, up to 10 ms apart while the loop is busy:
// turn them off when goroutines with their own network I/O share the process's Ps.
func (l *Loop) SetRawWaits(on bool) { l.raw.Store(on) }

// Epoll data of what is not a connection's socket: the eventfd, and watched listeners (-2, -3...).
const tokenWake = -1

func watchToken(i int) int32 { return int32(-2 - i) }

// Do runs f on the loop's thread soon. From another goroutine, it is the only way to reach the
// loop's state. Once Run has returned, f never runs.
func (l *Loop) Do(f func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dead {
		return
	}
	l.queue = append(l.queue, f)
	if len(l.queue) == 1 {
		var one = [8]byte{1}
		unix.Write(l.wake, one[:])
	}
}

// Stop ends Run once the funcs queued before it have run; connections still open are ended
// (Abort).
func (l *Loop) Stop() { l.Do(func() { l.stopped = true }) }

// Abort resets every open connection, from any goroutine: the drain deadline. Their Handlers
// hear Ended with Drain, or, for those still connecting, Failed with ErrAborted.
func (l *Loop) Abort() { l.Do(l.abortAll) }

func (l *Loop) abortAll() {
	for c := l.conns.next; c != &l.conns; {
		next := c.next
		if c.connected {
			l.end(c, Drain)
		} else {
			l.fail(c, ErrAborted)
		}
		c = next
	}
}

// Run serves the loop on the calling goroutine until Stop. The goroutine is not locked to its
// thread: nothing in a loop is bound to one, and a locked goroutine that yields costs two thread
// switches (measured: 3.2 context switches per proxied connection, against 0.75 unlocked).
func (l *Loop) Run() {
	defer l.close()
	for !l.stopped {
		l.now = int64(time.Since(l.base))
		n := l.wait()
		l.now = int64(time.Since(l.base))
		if n > 0 {
			l.busy = l.now + int64(busyFor)
		}
		for i := range n {
			e := &l.evs[i]
			switch {
			case e.Fd >= 0:
				l.event(int(e.Fd), e.Events)
			case e.Fd == tokenWake:
				l.runQueue()
			default:
				l.ready(int(-2 - e.Fd))
			}
		}
		if l.now >= l.sweep {
			l.sweepConns()
		}
		l.closeEnded()
		runtime.Gosched() // other goroutines run between rounds
	}
}

// wait waits for events: at once when some are ready; else without giving up the P while busy
// (raw), else in a call the runtime knows blocks, until the next sweep.
func (l *Loop) wait() int {
	if n := l.epollWait(0, true); n > 0 {
		return n
	}
	ms := -1
	if l.n > 0 {
		ms = int(max((l.sweep-l.now)/int64(time.Millisecond), 0)) + 1
	}
	if l.raw.Load() && l.now < l.busy {
		if ms < 0 || ms > rawWaitMS {
			ms = rawWaitMS
		}
		return l.epollWait(ms, true)
	}
	return l.epollWait(ms, false)
}

func (l *Loop) epollWait(ms int, raw bool) int {
	p := uintptr(unsafe.Pointer(&l.evs[0]))
	var r uintptr
	var errno syscall.Errno
	if raw {
		r, _, errno = unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(l.ep), p, uintptr(len(l.evs)), uintptr(ms), 0, 0)
	} else {
		r, _, errno = unix.Syscall6(unix.SYS_EPOLL_PWAIT, uintptr(l.ep), p, uintptr(len(l.evs)), uintptr(ms), 0, 0)
	}
	if errno != 0 {
		return 0 // EINTR: a signal (the runtime's preemption among them)
	}
	return int(r)
}

func (l *Loop) runQueue() {
	var b [8]byte
	unix.Read(l.wake, b[:])
	l.mu.Lock()
	q := l.queue
	l.queue = nil
	l.mu.Unlock()
	for _, f := range q {
		f()
	}
}

// closeEnded closes the sockets of the connections that ended this round. Not at once: a later
// event of the same round may be for one of them, and a socket accepted or dialed meanwhile
// would have its number and take the event for its own.
func (l *Loop) closeEnded() {
	for _, fd := range l.closing {
		unix.Close(fd) // which takes it out of the epoll set
	}
	l.closing = l.closing[:0]
}

// close ends what is left once Run stops: connections are reset, listeners unwatched.
func (l *Loop) close() {
	l.abortAll()
	l.closeEnded()
	for _, w := range l.watches {
		if w != nil {
			w.Remove()
		}
	}
	unix.Close(l.ep)
	l.mu.Lock()
	l.queue, l.dead = nil, true
	unix.Close(l.wake)
	l.mu.Unlock()
	for _, kp := range l.pipes {
		kp.Close()
	}
	close(l.done)
}

// Done is closed once Run has returned.
func (l *Loop) Done() <-chan struct{} { return l.done }

// A Watch is a listening socket a loop watches: its ready func runs on the loop's thread when a
// connection is queued, and accepts (see Proxy).
type Watch struct {
	l     *Loop
	rc    syscall.RawConn
	i     int // its index in the loop's watches, and epoll token; set under mu
	ready func(*Watch) bool
	mu    sync.Mutex // guards what follows: Close comes from other goroutines
	// paused: out of the epoll set until Resume; removed: for good.
	paused, removed bool
}

// Watch has the loop call ready, on its thread, while the listening socket rc has connections
// queued (level-triggered, so ready may accept a few and return). When ready returns false the
// listener is unwatched. Several loops may watch one listener (EPOLLEXCLUSIVE: a connection
// wakes one of them, or a few). Call it from any goroutine; it takes effect on the loop's thread.
func (l *Loop) Watch(rc syscall.RawConn, ready func(*Watch) bool) *Watch {
	w := &Watch{l: l, rc: rc, ready: ready}
	l.Do(func() {
		w.mu.Lock() // i is read by ctl, which Close may call from another goroutine
		w.i = len(l.watches)
		ok := w.removed || w.ctl(unix.EPOLL_CTL_ADD)
		w.mu.Unlock()
		l.watches = append(l.watches, w)
		if !ok {
			w.Remove()
		}
	})
	return w
}

// Loop returns the loop w belongs to.
func (w *Watch) Loop() *Loop { return w.l }

// ctl adds the listener to the loop's epoll instance or removes it, through rc so that the
// descriptor cannot be closed meanwhile. It reports false when the listener is closed.
func (w *Watch) ctl(op int) bool {
	var err error
	cerr := w.rc.Control(func(fd uintptr) {
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLEXCLUSIVE, Fd: watchToken(w.i)}
		if op == unix.EPOLL_CTL_DEL {
			ev.Events = 0
		}
		err = unix.EpollCtl(w.l.ep, op, int(fd), &ev)
	})
	return cerr == nil && err == nil
}

// Pause stops watching the listener until Resume: connections wait in its queue. On the loop's
// thread.
func (w *Watch) Pause() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.paused && !w.removed {
		w.paused = true
		w.ctl(unix.EPOLL_CTL_DEL)
	}
}

// Resume watches a paused listener again, and reports whether it is watched. On the loop's
// thread.
func (w *Watch) Resume() bool {
	w.mu.Lock()
	ok := !w.removed
	if w.paused && ok {
		w.paused = false
		ok = w.ctl(unix.EPOLL_CTL_ADD)
	}
	w.mu.Unlock()
	if !ok {
		w.Remove()
	}
	return ok
}

// Close stops watching the listener for good, from any goroutine, before the listener is closed:
// once it returns the loop takes no event of it. (Closing a listener takes it out of the epoll
// set only when no other descriptor shares its socket, as a socket-activated one's does.)
func (w *Watch) Close() {
	w.unwatch()
	w.l.Do(w.Remove) // the loop's table
}

// unwatch takes the listener out of the epoll set for good.
func (w *Watch) unwatch() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.removed {
		w.removed = true
		if !w.paused {
			w.ctl(unix.EPOLL_CTL_DEL)
		}
	}
}

// Remove stops watching the listener for good. On the loop's thread.
func (w *Watch) Remove() {
	w.unwatch()
	if w.i < len(w.l.watches) && w.l.watches[w.i] == w {
		w.l.watches[w.i] = nil
	}
}

func (l *Loop) ready(i int) {
	if i >= len(l.watches) {
		return
	}
	w := l.watches[i]
	if w == nil {
		return
	}
	w.mu.Lock()
	live := !w.removed && !w.paused
	w.mu.Unlock()
	if live && !w.ready(w) {
		w.Remove()
	}
}

// side is one socket of a proxied connection, with what was read from it and not yet written to
// its peer.
type side struct {
	fd     int
	c      *conn
	peer   *side
	up     bool   // the upstream's socket
	buf    []byte // copying: what was read, buf[off:n] not yet written
	off, n int
	kp     *Pipe // splicing: the pipe, with what it holds
	splice bool
	eof    bool  // the read side reached EOF
	fin    bool  // the peer's FIN came (EPOLLRDHUP without EPOLLERR): a short read is then the end
	err    bool  // an error was signalled (a reset): read on to the error, never infer EOF
	shut   bool  // all read was written and the peer's write side shut down
	out    bool  // registered for EPOLLOUT
	since  int64 // loop time of the last read or write progress: a held write stalls from then
}

// stalled reports whether s has held bytes its peer took none of for d since now.
func (s *side) stalled(now, d int64) bool { return s.held() > 0 && now-s.since >= d }

func (s *side) held() int {
	if s.kp != nil {
		return s.kp.Held
	}
	return s.n - s.off
}

// conn is one proxied connection.
type conn struct {
	cl, up     side
	h          Handler
	connected  bool
	closed     bool
	start      int64 // loop time of the accept
	last       int64 // of the last progress either way
	idle       int64
	ctimeout   int64
	in, out    int64
	first      int8 // whose EOF came first: 1 the client's, 2 the upstream's
	prev, next *conn
}

// Proxy proxies the connected socket fd (non-blocking; the loop takes it, and closes it) to the
// upstream: it connects, then copies both ways. h hears how it goes. On the loop's thread.
func (l *Loop) Proxy(fd int, u Upstream, h Handler) {
	c := &conn{h: h, start: l.now, last: l.now, idle: int64(u.IdleTimeout), ctimeout: int64(u.ConnectTimeout)}
	c.cl = side{fd: fd, c: c, peer: &c.up, splice: u.SpliceToUpstream}
	c.up = side{fd: -1, c: c, peer: &c.cl, up: true, splice: u.SpliceToClient, out: true}
	ufd, err := l.dial(u, fd)
	if err != nil {
		unix.Close(fd)
		h.Failed(err)
		return
	}
	c.up.fd = ufd
	l.grow(max(fd, ufd))
	l.socks[fd], l.socks[ufd] = &c.cl, &c.up
	c.prev, c.next = l.conns.prev, &l.conns
	c.prev.next, l.conns.prev = c, c
	l.n++
	for _, t := range []int64{c.idle, c.ctimeout} {
		if t > 0 && max(t/8, int64(minTick)) < l.tick {
			l.tick = max(t/8, int64(minTick))
			l.sweep = min(l.sweep, l.now+l.tick)
		}
	}
	if l.sweep == 0 || l.n == 1 {
		l.sweep = l.now + l.tick
	}
	et := uint32(unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET)
	err1 := unix.EpollCtl(l.ep, unix.EPOLL_CTL_ADD, ufd, &unix.EpollEvent{Events: et | unix.EPOLLOUT, Fd: int32(ufd)})
	err2 := unix.EpollCtl(l.ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: et, Fd: int32(fd)})
	if err := errors.Join(err1, err2); err != nil {
		l.fail(c, os.NewSyscallError("epoll_ctl", err))
		return
	}
	l.pump(&c.cl) // what the client sent already: it waits in the buffer for the connect
}

// dial starts connecting a socket to u.
func (l *Loop) dial(u Upstream, client int) (int, error) {
	a := u.Addr.Addr().Unmap()
	var sa unix.Sockaddr
	family := unix.AF_INET
	if a.Is4() {
		sa = &unix.SockaddrInet4{Port: int(u.Addr.Port()), Addr: a.As4()}
	} else {
		family = unix.AF_INET6
		sa = &unix.SockaddrInet6{Port: int(u.Addr.Port()), Addr: a.As16(), ZoneId: zoneID(u.Addr.Addr().Zone())}
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	// As net does for every TCP socket: no Nagle delay on what a proxy passes on.
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	unix.SetsockoptInt(client, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	if u.KeepAlive > 0 {
		keepAlive(fd, u.KeepAlive)
		keepAlive(client, u.KeepAlive)
	}
	if err := unix.Connect(fd, sa); err != nil && err != unix.EINPROGRESS && err != unix.EINTR {
		unix.Close(fd)
		return -1, os.NewSyscallError("connect", err)
	}
	return fd, nil
}

func zoneID(zone string) uint32 {
	if zone == "" {
		return 0
	}
	if ifi, err := net.InterfaceByName(zone); err == nil {
		return uint32(ifi.Index)
	}
	return 0
}

// keepAlive turns on TCP keep-alive with idle d, as net's KeepAliveConfig{Enable: true, Idle: d}.
func keepAlive(fd int, d time.Duration) {
	secs := max(int((d+time.Second-1)/time.Second), 1)
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1)
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, secs)
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 15)
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 9)
}

func (l *Loop) grow(fd int) {
	if fd < len(l.socks) {
		return
	}
	n := max(2*len(l.socks), fd+1, 1024)
	s := make([]*side, n)
	copy(s, l.socks)
	l.socks = s
}

// event handles the events of one connection's socket.
func (l *Loop) event(fd int, ev uint32) {
	if fd >= len(l.socks) || l.socks[fd] == nil {
		return
	}
	s := l.socks[fd]
	c := s.c
	if ev&unix.EPOLLERR != 0 {
		s.err = true
	} else if ev&unix.EPOLLRDHUP != 0 {
		s.fin = true
	}
	if s.up && !c.connected {
		if ev&(unix.EPOLLERR|unix.EPOLLHUP) != 0 {
			l.fail(c, connectError(fd))
			return
		}
		if ev&unix.EPOLLOUT == 0 {
			return
		}
		c.connected = true
		c.last = l.now
		c.h.Connected(time.Duration(l.now - c.start))
		if !l.resume(&c.cl) {
			return
		}
	}
	if ev&unix.EPOLLOUT != 0 && s.peer.held() > 0 && !l.resume(s.peer) {
		return
	}
	if ev&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 && !c.closed {
		l.pump(s)
	}
}

// connectError is why the connect of fd failed.
func connectError(fd int) error {
	errno, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err == nil && errno != 0 {
		err = syscall.Errno(errno)
	}
	if err == nil {
		err = syscall.ECONNREFUSED
	}
	return os.NewSyscallError("connect", err)
}

// resume writes what s holds (or its EOF) and goes on reading s, which may have more than its
// held bytes; false once the connection is closed.
func (l *Loop) resume(s *side) bool {
	if s.held() == 0 && !s.eof {
		return !s.c.closed
	}
	if l.flush(s) {
		l.pump(s)
	}
	return !s.c.closed
}

// pump reads from s and writes to its peer until s has nothing more to read now, its peer takes
// no more, or s reached EOF. Once the peer's FIN came (s.fin, from EPOLLRDHUP: all its data is
// queued before it), a short read took all there is, and no read is spent on the EOF; not after
// an error was signalled (a reset also sets EPOLLRDHUP, and the data queued before it reads
// first), when pump reads on until the read fails.
func (l *Loop) pump(s *side) {
	c := s.c
	for !c.closed && !s.eof && s.held() == 0 {
		n, err := l.fill(s)
		switch {
		case err == unix.EAGAIN:
			return
		case err == unix.EINTR:
			continue
		case err != nil:
			l.end(c, Read)
			return
		case n == 0:
			s.eof = true
		}
		s.since = l.now
		// A short read of a TCP socket took all it had: a new edge comes with more.
		short := !s.splice && n > 0 && n < len(s.buf)
		if short && s.fin && !s.err {
			s.eof = true
		}
		if !l.flush(s) || short && !s.err { // after an error, read on to it: no edge comes again
			return
		}
	}
	if s.eof && !c.closed {
		l.flush(s)
	}
}

// fill reads from s while it holds nothing: into its buffer, or spliced into its pipe.
func (l *Loop) fill(s *side) (int, error) {
	if s.splice {
		if s.kp == nil {
			if s.kp = l.getPipe(); s.kp == nil {
				s.splice = false // no pipe to be had: copy
				return l.fill(s)
			}
		}
		n, err := unix.Splice(s.fd, nil, s.kp.W, nil, PipeSize, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
		if n > 0 {
			s.kp.Held += int(n)
		}
		return int(n), err
	}
	if s.buf == nil {
		s.buf = l.getBuf()
	}
	r, _, errno := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(s.fd), uintptr(unsafe.Pointer(&s.buf[0])), uintptr(len(s.buf)), 0, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	s.off, s.n = 0, int(r)
	return int(r), nil
}

// flush writes what s holds to its peer, then, at s's EOF, passes it on. It reports whether it
// wrote all: false when the peer takes no more now (it waits for EPOLLOUT), the upstream is not
// connected yet, or the connection ended.
func (l *Loop) flush(s *side) bool {
	c, p := s.c, s.peer
	if p.up && !c.connected {
		return false
	}
	for s.held() > 0 {
		var n int
		var err error
		if s.kp != nil {
			var m int64
			m, err = unix.Splice(s.kp.R, nil, p.fd, nil, s.kp.Held, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
			n = int(m)
		} else {
			flags := uintptr(unix.MSG_DONTWAIT | unix.MSG_NOSIGNAL)
			if s.eof { // the FIN follows at once: in the same segment
				flags |= unix.MSG_MORE
			}
			r, _, errno := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(p.fd), uintptr(unsafe.Pointer(&s.buf[s.off])), uintptr(s.n-s.off), flags, 0, 0)
			n = int(r)
			if errno != 0 {
				n, err = 0, errno
			}
		}
		if n > 0 {
			if s.kp != nil {
				s.kp.Held -= n
			} else {
				s.off += n
			}
			if s.up {
				c.out += int64(n)
			} else {
				c.in += int64(n)
			}
			c.last, s.since = l.now, l.now
		}
		switch {
		case err == unix.EAGAIN:
			l.wantOut(p)
			return false
		case err == unix.EINTR:
		case err != nil:
			l.end(c, Write)
			return false
		}
	}
	if s.eof && !s.shut {
		l.finish(s)
	}
	return !c.closed
}

// wantOut has the loop hear when s can take more.
func (l *Loop) wantOut(s *side) {
	if !s.out {
		s.out = true
		unix.EpollCtl(l.ep, unix.EPOLL_CTL_MOD, s.fd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(s.fd)})
	}
}

// finish passes on s's EOF, all it read being written: a half-close, or the close once both
// ways are done.
func (l *Loop) finish(s *side) {
	c := s.c
	s.shut = true
	if c.first == 0 {
		c.first = 1
		if s.up {
			c.first = 2
		}
	}
	if s.peer.shut {
		l.end(c, Done) // the close sends the FIN: no shutdown needed first
		return
	}
	unix.Shutdown(s.peer.fd, unix.SHUT_WR)
}

// end closes both sockets of a connected connection, after setting them to reset unless why is
// a clean end or the idle timeout, and tells its Handler.
func (l *Loop) end(c *conn, why Why) {
	if c.closed {
		return
	}
	if why != Done && why != Idle {
		reset(c.cl.fd)
		reset(c.up.fd)
	}
	l.drop(c)
	c.h.Ended(End{In: c.in, Out: c.out, Why: why, ClientFirst: c.first == 1})
}

// fail closes a connection whose upstream was not reached, and tells its Handler. A client whose
// bytes were read (and are now lost) is reset, as the kernel would on a close with them unread.
func (l *Loop) fail(c *conn, err error) {
	if c.closed {
		return
	}
	if c.cl.held() > 0 {
		reset(c.cl.fd)
	}
	l.drop(c)
	c.h.Failed(err)
}

func reset(fd int) {
	unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
}

// drop closes both sockets of c and gives back its buffers and pipes.
func (l *Loop) drop(c *conn) {
	c.closed = true
	for _, s := range []*side{&c.cl, &c.up} {
		if s.fd >= 0 {
			l.socks[s.fd] = nil
			l.closing = append(l.closing, s.fd)
		}
		if s.buf != nil {
			l.bufs = append(l.bufs, s.buf)
			s.buf = nil
		}
		if s.kp != nil {
			l.putPipe(s.kp)
			s.kp = nil
		}
	}
	c.prev.next, c.next.prev = c.next, c.prev
	l.n--
}

// sweepConns ends connections past their connect or idle timeout, and sets the next sweep.
func (l *Loop) sweepConns() {
	tick := int64(maxTick)
	for c := l.conns.next; c != &l.conns; {
		next := c.next
		switch {
		case !c.connected && c.ctimeout > 0 && l.now-c.start >= c.ctimeout:
			l.fail(c, ErrTimeout)
		case c.connected && c.idle > 0 && (c.cl.stalled(l.now, c.idle) || c.up.stalled(l.now, c.idle)):
			l.end(c, Write) // a write that made no progress for the idle timeout
		case c.connected && c.idle > 0 && l.now-c.last >= c.idle && c.cl.held() == 0 && c.up.held() == 0:
			l.end(c, Idle) // quiet both ways
		}
		for _, t := range []int64{c.idle, c.ctimeout} {
			if t > 0 {
				tick = min(tick, max(t/8, int64(minTick)))
			}
		}
		c = next
	}
	l.tick = tick
	l.sweep = l.now + tick
}

func (l *Loop) getBuf() []byte {
	if n := len(l.bufs); n > 0 {
		b := l.bufs[n-1]
		l.bufs = l.bufs[:n-1]
		return b
	}
	return make([]byte, bufSize)
}

func (l *Loop) getPipe() *Pipe {
	if n := len(l.pipes); n > 0 {
		kp := l.pipes[n-1]
		l.pipes = l.pipes[:n-1]
		return kp
	}
	return NewPipe()
}

// putPipe pools kp, or closes it when it still holds bytes (a connection that failed mid-write).
func (l *Loop) putPipe(kp *Pipe) {
	if kp.Held == 0 && len(l.pipes) < 64 {
		l.pipes = append(l.pipes, kp)
		return
	}
	kp.Close()
}
