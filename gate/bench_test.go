package gate

import (
	"io"
	"net"
	"sync/atomic"
	"testing"

	"github.com/peergate/peergate/acl"
	"golang.org/x/sys/unix"
)

// BenchmarkAccept measures one full connection through a listener: the client connects, the
// server side accepts and closes it (or the gate denies it), the client sees EOF and resets. Run
// the three cases side by side in one run and compare:
//
//	go test -run '^$' -bench Accept -count 6 ./gate/
//
// plain is a bare net.Listener; allowed and denied are gate Listeners whose ACL allows or denies
// every peer, so "denied" is the rate at which the gate sheds unwanted connections.
func BenchmarkAccept(b *testing.B) {
	for _, tc := range []struct {
		name string
		wrap func(net.Listener) net.Listener
	}{
		{"plain", func(l net.Listener) net.Listener { return l }},
		{"allowed", func(l net.Listener) net.Listener {
			return NewListener(l, acl.MustNew(acl.Spec{Default: acl.Allow}), Options{})
		}},
		{"denied", func(l net.Listener) net.Listener {
			return NewListener(l, acl.MustNew(acl.Spec{Default: acl.Deny}), Options{})
		}},
	} {
		b.Run("case="+tc.name, func(b *testing.B) {
			inner, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			ln := tc.wrap(inner)
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
			var src atomic.Uint32
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				// Spread clients over several source addresses so ports never run out.
				d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+src.Add(1)%8))}}
				buf := make([]byte, 1)
				for pb.Next() {
					c, err := d.Dial("tcp", addr)
					if err != nil {
						b.Error(err)
						return
					}
					if _, err := c.Read(buf); err != io.EOF {
						b.Errorf("read %v, want EOF", err)
					}
					c.(*net.TCPConn).SetLinger(0) // RST: no TIME_WAIT piles up
					c.Close()
				}
			})
		})
	}
}

// BenchmarkPeerOf measures finding the peer of an accepted connection: the gate's way
// (getpeername(2) into a pooled buffer) against unix.Getpeername, which allocates its Sockaddr.
func BenchmarkPeerOf(b *testing.B) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer inner.Close()
	client, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	c, err := inner.Accept()
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	b.Run("gate", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := PeerOf(c); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("unix.Getpeername", func(b *testing.B) {
		rc, _ := c.(*net.TCPConn).SyscallConn()
		b.ReportAllocs()
		for b.Loop() {
			var err error
			rc.Control(func(fd uintptr) { _, err = unix.Getpeername(int(fd)) })
			if err != nil {
				b.Fatal(err)
			}
		}
	})
}
