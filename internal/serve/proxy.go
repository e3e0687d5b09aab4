package serve

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/peergate/peergate/internal/config"
	"github.com/peergate/peergate/internal/evloop"
	"golang.org/x/sys/unix"
)

// chunk is the most one splice moves, and the size of the kernel pipes it moves them through.
const chunk = evloop.PipeSize

// dialUpstream connects to a service's upstream within its connect timeout.
func dialUpstream(ctx context.Context, s *config.Service) (net.Conn, error) {
	network, addr := "tcp", s.Upstream
	if p, ok := config.UnixPath(addr); ok {
		network, addr = "unix", p
	}
	d := net.Dialer{Timeout: s.ConnectTimeout, KeepAlive: keepAlive(s.KeepAlive)}
	return d.DialContext(ctx, network, addr)
}

// keepAlive turns a keepalive setting (0: off) into net's (negative: off). Off by default, as in
// HAProxy and nginx: turning it on costs four setsockopt calls a socket, a tenth of the CPU of a
// short proxied connection, and idle_timeout already ends dead connections.
func keepAlive(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// end is why a pipe ended: the same ends, with the same meaning, on the goroutine path and the
// event loops' (evloop.Why).
type end = evloop.Why

const (
	endDone  = evloop.Done  // both ways reached EOF
	endIdle  = evloop.Idle  // quiet both ways for the idle timeout: both closed
	endRead  = evloop.Read  // a read failed (say, a peer's reset): both reset
	endWrite = evloop.Write // a write failed, or made no progress for the idle timeout: both reset
	endDrain = evloop.Drain // closed by the drain deadline at shutdown: both reset
	nEnds    = endDrain + 1
)

// abortReasons are the reason labels of peergate_proxy_aborts_total, by end.
var abortReasons = [nEnds]string{endIdle: "idle", endRead: "read", endWrite: "write", endDrain: "drain"}

// pipe copies both ways between a and b until both directions have ended, passing on a half-close
// (EOF one way shuts down writing the other way). It closes a and b and returns the bytes copied
// each way and why it ended.
//
// A proxy may end a connection but never corrupt it. Each direction reads only once it has
// written all it read before, so it always knows whether it holds bytes: a read that times out
// holds none and loses nothing, while a write that fails or makes no progress for idle would lose
// what it holds, so it ends the connection with a reset both ways (never a FIN, which would pass
// a truncated stream off as a whole one). So does a failed read. A connection quiet both ways
// for idle (0: never) is closed. aFirst reports, for a clean end, that a's end came first (the
// client closed, when a is the client).
func pipe(a, b net.Conn, idle time.Duration) (aToB, bToA int64, why end, aFirst bool) {
	p := &piping{a: a, b: b, idle: idle}
	p.progress()
	done := make(chan struct{})
	go func() { defer close(done); aToB = p.copyHalf(b, a) }()
	bToA = p.copyHalf(a, b) // the other way in this goroutine: one fewer to start
	<-done
	if p.idled.Load() {
		p.abort(endIdle)
	}
	p.abort(endDone)
	return aToB, bToA, p.why, p.first.Load() == 1
}

// piping is the state the two directions of a pipe share.
type piping struct {
	a, b  net.Conn
	idle  time.Duration
	last  atomic.Int64 // unix nanos of the last progress either way
	ended atomic.Int32 // directions that reached EOF
	idled atomic.Bool  // a direction found the pipe idle: both are to end
	first atomic.Int32 // whose EOF came first: 1 a's, 2 b's
	once  sync.Once
	why   end // set by the first abort
}

// abort ends the pipe for why, once: it closes both connections, after setting them to reset
// unless why is a clean end or the idle timeout.
func (p *piping) abort(why end) {
	p.once.Do(func() {
		p.why = why
		if why != endDone && why != endIdle {
			reset(p.a)
			reset(p.b)
		}
		p.a.Close()
		p.b.Close()
	})
}

func (p *piping) progress() { p.last.Store(time.Now().UnixNano()) }

// quiet reports whether nothing moved either way for the idle timeout.
func (p *piping) quiet() bool {
	return time.Since(time.Unix(0, p.last.Load())) >= p.idle
}

// deadline keeps a read or write deadline between idle and 9/8 idle ahead, setting it (a lock
// and a timer update in the runtime) only when it has fallen behind: at is the one set last.
func (p *piping) deadline(set func(time.Time) error, at *time.Time) {
	if p.idle <= 0 {
		return
	}
	now := time.Now()
	if at.Sub(now) < p.idle {
		*at = now.Add(p.idle + p.idle/8)
		set(*at)
	}
}

// mover holds what one direction has read and not yet written: a buffer or a kernel pipe.
type mover interface {
	fill() (int, error)  // reads from the source while nothing is held: 0, io.EOF at its end
	flush() (int, error) // writes all that is held to the destination, or fails
	release()            // gives back the buffer or pipe
}

// copyHalf copies src to dst until EOF, an error or the idle timeout, and returns the bytes
// written.
func (p *piping) copyHalf(dst, src net.Conn) int64 {
	var m mover
	if !local(dst) || spliceLocal {
		m = newSpliceMover(dst, src)
	}
	if m == nil {
		buf := bufs.Get().(*[]byte)
		m = &bufMover{dst: dst, src: src, buf: *buf, pooled: buf}
	}
	defer m.release()
	var total int64
	var rd, wd time.Time
	for {
		p.deadline(src.SetReadDeadline, &rd)
		if p.idled.Load() { // checked after the deadline is set: see endIdle below
			return total
		}
		n, err := m.fill()
		if n > 0 {
			p.deadline(dst.SetWriteDeadline, &wd)
			w, werr := m.flush()
			total += int64(w)
			p.progress()
			if werr != nil {
				p.abort(endOf(werr, endWrite))
				return total
			}
		}
		switch {
		case err == nil:
		case err == io.EOF:
			p.eof(dst)
			return total
		case errors.Is(err, os.ErrDeadlineExceeded):
			// Nothing is held: a read timed out. Idle only if the other way was quiet too.
			if !p.idled.Load() && !p.quiet() {
				continue
			}
			// End the other way's read as well. It sets its read deadline before it checks
			// idled, so it either sees idled or has its deadline overtaken by this one. A write
			// it is in goes on: it completes, or it fails and resets both.
			p.idled.Store(true)
			dst.SetReadDeadline(aLongTimeAgo)
			return total
		default:
			p.abort(endOf(err, endRead))
			return total
		}
	}
}

// aLongTimeAgo is a deadline that has passed.
var aLongTimeAgo = time.Unix(1, 0)

// endOf is why an error ends a pipe: the drain deadline closed the connection, or else what.
func endOf(err error, what end) end {
	if errors.Is(err, net.ErrClosed) {
		return endDrain // the pipe's own abort comes first and makes this one a no-op
	}
	return what
}

// eof passes on the end of one direction: a half-close, or the close once both have ended.
func (p *piping) eof(dst net.Conn) {
	from := int32(1) // dst is b: the EOF was a's
	if dst == p.a {
		from = 2
	}
	p.first.CompareAndSwap(0, from)
	if p.ended.Add(1) == 2 {
		p.abort(endDone) // both ways done: the close sends the FIN, no shutdown needed first
	} else {
		closeWrite(dst)
	}
}

// reset makes c's close send a reset.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
}

