//go:build linux

package evloop

import "golang.org/x/sys/unix"

// PipeSize is the size of a Pipe, and the most one splice moves.
const PipeSize = 1 << 20

// Pipe is a kernel pipe that splice(2) moves bytes through, socket to pipe to socket, with how
// many bytes it holds. The goroutine path of package serve splices through the same pipes.
type Pipe struct {
	R, W int // its read and write ends: non-blocking, close-on-exec
	Held int
}

// NewPipe makes a Pipe of PipeSize (as net does for its splices; a smaller one works too), or
// returns nil when no pipe can be made.
func NewPipe() *Pipe {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil
	}
	unix.FcntlInt(uintptr(fds[0]), unix.F_SETPIPE_SZ, PipeSize)
	return &Pipe{R: fds[0], W: fds[1]}
}

// Close closes both ends.
func (p *Pipe) Close() {
	unix.Close(p.R)
	unix.Close(p.W)
}
