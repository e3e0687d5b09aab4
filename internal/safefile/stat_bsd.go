//go:build darwin || freebsd || netbsd

package safefile

import (
	"io/fs"
	"syscall"
)

// openFlags: a FIFO opened for reading does not wait for a writer, nor a terminal become ours.
const openFlags = syscall.O_NONBLOCK | syscall.O_NOCTTY

// sysStat returns the device, inode and change time (ns) of fi.
func sysStat(fi fs.FileInfo) (dev, ino uint64, ctime int64) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Dev), uint64(st.Ino), st.Ctimespec.Nano()
	}
	return 0, 0, 0
}
