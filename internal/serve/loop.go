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
	"time"

	"github.com/peergate/peergate/gate"
	"github.com/peergate/peergate/internal/config"
	"github.com/peergate/peergate/internal/evloop"
	"golang.org/x/sys/unix"
)

// useLoops, cleared by tests and by PEERGATE_EVENT_LOOPS=0, puts every listener on the
// goroutine path.
var useLoops = evloop.Available && os.Getenv("PEERGATE_EVENT_LOOPS") != "0"

// numLoops is how many event loops a server runs: one per CPU that Go may use, up to 4.
func numLoops() int { return min(runtime.GOMAXPROCS(0), 4) }

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
			l.SetRawWaits(!s.goPorts)
			s.loops = append(s.loops, l)
			go l.Run()
		}
	}
	g := p.ln.(*gateListener)
	for _, l := range s.loops {
		lp := &loopPort{s: s, p: p}
		p.watches = append(p.watches, l.Watch(g.rc, lp.ready))
	}
	return true
}

// unwatch stops the loops watching p's listener (being closed). Under s.mu.
func (s *Server) unwatch(p *port) {
	for _, w := range p.watches {
		w.Loop().Do(w.Remove)
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

// loopPort is one loop's watch of a port, with the max_conns slot it holds for the next accept.
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
		time.AfterFunc(lp.wait, func() { w.Loop().Do(w.Resume) })
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

// waitSlot waits for a max_conns slot of svc, then resumes the paused watch holding it.
func (lp *loopPort) waitSlot(w *evloop.Watch, svc *service) {
	select {
	case svc.sem <- struct{}{}:
	case <-lp.p.done:
		return
	}
	w.Loop().Do(func() {
		lp.drop()
		lp.held = svc
		w.Resume()
	})
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
		svc.log.Info("allowed", "peer", sock.Peer.String(), "listen", p.ln.Addr().String())
	}
	loop.Proxy(sock.FD, up, h)
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
func (s *Server) goConn(p *port, sock gate.Socket, pre, svc *service) {
	c, err := fileConn(sock.FD)
	if err != nil {
		s.log.Error("connection not handed on", "peer", sock.Peer.String(), "err", err)
		sock.Release()
		pre.release()
		return
	}
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

// trackLoop counts a connection a loop proxies, for drain; it fails once shutdown has begun.
func (s *Server) trackLoop() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.loopConns++
	s.wg.Add(1)
	return true
}

func (s *Server) untrackLoop() {
	s.mu.Lock()
	s.loopConns--
	s.mu.Unlock()
	s.wg.Done()
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
	h.svc.m.upFail.Inc()
	h.svc.log.Error("upstream connect failed", "peer", h.sock.Peer.String(), "upstream", h.svc.Upstream, "err", err)
	h.done()
}

// loopEnds are the ends of package serve by evloop.Why.
var loopEnds = [...]end{evloop.Done: endDone, evloop.Idle: endIdle, evloop.Read: endRead, evloop.Write: endWrite, evloop.Drain: endDrain}

func (h *loopConn) Ended(e evloop.End) {
	svc := h.svc
	svc.m.bytesIn.Add(float64(e.In))
	svc.m.bytesOut.Add(float64(e.Out))
	why := loopEnds[e.Why]
	if why != endDone {
		svc.m.aborts[why].Inc()
	}
	logEnd(svc, h.sock.Peer.String, h.start, e.In, e.Out, why, e.ClientFirst)
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

// loopsState is what a Server keeps of its event loops, under its mu.
type loopsState struct {
	loops     []*evloop.Loop
	loopConns int  // connections the loops proxy, open
	goPorts   bool // some port is on the goroutine path: loops give up their P on every wait
	noLoops   bool // no event loop could be made: every port is on the goroutine path
}
