package gate

import (
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// tcpAccepter is the rawAccepter of a *net.TCPListener: accept4(2) on its socket, which does not
// wait. A listener's RawConn offers only Control (no waiting Read), so when no connection is
// queued the shed path waits in the listener's own Accept, and judges that one connection the
// usual way. Under a flood the queue is rarely empty.
type tcpAccepter struct{ rc syscall.RawConn }

func rawAccepterOf(inner net.Listener) rawAccepter {
	// Only a *net.TCPListener itself: a wrapper's Accept may do more than accept, and would be
	// bypassed.
	tl, ok := inner.(*net.TCPListener)
	if !ok {
		return nil
	}
	rc, err := tl.SyscallConn()
	if err != nil {
		return nil
	}
	return &tcpAccepter{rc}
}

// accept4Call holds one accept4's result, so the func given to RawConn.Control is made once.
type accept4Call struct {
	fd      int
	flags   uintptr
	errno   syscall.Errno
	control func(fd uintptr)
}

var accept4Calls = sync.Pool{New: func() any {
	a := new(accept4Call)
	a.control = func(lfd uintptr) {
		for {
			// No SOCK_NONBLOCK: a socket that becomes a net.Conn is made non-blocking by net, and
			// os.NewFile registers only non-blocking descriptors with the poller.
			fd, _, errno := unix.Syscall6(unix.SYS_ACCEPT4, lfd, 0, 0, a.flags, 0, 0)
			if errno == unix.EINTR || errno == unix.ECONNABORTED { // as net's accept: the next one
				continue
			}
			a.fd, a.errno = int(fd), errno
			return
		}
	}
	return a
}}

func (t *tcpAccepter) acceptFD() (int, bool, error) { return t.accept(unix.SOCK_CLOEXEC) }

// accept is one accept4(2) with flags: the socket of a queued connection, or false when none is.
func (t *tcpAccepter) accept(flags uintptr) (int, bool, error) {
	a := accept4Calls.Get().(*accept4Call)
	defer accept4Calls.Put(a)
	a.fd, a.errno, a.flags = -1, 0, flags
	if err := t.rc.Control(a.control); err != nil {
		return -1, false, err // the listener closed
	}
	switch a.errno {
	case 0:
		return a.fd, true, nil
	case unix.EAGAIN:
		return -1, false, nil
	}
	return -1, false, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", a.errno)}
}

// acceptShed accepts one connection on the shed path. A peer that the policy denies outright is
// judged here and its socket closed: it returns nothing. Otherwise it returns the connection as a
// net.Conn, still to be judged (so also when none was queued and it waited in Accept); or, in the
// rare case that the policy handed on a peer it denied a moment before (a ban that expired
// between the two looks), judged, with its tag.
func (l *Listener) acceptShed() (c net.Conn, judged bool, tag any, err error) {
	fd, ok, err := l.shed.raw.acceptFD()
	switch {
	case err != nil:
		return nil, false, nil, err
	case !ok:
		c, err := l.Listener.Accept()
		return c, false, nil, err
	}
	p := l.policy.Load()
	var rsa unix.RawSockaddrAny
	peer, perr := getpeername(fd, &rsa)
	if perr == nil && !p.denies(peer) {
		c, err := fileConn(fd)
		if err != nil { // no net.Conn could be made (out of descriptors?): judged as unfindable
			ev := Event{Conn: &shedConn{l.shed.local, peer}, Peer: peer, Direct: peer, Err: err}
			l.settle(nil, nil, p, &ev)
			return nil, false, nil, nil
		}
		return c, false, nil, nil
	}
	ev := Event{Conn: &shedConn{l.shed.local, peer}, Peer: peer, Direct: peer, Err: perr}
	wrapped := l.settle(nil, nil, p, &ev)
	if !ev.HandedOn {
		p.opts.denyAction().DenyFD(fd)
		return nil, false, nil, nil
	}
	c, err = fileConn(fd)
	if err != nil {
		if wrapped != nil && wrapped.release != nil {
			wrapped.release()
		}
		return nil, false, nil, nil
	}
	if wrapped != nil { // holding a per-source slot
		wrapped.Conn = c
		c = wrapped
	}
	return c, true, p.opts.Tag, nil
}

// fileConn makes a net.Conn of a connected socket, and closes fd (net keeps a copy).
func fileConn(fd int) (net.Conn, error) {
	f := os.NewFile(uintptr(fd), "")
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("gate: shed path: %w", err)
	}
	return c, nil
}

// AcceptFD accepts one queued connection without waiting and without making a net.Conn of it, and
// judges it as Accept would (ban layer, ACL, per-source limits, dry run; counted, logged and
// reported to OnDecision, whose Event.Conn is a stand-in with the addresses): the path of an
// event loop that proxies sockets itself. It returns the connection when it is to be handed on
// (ok). When the policy denied it, the socket is closed by the deny action and ok is false: call
// again. With nothing queued it returns ErrNotQueued; when the listener cannot hand on bare
// sockets, ErrNeedsConn (see there), accepting nothing; once the listener is closed, an error
// wrapping net.ErrClosed.
func (l *Listener) AcceptFD() (s Socket, ok bool, err error) {
	t, _ := l.shed.raw.(*tcpAccepter)
	if t == nil || l.policy.Load().opts.Proxy != nil {
		return Socket{}, false, ErrNeedsConn
	}
	fd, queued, err := t.accept(unix.SOCK_CLOEXEC | unix.SOCK_NONBLOCK)
	switch {
	case err != nil:
		return Socket{}, false, err
	case !queued:
		return Socket{}, false, ErrNotQueued
	}
	p := l.policy.Load() // the policy of now, after the accept, as Accept judges
	var rsa unix.RawSockaddrAny
	peer, perr := getpeername(fd, &rsa)
	if perr == nil && p.opts.Proxy != nil {
		// Set by a SetPolicy since the check above: this connection's PROXY header cannot be read
		// here. Not judged, so denied (fail closed); the next call returns ErrNeedsConn.
		perr = ErrNeedsConn
	}
	ev := Event{Conn: &shedConn{l.shed.local, peer}, Peer: peer, Direct: peer, Err: perr}
	wrapped := l.settle(nil, nil, p, &ev)
	if !ev.HandedOn {
		p.opts.denyAction().DenyFD(fd)
		return Socket{}, false, nil
	}
	s = Socket{FD: fd, Peer: peer, Tag: p.opts.Tag}
	if wrapped != nil {
		s.release = wrapped.release
	}
	return s, true, nil
}
