package serve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/peergate/peergate/gate"
	"github.com/peergate/peergate/internal/config"
	"github.com/peergate/peergate/internal/redact"
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
	Services     []config.View  `json:"services"` // each service's keys, from config's table of them
	Admin        config.View    `json:"admin,omitempty"`
	Layers       []string       `json:"layers"` // in the order a peer is judged
	Bans         effectiveBans  `json:"bans"`
}

type effectiveACL struct {
	Name    string `json:"name"`
	Rules   int    `json:"rules"`
	Default string `json:"default"`
	Unix    string `json:"unix"`
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
		ACLs: []effectiveACL{}, Services: []config.View{}}
	for _, a := range cfg.ACLs {
		e.ACLs = append(e.ACLs, effectiveACL{a.Name, a.ACL.Len(), a.ACL.Default().String(), a.ACL.Unix().Action.String()})
	}
	for _, c := range cfg.Services {
		e.Services = append(e.Services, effectiveService(c, filters[c.Name], args))
	}
	if cfg.Admin != nil {
		e.Admin = config.View{{Key: "name", Value: "admin"}, {Key: "listen", Value: []string{cfg.Admin.Listen}}, {Key: "acl", Value: cfg.Admin.ACL.Name}}
		if cfg.Admin.Token != "" {
			e.Admin = append(e.Admin, config.Field{Key: "token_required", Value: true})
		}
	}
	e.Layers = []string{"bans", "acl"}
	e.Bans = effectiveBans{Active: s.bans.Count(), Max: cfg.MaxBans, NeverBan: []string{}, StateDir: cfg.StateDir}
	for _, p := range cfg.NeverBan {
		e.Bans.NeverBan = append(e.Bans.NeverBan, p.String())
	}
	if c := cfg.CrowdSec; c != nil {
		e.Bans.CrowdSec = &effectiveCrowdSec{URL: redact.URL(c.URL), Interval: c.Interval.String(), Report: c.Report}
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(e)
}

// effectiveService is /config's view of service c: its keys as config's table of them shows them
// (args: with its handler's arguments), and after kernel_filter, when it is on, kernel: the
// filters attached to its listeners.
func effectiveService(c *config.Service, kernel []effectiveFilter, args bool) config.View {
	es := config.ShowService(c, config.ViewOptions{ExecArgs: args})
	i := slices.IndexFunc(es, func(f config.Field) bool { return f.Key == "kernel_filter" })
	if c.KernelFilter == config.FilterOff || len(kernel) == 0 || i < 0 {
		return es
	}
	return slices.Insert(es, i+1, config.Field{Key: "kernel_filters", Value: kernel})
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