// bufMover copies through a buffer.
type bufMover struct {
	dst, src net.Conn
	buf      []byte
	n        int // held
	pooled   *[]byte
}

func (m *bufMover) fill() (n int, err error) {
	m.n, err = m.src.Read(m.buf)
	return m.n, err
}

func (m *bufMover) flush() (int, error) {
	n, err := m.dst.Write(m.buf[:m.n])
	m.n -= n
	return n, err
}

func (m *bufMover) release() { bufs.Put(m.pooled) }

// spliceLocal, set by tests, splices toward local peers too.
var spliceLocal bool

// spliceMover moves bytes from socket to socket through a kernel pipe, without copying them
// to user space: what net does for io.Copy between two *net.TCPConn, here in steps whose
// errors say which side failed.
type spliceMover struct {
	dst, src syscall.RawConn
	kp       *kpipe
	in, out  func(fd uintptr) bool // one splice into the pipe, out of it: set n and serr
	n        int64
	serr     error
}

// newSpliceMover returns a spliceMover from src to dst, or nil where that cannot be.
func newSpliceMover(dst, src net.Conn) mover {
	ds, ok1 := dst.(syscall.Conn)
	ss, ok2 := src.(syscall.Conn)
	if !ok1 || !ok2 {
		return nil
	}
	drc, err1 := ds.SyscallConn()
	src2, err2 := ss.SyscallConn()
	if err1 != nil || err2 != nil {
		return nil
	}
	kp := getPipe()
	if kp == nil {
		return nil
	}
	m := &spliceMover{dst: drc, src: src2, kp: kp}
	// Made once: a closure made at each call would cost allocations at every step.
	m.in = func(fd uintptr) bool {
		m.n, m.serr = spliceEINTR(int(fd), m.kp.W, chunk)
		return m.serr != unix.EAGAIN
	}
	m.out = func(fd uintptr) bool {
		m.n, m.serr = spliceEINTR(m.kp.R, int(fd), m.kp.Held)
		return m.serr != unix.EAGAIN
	}
	return m
}

