package gate

import (
	"errors"
	"github.com/peergate/peergate/acl"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
)

// asyncAccept is the accept path of a Listener that reads PROXY headers. One goroutine accepts;
// each connection from a trusted proxy is judged in a goroutine of its own, so a proxy slow to
// send its header holds up only its own connection (others, which need no read, are judged by the
// accepting goroutine); allowed connections reach Accept through a channel. At most
// MaxPending connections are between the inner Accept and ours at a time, and of those at most
// MaxHeaderReads (MaxHeaderReadsPerProxy from one proxy) are having their header read: the rest
// of MaxPending stays free for connections that need no read.
type asyncAccept struct {
	once    sync.Once
	started atomic.Bool
	ready   chan judged
	errs    chan error    // passing errors of the inner Accept
	done    chan struct{} // closed when the accepting goroutine has stopped; err says why
	err     error
	pending chan struct{} // one token per connection accepted and not yet returned

	mu      sync.Mutex
	reads   int                // headers being read
	readsBy map[netip.Addr]int // headers being read, by proxy address; no zero entries
}

// startRead counts a header read from proxy, unless as many as allowed are in progress already.
func (a *asyncAccept) startRead(proxy netip.Addr) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.reads >= MaxHeaderReads || a.readsBy[proxy] >= MaxHeaderReadsPerProxy {
		return false
	}
	if a.readsBy == nil {
		a.readsBy = map[netip.Addr]int{}
	}
	a.reads++
	a.readsBy[proxy]++
	return true
}

// endRead counts a header read from proxy as over.
func (a *asyncAccept) endRead(proxy netip.Addr) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.reads--
	if a.readsBy[proxy]--; a.readsBy[proxy] == 0 {
		delete(a.readsBy, proxy)
	}
}

// judged is a connection handed on, with the policy that judged it and what it judged.
type judged struct {
	conn net.Conn
	pol  *policy
	ev   Event // Conn is not set
}

func (l *Listener) acceptAsync() (net.Conn, any, error) {
	a := &l.async
	a.once.Do(func() {
		a.ready = make(chan judged)
		a.errs = make(chan error)
		a.done = make(chan struct{})
		a.pending = make(chan struct{}, MaxPending)
		a.started.Store(true)
		go l.pump()
	})
	for {
		select {
		case j := <-a.ready:
			if tag, ok := l.recheck(&j); ok {
				return j.conn, tag, nil
			}
		case err := <-a.errs:
			return nil, nil, err
		case <-a.done:
			return nil, nil, a.err
		}
	}
}

// recheck judges again, as Accept takes it, a connection that was judged allowed and then waited
// for Accept (which a caller may not call for long: a service at its connection cap): a ban
// added, or a policy set, since must apply to it. It returns the Tag to hand it on with, or
// denies it (counted, logged and reported like any denial) and returns false.
func (l *Listener) recheck(j *judged) (any, bool) {
	p := l.policy.Load()
	ev := j.ev
	ev.Conn, ev.Ban, ev.Limit = j.conn, nil, nil
	if p.opts.Bans != nil && !ev.Peer.Unix {
		if b, ok := p.opts.Bans.Banned(ev.Peer.AddrPort.Addr().Unmap()); ok {
			ev.Ban = &b
			ev.Decision = acl.Decision{Action: acl.Deny}
		}
	}
	switch {
	case ev.Ban != nil:
	case p == j.pol:
		return p.opts.Tag, true
	case ev.Proxied && !p.opts.Proxy.trusts(ev.Direct.AddrPort.Addr()):
		ev.Err = errProxyDistrusted // as in judge: the client was named by a proxy no longer trusted
		ev.Decision = acl.Decision{Action: acl.Deny}
	default:
		ev.Decision = ev.Peer.Decide(p.acl)
	}
	opts := &p.opts
	if ev.Err == nil && (ev.Decision.Allowed() || opts.DryRun) {
		return opts.Tag, true
	}
	ev.HandedOn = false
	l.count(&ev)
	if opts.Logger != nil {
		l.log(opts.Logger, &ev)
	}
	if opts.OnDecision != nil {
		opts.OnDecision(ev)
	}
	deny(j.conn, opts)
	return nil, false
}

// pump accepts connections and starts a goroutine to judge each, until the inner listener fails
// for good or the Listener is closed.
func (l *Listener) pump() {
	a := &l.async
	defer close(a.done)
	// However the pump stops (Close, or the inner listener closed under us), connections still
	// being judged must not wait for an Accept that will never come: they see closed and close.
	defer l.closeOnce.Do(func() { close(l.closed) })
	for {
		select {
		case a.pending <- struct{}{}:
		case <-l.closed:
			a.err = net.ErrClosed
			return
		}
		c, err := l.Listener.Accept()
		if err != nil {
			<-a.pending
			if errors.Is(err, net.ErrClosed) {
				a.err = err
				return
			}
			select { // a passing error (out of fds): the caller of Accept decides how to wait
			case a.errs <- err:
				continue
			case <-l.closed:
				a.err = err
				return
			}
		}
		proxy, ok := l.readsHeader(c)
		switch {
		case !ok: // nothing to wait for: judge here and save a goroutine's hand-off
			l.judgeAndDeliver(c, nil, errNoRead)
			if err := unreachable(c); err != nil {
				select { // as a passing error: this connection is closed, the next may do
				case a.errs <- err:
				case <-l.closed:
					a.err = err
					return
				}
			}
		case a.startRead(proxy) || yieldAndRetry(a, proxy):
			go func() {
				l.judgeAndDeliver(c, func() { a.endRead(proxy) }, nil)
			}()
		default: // judged (denied) without reading, at once
			l.judgeAndDeliver(c, nil, ErrProxyBusy)
		}
	}
}

// errNoRead, as judge's refuse, judges a connection where no PROXY header may be read (the
// accepting goroutine): one whose header the policy would read, which a policy set since the
// caller looked may ask for, is denied at once with ErrProxyBusy, as when too many are read.
var errNoRead = errors.New("no header read here")

// yieldAndRetry lets the goroutines reading headers run once before a connection is refused for
// want of a read slot: a burst of connections from a proxy whose headers are all there must not be
// refused only because their readers were not scheduled yet.
func yieldAndRetry(a *asyncAccept, proxy netip.Addr) bool {
	runtime.Gosched()
	return a.startRead(proxy)
}

// judgeAndDeliver judges c (see judge for refuse) and hands it to Accept if it is allowed. read,
// if not nil, is called once the judging is done, before waiting for Accept.
func (l *Listener) judgeAndDeliver(c net.Conn, read func(), refuse error) {
	a := &l.async
	defer func() { <-a.pending }()
	out, pol, ev, ok := l.judgePolicy(c, refuse)
	if read != nil {
		read()
	}
	if !ok {
		return
	}
	ev.Conn = nil
	select {
	case a.ready <- judged{out, pol, ev}:
	case <-l.closed:
		out.Close()
	}
}

// readsHeader reports whether judging c will read a PROXY header (its peer is a trusted proxy),
// and from which proxy address.
func (l *Listener) readsHeader(c net.Conn) (netip.Addr, bool) {
	po := l.policy.Load().opts.Proxy
	if po == nil {
		return netip.Addr{}, false
	}
	p, err := PeerOf(c)
	if err != nil || p.Unix || !po.trusts(p.AddrPort.Addr()) {
		return netip.Addr{}, false
	}
	return p.AddrPort.Addr(), true
}
