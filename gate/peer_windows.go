//go:build windows

package gate

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"

	"golang.org/x/sys/windows"
)

// PeerFromFD returns the peer of the connected socket whose handle is fd, from getpeername on
// it. A handle that is not a socket gives an error wrapping ErrNotSocket.
func PeerFromFD(fd int) (Peer, error) {
	return getpeername(windows.Handle(fd))
}

func peerOfConn(c syscall.Conn) (Peer, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return Peer{}, fmt.Errorf("%w: %w", ErrNoFD, err)
	}
	var peer Peer
	var perr error
	if err := rc.Control(func(fd uintptr) { peer, perr = getpeername(windows.Handle(fd)) }); err != nil {
		return Peer{}, fmt.Errorf("%w: %w", ErrNoFD, err)
	}
	return peer, perr
}

// getpeername is Winsock's getpeername on the socket handle h.
func getpeername(h windows.Handle) (Peer, error) {
	sa, err := windows.Getpeername(h)
	switch {
	case errors.Is(err, windows.WSAENOTSOCK):
		return Peer{}, fmt.Errorf("getpeername(handle %d): %w", h, ErrNotSocket)
	case err != nil:
		return Peer{}, fmt.Errorf("getpeername(handle %d): %w", h, err)
	}
	switch sa := sa.(type) {
	case *windows.SockaddrInet4:
		return Peer{AddrPort: netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))}, nil
	case *windows.SockaddrInet6:
		return Peer{AddrPort: netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), uint16(sa.Port))}, nil
	case *windows.SockaddrUnix:
		return Peer{Unix: true}, nil
	}
	return Peer{}, fmt.Errorf("getpeername(handle %d): %w: %T", h, ErrFamily, sa)
}
