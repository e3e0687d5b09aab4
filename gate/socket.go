package gate

import "errors"

// ErrNotQueued is returned by AcceptFD when no connection is waiting.
var ErrNotQueued = errors.New("gate: no connection queued")

// ErrNeedsConn is returned by AcceptFD, before accepting anything, when the listener cannot hand on
// bare sockets: its policy reads PROXY headers (Options.Proxy), which takes a net.Conn and time, or
// it does not wrap a TCP listener, or the platform has no accept4(2). Accept still works.
var ErrNeedsConn = errors.New("gate: this listener's connections must be accepted as net.Conns")

// A Socket is a connection that AcceptFD handed on as a bare descriptor rather than a net.Conn:
// an event loop proxies it with its own system calls. The descriptor is the caller's, to close.
type Socket struct {
	FD      int  // the connected socket: non-blocking, close-on-exec
	Peer    Peer // the peer judged, from getpeername(2)
	Tag     any  // the Tag of the policy that judged it, as AcceptTag returns it
	release func()
}

// Release gives back the per-source slot the connection holds (Options.Limiter with a concurrency
// cap), once it ends; it does nothing when it holds none. Call it once.
func (s Socket) Release() {
	if s.release != nil {
		s.release()
	}
}
