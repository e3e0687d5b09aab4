package gate

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
)

// asyncAccept is the accept path of a Listener that reads PROXY headers. One goroutine accepts;
// each connection from a trusted proxy is judged in a goroutine of its own, so a proxy slow to
// send its header holds up only its own connection (others, which need no read, are judged by the
// accepting goroutine); allowed connections reach Accept through a channel. At most
// MaxPending connections are between the inner Accept and ours at a time.
type asyncAccept struct {
	once    sync.Once
	started atomic.Bool
	ready   chan net.Conn
	errs    chan error    // passing errors of the inner Accept
	done    chan struct{} // closed when the accepting goroutine has stopped; err says why
	err     error
	pending chan struct{} // one token per connection accepted and not yet returned
}

func (l *Listener) acceptAsync() (net.Conn, error) {
	a := &l.async
	a.once.Do(func() {
		a.ready = make(chan net.Conn)
		a.errs = make(chan error)
		a.done = make(chan struct{})
		a.pending = make(chan struct{}, MaxPending)
		a.started.Store(true)
		go l.pump()
	})
	select {
	case c := <-a.ready:
		return c, nil
	case err := <-a.errs:
		return nil, err
	case <-a.done:
		return nil, a.err
	}
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
		if l.readsHeader(c) {
			go l.judgeAndDeliver(c)
		} else { // nothing to wait for: judge here and save a goroutine's hand-off
			l.judgeAndDeliver(c)
		}
	}
}

// judgeAndDeliver judges c and hands it to Accept if it is allowed.
func (l *Listener) judgeAndDeliver(c net.Conn) {
	a := &l.async
	defer func() { <-a.pending }()
	out, ok := l.judge(c)
	if !ok {
		return
	}
	select {
	case a.ready <- out:
	case <-l.closed:
		out.Close()
	}
}

// readsHeader reports whether judging c will read a PROXY header (its peer is a trusted proxy).
func (l *Listener) readsHeader(c net.Conn) bool {
	po := l.opts.Load().Proxy
	if po == nil {
		return false
	}
	p, err := PeerOf(c)
	return err == nil && !p.Unix && po.trusts(p.AddrPort.Addr())
}
