package serve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/peergate/peergate/gate"
	"github.com/peergate/peergate/internal/config"
	"github.com/peergate/peergate/internal/version"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// admin is the optional HTTP listener for /metrics, /healthz and /config, guarded by its own ACL.
type admin struct {
	addr  string // as configured
	ln    *gate.Listener
	srv   *http.Server
	token string // the bearer token requests need ("": none), guarded by Server.mu
}

func (s *Server) newAdmin(c *config.Admin) (*admin, error) {
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	// The admin listener has no log_rate of its own: its denials go out at the default rate.
	lim := &logLimit{}
	lim.setRate(config.DefaultLogRate)
	g := gate.NewListener(ln, c.ACL.ACL, gate.Options{Logger: limitedLog(s.log, lim, "admin")})
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.m.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /config", s.effectiveConfig)
	mux.HandleFunc("POST /bans", s.postBans)
	mux.HandleFunc("GET /bans", s.listBans)
	mux.HandleFunc("DELETE /bans/{prefix...}", s.deleteBan)
	mux.HandleFunc("GET /explain", s.explain)
	mux.HandleFunc("GET /rules", s.getRules)
	mux.HandleFunc("POST /whatif", s.postWhatIf)
	mux.HandleFunc("POST /reload", s.postReload)
	a := &admin{addr: c.Listen, ln: g, token: c.Token}
	a.srv = &http.Server{Handler: s.withToken(a, mux), ReadHeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute}
	return a, nil
}

// AdminAddr returns the address the admin listener listens on, or nil when there is none.
func (s *Server) AdminAddr() net.Addr {
	if s.admin == nil {
		return nil
	}
	return s.admin.ln.Addr()
}

// serveAdmin serves the admin listener until shutdown.
func (s *Server) serveAdmin() {
	if s.admin == nil {
		return
	}
	if err := s.admin.srv.Serve(s.admin.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		s.log.Error("admin listener failed", "listen", s.admin.addr, "err", err)
	}
}

// reconfigureAdmin applies a reloaded file's admin ACL and token. The admin listener itself is
// opened once: adding, removing or moving it needs a restart, which is logged, and until then the
// running listener keeps the ACL and token it has.
func (s *Server) reconfigureAdmin(c *config.Admin) {
	switch {
	case s.admin == nil && c == nil:
	case s.admin != nil && c != nil && c.Listen == s.admin.addr:
		s.admin.ln.SetACL(c.ACL.ACL)
		s.mu.Lock()
		s.admin.token = c.Token
		s.mu.Unlock()
	default:
		s.log.Warn("admin listener changed in the config; restart peergate to apply it")
	}
}

func (s *Server) closeAdmin() {
	if s.admin != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		s.admin.srv.Shutdown(ctx)
		s.admin.ln.Close() // in case Serve never ran
	}
}

