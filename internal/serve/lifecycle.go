// Lifecycle: serving every listener, then draining on shutdown (connections, handler process
// groups, listeners).

package serve

import (
	"context"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Serve accepts connections on every listener until Shutdown, and then returns nil.
func (s *Server) Serve() error {
	s.mu.Lock()
	for _, p := range s.ports {
		s.startAccepting(p)
	}
	cs := s.cfg.CrowdSec
	s.mu.Unlock()
	go s.serveAdmin()
	go s.expireBans(s.banDone)
	s.startCrowdSec(cs, s.banDone)
	if s.state != nil {
		go s.state.run(s.banDone)
	}
	s.wg.Wait()
	return nil
}

// killGrace is how long children get between SIGTERM and SIGKILL once the drain deadline passed.
const killGrace = 2 * time.Second

// Shutdown stops accepting, waits for open connections and children to finish until ctx is done,
// then closes the connections and sends SIGTERM to the children that remain (SIGKILL
// after killGrace). Signals go to each handler's process group, so what a handler started ends
// with it; and once the drain is over, the groups of handlers that exited but left processes
// behind (which may hold a client's connection open) get SIGTERM, then SIGKILL.
func (s *Server) Shutdown(ctx context.Context) error {
	defer s.closeAdmin() // last: /healthz says 503 while draining
	defer s.stopBans()
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	s.closeAll()
	defer s.stopLoops() // once the connections are gone
	looped := s.closeLoops()
	s.mu.Lock()
	open := len(s.conns) + looped
	s.mu.Unlock()
	deadline, _ := ctx.Deadline()
	s.log.Info("stopped accepting; draining open connections", "open", open, "deadline", deadline.Format(time.RFC3339))
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		s.signalGroups(syscall.SIGTERM) // only those left behind by handlers that exited
		s.endGroups(time.Now().Add(killGrace))
		return nil
	case <-ctx.Done():
	}
	n := s.closeLoops()
	s.mu.Lock()
	n += len(s.conns)
	for c := range s.conns {
		c.Close()
	}
	for _, l := range s.loops {
		l.Abort()
	}
	s.mu.Unlock()
	s.signalGroups(syscall.SIGTERM)
	s.log.Warn("drain deadline passed; closed the remaining connections", "open", n)
	kill := time.Now().Add(killGrace)
	select {
	case <-done:
	case <-time.After(killGrace):
		s.signalGroups(syscall.SIGKILL)
		<-done
	}
	s.endGroups(kill)
	return ctx.Err()
}

// signalGroups sends sig to the process group of every handler that may still have one.
func (s *Server) signalGroups(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for pgid := range s.groups {
		if reusedPgid(pgid) || unix.Kill(-pgid, sig) == unix.ESRCH {
			delete(s.groups, pgid)
		}
	}
}

// reusedPgid reports whether the process group id of a handler that exited may now be another's:
// its number names a process of another session. The kernel allocates no pid still in use as a
// process group id, so a live process numbered pgid outside this session means the handler's
// group is gone and the number was given again (to a login shell, a service, any group leader
// that a signal here would hit). A handler and its group stay in this session: it leads its
// group, so it cannot call setsid, and its members cannot join a group of another session. When
// no process has the number, the group may live on without its leader, and is the handler's.
func reusedPgid(pgid int) bool {
	sid, err := unix.Getsid(pgid)
	if err != nil {
		return false
	}
	own, err := unix.Getsid(0)
	return err == nil && sid != own
}

// endGroups waits until the handlers' process groups are gone, and at kill sends SIGKILL to
// those that are not.
func (s *Server) endGroups(kill time.Time) {
	for {
		s.signalGroups(0) // forgets the groups that are gone
		s.mu.Lock()
		left := len(s.groups)
		s.mu.Unlock()
		if left == 0 {
			return
		}
		if time.Now().After(kill) {
			s.signalGroups(syscall.SIGKILL)
			return
		}
		time.Sleep(20 * time.Millisecond) // polling: a process group has no descriptor to wait on
	}
}

func (s *Server) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for addr, p := range s.ports {
		close(p.done)
		s.unwatch(p)
		p.ln.Close()
		delete(s.ports, addr)
	}
}
