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
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/peergate/peergate/acl"
)

// ErrWrappedListener is what Accept returns when the inner listener's connections lead to no
// socket: they are not a syscall.Conn and have no NetConn method leading to one, as those of
// netutil.LimitListener and proxyproto.Listener. No peer could ever be judged, so rather than
// deny every connection while Accept seems to wait, Accept closes each such connection and
// returns this error. The gate must wrap the listener net.Listen returns; other listeners go
// around the gate.
var ErrWrappedListener = errors.New("the gate cannot reach the sockets of the listener it wraps: make it wrap the raw listener, and wrap the gate with other listeners")

// Options set how a Listener denies and reports. The zero value closes denied connections with a
// FIN, logs nothing and calls no hook.
type Options struct {
	// OnDeny is what is done with a denied connection: DenyClose (the zero value, a FIN) or
	// DenyReset (an RST).
	OnDeny DenyAction
	// Reset denies with an RST (SO_LINGER 0) instead of a FIN, so the client sees ECONNRESET.
	// It is the older spelling of OnDeny: DenyReset, and applies only when OnDeny is DenyClose.
	Reset bool
	// DryRun judges, counts and logs every connection but hands on even those the ACL denies, so
	// an ACL can be tried on live traffic. A connection whose peer cannot be found is still closed.
	DryRun bool
	// Logger, if set, logs every denial (at Info) and every failure to find a peer (at Warn), with
	// the peer, the deciding rule and where it was written.
	Logger *slog.Logger
	// OnDecision, if set, is called in Accept for every connection, after the decision and before
	// the connection is closed or returned. It must be quick and must not keep the Event's Conn.
	// With Proxy set it is called from the goroutines that judge connections, concurrently.
	OnDecision func(Event)
	// Proxy, if set, reads the PROXY protocol header that trusted proxies send, and judges the
	// client address it carries rather than the proxy's (see ProxyOptions).
	Proxy *ProxyOptions
	// Limiter, if set, is asked about every connection that would be handed on (those the ACL
	// allows, and in DryRun those it denies too), with the client's address; over a limit the
	// connection is denied, DryRun or not. package gate/limit has one.
	Limiter Limiter
	// Bans, if set, is a layer of live denials checked before the ACL: a peer inside a ban is denied
	// even when the ACL allows it (DryRun hands it on, as it does ACL denials). Unix-domain peers
	// have no address and are not asked about. package gate/bans has one.
	Bans Bans
	// Tag is an opaque value that AcceptTag returns with each connection judged under these
	// Options (and the ACL set with them), so a caller that changes what it does with a
	// connection along with the policy (a daemon's reload) acts on the policy that admitted it.
	Tag any
}

// Limiter caps connections per source address. Admit is called for each connection that would be
// handed on; an error denies it. A non-nil release is called once when the connection closes: the
// Listener then returns a *Conn whose Close calls it.
type Limiter interface {
	Admit(addr netip.Addr) (release func(), err error)
}

// Event describes one judged connection.
type Event struct {
	// Conn is the connection judged. For a peer denied on the shed path (see Listener.Shedding),
	// and for every connection AcceptFD judges, no net.Conn was made: it is a stand-in that has
	// the addresses and does nothing else.
	Conn     net.Conn
	Peer     Peer         // the peer judged: the client named by a PROXY header, or the direct peer
	Direct   Peer         // the direct peer, from getpeername: the proxy when Proxied is set
	Proxied  bool         // Peer came from a PROXY header sent by a trusted proxy
	Decision acl.Decision // deny, with no rule, when Err is set
	Err      error        // why the peer could not be judged (or its PROXY header not read), or nil
	Limit    error        // the per-source limit that denied a connection the ACL allowed, or nil
	Ban      *Ban         // the ban that denied the peer (Options.Bans), or nil: then Decision is the ACL's
	HandedOn bool         // the connection was returned to the caller
}

