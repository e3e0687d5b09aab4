package gate

import (
	"io"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"

	"github.com/peergate/peergate/acl"
	"github.com/peergate/peergate/gate/limit"
)

// BenchmarkAcceptFeatures is BenchmarkAccept with the PROXY protocol and limits on, to compare
// with its case=allowed:
//
//	go test -run '^$' -bench 'Accept(Features)?$' -count 6 ./gate/
//
// proxy-untrusted reads no header (the peers are not trusted) but takes the goroutine-and-channel
// accept path; proxy-trusted reads a v2 header from every connection; limit-rate asks a rate-only
// limiter (no wrapping); limit-conc a per-source cap (a *Conn, whose Close gives the slot back).
func BenchmarkAcceptFeatures(b *testing.B) {
	all := acl.MustNew(acl.Spec{Default: acl.Allow})
	lo := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	for _, tc := range []struct {
		name   string
		opts   Options
		header bool
	}{
		{"proxy-untrusted", Options{Proxy: &ProxyOptions{Trusted: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}}, false},
		{"proxy-trusted", Options{Proxy: &ProxyOptions{Trusted: lo}}, true},
		{"limit-rate", Options{Limiter: limit.New(limit.Config{Rate: 1e9, Burst: 1e9})}, false},
		{"limit-conc", Options{Limiter: limit.New(limit.Config{PerSource: 1 << 20})}, false},
	} {
		b.Run("case="+tc.name, func(b *testing.B) {
			inner, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			ln := NewListener(inner, all, tc.opts)
			defer ln.Close()
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					c.Close()
				}
			}()
			addr := inner.Addr().String()
			hdr := proxyHeader(b, 2, "10.0.0.1:4000", "127.0.0.1:80")
			var src atomic.Uint32
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+src.Add(1)%8))}}
				buf := make([]byte, 1)
				for pb.Next() {
					c, err := d.Dial("tcp", addr)
					if err != nil {
						b.Error(err)
						return
					}
					if tc.header {
						c.Write(hdr)
					}
					if _, err := c.Read(buf); err != io.EOF {
						b.Errorf("read %v, want EOF", err)
					}
					c.(*net.TCPConn).SetLinger(0)
					c.Close()
				}
			})
		})
	}
}
