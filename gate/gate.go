// Package gate guards a net.Listener with an address ACL. Each accepted connection's peer is read
// with getpeername(2) on its file descriptor, judged by package acl, and either returned to the
// caller or closed before the caller ever sees it:
//
//	ln, _ := net.Listen("tcp", ":8080")
//	rules, _ := acl.Load("acl.yaml")
//	http.Serve(gate.NewListener(ln, rules, gate.Options{}), handler)
//
// The gate fails closed: a connection whose peer cannot be found or judged is closed, counted and
// logged, and Accept moves on to the next one. Errors of the wrapped listener are returned as
// they are.
package gate

import (
	"context"
	"log/slog"
	"net"
	"sync/atomic"

	"github.com/peergate/peergate/acl"
)

// Options set how a Listener denies and reports. The zero value closes denied connections with a
// FIN, logs nothing and calls no hook.
type Options struct {
	// Reset denies with an RST (SO_LINGER 0) instead of a FIN, so the client sees ECONNRESET.
	Reset bool
	// DryRun judges, counts and logs every connection but hands on even those the ACL denies, so
	// an ACL can be tried on live traffic. A connection whose peer cannot be found is still closed.
	DryRun bool
	// Logger, if set, logs every denial (at Info) and every failure to find a peer (at Warn), with
	// the peer, the deciding rule and where it was written.
	Logger *slog.Logger
	// OnDecision, if set, is called in Accept for every connection, after the decision and before
	// the connection is closed or returned. It must be quick and must not keep the Event's Conn.
	OnDecision func(Event)
}

// Event describes one judged connection.
type Event struct {
	Conn     net.Conn
	Peer     Peer
	Decision acl.Decision // deny, with no rule, when Err is set
	Err      error        // why the peer could not be judged, or nil
	HandedOn bool         // the connection was returned to the caller
}

// Stats are a Listener's counters since it was made.
type Stats struct {
	Allowed uint64 // connections the ACL allowed
	Denied  uint64 // connections the ACL denied (in dry-run mode, would have denied)
	Errors  uint64 // connections closed because their peer could not be found or judged
}

// Listener is a net.Listener whose Accept returns only connections from peers its ACL allows. Its
// methods are safe for concurrent use.
type Listener struct {
	net.Listener
	acl     atomic.Pointer[acl.ACL]
	opts    atomic.Pointer[Options]
	allowed atomic.Uint64
	denied  atomic.Uint64
	errors  atomic.Uint64
}

// NewListener returns a Listener that guards inner with a. A nil ACL denies every connection until
// SetACL gives one.
func NewListener(inner net.Listener, a *acl.ACL, opts Options) *Listener {
	l := &Listener{Listener: inner}
	l.acl.Store(a)
	l.opts.Store(&opts)
	return l
}

// SetACL makes a the ACL for every connection accepted from now on. Connections already returned
// are not affected.
func (l *Listener) SetACL(a *acl.ACL) { l.acl.Store(a) }

// ACL returns the current ACL.
func (l *Listener) ACL() *acl.ACL { return l.acl.Load() }

// SetOptions replaces the options for every connection accepted from now on.
func (l *Listener) SetOptions(o Options) { l.opts.Store(&o) }

// Stats returns the counters.
func (l *Listener) Stats() Stats {
	return Stats{Allowed: l.allowed.Load(), Denied: l.denied.Load(), Errors: l.errors.Load()}
}

// Accept waits for the next connection from an allowed peer and returns it as the wrapped listener
// returned it (a *net.TCPConn stays a *net.TCPConn, so io.Copy can still splice). Connections
// from denied peers, and those whose peer cannot be found, are closed here.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.judge(c) {
			return c, nil
		}
	}
}

// judge decides c, counts and reports the decision, and closes c unless it is to be handed on.
func (l *Listener) judge(c net.Conn) bool {
	opts := l.opts.Load()
	ev := Event{Conn: c}
	a := l.acl.Load()
	ev.Peer, ev.Err = PeerOf(c)
	if ev.Err == nil && a == nil {
		ev.Err = ErrNoACL
	}
	switch {
	case ev.Err != nil:
		l.errors.Add(1)
		ev.Decision = acl.Decision{Action: acl.Deny}
	default:
		ev.Decision = ev.Peer.Decide(a)
		if ev.Decision.Allowed() {
			l.allowed.Add(1)
		} else {
			l.denied.Add(1)
		}
		ev.HandedOn = ev.Decision.Allowed() || opts.DryRun
	}
	if opts.Logger != nil && !ev.Decision.Allowed() {
		l.log(opts.Logger, &ev)
	}
	if opts.OnDecision != nil {
		opts.OnDecision(ev)
	}
	if !ev.HandedOn {
		deny(c, opts.Reset)
	}
	return ev.HandedOn
}

func (l *Listener) log(log *slog.Logger, ev *Event) {
	ctx := context.Background()
	if ev.Err != nil {
		log.LogAttrs(ctx, slog.LevelWarn, "peer not judged; connection closed", slog.String("listen", l.Addr().String()),
			slog.String("err", ev.Err.Error()))
		return
	}
	msg := "peer denied"
	if ev.HandedOn {
		msg = "peer would be denied (dry run); handed on"
	}
	attrs := []slog.Attr{slog.String("listen", l.Addr().String()), slog.String("peer", ev.Peer.String()), slog.String("rule", "default")}
	if r := ev.Decision.Rule; r != nil {
		attrs[2] = slog.String("rule", r.Prefix.String())
		attrs = append(attrs, slog.String("origin", r.Origin.String()))
	}
	log.LogAttrs(ctx, slog.LevelInfo, msg, attrs...)
}

// deny closes c, with an RST when reset is set and c supports SO_LINGER.
func deny(c net.Conn, reset bool) {
	if reset {
		if lc, ok := c.(interface{ SetLinger(int) error }); ok {
			lc.SetLinger(0)
		}
	}
	c.Close()
}
