package serve

import (
	"net"
	"net/netip"

	"github.com/peergate/peergate/internal/config"
	"github.com/pires/go-proxyproto"
)

// sendPreamble writes to the upstream what must precede the client's bytes: the PROXY header of
// send_proxy naming the client (c's RemoteAddr: the address a trusted proxy named, or the direct
// peer) and the local address it connected to, then early, the bytes that followed an incoming
// PROXY header. A client without an IP address (a Unix socket) goes out as go-proxyproto formats
// it: "PROXY UNKNOWN" in v1, AF_UNIX addresses in v2.
func sendPreamble(up net.Conn, svc *service, c net.Conn, early []byte) error {
	var buf []byte
	if svc.SendProxy != "" {
		h := proxyHeader(svc.Service, c.RemoteAddr(), c.LocalAddr())
		b, err := h.Format()
		if err != nil {
			return err
		}
		buf = b
	}
	buf = append(buf, early...)
	if len(buf) == 0 {
		return nil
	}
	_, err := up.Write(buf)
	return err
}

// proxyHeader returns the send_proxy header of svc for a connection from src to dst.
func proxyHeader(svc *config.Service, src, dst net.Addr) *proxyproto.Header {
	version := byte(1)
	if svc.SendProxy == "v2" {
		version = 2
	}
	return proxyproto.HeaderProxyFromAddrs(version, unmapped(src), unmapped(dst))
}

// unmapped returns a TCP address with an IPv4-mapped IP as plain IPv4, so a client on a
// dual-stack listener goes out as TCP4.
func unmapped(a net.Addr) net.Addr {
	if t, ok := a.(*net.TCPAddr); ok {
		ap := t.AddrPort()
		return net.TCPAddrFromAddrPort(netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
	}
	return a
}
