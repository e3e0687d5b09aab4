package serve

import (
	"log/slog"
	"net"

	"github.com/peergate/peergate/gate"
)

// gated is a listener guarded by the gate whose policy a reload can change.
type gated interface {
	net.Listener
	Configure(*service)
}

type gateListener struct {
	*gate.Listener
	log *slog.Logger
}

// newGate wraps ln in a gate configured for svc.
func newGate(ln net.Listener, svc *service, log *slog.Logger) gated {
	g := &gateListener{gate.NewListener(ln, nil, gate.Options{}), log}
	g.Configure(svc)
	return g
}

// Configure applies svc's ACL, deny options and metrics to connections accepted from now on.
func (g *gateListener) Configure(svc *service) {
	g.SetOptions(gate.Options{Reset: svc.Reset, DryRun: svc.DryRun, Logger: g.log.With("service", svc.Name),
		OnDecision: svc.m.decided})
	g.SetACL(svc.ACL.ACL)
}
