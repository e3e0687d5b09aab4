// Per-connection handling: an accepted connection is proxied to its upstream or handed to a
// spawned program, and its end is logged.

package serve

import (
	"context"
	"log/slog"
	"net"
	"time"

	"github.com/peergate/peergate/gate"
	"golang.org/x/sys/unix"
)

func (s *Server) handle(c net.Conn, svc *service) {
	defer svc.release()
	defer s.untrack(c)
	defer c.Close() // a *gate.Conn gives back its per-source slot here, after the work below
	svc.m.active.Inc()
	defer svc.m.active.Dec()
	// A *gate.Conn (read from a trusted proxy, or holding a per-source slot) is taken apart so that
	// the copy splices and the child gets the socket; the bytes that came after a PROXY header go
	// to the upstream first.
	raw, early := c, []byte(nil)
	if gc, ok := c.(*gate.Conn); ok {
		early, raw = gc.Detach()
	}
	if tc, ok := raw.(*net.TCPConn); ok && svc.KeepAlive > 0 {
		tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: svc.KeepAlive})
	}
	t0 := time.Now()
	if svc.LogAllowed {
		svc.log.Info("allowed", "peer", c.RemoteAddr().String(), "listen", c.LocalAddr().String())
	}
	if svc.Upstream != "" {
		s.proxy(c, raw, early, svc, t0)
	} else {
		s.spawn(raw, svc, t0)
	}
}

// endLevel is the level of the line that ends a connection's log: Info with log_allowed, which
// logs the start too, Debug otherwise.
func endLevel(svc *service) slog.Level {
	if svc.LogAllowed {
		return slog.LevelInfo
	}
	return slog.LevelDebug
}

// endNames name how a proxied connection ended in the access log (end=...), by end; a clean
// end is client_closed or upstream_closed, after whichever side closed first.
var endNames = [nEnds]string{endIdle: "idle_timeout", endRead: "error", endWrite: "error", endDrain: "drain"}

// proxy connects c to the upstream: raw is the socket beneath c, early the bytes already read
// from it past a PROXY header.
func (s *Server) proxy(c, raw net.Conn, early []byte, svc *service, start time.Time) {
	t0 := time.Now()
	up, err := dialUpstream(context.Background(), svc.Service)
	if err != nil {
		svc.m.upFail.Inc()
		svc.log.Error("upstream connect failed", "peer", c.RemoteAddr().String(), "upstream", svc.Upstream, "err", err)
		c.Close()
		return
	}
	svc.m.upLatency.Observe(time.Since(t0).Seconds())
	if err := sendPreamble(up, svc, c, early); err != nil {
		svc.log.Error("upstream write failed", "peer", c.RemoteAddr().String(), "upstream", svc.Upstream, "err", err)
		up.Close()
		c.Close()
		return
	}
	in, out, why, clientFirst := pipe(raw, up, svc.IdleTimeout)
	in += int64(len(early))
	svc.m.bytesIn.Add(float64(in))
	svc.m.bytesOut.Add(float64(out))
	if why != endDone {
		svc.m.aborts[why].Inc()
	}
	logEnd(svc, c.RemoteAddr().String, start, in, out, why, clientFirst)
}

// logEnd logs the end of a proxied connection, at endLevel: peer is called only when the line is
// logged (making the address's string allocates).
func logEnd(svc *service, peer func() string, start time.Time, in, out int64, why end, clientFirst bool) {
	lvl := endLevel(svc)
	if !svc.log.Enabled(context.Background(), lvl) {
		return
	}
	name := endNames[why]
	if why == endDone {
		name = "upstream_closed"
		if clientFirst {
			name = "client_closed"
		}
	}
	svc.log.Log(context.Background(), lvl, "connection ended", "peer", peer(),
		"duration", time.Since(start).Round(time.Microsecond), "in", in, "out", out, "end", name)
}

func (s *Server) spawn(c net.Conn, svc *service, start time.Time) {
	cmd, err := spawn(c, svc.Service)
	c.Close() // the child has its own copy
	if err != nil {
		svc.log.Error("spawn failed", "peer", c.RemoteAddr().String(), "err", err)
		return
	}
	pgid := cmd.Process.Pid // the child leads a group of its own
	s.mu.Lock()
	s.groups[pgid] = struct{}{}
	s.mu.Unlock()
	err = kids.wait(cmd) // reap
	s.mu.Lock()
	if unix.Kill(-pgid, 0) == unix.ESRCH { // else what it started lives on: signalled at drain
		delete(s.groups, pgid)
	}
	s.mu.Unlock()
	if err != nil {
		svc.log.Warn("handler exited", "peer", c.RemoteAddr().String(), "pid", cmd.Process.Pid, "err", err)
	}
	if lvl := endLevel(svc); svc.log.Enabled(context.Background(), lvl) {
		svc.log.Log(context.Background(), lvl, "connection ended", "peer", c.RemoteAddr().String(),
			"duration", time.Since(start).Round(time.Microsecond), "pid", cmd.Process.Pid, "end", "exited", "status", cmd.ProcessState.ExitCode())
	}
}
