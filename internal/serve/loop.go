// The event-loop path: TCP listeners watched by the event loops of package evloop, which accept
// through the gate without making a net.Conn (gate.Listener.AcceptFD) and proxy plain TCP
// connections with their own system calls. What a loop does not proxy itself (a spawned handler,
// a PROXY header toward the upstream, an upstream named by host name or a Unix socket, a
// connection that must wait for a max_conns slot after a reload) is made a net.Conn and handled
// by a goroutine as on the goroutine path; a listener whose policy reads PROXY headers goes back
// to the goroutine path for good.

package serve

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/peergate/peergate/gate"
	"github.com/peergate/peergate/internal/config"
	"github.com/peergate/peergate/internal/evloop"
	"golang.org/x/sys/unix"
)

// useLoops is false where there are no event loops, and with PEERGATE_EVENT_LOOPS=0: then every
// listener is on the goroutine path.
var useLoops = evloop.Available && os.Getenv("PEERGATE_EVENT_LOOPS") != "0"

// numLoops is how many event loops a server runs: PEERGATE_EVENT_LOOPS when it is a number from
// 1 to 64, else one per CPU that Go may use, up to 4.
func numLoops() int {
	if n, err := strconv.Atoi(os.Getenv("PEERGATE_EVENT_LOOPS")); err == nil && n >= 1 && n <= 64 {
		return n
	}
	return min(runtime.GOMAXPROCS(0), 4)
}

// acceptBatch is the most connections a loop accepts from one listener before it serves others.
const acceptBatch = 64

// loopable reports whether p's listener can be watched by the event loops.
func (s *Server) loopable(p *port) bool {
	g, ok := p.ln.(*gateListener)
	return useLoops && !s.noLoops && ok && g.rc != nil && len(p.svc.Load().TrustedProxies) == 0
}

// watch has every event loop watch p's listener, starting the loops on first use. Under s.mu.
func (s *Server) watch(p *port) bool {
	if s.loops == nil {
		for range numLoops() {
			l, err := evloop.New()
			if err != nil {
				s.log.Warn("no event loop; connections are accepted by goroutines", "err", err)
				for _, l := range s.loops {
					l.Stop()
				}
				s.loops, s.noLoops = nil, true
				return false
			}
			l.SetRawWaits(!s.goPorts && !s.goConns.Load())
			s.loops = append(s.loops, l)
			go l.Run()
		}
		s.loopMu.Lock()
		if !s.loopClosing && !s.loopsHeld { // Serve returns once the drain is over, not before
			s.loopsHeld = true
			s.wg.Add(1)
		}
		s.loopMu.Unlock()
	}
	g := p.ln.(*gateListener)
	for _, l := range s.loops {
		lp := &loopPort{s: s, p: p}
		p.watches = append(p.watches, l.Watch(g.rc, lp.ready))
	}
	return true
}

// unwatch stops the loops watching p's listener, before it is closed. Under s.mu.
func (s *Server) unwatch(p *port) {
	for _, w := range p.watches {
		w.Close()
	}
	p.watches = nil
}

// stopLoops stops the event loops once the drain is over.
func (s *Server) stopLoops() {
	s.mu.Lock()
	loops := s.loops
	s.loops = nil
	s.mu.Unlock()
	for _, l := range loops {
		l.Stop()
		<-l.Done()
	}
}

// toGoroutines moves p from the loops to the goroutine path: its policy now reads PROXY headers.
func (s *Server) toGoroutines(p *port) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p.goMode || s.closing {
		return
	}
	p.goMode = true
	s.unwatch(p)
	s.startGoroutines(p)
}

// loopPort is one loop's watch of a port, with the max_conns slot it holds, within one ready
// call, for its next accept.
type loopPort struct {
	s    *Server
	p    *port
	held *service // whose slot is held; nil: none
	wait time.Duration
}

