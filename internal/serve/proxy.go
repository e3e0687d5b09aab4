package serve

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/peergate/peergate/internal/config"
)

// chunk is how much one copy moves before the idle deadline is pushed back. A copy between two
// *net.TCPConn still splices in the kernel: net handles an *io.LimitedReader source.
const chunk = 1 << 20

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

// pipe copies both ways between a and b until both directions have ended, passing on a half-close
// (EOF one way shuts down writing the other way). A direction that fails, or a connection idle in
// both directions for idle (0: never), ends both. It closes a and b and returns the bytes copied
// each way.
func pipe(a, b net.Conn, idle time.Duration) (aToB, bToA int64) {
	p := &piping{a: a, b: b, idle: idle}
	p.last.Store(time.Now().UnixNano())
	done := make(chan struct{})
	go func() { defer close(done); aToB = p.copyHalf(b, a) }()
	bToA = p.copyHalf(a, b) // the other way in this goroutine: one fewer to start
	<-done
	p.abort()
	return aToB, bToA
}

// piping is the state the two directions of a pipe share.
type piping struct {
	a, b  net.Conn
	idle  time.Duration
	last  atomic.Int64 // unix nanos of the last progress either way
	ended atomic.Int32 // directions that reached EOF
	once  sync.Once
}

// abort closes both connections, once.
func (p *piping) abort() { p.once.Do(func() { p.a.Close(); p.b.Close() }) }

func (p *piping) copyHalf(dst, src net.Conn) int64 {
	var total int64
	var buf *[]byte // nil: splice
	if local(dst) {
		buf = bufs.Get().(*[]byte)
		defer bufs.Put(buf)
	}
	for {
		if p.idle > 0 {
			deadline := time.Now().Add(p.idle)
			src.SetReadDeadline(deadline)
			dst.SetWriteDeadline(deadline)
		}
		var n int64
		var err error
		if buf == nil {
			n, err = io.CopyN(dst, src, chunk) // splices between two *net.TCPConn
		} else {
			n, err = io.CopyBuffer(writerOnly{dst}, io.LimitReader(readerOnly{src}, chunk), *buf)
			if err == nil && n < chunk {
				err = io.EOF // CopyN's contract, which the loop below relies on
			}
		}
		total += n
		if n > 0 {
			p.last.Store(time.Now().UnixNano())
		}
		switch {
		case err == nil: // a full chunk: go on
		case err == io.EOF:
			if p.ended.Add(1) == 2 {
				p.abort() // both ways done: the close sends the FIN, no shutdown needed first
			} else {
				closeWrite(dst)
			}
			return total
		case errors.Is(err, os.ErrDeadlineExceeded) && time.Since(time.Unix(0, p.last.Load())) < p.idle:
			// This way was quiet but the other was not (or bytes moved): not idle yet.
		default:
			p.abort()
			return total
		}
	}
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

// writerOnly and readerOnly hide ReadFrom and WriteTo, so io.CopyBuffer uses the buffer.
type writerOnly struct{ io.Writer }
type readerOnly struct{ io.Reader }

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}
