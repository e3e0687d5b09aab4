// Package evloop proxies TCP connections between bare sockets on epoll(7) event loops, one
// goroutine each, with the system calls made directly: the short-connection path of peergate
// serve.
//
// Go's net package costs a proxied connection about a third more CPU than HAProxy (BENCHMARKS.md,
// "Short connections"): each socket is registered with the runtime's poller, every read and write
// enters and leaves the scheduler's syscall state, and a connection takes two goroutines whose
// wake-ups go through the scheduler and sysmon. A Loop makes the same system calls HAProxy does
// (accept4, getpeername, socket, connect, epoll_ctl, recvfrom, sendto, shutdown, close) as raw
// calls on one goroutine, and waits in epoll_wait without giving up its P while it is busy,
// so the runtime has nothing to do per connection.
//
// A Loop does what the goroutine proxy of package serve does (but that it reads what the client
// sent at once, before the upstream accepted, and holds it): it copies both ways (through a buffer, or spliced through a kernel pipe toward a remote peer), passes on a
// half-close, resets both sides when a read or write fails or a write stalls for the idle
// timeout, closes a connection quiet both ways for the idle timeout, and gives up a connect after
// the connect timeout. What it cannot do (PROXY headers, spawning) stays with package serve.
//
// Reads are edge-triggered: a read shorter than the buffer took all the socket had, and the next
// bytes bring a new edge. One case breaks that rule: a read stops short at TCP urgent data (the
// MSG_OOB byte of telnet's interrupt), and the bytes after it wait for the peer's next bytes (or
// the idle timeout), where the goroutine path would pass them at once. Both paths drop the
// urgent byte itself, as a plain read does.
package evloop

import (
	"errors"
	"net/netip"
	"time"
)

// Why says how a proxied connection ended.
type Why uint8

const (
	Done  Why = iota // both ways reached EOF
	Idle             // quiet both ways for the idle timeout: both closed
	Read             // a read failed (say, a peer's reset): both reset
	Write            // a write failed, or made no progress for the idle timeout: both reset
	Drain            // ended by Abort (the drain deadline at shutdown): both reset
)

// End is what a Handler hears when a proxied connection ends.
type End struct {
	In, Out     int64 // bytes copied client to upstream, upstream to client
	Why         Why
	ClientFirst bool // for Done: the client's EOF came first
}

// Handler hears what becomes of one proxied connection, on the loop's thread: Connected or Failed,
// then (after Connected) Ended. It must not block.
type Handler interface {
	Connected(took time.Duration) // the upstream accepted the connection
	Failed(err error)             // the upstream was not reached (or Abort came first); the client was closed
	Ended(e End)                  // both sockets are closed
}

// Upstream says where and how to proxy one connection.
type Upstream struct {
	Addr           netip.AddrPort
	ConnectTimeout time.Duration // 0: none
	IdleTimeout    time.Duration // 0: none
	KeepAlive      time.Duration // TCP keep-alive idle time on both sockets; 0: off
	// Splice the data bound for the client, or for the upstream, through a kernel pipe rather
	// than copying it through a buffer: worth it toward a remote peer (see serve's local).
	SpliceToClient, SpliceToUpstream bool
}

// ErrTimeout is the error Failed gets when the upstream did not accept within the connect timeout.
var ErrTimeout = errors.New("evloop: upstream connect timed out")

// ErrAborted is the error Failed gets for a connection still connecting when Abort (or Stop) ended it.
var ErrAborted = errors.New("evloop: aborted")
