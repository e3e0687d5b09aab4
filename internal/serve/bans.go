package serve

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/peergate/peergate/acl"
	"github.com/peergate/peergate/gate"
	"github.com/peergate/peergate/gate/bans"
	"github.com/peergate/peergate/internal/config"
)

// The ban layer of a server: one bans.Table for every service, fed by the admin API, auto-bans
// and CrowdSec, consulted by every gate before its ACL.

// guardOf returns the never_ban prefixes of cfg: the file's and every service's.
func guardOf(cfg *config.File) []netip.Prefix {
	g := slices.Clone(cfg.NeverBan)
	for _, s := range cfg.Services {
		g = append(g, s.NeverBan...)
	}
	return g
}

// servable checks what serving cfg needs beyond what loading it checks: the privileges its user
// and group keys need.
func servable(cfg *config.File) error { return cfg.CheckPrivileges(os.Geteuid()) }

// applyBans applies a (re)loaded config to the ban table: its guard and its size.
func (s *Server) applyBans(cfg *config.File) {
	if cut := s.bans.SetGuard(guardOf(cfg)); len(cut) > 0 {
		s.saveBans()
		for _, b := range cut {
			s.log.Warn("ban covers a never_ban address; cut to spare it", "ban", b.Prefix.String(), "origin", b.Origin, "reason", b.Reason)
		}
	}
	s.bans.SetMax(cfg.MaxBans)
	if s.cfg != nil && !sameCrowdSec(cfg.CrowdSec, s.cfg.CrowdSec) {
		s.log.Warn("crowdsec changed in the config; restart peergate to apply it")
	}
	if s.cfg != nil && cfg.StateDir != s.cfg.StateDir {
		s.log.Warn("state_dir changed in the config; restart peergate to apply it", "running", s.cfg.StateDir)
	}
}

// expireBans drops expired bans every quarter second until done is closed. It also sets the
// table's clock, by which lookups judge expiry: an expired ban stops applying within a quarter
// second, and this gives back its memory and updates the state file.
func (s *Server) expireBans(done <-chan struct{}) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case now := <-t.C:
			if s.bans.Expire(now) > 0 {
				s.saveBans()
			}
		}
	}
}

// stopBans stops the ban goroutines; the state file gets a last save of pending changes.
func (s *Server) stopBans() {
	s.bansOnce.Do(func() { close(s.banDone) })
	if s.state != nil {
		select {
		case <-s.state.finished:
		case <-time.After(10 * time.Second):
			s.log.Error("ban state: last save did not finish in 10 s")
		}
	}
}

// saveBans asks for the state file to be written, if there is one, and returns a func that waits
// for it and returns its error.
func (s *Server) saveBans() func() error {
	if s.state == nil {
		return func() error { return nil }
	}
	n := s.state.changed()
	return func() error { return s.state.wait(n) }
}

// startBans loads the saved bans of cfg's state_dir into the table and sets up the saver.
func (s *Server) startBans(cfg *config.File) error {
	if cfg.StateDir == "" {
		return nil
	}
	list, err := loadState(cfg.StateDir, s.log)
	if err != nil {
		return err
	}
	n, err := s.bans.AddBatch(list)
	if err != nil {
		s.log.Warn("saved bans not restored", "err", err)
	}
	s.log.Info("bans restored", "file", filepath.Join(cfg.StateDir, stateName), "count", n)
	s.state = newStateStore(cfg.StateDir, s.bans, s.log)
	return nil
}

// refused counts a ban the table refused, by reason.
func (s *Server) refused(err error) {
	switch {
	case errors.Is(err, bans.ErrGuarded):
		s.m.bansRefused.WithLabelValues("guarded").Inc()
	case errors.Is(err, bans.ErrFull):
		s.m.bansRefused.WithLabelValues("full").Inc()
	default:
		s.m.bansRefused.WithLabelValues("invalid").Inc()
	}
}

// banJSON is a ban as the admin API shows it.
type banJSON struct {
	Prefix  string     `json:"prefix"`
	Origin  string     `json:"origin"`
	Reason  string     `json:"reason"`
	Created time.Time  `json:"created"`
	Expires *time.Time `json:"expires"` // null: never
}

func toJSON(b bans.Ban) banJSON {
	j := banJSON{Prefix: b.Prefix.String(), Origin: b.Origin, Reason: b.Reason, Created: b.Created.UTC()}
	if !b.Expires.IsZero() {
		e := b.Expires.UTC()
		j.Expires = &e
	}
	return j
}

// banRequest is the body of POST /bans (one object, or a list of them).
type banRequest struct {
	Prefix string `json:"prefix"`
	For    string `json:"for"`
	Reason string `json:"reason"`
}

