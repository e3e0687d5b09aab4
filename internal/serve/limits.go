package serve

import (
	"github.com/peergate/peergate/gate/limit"
	"github.com/peergate/peergate/internal/config"
)

// limitConfig is the per-source limit configuration of a service.
func limitConfig(c *config.Service) limit.Config { return c.Limits() }

// limiter returns the limiter for c: old when its limits are unchanged, so that a reload keeps
// the buckets and the count of open connections; a new one when they changed; nil for none.
// Connections admitted by an old limiter give their slots back to it.
func limiter(old *limit.Limiter, c *config.Service) *limit.Limiter {
	cfg := limitConfig(c)
	if !cfg.Enabled() {
		return nil
	}
	if old != nil && old.Config() == cfg.WithDefaults() {
		return old
	}
	return limit.New(cfg)
}