// ready accepts the connections queued on the port, on the loop's thread.
func (lp *loopPort) ready(w *evloop.Watch) bool {
	s, p := lp.s, lp.p
	defer lp.drop()
	for range acceptBatch {
		// As on the goroutine path, a max_conns slot is taken before the accept: clients over
		// the cap wait in the backlog, while a goroutine waits for a slot and then resumes.
		pre := p.svc.Load()
		if lp.held != pre {
			lp.drop()
			if pre.sem != nil {
				select {
				case pre.sem <- struct{}{}:
				default:
					w.Pause()
					go lp.waitSlot(w, pre)
					return true
				}
			}
			lp.held = pre
		}
		sock, ok, err := p.ln.AcceptFD()
		switch {
		case err == nil && !ok:
			continue // denied and closed; the slot serves the next one
		case err == nil:
			lp.held = nil // the connection's now
			s.loopConn(p, w.Loop(), sock, pre)
			lp.wait = 0
			continue
		case errors.Is(err, gate.ErrNotQueued):
			return true
		case errors.Is(err, gate.ErrNeedsConn):
			lp.drop()
			go s.toGoroutines(p)
			return false
		}
		select {
		case <-p.done:
			return false
		default:
		}
		if errors.Is(err, net.ErrClosed) {
			return false
		}
		// Out of descriptors or another passing failure: back off rather than spin, like net/http.
		lp.wait = min(max(2*lp.wait, 5*time.Millisecond), time.Second)
		s.log.Warn("accept failed; backing off", "listen", p.addr, "err", err, "wait", lp.wait)
		w.Pause()
		time.AfterFunc(lp.wait, func() { w.Loop().Do(func() { w.Resume() }) })
		return true
	}
	return true
}

// drop gives back the slot lp holds.
func (lp *loopPort) drop() {
	if lp.held != nil {
		lp.held.release()
		lp.held = nil
	}
}

// waitSlot waits until a max_conns slot of svc is free, then resumes the paused watch, which
// takes a slot again before it accepts. (Holding the slot through the resume could keep it from
// every loop: a resumed watch is called only when a connection is queued, and EPOLLEXCLUSIVE may
// give that connection to another loop.)
func (lp *loopPort) waitSlot(w *evloop.Watch, svc *service) {
	select {
	case svc.sem <- struct{}{}:
		svc.release()
	case <-lp.p.done:
		return
	}
	w.Loop().Do(func() { w.Resume() })
}

// loopConn hands on a connection the gate let in: proxied by the loop, or else made a net.Conn
// and handled by a goroutine. It holds a slot of pre's max_conns (when it has one).
func (s *Server) loopConn(p *port, loop *evloop.Loop, sock gate.Socket, pre *service) {
	svc, _ := sock.Tag.(*service)
	up, ok := loopUpstream(svc)
	if ok && svc != pre && svc.sem != pre.sem {
		if svc.sem != nil {
			ok = false // a slot of another cap, which may take waiting: swapSlot's
		} else {
			pre.release()
		}
	}
	if !ok {
		s.goConn(p, sock, pre, svc)
		return
	}
	if !s.trackLoop() {
		unix.Close(sock.FD)
		sock.Release()
		svc.release()
		return
	}
	up.SpliceToClient = spliceLocal || !sock.Peer.AddrPort.Addr().IsLoopback()
	h := &loopConn{s: s, svc: svc, sock: sock, start: time.Now()}
	svc.m.active.Inc()
	if svc.LogAllowed {
		svc.log.Info("allowed", "peer", sock.Peer.String(), "listen", sockName(sock.FD, p))
	}
	loop.Proxy(sock.FD, up, h)
}

// sockName is the local address of the connected socket fd, as net.Conn's LocalAddr shows it:
// on a wildcard listener, the address the client connected to (else the listener's).
func sockName(fd int, p *port) string {
	sa, _ := unix.Getsockname(fd)
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port)).String()
	case *unix.SockaddrInet6:
		return (&net.TCPAddr{IP: sa.Addr[:], Port: sa.Port, Zone: zoneName(sa.ZoneId)}).String()
	}
	return p.ln.Addr().String()
}

func zoneName(id uint32) string {
	if id == 0 {
		return ""
	}
	if ifi, err := net.InterfaceByIndex(int(id)); err == nil {
		return ifi.Name
	}
	return ""
}

// loopUpstream is where a loop proxies svc's connections to: ok only when a loop can (a TCP
// upstream given by address, no PROXY header to send).
func loopUpstream(svc *service) (evloop.Upstream, bool) {
	if svc == nil || svc.Upstream == "" || svc.SendProxy != "" {
		return evloop.Upstream{}, false
	}
	if _, unix := config.UnixPath(svc.Upstream); unix {
		return evloop.Upstream{}, false
	}
	a, err := netip.ParseAddrPort(svc.Upstream)
	if err != nil {
		return evloop.Upstream{}, false // a host name: net's dialer resolves it
	}
	return evloop.Upstream{Addr: a, ConnectTimeout: svc.ConnectTimeout, IdleTimeout: svc.IdleTimeout,
		KeepAlive: svc.KeepAlive, SpliceToUpstream: spliceLocal || !a.Addr().Unmap().IsLoopback()}, true
}

