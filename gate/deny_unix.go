//go:build unix

package gate

import "golang.org/x/sys/unix"

// DenyFD ends the connected socket fd as the action says and closes fd, for a program that holds
// a bare descriptor (an inherited connection, as peergate wrap does) rather than a net.Conn.
func (a DenyAction) DenyFD(fd int) error {
	a.prepare(func(sec int) error {
		return unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: int32(sec)})
	})
	return unix.Close(fd)
}
