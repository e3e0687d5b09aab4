// Reload: loading the config again and applying it to the running server (ports, slots,
// limiters, bans) without dropping listeners or open connections.

package serve

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/peergate/peergate/acl"
	"github.com/peergate/peergate/gate/limit"
	"github.com/peergate/peergate/internal/config"
)

// Reload reads the config file again and applies it: new rules take effect for the next accepted
// connection, listeners whose address is unchanged stay open, open connections stay up. An
// invalid file changes nothing and its error is returned (and logged).
func (s *Server) Reload() error { return s.ReloadContext(context.Background()) }

// ReloadContext is Reload, cancelled by ctx: a load still reading files when ctx is done stops,
// changes nothing and returns ctx's error.
func (s *Server) ReloadContext(ctx context.Context) error { return s.reload(ctx, false, netip.Addr{}) }

// reload is ReloadContext; force skips the lockout guard (ReloadForce), and a valid keep is an
// address the new config must still let in where the running one does (the admin API's own peer).
func (s *Server) reload(ctx context.Context, force bool, keep netip.Addr) error {
	// One reload at a time, load to apply: SIGHUP and the file watcher may both call Reload, and
	// an older file must never be applied after a newer one.
	s.reloading.Lock()
	defer s.reloading.Unlock()
	Notify(reloading()) // systemd (Type=notify): reloading until READY=1 again
	defer Notify("READY=1")
	cfg, sources, err := config.LoadSources(ctx, s.path, s.src)
	// What this load read, as it was when read, whether the load worked or not: a file that
	// changes after it was read (during the load, too) or that is fixed after it failed, brings
	// another reload.
	s.mu.Lock()
	s.sources = sources
	s.mu.Unlock()
	if s.afterLoad != nil {
		s.afterLoad()
	}
	if err == nil && len(cfg.Services) == 0 {
		err = fmt.Errorf("%s: %w: no services to serve", s.path, config.ErrConfig)
	}
	if err == nil {
		err = servable(cfg)
	}
	if err == nil && !force {
		err = checkGuards(cfg)
	}
	if err == nil && !force && keep.IsValid() {
		s.mu.Lock()
		old := s.cfg
		s.mu.Unlock()
		err = checkKeep(old, cfg, keep)
	}
	if err == nil {
		err = s.apply(cfg)
	}
	if err != nil {
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			s.log.Warn("config reload cancelled; keeping the running config", "file", s.path)
			return err
		}
		s.m.reloads.WithLabelValues("failure").Inc()
		s.log.Error("config reload failed; keeping the running config", "file", s.path, "err", err)
		return err
	}
	s.m.reloads.WithLabelValues("success").Inc()
	s.reconfigureAdmin(cfg.Admin)
	s.log.Info("config reloaded", "file", s.path, "sha256", cfg.Hash[:12], "services", len(cfg.Services))
	// Loading a big list leaves garbage a few times the size of the ACL it built (the file, the
	// parsed rules, the sort): hand it back to the kernel now, not minutes later.
	debug.FreeOSMemory()
	return nil
}

// apply makes cfg the running config. It opens every new listener first, so that a failure (an
// address in use) leaves the running config as it was.
func (s *Server) apply(cfg *config.File) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return errors.New("server is shutting down")
	}
	want, sems, lims, logLims := s.services(cfg)
	for key, svc := range want {
		if svc.KernelFilter != config.FilterOff && svc.KernelFilter != config.FilterAuto {
			if err := filterFits(addrOf(key), svc); err != nil {
				return filterError(cfg, svc, err)
			}
		}
	}
	opened, err := s.openPorts(cfg, want)
	if err != nil {
		return err
	}
	s.swapPorts(want, opened)
	for _, c := range cfg.Services {
		logLims[c.Name].setRate(c.LogRate)
	}
	s.applyBans(cfg)
	s.autos = map[string]*autoBan{}
	for _, svc := range want {
		if svc.ab != nil {
			s.autos[svc.Name] = svc.ab
		}
	}
	s.cfg, s.sems, s.lims, s.logLims, s.sources, s.loaded = cfg, sems, lims, logLims, cfg.Sources, time.Now()
	s.m.loaded(cfg)
	s.src.Retain(cfg.Remotes)
	return nil
}

