package gate

import (
	"github.com/peergate/peergate/acl"
	"golang.org/x/sys/unix"
)

// peerCred returns the credentials of the process at the other end of the Unix-domain socket fd,
// from SO_PEERCRED: the Unix counterpart of getpeername.
func peerCred(fd int) (acl.UnixCred, error) {
	uc, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return acl.UnixCred{}, err
	}
	return acl.UnixCred{UID: uc.Uid, GID: uc.Gid, PID: uc.Pid, Valid: true}, nil
}
