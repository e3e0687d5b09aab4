//go:build !unix && !windows

package gate

import (
	"fmt"
	"runtime"
	"syscall"
)

// PeerFromFD is not supported on this system: it always returns an error wrapping ErrNoFD, so
// the gate denies every connection (fail closed).
func PeerFromFD(fd int) (Peer, error) {
	return Peer{}, fmt.Errorf("%w: getpeername is not available on %s", ErrNoFD, runtime.GOOS)
}

func peerOfConn(c syscall.Conn) (Peer, error) {
	return Peer{}, fmt.Errorf("%w: getpeername is not available on %s", ErrNoFD, runtime.GOOS)
}