// Stats are a Listener's counters since it was made: sums of its Counts, which count each
// judged connection once by verdict and reason (the vocabulary of Reason).
type Stats struct {
	Allowed uint64 // connections the ACL allowed (and no limit denied): allow/acl
	Denied  uint64 // connections the ACL denied (in dry-run mode, would have denied)
	Errors  uint64 // connections closed because their peer could not be found or judged: proxy and peer_error
	Limited uint64 // connections the ACL allowed and a per-source limit denied: deny/limit
	Banned  uint64 // connections denied by a ban (Options.Bans; in dry-run mode, would have been)
}

// Listener is a net.Listener whose Accept returns only connections from peers its ACL allows. Its
// methods are safe for concurrent use.
type Listener struct {
	net.Listener
	policy     atomic.Pointer[policy]
	counts     [numOutcomes]atomic.Uint64 // by index into outcomes
	dryRunBans atomic.Uint64              // of counts[outDryRun], those a ban would have denied

	closed    chan struct{} // closed by Close: judging goroutines give up delivering
	closeOnce sync.Once
	async     asyncAccept // the accept path with Proxy set
	shed      shedding    // the accept path under a flood of denied peers
}

// policy is what a connection is judged by: one value, swapped whole, so a connection is never
// judged by one policy's ACL and another's options, nor handed on with a third's Tag.
type policy struct {
	acl  *acl.ACL
	opts Options
}

// NewListener returns a Listener that guards inner with a. A nil ACL denies every connection until
// SetACL gives one.
func NewListener(inner net.Listener, a *acl.ACL, opts Options) *Listener {
	l := &Listener{Listener: inner, closed: make(chan struct{})}
	l.policy.Store(&policy{a, opts})
	l.shed.init(inner)
	return l
}

// SetPolicy makes a and o the ACL and options for every connection judged from now on, together:
// no connection is judged by one and not the other. Connections already returned are not affected.
func (l *Listener) SetPolicy(a *acl.ACL, o Options) { l.policy.Store(&policy{a, o}) }

// SetACL makes a the ACL for every connection judged from now on, with the options as they are.
// Connections already returned are not affected.
func (l *Listener) SetACL(a *acl.ACL) {
	l.update(func(p *policy) { p.acl = a })
}

// ACL returns the current ACL.
func (l *Listener) ACL() *acl.ACL { return l.policy.Load().acl }

// SetOptions replaces the options for every connection judged from now on, with the ACL as it is.
func (l *Listener) SetOptions(o Options) {
	l.update(func(p *policy) { p.opts = o })
}

// update swaps in a copy of the current policy changed by set, retrying if another change came
// between (so concurrent SetACL and SetOptions both take effect).
func (l *Listener) update(set func(*policy)) {
	for {
		old := l.policy.Load()
		p := *old
		set(&p)
		if l.policy.CompareAndSwap(old, &p) {
			return
		}
	}
}

// Stats returns the counters.
func (l *Listener) Stats() Stats {
	var n [numOutcomes]uint64
	for i := range n {
		n[i] = l.counts[i].Load()
	}
	dryBans := min(l.dryRunBans.Load(), n[outDryRun])
	return Stats{
		Allowed: n[outAllowACL],
		Denied:  n[outDenyACL] + n[outDryRun] - dryBans,
		Errors:  n[outProxy] + n[outPeerError],
		Limited: n[outLimit],
		Banned:  n[outBan] + dryBans,
	}
}

// Close closes the wrapped listener; connections being judged are closed rather than returned.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// Accept waits for the next connection from an allowed peer and returns it as the wrapped listener
// returned it (a *net.TCPConn stays a *net.TCPConn, so io.Copy can still splice). Connections
// from denied peers, and those whose peer cannot be found, are closed here.
//
// Two cases return a *Conn around the accepted connection instead: one whose PROXY header was
// read (Options.Proxy), and one holding a per-source slot that its Close gives back
// (Options.Limiter with a concurrency cap).
//
// A connection of the inner listener that is not a syscall.Conn is judged by what its NetConn
// method returns, as a *tls.Conn is. One that has neither is closed and Accept returns
// ErrWrappedListener: the gate must wrap the raw listener.
func (l *Listener) Accept() (net.Conn, error) {
	c, _, err := l.AcceptTag()
	return c, err
}

