// Package serve runs the services of a peergate config file: listeners guarded by package gate,
// whose allowed connections are proxied to an upstream or handed to a spawned program. It reloads
// the config without dropping listeners or open connections, and drains on shutdown.
package serve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/peergate/peergate/acl"
	"github.com/peergate/peergate/gate"
	"github.com/peergate/peergate/gate/bans"
	"github.com/peergate/peergate/gate/limit"
	"github.com/peergate/peergate/internal/conf"
	"github.com/peergate/peergate/internal/config"
	"github.com/peergate/peergate/internal/sources"
	"golang.org/x/sys/unix"
)

// Server runs the services of one config file.
type Server struct {
	path string
	log  *slog.Logger

	reloading sync.Mutex // held through a whole Reload
	mu        sync.Mutex
	cfg       *config.File
	ports     map[string]*port          // by listen address, kept across reloads
	sems      map[string]chan struct{}  // max_conns slots, by service name
	lims      map[string]*limit.Limiter // per-source limits, by service name
	logLims   map[string]*logLimit      // log_rate limiters, by service name
	conns     map[net.Conn]struct{}
	groups    map[int]struct{} // process groups of handlers, while they may have members
	sources   []acl.Source     // what Watch polls: every file the last load read or tried to read
	afterLoad func()           // tests: called by Reload between load and apply
	closing   bool
	wg        sync.WaitGroup // accept loops, connections and children
	loaded    time.Time      // when cfg was loaded
	m         *metrics
	admin     *admin      // nil: no admin listener
	act       *activation // the sockets systemd passed (socket activation); nil: none

	bans     *bans.Table   // the ban layer of every service
	banDone  chan struct{} // closed by Shutdown: stops the ban goroutines
	bansOnce sync.Once
	state    *stateStore // nil: no state_dir
	banner   *banner
	reporter *reporter           // crowdsec.report; nil: off
	autos    map[string]*autoBan // by service name, kept across reloads

	src *sources.Manager // url includes: fetched, cached in state_dir, refreshed
}

// port is one listening address and the service it currently serves.
type port struct {
	addr string
	ln   gated
	svc  atomic.Pointer[service]
	done chan struct{}
}

// service is a config.Service with its connection slots, per-source limiter and metrics.
type service struct {
	*config.Service
	sem chan struct{}  // nil: no cap
	lim *limit.Limiter // nil: no per-source limits
	log *slog.Logger   // for lines about one connection: under log_rate, with the service's name
	m   *svcMetrics
	ban *bans.Table // the server's ban layer
	ab  *autoBan    // ban_after; nil: none
}

// decided is the gate's OnDecision: metrics, then auto-ban counting.
func (svc *service) decided(ev gate.Event) {
	svc.m.decided(ev)
	if svc.ab != nil {
		svc.ab.observe(ev)
	}
}

// New loads the config at path and opens its listeners. Nothing is served until Serve.
func New(path string, log *slog.Logger) (*Server, error) {
	m := newMetrics()
	src := sources.New(log, m.reg)
	cfg, _, err := config.LoadSources(context.Background(), path, src)
	if err != nil {
		return nil, err
	}
	cfg.DropSpecs() // the server judges with the compiled ACLs alone
	if len(cfg.Services) == 0 {
		return nil, fmt.Errorf("%s: %w: no services to serve", path, config.ErrConfig)
	}
	if err := unbuilt(cfg); err != nil {
		return nil, err
	}
	s := &Server{path: path, log: log, ports: map[string]*port{}, sems: map[string]chan struct{}{}, lims: map[string]*limit.Limiter{}, logLims: map[string]*logLimit{},
		conns: map[net.Conn]struct{}{}, groups: map[int]struct{}{}, m: m, src: src,
		bans: bans.New(bans.Config{Max: cfg.MaxBans, Guard: guardOf(cfg)}), banDone: make(chan struct{})}
	s.m.watchBans(s.bans)
	s.reporter = s.startReporter(cfg.CrowdSec, s.banDone) // before the banner, which reads it
	s.banner = newBanner(s, s.banDone)
	if err := s.startBans(cfg); err != nil {
		return nil, err
	}
	s.m.reg.MustRegister(kernelCollector{s})
	if s.act, err = inheritSockets(log); err != nil {
		return nil, err
	}
	if err := s.apply(cfg); err != nil {
		s.closeAll()
		return nil, err
	}
	s.mu.Lock()
	s.act.closeUnused(log)
	s.mu.Unlock()
	if cfg.Admin != nil {
		a, err := s.newAdmin(cfg.Admin)
		if err != nil {
			s.closeAll()
			return nil, err
		}
		s.admin = a
	}
	debug.FreeOSMemory() // see Reload
	return s, nil
}