const spliceFlags = unix.SPLICE_F_MOVE | unix.SPLICE_F_NONBLOCK

func (m *spliceMover) fill() (int, error) {
	m.n, m.serr = 0, nil
	err := m.src.Read(m.in)
	if err == nil {
		err = m.serr
	}
	n := int(m.n)
	if err == nil && n == 0 {
		err = io.EOF
	}
	if n > 0 {
		m.kp.Held += n
	}
	return n, err
}

func (m *spliceMover) flush() (int, error) {
	written := 0
	for m.kp.Held > 0 {
		m.n, m.serr = 0, nil
		err := m.dst.Write(m.out)
		if err == nil {
			err = m.serr
		}
		if n := int(m.n); n > 0 {
			written += n
			m.kp.Held -= n
		}
		if err != nil {
			return written, err
		}
	}
	return written, nil
}

func (m *spliceMover) release() { putPipe(m.kp) }

func spliceEINTR(from, to, n int) (int64, error) {
	for {
		moved, err := unix.Splice(from, nil, to, nil, n, spliceFlags)
		if err != unix.EINTR {
			return moved, err
		}
	}
}

// kpipe is a kernel pipe for splicing, with what it holds, in the pool.
type kpipe struct {
	*evloop.Pipe
	cleanup runtime.Cleanup // closes it once the pool drops the pipe
}

// kpipes pools pipes, as net does for its splices: a proxied connection would otherwise cost two
// pipe(2)s and four close(2)s. A pooled pipe that the garbage collector drops is closed.
var kpipes sync.Pool

func getPipe() *kpipe {
	if kp, ok := kpipes.Get().(*kpipe); ok {
		return kp
	}
	p := evloop.NewPipe()
	if p == nil {
		return nil
	}
	kp := &kpipe{Pipe: p}
	kp.cleanup = runtime.AddCleanup(kp, (*evloop.Pipe).Close, p)
	return kp
}

// putPipe pools kp, or closes it when it still holds bytes (a connection that failed mid-write).
func putPipe(kp *kpipe) {
	if kp.Held == 0 {
		kpipes.Put(kp)
		return
	}
	kp.cleanup.Stop()
	kp.Close()
}

// local reports whether c's peer is on this host (a loopback address or a Unix socket). Data bound
// for a local peer is copied through a buffer rather than spliced: measured on loopback
// (bench/proxy.sh, BENCHMARKS.md), spliced data cost the local receiver half as much CPU again
// and cut throughput to 0.65-0.9x, while a plain copy matched HAProxy's MB/s at the same CPU.
// Data for a remote peer is spliced, which saves the proxy more than half of its CPU.
func local(c net.Conn) bool { return localAddr(c.RemoteAddr()) }

func localAddr(a net.Addr) bool {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.IP.IsLoopback()
	case *net.UnixAddr:
		return true
	}
	return false
}

// bufs holds the copy buffers of local connections.
var bufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}
