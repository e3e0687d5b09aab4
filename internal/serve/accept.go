// Listeners and their accept loops: opening a listen address, taking a max_conns slot before
// Accept, moving it to the service that admitted the connection, tracking connections for drain.

package serve

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"github.com/peergate/peergate/internal/config"
)

// wrapListener, when set (by tests), wraps each listener apply opens before the gate guards it.
var wrapListener func(net.Listener) net.Listener

func listen(addr string) (net.Listener, error) {
	if path, ok := config.UnixPath(addr); ok {
		return listenUnix(path)
	}
	// Plain TCP, not the MPTCP that Go picks by default where the kernel has it: the kernel takes no
	// socket filter on an MPTCP socket, and HAProxy and nginx listen with plain TCP too.
	// No keep-alive setup at accept: a denied peer would pay four setsockopt calls for nothing.
	// handle turns keep-alive on for the connections that are let in, where the config asks.
	lc := net.ListenConfig{KeepAlive: -1}
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	return ln, bindHint(addr, err)
}

// ErrPrivilegedPort marks a refused bind to a port below 1024.
var ErrPrivilegedPort = errors.New("ports below 1024 need root or CAP_NET_BIND_SERVICE")

// bindHint adds to a bind refused with EACCES on a port below 1024 how to grant the capability.
func bindHint(addr string, err error) error {
	if err == nil || !errors.Is(err, syscall.EACCES) {
		return err
	}
	_, p, _ := net.SplitHostPort(addr)
	if port, perr := strconv.Atoi(p); perr != nil || port == 0 || port >= 1024 {
		return err
	}
	exe, xerr := os.Executable()
	if xerr != nil {
		exe = "/path/to/peergate"
	}
	return fmt.Errorf("%w: %w: run `setcap cap_net_bind_service=+ep %s`, or in its systemd unit set AmbientCapabilities=CAP_NET_BIND_SERVICE", err, ErrPrivilegedPort, exe)
}

// startAccepting has the event loops watch p's listener where they can, and otherwise starts its
// accept goroutines. Under s.mu.
func (s *Server) startAccepting(p *port) {
	if s.loopable(p) && s.watch(p) {
		return
	}
	p.goMode = true
	s.startGoroutines(p)
}

// startGoroutines starts the accept goroutines of p: one a CPU that Go may use, up to 4, so that
// judging (and, under a flood, closing) denied peers on one core does not hold up the next
// accept. Under s.mu.
func (s *Server) startGoroutines(p *port) {
	if !s.goPorts {
		s.goPorts = true // goroutines with network I/O of their own: loops must not keep the Ps
		for _, l := range s.loops {
			l.SetRawWaits(false)
		}
	}
	for range min(runtime.GOMAXPROCS(0), 4) {
		s.wg.Add(1)
		go s.accept(p)
	}
}

func (s *Server) accept(p *port) {
	defer s.wg.Done()
	var backoff time.Duration
	for {
		// A max_conns slot is taken before Accept, so that clients over the cap wait in the
		// backlog; but the connection goes to the service whose policy the gate judged it by,
		// which a reload may have changed while Accept waited.
		pre := p.svc.Load()
		if pre.sem != nil {
			select {
			case pre.sem <- struct{}{}:
			case <-p.done:
				return
			}
		}
		c, tag, err := p.ln.AcceptTag()
		svc, _ := tag.(*service)
		if err == nil && svc != pre {
			svc = s.swapSlot(c, pre, svc, p.done, p.svc.Load)
			if svc == nil {
				continue
			}
		}
		if err != nil {
			pre.release()
			select {
			case <-p.done:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of fds or another passing failure: back off rather than spin, like net/http.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("accept failed; backing off", "listen", p.addr, "err", err, "wait", backoff)
			select {
			case <-time.After(backoff):
			case <-p.done:
				return
			}
			continue
		}
		backoff = 0
		if !s.track(c) {
			c.Close()
			svc.release()
			return
		}
		go s.handle(c, svc)
	}
}

// swapSlot moves the max_conns slot that the accept loop took for pre to svc, the service whose
// policy admitted c, and returns svc. It returns nil after closing c when there is no such
// service (fail closed) or the port closed while it waited for a slot.
//
// Waiting for a slot of svc's cap can take as long as a connection lasts, and what changed
// meanwhile must apply to c as it would have in the backlog: when it had to wait, c is closed
// (and nil returned) once it has the slot if the port's service is no longer svc (another
// reload: the client connects again and is judged by the policy of now) or a ban now covers its
// peer. now returns the port's service of now. (Not without a wait: a reload sets the gate's
// policy a moment before the port's service, and a connection judged in between is current.)
func (s *Server) swapSlot(c net.Conn, pre, svc *service, done <-chan struct{}, now func() *service) *service {
	if svc == nil {
		s.log.Error("connection admitted by no service; closed", "peer", c.RemoteAddr().String())
		c.Close()
		pre.release()
		return nil
	}
	if svc.sem == pre.sem { // the same cap, kept across the reload
		return svc
	}
	pre.release()
	if svc.sem == nil {
		return svc
	}
	select {
	case svc.sem <- struct{}{}:
		return svc // a slot at once: c was judged just now
	default:
	}
	if slotWaitHook != nil {
		slotWaitHook()
	}
	select {
	case svc.sem <- struct{}{}:
	case <-done:
		c.Close()
		return nil
	}
	if why := s.staleAfterSwap(c, svc, now); why != "" {
		s.log.Info("connection closed after it waited for a max_conns slot", "peer", c.RemoteAddr().String(), "why", why)
		svc.release()
		c.Close()
		return nil
	}
	return svc
}

// slotWaitHook, set by tests, is called when swapSlot is about to wait for a slot.
var slotWaitHook func()

// staleAfterSwap says why c, admitted by svc, may no longer be handed on: "reloaded" when the
// port's service of now is another, "banned" when a ban covers its peer; "" when neither.
func (s *Server) staleAfterSwap(c net.Conn, svc *service, now func() *service) string {
	if now() != svc {
		return "reloaded"
	}
	if s.bans != nil {
		if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
			if _, banned := s.bans.Banned(a.AddrPort().Addr().Unmap()); banned {
				return "banned"
			}
		}
	}
	return ""
}

func (svc *service) release() {
	if svc.sem != nil {
		<-svc.sem
	}
}

// track registers an open connection for drain; it fails once shutdown has begun.
func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}