// maxBanBody bounds a POST /bans body: room for a list of 100 000 bans with short reasons.
const maxBanBody = 32 << 20

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func jsonError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, map[string]string{"error": err.Error()})
}

// parseBan turns one request into a ban of origin api.
func parseBan(r banRequest, now time.Time) (bans.Ban, error) {
	p, err := acl.ParsePrefix(strings.TrimSpace(r.Prefix))
	if err != nil {
		return bans.Ban{}, fmt.Errorf("prefix %q: %w", r.Prefix, err)
	}
	b := bans.Ban{Prefix: p, Origin: bans.OriginAPI, Reason: r.Reason, Created: now}
	if r.For != "" {
		d, err := time.ParseDuration(r.For)
		if err != nil || d <= 0 {
			return bans.Ban{}, fmt.Errorf("for %q: want a duration more than 0, such as 90s, 1h or 720h", r.For)
		}
		b.Expires = now.Add(d)
	}
	if len(r.Reason) > bans.MaxReason {
		return bans.Ban{}, fmt.Errorf("reason: longer than %d bytes", bans.MaxReason)
	}
	return b, nil
}

// postBans is POST /bans: {"prefix":"192.0.2.7","for":"1h","reason":"scanner"}, or a list of
// such objects (applied at once). 201 with the stored ban(s); 400 for a bad body or prefix; 409
// when the ban covers a never_ban address or the table is full.
func (s *Server) postBans(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBanBody))
	if err != nil {
		jsonError(w, http.StatusRequestEntityTooLarge, err)
		return
	}
	var reqs []banRequest
	list := len(strings.TrimSpace(string(body))) > 0 && strings.TrimSpace(string(body))[0] == '['
	if list {
		err = json.Unmarshal(body, &reqs)
	} else {
		var one banRequest
		err = json.Unmarshal(body, &one)
		reqs = []banRequest{one}
	}
	if err != nil {
		jsonError(w, http.StatusBadRequest, fmt.Errorf("body: %w (want {\"prefix\": \"192.0.2.7\", \"for\": \"1h\", \"reason\": \"…\"} or a list of them)", err))
		return
	}
	now := time.Now()
	bs := make([]bans.Ban, 0, len(reqs))
	for _, req := range reqs {
		b, err := parseBan(req, now)
		if err != nil {
			s.m.bansRefused.WithLabelValues("invalid").Inc()
			jsonError(w, http.StatusBadRequest, err)
			return
		}
		bs = append(bs, b)
	}
	if !list {
		b, err := s.bans.Add(bs[0])
		if err != nil {
			s.refused(err)
			code := http.StatusConflict
			if errors.Is(err, bans.ErrInvalid) {
				code = http.StatusBadRequest
			}
			jsonError(w, code, err)
			return
		}
		s.log.Info("ban added", "ban", b.Prefix.String(), "origin", b.Origin, "reason", b.Reason, "expires", b.ExpiresString(), "by", r.RemoteAddr)
		if err := s.saveBans()(); err != nil {
			jsonError(w, http.StatusInternalServerError, fmt.Errorf("ban applied but not saved to state_dir: %w", err))
			return
		}
		writeJSON(w, http.StatusCreated, toJSON(b))
		return
	}
	// A list: guarded or invalid entries refuse the whole request, so that nothing is half done.
	for _, b := range bs {
		if g, ok := s.bans.Guarded(b.Prefix); ok {
			s.m.bansRefused.WithLabelValues("guarded").Inc()
			jsonError(w, http.StatusConflict, fmt.Errorf("%w: %v covers %v", bans.ErrGuarded, b.Prefix, g))
			return
		}
	}
	n, err := s.bans.AddBatch(bs)
	if serr := s.saveBans()(); serr != nil {
		jsonError(w, http.StatusInternalServerError, fmt.Errorf("%d bans applied but not saved to state_dir: %w", n, serr))
		return
	}
	if err != nil {
		s.refused(err)
		s.log.Warn("bans refused", "added", n, "err", err)
		jsonError(w, http.StatusConflict, fmt.Errorf("%d of %d added: %w", n, len(bs), err))
		return
	}
	s.log.Info("bans added", "count", n, "origin", bans.OriginAPI, "by", r.RemoteAddr)
	out := make([]banJSON, len(bs))
	for i, b := range bs {
		out[i] = toJSON(b)
	}
	writeJSON(w, http.StatusCreated, out)
}