// AcceptTag is Accept that also returns the Tag of the Options that the connection was judged
// under: set with SetPolicy (or SetOptions) along with the ACL, it tells which policy admitted
// the connection even when the policy changed while Accept waited or judged.
func (l *Listener) AcceptTag() (net.Conn, any, error) {
	if l.async.started.Load() || l.policy.Load().opts.Proxy != nil {
		return l.acceptAsync()
	}
	var err error
	for {
		if l.policy.Load().opts.Proxy != nil { // set while this call judged: read headers off this path
			return l.acceptAsync()
		}
		var c net.Conn
		if l.Shedding() {
			sc, judged, tag, err := l.acceptShed()
			switch {
			case err != nil:
				return nil, nil, err
			case judged:
				return sc, tag, nil
			case sc == nil:
				continue // denied and closed before a net.Conn was made for it
			}
			c = sc
		} else if c, err = l.Listener.Accept(); err != nil {
			return nil, nil, err
		}
		if out, tag, ok := l.judge(c, errNoRead); ok {
			return out, tag, nil
		}
		if err := unreachable(c); err != nil {
			return nil, nil, err
		}
	}
}

// unreachable returns an error wrapping ErrWrappedListener when c leads to no socket.
func unreachable(c net.Conn) error {
	if _, ok := socketOf(c); ok {
		return nil
	}
	return fmt.Errorf("gate: %w (it returned a %T)", ErrWrappedListener, c)
}

// judge decides c, counts and reports the decision, and closes c unless it is to be handed on.
// It returns the connection to hand on (c, or a *Conn around it) and the Tag of the policy that
// decided it. A non-nil refuse denies c with that error once its direct peer is known, reading
// nothing; errNoRead only a peer whose PROXY header the policy would read (see errNoRead).
func (l *Listener) judge(c net.Conn, refuse error) (net.Conn, any, bool) {
	out, p, _, ok := l.judgePolicy(c, refuse)
	if !ok {
		return nil, nil, false
	}
	return out, p.opts.Tag, true
}

// judgePolicy is judge that returns the policy that decided c and the Event reported.
func (l *Listener) judgePolicy(c net.Conn, refuse error) (net.Conn, *policy, Event, bool) {
	ev := Event{Conn: c}
	wrapped, p := l.peer(c, refuse, &ev)
	wrapped = l.settle(c, wrapped, p, &ev)
	if !ev.HandedOn {
		deny(c, &p.opts)
		return nil, nil, Event{}, false
	}
	if wrapped != nil {
		return wrapped, p, ev, true
	}
	return c, p, ev, true
}

// settle judges c by p once ev's Peer (or Err) is known: decide, unless the peer is not known or
// there is no ACL; then it counts, logs and reports the decision (OnDecision). It returns what
// decide returns (nil when not judged). Closing a denied connection is the caller's.
func (l *Listener) settle(c net.Conn, wrapped *Conn, p *policy, ev *Event) *Conn {
	a, opts := p.acl, &p.opts
	if ev.Err == nil && a == nil {
		ev.Err = ErrNoACL
	}
	if ev.Err != nil {
		ev.Decision = acl.Decision{Action: acl.Deny}
		l.count(ev)
	} else {
		wrapped = l.decide(c, wrapped, a, opts, ev)
	}
	if opts.Logger != nil && (!ev.Decision.Allowed() || ev.Limit != nil) {
		l.log(opts.Logger, ev)
	}
	if opts.OnDecision != nil {
		opts.OnDecision(*ev)
	}
	l.shedScore(ev.HandedOn)
	return wrapped
}

// peer sets ev's Peer, Direct and Err for c under refuse (see judge), reading its PROXY header
// where the policy asks for one. It returns the *Conn around c that a header read leaves (nil:
// none) and the policy to judge c by: the one of now, after a read that may have taken seconds.
func (l *Listener) peer(c net.Conn, refuse error, ev *Event) (*Conn, *policy) {
	p := l.policy.Load()
	ev.Peer, ev.Err = PeerOf(c)
	ev.Direct = ev.Peer
	var wrapped *Conn
	switch {
	case ev.Err != nil:
	case refuse != nil && refuse != errNoRead:
		ev.Err = refuse
	case p.opts.Proxy == nil:
	case refuse == errNoRead && !ev.Peer.Unix && p.opts.Proxy.trusts(ev.Peer.AddrPort.Addr()):
		ev.Err = ErrProxyBusy
	default:
		wrapped, ev.Err = p.opts.Proxy.read(c, ev)
		p = l.policy.Load() // the read may have taken seconds: judge by the policy of now
		if ev.Err == nil && wrapped != nil && !p.opts.Proxy.trusts(ev.Direct.AddrPort.Addr()) {
			ev.Err = errProxyDistrusted // a header read, from a proxy the policy of now does not trust
		}
	}
	return wrapped, p
}

