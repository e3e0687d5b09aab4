package serve

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strconv"

	"github.com/peergate/peergate/internal/config"
)

// ErrLockout marks a reload refused by the lockout guard: the new ACL of a service would deny an
// address its guard.keep_allowed lists.
var ErrLockout = errors.New("lockout guard")

// checkGuards returns an error wrapping ErrLockout, naming the service, the guarded prefix, the
// first address the new config would deny and the rule that would deny it, when cfg denies any
// address a service's guard.keep_allowed lists.
func checkGuards(cfg *config.File) error {
	var errs []error
	for _, svc := range cfg.Services {
		for _, p := range svc.Guard {
			if at, d, denied := svc.ACL.ACL.DeniedIn(p); denied {
				errs = append(errs, fmt.Errorf("%w: service %s: %s:%d: guard.keep_allowed %s: %s would be %s; reload refused",
					ErrLockout, svc.Name, cfg.Path, svc.GuardLine, p, at, d))
			}
		}
	}
	return errors.Join(errs...)
}

// ReloadForce is ReloadContext without the lockout guard: the operator's explicit override, for a
// change that is meant to deny a guarded address.
func (s *Server) ReloadForce(ctx context.Context) error { return s.reload(ctx, true, netip.Addr{}) }

// checkKeep returns an error wrapping ErrLockout when cfg would shut out peer where the running
// config old lets it in: the admin listener's ACL, and every service whose running ACL allows
// peer. It is the default guard of a reload asked for through the admin API, so that the request
// cannot lock out the operator who made it.
func checkKeep(old, cfg *config.File, peer netip.Addr) error {
	var errs []error
	if cfg.Admin != nil {
		if d := cfg.Admin.ACL.ACL.Decide(peer); !d.Allowed() {
			errs = append(errs, fmt.Errorf("%w: the admin listener's ACL %s would deny %s, the peer of this reload request (%s); reload refused",
				ErrLockout, cfg.Admin.ACL.Name, peer, d))
		}
	}
	allowed := map[string]bool{}
	if old != nil {
		for _, svc := range old.Services {
			allowed[svc.Name] = svc.ACL.ACL.Decide(peer).Allowed()
		}
	}
	for _, svc := range cfg.Services {
		if !allowed[svc.Name] {
			continue
		}
		if d := svc.ACL.ACL.Decide(peer); !d.Allowed() {
			errs = append(errs, fmt.Errorf("%w: service %s: %s, the peer of this reload request, is allowed now and would be denied (%s); reload refused",
				ErrLockout, svc.Name, peer, d))
		}
	}
	return errors.Join(errs...)
}

// postReload is POST /reload: reload the config file, refused (409) when it would deny an address
// a guard.keep_allowed lists or the request's own peer where it is let in now; ?force=1 (or a JSON
// body {"force": true}) overrides both guards.
func (s *Server) postReload(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Force bool `json:"force"`
	}
	if data, err := io.ReadAll(io.LimitReader(r.Body, 1<<10)); err == nil && len(bytes.TrimSpace(data)) > 0 {
		if err := json.Unmarshal(data, &body); err != nil {
			jsonError(w, http.StatusBadRequest, fmt.Errorf("body: want {\"force\": true|false}: %w", err))
			return
		}
	}
	force := body.Force
	if f := r.URL.Query().Get("force"); f != "" {
		var err error
		if force, err = strconv.ParseBool(f); err != nil {
			jsonError(w, http.StatusBadRequest, fmt.Errorf("force=%q: want true or false", f))
			return
		}
	}
	var peer netip.Addr
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		peer = ap.Addr().Unmap().WithZone("")
	}
	err := s.reload(context.WithoutCancel(r.Context()), force, peer)
	switch {
	case err == nil:
		s.mu.Lock()
		sum := s.cfg.Hash
		s.mu.Unlock()
		writeJSON(w, http.StatusOK, map[string]any{"reloaded": true, "sha256": sum, "forced": force})
	case errors.Is(err, ErrLockout):
		jsonError(w, http.StatusConflict, err)
	default:
		jsonError(w, http.StatusUnprocessableEntity, err)
	}
}
