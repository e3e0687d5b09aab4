package gate

import (
	"net"
	"sync/atomic"
	"time"
)

// The shed path. A peer the gate denies costs a userspace gate most when the gate first makes a
// net.Conn of it: the runtime registers the socket with its poller, asks for its local address,
// sets TCP_NODELAY, and unregisters it again at the close: more than half of the gate's own CPU
// per denied peer (BenchmarkShed), while allowed clients wait behind it in the same accept queue. So while most recent connections on a TCP listener were denied, the plain
// accept path (no PROXY protocol) takes connections with accept4(2) itself, reads the peer with
// getpeername(2), and closes a denied peer's socket at once: three system calls where a
// net.Conn took seven. A peer that is allowed (or that the policy would hand on in dry-run mode)
// is made a net.Conn and judged as always, so what Accept returns and how it was judged do not
// change; it costs a few system calls more than a plain accept, paid only during a flood.
//
// The score moves up by shedUp for each connection denied and down by shedDown for each handed
// on, within [0, shedMax]: at or above shedOn, that is once more than shedDown/(shedUp+shedDown)
// of recent connections were denied, the listener sheds. The score is a heuristic: accept loops
// that judge at once may lose each other's steps, which only moves the switch a little.
const (
	shedUp   = 1
	shedDown = 2
	shedMax  = 64
	shedOn   = 32
)

// shedding is a Listener's shed state.
type shedding struct {
	score atomic.Int32
	raw   rawAccepter // nil: the listener cannot shed (not TCP, or not on this platform)
	local net.Addr    // the listener's address, as shedConn's LocalAddr
}

// rawAccepter accepts a connection's socket without making a net.Conn of it.
type rawAccepter interface {
	// acceptFD returns the socket of a queued connection, or false when none is queued: it does
	// not wait.
	acceptFD() (fd int, ok bool, err error)
}

func (s *shedding) init(inner net.Listener) {
	s.raw = rawAccepterOf(inner)
	s.local = inner.Addr()
}

// shedScore moves the score after a decision.
func (l *Listener) shedScore(handedOn bool) {
	s := &l.shed
	if s.raw == nil {
		return
	}
	v := s.score.Load()
	switch {
	case handedOn && v > 0:
		s.score.Store(max(v-shedDown, 0))
	case !handedOn && v < shedMax:
		s.score.Store(min(v+shedUp, shedMax))
	}
}

// Shedding reports whether the listener is on its shed path now: most recent connections were
// denied, and denied peers are closed before a net.Conn is made of them. Event.Conn is then a
// stand-in for denied peers (see Event).
func (l *Listener) Shedding() bool { return l.shed.raw != nil && l.shed.score.Load() >= shedOn }

// denies reports whether p denies peer outright, so the shed path may close its socket: the ban
// layer or the ACL denies it, and dry-run mode would not hand it on.
func (p *policy) denies(peer Peer) bool {
	if p.acl == nil || p.opts.DryRun || p.opts.Proxy != nil || peer.Unix {
		return false
	}
	if p.opts.Bans != nil {
		if _, ok := p.opts.Bans.Banned(peer.AddrPort.Addr().Unmap()); ok {
			return true
		}
	}
	return !p.acl.Decide(peer.AddrPort.Addr()).Allowed()
}

// shedConn stands for a connection the shed path denied, in the Event given to OnDecision: no
// net.Conn was made for it. Its addresses are known; reading, writing and closing it do nothing
// (the gate closes the socket).
type shedConn struct {
	local net.Addr
	peer  Peer
}

func (c *shedConn) Read([]byte) (int, error)         { return 0, net.ErrClosed }
func (c *shedConn) Write([]byte) (int, error)        { return 0, net.ErrClosed }
func (c *shedConn) Close() error                     { return nil }
func (c *shedConn) LocalAddr() net.Addr              { return c.local }
func (c *shedConn) SetDeadline(time.Time) error      { return nil }
func (c *shedConn) SetReadDeadline(time.Time) error  { return nil }
func (c *shedConn) SetWriteDeadline(time.Time) error { return nil }
func (c *shedConn) RemoteAddr() net.Addr {
	return net.TCPAddrFromAddrPort(c.peer.AddrPort)
}
