package gate

import (
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/peergate/peergate/acl"
)

// scale returns n for the long run (PEERGATE_LONG=1) and n/10 otherwise, as CI runs it.
func scale(n int) int {
	if os.Getenv("PEERGATE_LONG") != "" {
		return n
	}
	return n / 10
}

// TestFloodNeverLetsDeniedThrough connects many times from denied sources, interleaved with
// allowed ones, from several goroutines, over IPv4, dual-stack (::ffff:127.0.0.2) and IPv6 (a
// denied ::1). The handler must see every allowed connection and not one denied connection.
func TestFloodNeverLetsDeniedThrough(t *testing.T) {
	for _, tc := range []struct {
		name, listen    string
		allowed, denied []string // client source addresses
		rules           []string
		target          string // host to dial
	}{
		{"ipv4", "127.0.0.1:0", []string{"127.0.0.1"}, []string{"127.0.0.2", "127.0.0.3"}, []string{"allow 127.0.0.1"}, "127.0.0.1"},
		{"dual-stack", "[::]:0", []string{"127.0.0.1"}, []string{"127.0.0.2"}, []string{"allow 127.0.0.1"}, "127.0.0.1"},
		{"ipv6", "[::1]:0", nil, []string{"::1"}, []string{"deny ::1"}, "::1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inner := listen(t, "tcp", tc.listen)
			g := NewListener(inner, mustACL(t, acl.Deny, acl.Deny, tc.rules...), Options{})
			port := inner.Addr().(*net.TCPAddr).Port
			target := net.JoinHostPort(tc.target, strconv.Itoa(port))

			var seenDenied, seenAllowed atomic.Int64
			allowedSet := map[netip.Addr]bool{}
			for _, a := range tc.allowed {
				allowedSet[netip.MustParseAddr(a)] = true
			}
			go func() {
				for {
					c, err := g.Accept()
					if err != nil {
						return
					}
					if allowedSet[c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()] {
						seenAllowed.Add(1)
					} else {
						seenDenied.Add(1)
					}
					c.Write([]byte{1})
					c.Close()
				}
			}()
			defer g.Close()

			total := scale(100_000)
			const workers = 4
			sources := append(append([]string{}, tc.denied...), tc.allowed...)
			var wantAllowed, failed atomic.Int64
			deadline := time.Now().Add(2 * time.Minute)
			var wg sync.WaitGroup
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					buf := make([]byte, 1)
					for i := w; i < total && time.Now().Before(deadline); i += workers {
						src := sources[i%len(sources)]
						d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
						c, err := d.Dial("tcp", target)
						if err != nil {
							failed.Add(1)
							continue
						}
						c.SetDeadline(time.Now().Add(5 * time.Second))
						n, _ := io.ReadFull(c, buf)
						if allowedSet[netip.MustParseAddr(src)] {
							wantAllowed.Add(1)
							if n != 1 {
								failed.Add(1)
							}
						}
						c.(*net.TCPConn).SetLinger(0)
						c.Close()
					}
				}()
			}
			wg.Wait()
			s := g.Stats()
			t.Logf("%d connects: stats %+v, handler saw %d allowed, %d denied; %d client failures",
				total, s, seenAllowed.Load(), seenDenied.Load(), failed.Load())
			if seenDenied.Load() != 0 {
				t.Errorf("%d denied peers reached the handler", seenDenied.Load())
			}
			if failed.Load() != 0 || seenAllowed.Load() != wantAllowed.Load() {
				t.Errorf("allowed: %d connected, %d served; %d failures", wantAllowed.Load(), seenAllowed.Load(), failed.Load())
			}
			if got := s.Allowed + s.Denied + s.Errors; got != uint64(total) {
				t.Errorf("gate judged %d of %d connections", got, total)
			}
		})
	}
}
