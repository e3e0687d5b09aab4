//go:build unix

package gate

import (
	"fmt"
	"net/netip"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// PeerFromFD returns the peer of the connected socket fd, from getpeername(2). It is what
// `peergate wrap` calls on an inherited socket (fd 0 from inetd, fd 3 from systemd), where there
// is no accept and so no other address to go by. A descriptor that is not a socket gives an error
// wrapping ErrNotSocket.
func PeerFromFD(fd int) (Peer, error) {
	var rsa unix.RawSockaddrAny
	return getpeername(fd, &rsa)
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
		cred, err := peerCred(fd)
		if err != nil {
			return Peer{}, fmt.Errorf("getsockopt(fd %d, SO_PEERCRED): %w", fd, err)
		}
		return Peer{Unix: true, Cred: cred}, nil
	}
	return Peer{}, fmt.Errorf("getpeername(fd %d): %w: family %d", fd, ErrFamily, rsa.Addr.Family)
}

func ntohs(p uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(&p))
	return uint16(b[0])<<8 | uint16(b[1])
}
