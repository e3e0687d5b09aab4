package gate

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"github.com/peergate/peergate/acl"
)

// Errors finding a peer. Whatever the error, the gate denies the connection.
var (
	ErrNotSocket = errors.New("not a socket")
	ErrFamily    = errors.New("peer address family cannot be judged")
	ErrNoFD      = errors.New("connection has no file descriptor")
	ErrNoACL     = errors.New("no ACL set")
)

// Peer is the other end of a connected socket, as getpeername(2) reports it.
type Peer struct {
	// AddrPort is the peer's IP address and port, with IPv4-mapped IPv6 addresses unmapped and
	// zones dropped. It is the zero value for a Unix-domain peer.
	AddrPort netip.AddrPort
	// Unix is true for a Unix-domain peer, which has no address.
	Unix bool
	// Cred is the credentials of a Unix-domain peer's process, from SO_PEERCRED (Linux); not
	// Valid elsewhere, for IP peers, and for clients named by a PROXY header.
	Cred acl.UnixCred
}

// String returns "10.1.2.3:4567", "[2001:db8::1]:4567", "unix uid=1000 gid=1000 pid=4242", or
// "unix" when the credentials are unknown.
func (p Peer) String() string {
	if p.Unix {
		if p.Cred.Valid {
			return "unix " + p.Cred.String()
		}
		return "unix"
	}
	return p.AddrPort.String()
}

// Decide returns a's decision for p: the unix policy for a Unix-domain peer (by its credentials,
// see acl.ACL.DecideUnix), the rule for its address otherwise. A nil ACL denies.
func (p Peer) Decide(a *acl.ACL) acl.Decision {
	switch {
	case a == nil:
		return acl.Decision{Action: acl.Deny}
	case p.Unix:
		return a.DecideUnix(p.Cred)
	}
	return a.Decide(p.AddrPort.Addr())
}

// PeerOf returns the peer of a connection from getpeername(2) on its file descriptor, not from
// RemoteAddr: it is what the kernel holds. A *tls.Conn, or any conn with a NetConn method, is
// judged by the connection it wraps.
func PeerOf(c net.Conn) (Peer, error) {
	sc, ok := socketOf(c)
	if !ok {
		return Peer{}, fmt.Errorf("%w: %T", ErrNoFD, c)
	}
	return peerOfConn(sc)
}

// socketOf returns c, or the connection its NetConn methods lead to, as a syscall.Conn; false
// when neither c nor any of those is one.
func socketOf(c net.Conn) (syscall.Conn, bool) {
	for c != nil {
		if sc, ok := c.(syscall.Conn); ok {
			return sc, true
		}
		nc, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return nil, false
		}
		c = nc.NetConn()
	}
	return nil, false
}