// goConn hands a connection the loop does not proxy to a goroutine, as the goroutine path would.
// From then on goroutines do network I/O in this process: the loops hand their Ps back on every
// wait (see SetRawWaits).
func (s *Server) goConn(p *port, sock gate.Socket, pre, svc *service) {
	c, err := fileConn(sock.FD)
	if err != nil {
		s.log.Error("connection not handed on", "peer", sock.Peer.String(), "err", err)
		sock.Release()
		pre.release()
		return
	}
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetKeepAlive(false) // net.FileConn turns on its default; handle sets the service's
	}
	s.goroutinesToo()
	go func() {
		defer sock.Release()
		if svc != pre {
			if svc = s.swapSlot(c, pre, svc, p.done, p.svc.Load); svc == nil {
				return
			}
		}
		if !s.track(c) {
			c.Close()
			svc.release()
			return
		}
		s.handle(c, svc)
	}()
}

// goroutinesToo turns the loops' raw waits off once goroutines do network I/O too (see
// evloop.Loop.SetRawWaits).
func (s *Server) goroutinesToo() {
	if s.goConns.Load() {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.goConns.Store(true)
	for _, l := range s.loops {
		l.SetRawWaits(false)
	}
}

// trackLoop counts a connection a loop proxies, for drain; it fails once shutdown has begun.
// Not under s.mu, which a reload holds for as long as it loads kernel filters: the loop would
// stand still meanwhile, with every connection on it.
func (s *Server) trackLoop() bool {
	s.loopMu.Lock()
	defer s.loopMu.Unlock()
	if s.loopClosing {
		return false
	}
	s.loopConns++
	s.wg.Add(1)
	return true
}

func (s *Server) untrackLoop() {
	s.loopMu.Lock()
	s.loopConns--
	s.loopMu.Unlock()
	s.wg.Done()
}

// closeLoops refuses the loops new connections (Shutdown), and gives back the Server's own
// count in its WaitGroup that the running loops held, so that Serve returns once the drain is
// over, as it does when its accept goroutines end. It returns the connections the loops proxy.
func (s *Server) closeLoops() int {
	s.loopMu.Lock()
	defer s.loopMu.Unlock()
	if !s.loopClosing {
		s.loopClosing = true
		if s.loopsHeld {
			s.loopsHeld = false
			s.wg.Done()
		}
	}
	return s.loopConns
}

// loopConn is the evloop.Handler of one proxied connection: metrics, logs, slots.
type loopConn struct {
	s     *Server
	svc   *service
	sock  gate.Socket
	start time.Time
}

func (h *loopConn) Connected(took time.Duration) { h.svc.m.upLatency.Observe(took.Seconds()) }

func (h *loopConn) Failed(err error) {
	if errors.Is(err, evloop.ErrAborted) { // the drain deadline came before the upstream accepted
		h.svc.m.aborts[endDrain].Inc()
		logEnd(h.svc, h.sock.Peer.String, h.start, 0, 0, endDrain, false)
	} else {
		h.svc.m.upFail.Inc()
		h.svc.log.Error("upstream connect failed", "peer", h.sock.Peer.String(), "upstream", h.svc.Upstream, "err", err)
	}
	h.done()
}

func (h *loopConn) Ended(e evloop.End) {
	svc := h.svc
	svc.m.bytesIn.Add(float64(e.In))
	svc.m.bytesOut.Add(float64(e.Out))
	if e.Why != endDone {
		svc.m.aborts[e.Why].Inc()
	}
	logEnd(svc, h.sock.Peer.String, h.start, e.In, e.Out, e.Why, e.ClientFirst)
	h.done()
}

func (h *loopConn) done() {
	h.svc.m.active.Dec()
	h.sock.Release()
	h.svc.release()
	h.s.untrackLoop()
}

// fileConn makes a net.Conn of a connected socket, and closes fd (net keeps a copy).
func fileConn(fd int) (net.Conn, error) {
	f := os.NewFile(uintptr(fd), "")
	defer f.Close()
	return net.FileConn(f)
}

// loopsState is what a Server keeps of its event loops.
type loopsState struct {
	// Under the Server's mu:
	loops   []*evloop.Loop
	goPorts bool // some port is on the goroutine path: loops give up their P on every wait
	noLoops bool // no event loop could be made: every port is on the goroutine path

	goConns atomic.Bool // a loop handed a connection to a goroutine: loops give up their P too

	loopMu      sync.Mutex // guards what follows
	loopConns   int        // connections the loops proxy, open
	loopClosing bool       // shutdown has begun: no more
	loopsHeld   bool       // the running loops hold one count of the Server's WaitGroup
}