// Addrs returns the addresses the server listens on, by service name, as the kernel reports them
// (so a ":0" in the config shows its real port).
func (s *Server) Addrs() map[string][]net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string][]net.Addr{}
	for _, p := range s.ports {
		name := p.svc.Load().Name
		out[name] = append(out[name], p.ln.Addr())
	}
	return out
}

// DrainTimeout returns the running config's drain_timeout.
func (s *Server) DrainTimeout() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg.DrainTimeout
}

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
	if err == nil {
		cfg.DropSpecs()
	}
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
		err = unbuilt(cfg)
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
	want := map[string]*service{}
	sems := map[string]chan struct{}{}
	lims := map[string]*limit.Limiter{}
	logLims := map[string]*logLimit{}
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
		logLims[c.Name] = ll // an existing one gets its new rate below, once nothing can fail
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
	for key, svc := range want {
		if svc.KernelFilter != config.FilterOff && svc.KernelFilter != config.FilterAuto {
			if err := filterFits(addrOf(key), svc); err != nil {
				return filterError(cfg, svc, err)
			}
		}
	}
	opened := map[string]*port{}
	for key, svc := range want {
		if _, ok := s.ports[key]; ok {
			continue
		}
		addr := addrOf(key)
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
			if g, err = newGate(ln, svc, s.log); err != nil {
				ln.Close()
				err = filterError(cfg, svc, err)
			}
		}
		if err != nil {
			for _, p := range opened {
				p.ln.Close()
			}
			if _, ok := err.(*conf.PosError); ok {
				return err
			}
			return fmt.Errorf("service %s: %w", svc.Name, err)
		}
		opened[key] = &port{addr: addr, ln: g, done: make(chan struct{})}
	}
	for key, p := range s.ports {
		if svc, ok := want[key]; ok {
			if err := p.ln.Configure(svc); err != nil {
				// The ACL fitted (checked above) but the kernel refused it: the gate still judges.
				s.log.Error("kernel filter lost on reload; the gate alone judges", "err", err)
			}
			p.svc.Store(svc)
		} else {
			close(p.done)
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
	return &conf.PosError{File: cfg.Path, Line: svc.FilterLine, Value: svc.KernelFilter,
		Err: fmt.Errorf("service %s: %w", svc.Name, err)}
}

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

// startAccepting starts the accept loops of p: one a CPU that Go may use, up to 4, so that judging
// (and, under a flood, closing) denied peers on one core does not hold up the next accept.
func (s *Server) startAccepting(p *port) {
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
			svc = s.swapSlot(c, pre, svc, p.done)
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
func (s *Server) swapSlot(c net.Conn, pre, svc *service, done <-chan struct{}) *service {
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
	if svc.sem != nil {
		select {
		case svc.sem <- struct{}{}:
		case <-done:
			c.Close()
			return nil
		}
	}
	return svc
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
	if lvl := endLevel(svc); svc.log.Enabled(context.Background(), lvl) { // RemoteAddr().String() allocates
		name := endNames[why]
		if why == endDone {
			name = "upstream_closed"
			if clientFirst {
				name = "client_closed"
			}
		}
		svc.log.Log(context.Background(), lvl, "connection ended", "peer", c.RemoteAddr().String(),
			"duration", time.Since(start).Round(time.Microsecond), "in", in, "out", out, "end", name)
	}
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
	s.mu.Lock()
	open := len(s.conns)
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
	s.mu.Lock()
	n := len(s.conns)
	for c := range s.conns {
		c.Close()
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
		p.ln.Close()
		delete(s.ports, addr)
	}
}
