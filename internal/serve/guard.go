package serve

import (
	"context"
	"errors"
	"fmt"

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
func (s *Server) ReloadForce(ctx context.Context) error { return s.reload(ctx, true) }
