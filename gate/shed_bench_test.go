//go:build linux

package gate

import (
	"net"
	"testing"

	"github.com/peergate/peergate/acl"
)

// BenchmarkShed is the gate's cost per denied connection under a flood: connections from a
// denied address queue in the backlog (the dials are not timed), then Accept judges and closes
// them all and returns the allowed one queued last. path=conn makes a net.Conn of every peer (the
// shed path off); path=shed is the shed path. Figures are per denied connection.
func BenchmarkShed(b *testing.B) {
	for _, path := range []string{"conn", "shed"} {
		b.Run("path="+path, func(b *testing.B) {
			inner, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Skip(err)
			}
			a := mustACL(b, acl.Deny, acl.Deny, "allow 127.0.0.1/32")
			g := NewListener(inner, a, Options{})
			defer g.Close()
			if path == "conn" {
				g.shed.raw = nil
			}
			const batch = 500
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
			ok := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}}
			b.ResetTimer()
			for done := 0; done < b.N; done += batch {
				b.StopTimer()
				n := min(batch, b.N-done)
				conns := make([]net.Conn, 0, n+1)
				for range n {
					c, err := d.Dial("tcp", inner.Addr().String())
					if err != nil {
						b.Fatal(err)
					}
					conns = append(conns, c)
				}
				c, err := ok.Dial("tcp", inner.Addr().String())
				if err != nil {
					b.Fatal(err)
				}
				conns = append(conns, c)
				if path == "shed" {
					g.shed.score.Store(shedMax)
				}
				b.StartTimer()
				s, err := g.Accept()
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				s.Close()
				for _, c := range conns {
					c.Close()
				}
				b.StartTimer()
			}
		})
	}
}