// decide judges ev's peer, known without error, by the ban layer, then a, then opts' per-source
// limits; counts the outcome; and sets ev's Decision, Ban, Limit and HandedOn. It returns the
// *Conn to hand on in place of c (wrapped, or a new one holding a per-source slot), or nil for c.
func (l *Listener) decide(c net.Conn, wrapped *Conn, a *acl.ACL, opts *Options, ev *Event) *Conn {
	if opts.Bans != nil && !ev.Peer.Unix {
		if b, ok := opts.Bans.Banned(ev.Peer.AddrPort.Addr().Unmap()); ok {
			banned := b      // a variable of this branch: &b would put every b on the heap, banned or not
			ev.Ban = &banned // allocates, on the ban path only
			ev.Decision = acl.Decision{Action: acl.Deny}
		}
	}
	if ev.Ban == nil {
		ev.Decision = ev.Peer.Decide(a)
	}
	var release func()
	// Limits apply to every connection handed on, including those dry_run lets through.
	if (ev.Decision.Allowed() || opts.DryRun) && opts.Limiter != nil && !ev.Peer.Unix {
		release, ev.Limit = opts.Limiter.Admit(ev.Peer.AddrPort.Addr())
	}
	ev.HandedOn = ev.Limit == nil && (ev.Decision.Allowed() || opts.DryRun)
	l.count(ev)
	if release != nil {
		if wrapped == nil {
			wrapped = &Conn{Conn: c}
		}
		wrapped.release = release
	}
	return wrapped
}

func (l *Listener) log(log *slog.Logger, ev *Event) {
	ctx := context.Background()
	if ev.Err != nil {
		attrs := []slog.Attr{slog.String("listen", l.Addr().String()), slog.String("err", ev.Err.Error())}
		if ev.Direct != (Peer{}) {
			attrs = append(attrs, slog.String("direct", ev.Direct.String()))
		}
		log.LogAttrs(ctx, slog.LevelWarn, "peer not judged; connection closed", attrs...)
		return
	}
	if ev.Limit != nil {
		attrs := []slog.Attr{slog.String("listen", l.Addr().String()), slog.String("peer", ev.Peer.String()),
			slog.String("reason", "limit"), slog.String("err", ev.Limit.Error())}
		if ev.Proxied {
			attrs = append(attrs, slog.String("proxy", ev.Direct.String()))
		}
		log.LogAttrs(ctx, slog.LevelInfo, "peer over limit; connection closed", attrs...)
		return
	}
	msg := "peer denied"
	if ev.HandedOn {
		msg = "peer would be denied (dry run); handed on"
	}
	if b := ev.Ban; b != nil {
		attrs := []slog.Attr{slog.String("listen", l.Addr().String()), slog.String("peer", ev.Peer.String()),
			slog.String("layer", "ban"), slog.String("ban", b.Prefix.String()), slog.String("origin", b.Origin),
			slog.String("reason", b.Reason), slog.String("expires", b.ExpiresString())}
		if ev.Proxied {
			attrs = append(attrs, slog.String("proxy", ev.Direct.String()))
		}
		log.LogAttrs(ctx, slog.LevelInfo, msg, attrs...)
		return
	}
	rule, origin := ev.Decision.By()
	attrs := []slog.Attr{slog.String("listen", l.Addr().String()), slog.String("peer", ev.Peer.String()), slog.String("rule", rule)}
	if origin != "" {
		attrs = append(attrs, slog.String("origin", origin))
	}
	if ev.Proxied {
		attrs = append(attrs, slog.String("proxy", ev.Direct.String()))
	}
	log.LogAttrs(ctx, slog.LevelInfo, msg, attrs...)
}