// deleteBan is DELETE /bans/{prefix} (a "/" in the prefix may be sent as %2F or as it is): 204, or
// 404 when no ban has that prefix. Bans of every origin with that prefix are removed.
func (s *Server) deleteBan(w http.ResponseWriter, r *http.Request) {
	raw := r.PathValue("prefix")
	p, err := acl.ParsePrefix(raw)
	if err != nil {
		jsonError(w, http.StatusBadRequest, fmt.Errorf("prefix %q: %w", raw, err))
		return
	}
	if !s.bans.Remove(p) {
		jsonError(w, http.StatusNotFound, fmt.Errorf("no ban of %v", p))
		return
	}
	s.log.Info("ban removed", "ban", p.String(), "by", r.RemoteAddr)
	if err := s.saveBans()(); err != nil {
		jsonError(w, http.StatusInternalServerError, fmt.Errorf("ban removed but not saved to state_dir: %w", err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// listBans is GET /bans: every live ban, ordered by prefix.
func (s *Server) listBans(w http.ResponseWriter, _ *http.Request) {
	list := s.bans.List()
	out := make([]banJSON, len(list))
	for i, b := range list {
		out[i] = toJSON(b)
	}
	writeJSON(w, http.StatusOK, out)
}

// explanation is the answer of GET /explain.
type explanation struct {
	Addr    string   `json:"addr"`
	Service string   `json:"service"`
	ACL     string   `json:"acl"`
	Action  string   `json:"action"`         // allow or deny
	Layer   string   `json:"layer"`          // ban or acl
	Ban     *banJSON `json:"ban,omitempty"`  // the ban that decides (layer ban)
	Rule    string   `json:"rule,omitempty"` // the ACL rule's prefix, or "default" (layer acl)
	Origin  string   `json:"origin,omitempty"`
	DryRun  bool     `json:"dry_run,omitempty"` // the service hands denied peers on
}

// explain is GET /explain?addr=A&service=S: which layer and which ban or rule decides A for
// service S (S may be left out when there is one service).
func (s *Server) explain(w http.ResponseWriter, r *http.Request) {
	raw := r.URL.Query().Get("addr")
	a, err := netip.ParseAddr(raw)
	if err != nil {
		jsonError(w, http.StatusBadRequest, fmt.Errorf("addr %q: want an IP address", raw))
		return
	}
	a = a.WithZone("").Unmap()
	svc := s.requestedService(w, r)
	if svc == nil {
		return
	}
	e := explain(s.bans, svc, a)
	writeJSON(w, http.StatusOK, e)
}

// requestedService returns the running service named by the request's "service" parameter (which
// may be left out when there is one service), or nil after answering 400 with the names there are.
func (s *Server) requestedService(w http.ResponseWriter, r *http.Request) *config.Service {
	s.mu.Lock()
	cfg := s.cfg
	s.mu.Unlock()
	name := r.URL.Query().Get("service")
	for _, c := range cfg.Services {
		if c.Name == name || name == "" && len(cfg.Services) == 1 {
			return c
		}
	}
	names := make([]string, len(cfg.Services))
	for i, c := range cfg.Services {
		names[i] = c.Name
	}
	jsonError(w, http.StatusBadRequest, fmt.Errorf("service %q: want one of %s", name, strings.Join(names, ", ")))
	return nil
}

// explain decides a as svc's gate would, naming the layer and the ban or rule.
func explain(t gate.Bans, svc *config.Service, a netip.Addr) explanation {
	e := explanation{Addr: a.String(), Service: svc.Name, ACL: svc.ACL.Name, DryRun: svc.DryRun}
	if b, ok := t.Banned(a); ok {
		j := toJSON(b)
		e.Action, e.Layer, e.Ban = "deny", "ban", &j
		return e
	}
	d := svc.ACL.ACL.Decide(a)
	e.Action, e.Layer, e.Rule = d.Action.String(), "acl", "default"
	if d.Rule != nil {
		e.Rule, e.Origin = d.Rule.Prefix.String(), d.Rule.Origin.String()
	}
	return e
}

// withToken requires "Authorization: Bearer TOKEN" on every request but GET /healthz, when the
// admin listener a has a token. A reload that keeps the listener's address sets its token (a
// rotated token_file applies at once); one that removes or moves the admin section leaves the
// running listener its token, so that it never ends up serving without one.
func (s *Server) withToken(a *admin, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		tok := a.token // the listener's, not the running config's: see reconfigureAdmin
		s.mu.Unlock()
		if tok != "" && r.URL.Path != "/healthz" {
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(tok)) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="peergate"`)
				jsonError(w, http.StatusUnauthorized, errors.New("admin token required (Authorization: Bearer …)"))
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

func sameCrowdSec(a, b *config.CrowdSec) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}
