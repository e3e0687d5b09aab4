// Package serve runs the services of a peergate config file: listeners guarded by package gate,
// whose allowed connections are proxied to an upstream or handed to a spawned program. It reloads
// the config without dropping listeners or open connections, and drains on shutdown.
package serve

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/peergate/peergate/acl"
	"github.com/peergate/peergate/gate"
	"github.com/peergate/peergate/gate/bans"
	"github.com/peergate/peergate/gate/limit"
	"github.com/peergate/peergate/internal/config"
	"github.com/peergate/peergate/internal/evloop"
	"github.com/peergate/peergate/internal/sources"
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

	kf kernelFilters // the eBPF kernel filters, one a service, shared by its listeners

	loopsState
}

// port is one listening address and the service it currently serves.
type port struct {
	addr string
	ln   gated
	svc  atomic.Pointer[service]
	done chan struct{}

	watches []*evloop.Watch // the event loops' watches of ln; none on the goroutine path
	goMode  bool            // on the goroutine path (under the Server's mu)
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
	if len(cfg.Services) == 0 {
		return nil, fmt.Errorf("%s: %w: no services to serve", path, config.ErrConfig)
	}
	if err := servable(cfg); err != nil {
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