// services builds the services of cfg, by portKey, with their max_conns slots, per-source
// limiters and log_rate limiters by service name: those of the running config are kept where cfg
// does not change them (a reload frees no slot, refills no bucket). It changes nothing in s.
func (s *Server) services(cfg *config.File) (want map[string]*service, sems map[string]chan struct{}, lims map[string]*limit.Limiter, logLims map[string]*logLimit) {
	want = map[string]*service{}
	sems = map[string]chan struct{}{}
	lims = map[string]*limit.Limiter{}
	logLims = map[string]*logLimit{}
	for _, c := range cfg.Services {
		sem := s.sems[c.Name]
		if c.MaxConns == 0 {
			sem = nil
		} else if sem == nil || cap(sem) != c.MaxConns {
			sem = make(chan struct{}, c.MaxConns)
		}
		sems[c.Name] = sem
		lims[c.Name] = limiter(s.lims[c.Name], c)
		ll := s.logLims[c.Name] // kept across reloads: a reload does not refill the bucket
		if ll == nil {
			ll = &logLimit{}
			ll.setRate(c.LogRate)
		}
		logLims[c.Name] = ll // an existing one gets its new rate in apply, once nothing can fail
		svc := &service{c, sem, lims[c.Name], limitedLog(s.log, ll, c.Name), s.m.service(c.Name), s.bans, nil}
		if c.BanAfter != nil {
			if svc.ab = s.autos[c.Name]; svc.ab == nil || !svc.ab.same(c) {
				svc.ab = newAutoBan(c, s.banner.add)
			}
		}
		for i, a := range c.Listen {
			want[portKey(c.Name, a, i)] = svc
		}
	}
	return want, sems, lims, logLims
}

// openPorts opens the listeners of want that s does not have yet, by portKey. On a failure it
// closes those it opened and returns the error.
func (s *Server) openPorts(cfg *config.File, want map[string]*service) (map[string]*port, error) {
	opened := map[string]*port{}
	for key, svc := range want {
		if _, ok := s.ports[key]; ok {
			continue
		}
		addr := addrOf(key)
		g, err := s.openPort(cfg, addr, svc)
		if err != nil {
			for _, p := range opened {
				p.ln.Close()
			}
			if _, ok := err.(*acl.PosError); ok {
				return nil, err
			}
			return nil, fmt.Errorf("service %s: %w", svc.Name, err)
		}
		opened[key] = &port{addr: addr, ln: g, done: make(chan struct{})}
	}
	return opened, nil
}

// openPort opens the listener of addr for svc (a socket systemd passed, or else a new one), sets
// its Unix socket permissions, and puts the gate in front of it.
func (s *Server) openPort(cfg *config.File, addr string, svc *service) (gated, error) {
	ln, ok, err := s.act.take(addr, s.log) // a socket systemd passed, or else a new one
	if !ok && err == nil {
		ln, err = listen(addr)
	}
	if perm, set := svc.UnixPerms[addr]; set && err == nil {
		if err = applyPerm(addr, perm); err != nil {
			ln.Close()
		}
	}
	var g gated
	if err == nil && wrapListener != nil {
		ln = wrapListener(ln)
	}
	if err == nil {
		if g, err = newGate(ln, svc, s.log, &s.kf); err != nil {
			ln.Close()
			err = filterError(cfg, svc, err)
		}
	}
	return g, err
}

// swapPorts gives each kept port its new service, closes the ports want no longer has, and adds
// the opened ones (accepting on them at once when the server is running).
func (s *Server) swapPorts(want map[string]*service, opened map[string]*port) {
	for key, p := range s.ports {
		if svc, ok := want[key]; ok {
			if err := p.ln.Configure(svc); err != nil {
				// The ACL fitted (checked in apply) but the kernel refused it: the gate still judges.
				s.log.Error("kernel filter lost on reload; the gate alone judges", "err", err)
			}
			p.svc.Store(svc)
		} else {
			close(p.done)
			s.unwatch(p)
			p.ln.Close()
			delete(s.ports, key)
		}
	}
	for key, p := range opened {
		p.svc.Store(want[key])
		s.ports[key] = p
		if s.cfg != nil { // running: start serving now; at startup Serve starts them all
			s.startAccepting(p)
		}
	}
}

// RefreshSources refreshes the url includes of the running config on their timers (checking
// every tick which are due) until ctx is done; a refresh that brings a changed list reloads the
// config through ReloadContext, one reload at a time as for SIGHUP.
func (s *Server) RefreshSources(ctx context.Context, tick time.Duration) {
	s.src.Run(ctx, tick, s.ReloadContext)
}

// portKey is the key of a listen entry in Server.ports: its address, which a reload that keeps
// it finds again; but a TCP entry on port 0 (a port the kernel picks) is one listener per entry,
// so two such entries, in one service or two, do not share a listener.
func portKey(service, addr string, i int) string {
	if _, port, err := net.SplitHostPort(addr); err == nil && port == "0" && !strings.HasPrefix(addr, "unix:") {
		return addr + "\x00" + service + "\x00" + strconv.Itoa(i)
	}
	return addr
}

// addrOf returns the listen address of a portKey.
func addrOf(key string) string {
	addr, _, _ := strings.Cut(key, "\x00")
	return addr
}

// filterError places a kernel_filter failure at the line of the config that asked for it.
func filterError(cfg *config.File, svc *service, err error) error {
	return &acl.PosError{File: cfg.Path, Line: svc.FilterLine, Value: svc.KernelFilter,
		Err: fmt.Errorf("service %s: %w", svc.Name, err)}
}
