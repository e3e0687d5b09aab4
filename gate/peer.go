package gate

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"unsafe"

	"github.com/peergate/peergate/acl"
	"golang.org/x/sys/unix"
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
}

// String returns "10.1.2.3:4567", "[2001:db8::1]:4567" or "unix".
func (p Peer) String() string {
	if p.Unix {
		return "unix"
	}
	return p.AddrPort.String()
}

// Decide returns a's decision for p: the unix policy for a Unix-domain peer, the rule for its
// address otherwise. A nil ACL denies.
func (p Peer) Decide(a *acl.ACL) acl.Decision {
	switch {
	case a == nil:
		return acl.Decision{Action: acl.Deny}
	case p.Unix:
		return a.Unix()
	}
	return a.Decide(p.AddrPort.Addr())
}

// PeerFromFD returns the peer of the connected socket fd, from getpeername(2). It is what
// `peergate wrap` calls on an inherited socket (fd 0 from inetd, fd 3 from systemd), where there
// is no accept and so no other address to go by. A descriptor that is not a socket gives an error
// wrapping ErrNotSocket.
func PeerFromFD(fd int) (Peer, error) {
	var rsa unix.RawSockaddrAny
	return getpeername(fd, &rsa)
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

// peerReader holds what one getpeername call needs, so that a pooled one makes the call without
// allocating: the control func is bound once, and the sockaddr buffer is reused.
type peerReader struct {
	rsa     unix.RawSockaddrAny
	peer    Peer
	err     error
	control func(fd uintptr)
}

var readers = sync.Pool{New: func() any {
	r := new(peerReader)
	r.control = func(fd uintptr) { r.peer, r.err = getpeername(int(fd), &r.rsa) }
	return r
}}

func peerOfConn(c syscall.Conn) (Peer, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return Peer{}, fmt.Errorf("%w: %w", ErrNoFD, err)
	}
	r := readers.Get().(*peerReader)
	defer readers.Put(r)
	if err := rc.Control(r.control); err != nil {
		return Peer{}, fmt.Errorf("%w: %w", ErrNoFD, err)
	}
	return r.peer, r.err
}

// getpeername is getpeername(2) through golang.org/x/sys/unix into a caller's buffer.
// unix.Getpeername would allocate the Sockaddr it returns on every call; this does not.
func getpeername(fd int, rsa *unix.RawSockaddrAny) (Peer, error) {
	n := uint32(unix.SizeofSockaddrAny)
	_, _, errno := unix.Syscall(unix.SYS_GETPEERNAME, uintptr(fd), uintptr(unsafe.Pointer(rsa)), uintptr(unsafe.Pointer(&n)))
	switch {
	case errno == unix.ENOTSOCK:
		return Peer{}, fmt.Errorf("getpeername(fd %d): %w", fd, ErrNotSocket)
	case errno != 0:
		return Peer{}, fmt.Errorf("getpeername(fd %d): %w", fd, errno)
	}
	switch rsa.Addr.Family {
	case unix.AF_INET:
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(rsa))
		return Peer{AddrPort: netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), ntohs(sa.Port))}, nil
	case unix.AF_INET6:
		sa := (*unix.RawSockaddrInet6)(unsafe.Pointer(rsa))
		return Peer{AddrPort: netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), ntohs(sa.Port))}, nil
	case unix.AF_UNIX:
		return Peer{Unix: true}, nil
	}
	return Peer{}, fmt.Errorf("getpeername(fd %d): %w: family %d", fd, ErrFamily, rsa.Addr.Family)
}

func ntohs(p uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(&p))
	return uint16(b[0])<<8 | uint16(b[1])
}