// healthz answers 200 while the services listen with a loaded config, 503 once draining.
func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	ok := s.cfg != nil && !s.closing && len(s.ports) > 0
	s.mu.Unlock()
	if !ok {
		http.Error(w, "not serving", http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ok")
}

// effective is the running config as /config shows it.
type effective struct {
	Version      version.Info   `json:"version"`
	File         string         `json:"file"`
	SHA256       string         `json:"sha256"`
	Loaded       time.Time      `json:"loaded"`
	DrainTimeout string         `json:"drain_timeout"`
	ACLs         []effectiveACL `json:"acls"`
	Services     []effectiveSvc `json:"services"`
	Admin        *effectiveSvc  `json:"admin,omitempty"`
	Layers       []string       `json:"layers"` // in the order a peer is judged
	Bans         effectiveBans  `json:"bans"`
}

type effectiveACL struct {
	Name    string `json:"name"`
	Rules   int    `json:"rules"`
	Default string `json:"default"`
	Unix    string `json:"unix"`
}

type effectiveSvc struct {
	Name           string                   `json:"name"`
	Listen         []string                 `json:"listen"`
	ACL            string                   `json:"acl"`
	Upstream       string                   `json:"upstream,omitempty"`
	Exec           []string                 `json:"exec,omitempty"`             // the program; its arguments only when asked
	ExecArgsHidden int                      `json:"exec_args_hidden,omitempty"` // arguments left out of Exec
	OnDeny         string                   `json:"on_deny,omitempty"`
	DryRun         bool                     `json:"dry_run,omitempty"`
	ConnectTimeout string                   `json:"connect_timeout,omitempty"`
	IdleTimeout    string                   `json:"idle_timeout,omitempty"`
	MaxConns       *int                     `json:"max_conns,omitempty"`
	KernelFilter   string                   `json:"kernel_filter,omitempty"`
	KernelFilters  []effectiveFilter        `json:"kernel_filters,omitempty"` // what each listener has attached
	TrustedProxies []string                 `json:"trusted_proxies,omitempty"`
	ProxyProtocol  string                   `json:"proxy_protocol,omitempty"`
	ProxyTimeout   string                   `json:"proxy_header_timeout,omitempty"`
	SendProxy      string                   `json:"send_proxy,omitempty"`
	PerSource      int                      `json:"per_source,omitempty"`
	PerSourcePfx   []int                    `json:"per_source_prefix,omitempty"` // [ipv4, ipv6]
	Rate           float64                  `json:"rate_per_second,omitempty"`
	Burst          int                      `json:"burst,omitempty"`
	MaxSources     int                      `json:"max_sources,omitempty"`
	LogRate        *int                     `json:"log_rate,omitempty"`
	KeepAlive      string                   `json:"keepalive,omitempty"`
	LogAllowed     bool                     `json:"log_allowed,omitempty"`
	UnixPerms      map[string]effectivePerm `json:"unix_perms,omitempty"` // by listen entry
	User           string                   `json:"user,omitempty"`       // as written; UID resolved at load
	Group          string                   `json:"group,omitempty"`      // as written (or the user's primary group)
	UID            *int                     `json:"uid,omitempty"`
	GID            *int                     `json:"gid,omitempty"`
	NeverBan       []string                 `json:"never_ban,omitempty"`
	BanAfter       *effectiveBanAfter       `json:"ban_after,omitempty"`
	TokenRequired  bool                     `json:"token_required,omitempty"`
}

func (s *Server) effectiveConfig(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	cfg, loaded := s.cfg, s.loaded
	filters := s.kernelFilters()
	s.mu.Unlock()
	// A handler's arguments may hold secrets (--password=…), and /config is open to every local
	// user the admin ACL lets in: they are shown only when asked for, behind the admin token
	// (withToken has checked it by now).
	args := r.URL.Query().Get("exec_args") == "1"
	if args && (cfg.Admin == nil || cfg.Admin.Token == "") {
		jsonError(w, http.StatusForbidden, errors.New("exec_args=1 needs admin.token_file: without it, any local user could read them"))
		return
	}
	e := effective{Version: version.Get(), File: cfg.Path, SHA256: cfg.Hash, Loaded: loaded, DrainTimeout: cfg.DrainTimeout.String(),
		ACLs: []effectiveACL{}, Services: []effectiveSvc{}}
	for _, a := range cfg.ACLs {
		e.ACLs = append(e.ACLs, effectiveACL{a.Name, a.ACL.Len(), a.ACL.Default().String(), a.ACL.Unix().Action.String()})
	}
	for _, c := range cfg.Services {
		e.Services = append(e.Services, effectiveService(c, filters[c.Name], args))
	}
	if cfg.Admin != nil {
		e.Admin = &effectiveSvc{Name: "admin", Listen: []string{cfg.Admin.Listen}, ACL: cfg.Admin.ACL.Name, TokenRequired: cfg.Admin.Token != ""}
	}
	e.Layers = []string{"bans", "acl"}
	e.Bans = effectiveBans{Active: s.bans.Count(), Max: cfg.MaxBans, NeverBan: []string{}, StateDir: cfg.StateDir}
	for _, p := range cfg.NeverBan {
		e.Bans.NeverBan = append(e.Bans.NeverBan, p.String())
	}
	if c := cfg.CrowdSec; c != nil {
		e.Bans.CrowdSec = &effectiveCrowdSec{URL: c.URL, Interval: c.Interval.String(), Report: c.Report}
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(e)
}

// effectiveService is /config's view of service c: kernel filters those attached to its listeners
// (shown only when its kernel_filter is on), and args whether to show its handler's arguments.
func effectiveService(c *config.Service, kernel []effectiveFilter, args bool) effectiveSvc {
	onDeny := "close"
	if c.Reset {
		onDeny = "reset"
	}
	es := effectiveSvc{Name: c.Name, Listen: c.Listen, ACL: c.ACL.Name,
		Upstream: c.Upstream, Exec: c.Exec, OnDeny: onDeny, DryRun: c.DryRun,
		ConnectTimeout: c.ConnectTimeout.String(), IdleTimeout: c.IdleTimeout.String(), MaxConns: &c.MaxConns,
		KernelFilter: c.KernelFilter, SendProxy: c.SendProxy, LogRate: &c.LogRate, KeepAlive: c.KeepAlive.String(),
		LogAllowed: c.LogAllowed, User: c.User, Group: c.Group}
	for addr, p := range c.UnixPerms {
		if es.UnixPerms == nil {
			es.UnixPerms = map[string]effectivePerm{}
		}
		ep := effectivePerm{}
		if p.Mode != 0 {
			ep.Mode = fmt.Sprintf("%04o", uint32(p.Mode))
		}
		if p.UID >= 0 {
			ep.UID = &p.UID
		}
		if p.GID >= 0 {
			ep.GID = &p.GID
		}
		es.UnixPerms[addr] = ep
	}
	if c.UID >= 0 {
		es.UID = &c.UID
	}
	if c.GID >= 0 {
		es.GID = &c.GID
	}
	if len(c.Exec) > 1 && !args {
		es.Exec, es.ExecArgsHidden = c.Exec[:1], len(c.Exec)-1
	}
	if c.KernelFilter != config.FilterOff {
		es.KernelFilters = kernel
	}
	if len(c.TrustedProxies) > 0 {
		for _, p := range c.TrustedProxies {
			es.TrustedProxies = append(es.TrustedProxies, p.String())
		}
		es.ProxyProtocol, es.ProxyTimeout = "optional", c.ProxyHeaderTimeout.String()
		if c.ProxyRequired {
			es.ProxyProtocol = "required"
		}
	}
	if lc := limitConfig(c); lc.Enabled() {
		lc = lc.WithDefaults()
		es.PerSource, es.Rate, es.Burst, es.MaxSources = lc.PerSource, lc.Rate, lc.Burst, lc.MaxSources
		es.PerSourcePfx = []int{lc.IPv4Prefix, lc.IPv6Prefix}
		if lc.Rate == 0 {
			es.Burst = 0
		}
	}
	for _, p := range c.NeverBan {
		es.NeverBan = append(es.NeverBan, p.String())
	}
	if b := c.BanAfter; b != nil {
		es.BanAfter = &effectiveBanAfter{b.Denials, b.LimitHits, b.Within.String(), b.For.String()}
	}
	return es
}

// effectiveBans is the ban layer as /config shows it.
type effectiveBans struct {
	Active   map[string]int     `json:"active"` // live bans by origin
	Max      int                `json:"max_bans"`
	NeverBan []string           `json:"never_ban"` // the file's; services list their own
	StateDir string             `json:"state_dir,omitempty"`
	CrowdSec *effectiveCrowdSec `json:"crowdsec,omitempty"`
}

type effectiveCrowdSec struct {
	URL      string `json:"url"`
	Interval string `json:"interval"`
	Report   bool   `json:"report,omitempty"`
}

type effectiveBanAfter struct {
	Denials   int    `json:"denials,omitempty"`
	LimitHits int    `json:"limit_hits,omitempty"`
	Within    string `json:"within"`
	For       string `json:"for"`
}

// effectivePerm is what a Unix listen entry sets on its socket file, as /config shows it.
type effectivePerm struct {
	Mode string `json:"mode,omitempty"`
	UID  *int   `json:"uid,omitempty"`
	GID  *int   `json:"gid,omitempty"`
}
