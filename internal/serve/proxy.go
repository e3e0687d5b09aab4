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

// chunk is how much one io.CopyN moves before the idle deadline is pushed back. The copy between
// two *net.TCPConn still splices in the kernel: net handles an *io.LimitedReader source.
const chunk = 1 << 20

// dialUpstream connects to a service's upstream within its connect timeout.
func dialUpstream(ctx context.Context, s *config.Service) (net.Conn, error) {
	network, addr := "tcp", s.Upstream
	if p, ok := config.UnixPath(addr); ok {
		network, addr = "unix", p
	}
	d := net.Dialer{Timeout: s.ConnectTimeout}
	return d.DialContext(ctx, network, addr)
}

// pipe copies both ways between a and b until both directions have ended, passing on a half-close
// (EOF one way shuts down writing the other way). A direction that fails, or a connection idle in
// both directions for idle (0: never), ends both. It closes a and b and returns the bytes copied
// each way.
func pipe(a, b net.Conn, idle time.Duration) (aToB, bToA int64) {
	var last atomic.Int64 // unix nanos of the last progress either way
	last.Store(time.Now().UnixNano())
	var once sync.Once
	abort := func() { once.Do(func() { a.Close(); b.Close() }) }
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); aToB = copyHalf(b, a, idle, &last, abort) }()
	go func() { defer wg.Done(); bToA = copyHalf(a, b, idle, &last, abort) }()
	wg.Wait()
	abort()
	return aToB, bToA
}

func copyHalf(dst, src net.Conn, idle time.Duration, last *atomic.Int64, abort func()) int64 {
	var total int64
	for {
		if idle > 0 {
			deadline := time.Now().Add(idle)
			src.SetReadDeadline(deadline)
			dst.SetWriteDeadline(deadline)
		}
		n, err := io.CopyN(dst, src, chunk)
		total += n
		if n > 0 {
			last.Store(time.Now().UnixNano())
		}
		switch {
		case err == nil: // a full chunk: go on
		case err == io.EOF:
			closeWrite(dst)
			return total
		case errors.Is(err, os.ErrDeadlineExceeded) && time.Since(time.Unix(0, last.Load())) < idle:
			// This way was quiet but the other was not (or bytes moved): not idle yet.
		default:
			abort()
			return total
		}
	}
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}
