package serve

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"syscall"

	"github.com/peergate/peergate/gate"
	"github.com/peergate/peergate/gate/kfilter"
	"github.com/peergate/peergate/internal/config"
	"golang.org/x/sys/unix"
)

// gated is a listener guarded by the gate whose policy a reload can change.
type gated interface {
	net.Listener
	Configure(*service) error
}

type gateListener struct {
	*gate.Listener
	log      *slog.Logger
	limit    *logLimit       // for the gate's lines (denials), kept across reloads
	rc       syscall.RawConn // the TCP listening socket, for the kernel filter; nil for Unix sockets
	filtered bool            // a kernel filter is attached
}

// newGate wraps ln in a gate configured for svc. It fails only when svc requires a kernel filter
// that cannot be attached.
func newGate(ln net.Listener, svc *service, log *slog.Logger) (gated, error) {
	g := &gateListener{Listener: gate.NewListener(ln, nil, gate.Options{}), log: log, limit: &logLimit{}}
	if tl, ok := ln.(*net.TCPListener); ok {
		g.rc, _ = tl.SyscallConn()
	}
	return g, g.Configure(svc)
}

// Configure applies svc's ACL, deny options, metrics and kernel filter to connections accepted
// from now on. It returns an error only when svc requires the kernel filter and it could not be
// attached; the gate then still judges every connection.
func (g *gateListener) Configure(svc *service) error {
	g.limit.setRate(svc.LogRate)
	logger := slog.New(limitHandler{g.log.Handler(), g.limit}).With("service", svc.Name)
	opts := gate.Options{Reset: svc.Reset, DryRun: svc.DryRun, Logger: logger, OnDecision: svc.m.decided}
	if len(svc.TrustedProxies) > 0 {
		opts.Proxy = &gate.ProxyOptions{Trusted: svc.TrustedProxies, Required: svc.ProxyRequired, Timeout: svc.ProxyHeaderTimeout}
	}
	if svc.lim != nil { // not a nil *limit.Limiter in a non-nil interface
		opts.Limiter = svc.lim
	}
	g.SetOptions(opts)
	g.SetACL(svc.ACL.ACL)
	if g.rc == nil {
		return nil
	}
	if svc.KernelFilter == config.FilterOff {
		if g.filtered {
			if err := kfilter.Detach(g.rc); err != nil {
				g.log.Warn("kernel filter not detached", "service", svc.Name, "listen", g.Addr().String(), "err", err)
			}
			g.filtered = false
		}
		return nil
	}
	err := kfilter.Apply(g.rc, svc.ACL.ACL)
	g.filtered = err == nil // Apply leaves no filter when it fails
	switch {
	case err == nil:
		g.log.Info("kernel filter attached", "service", svc.Name, "listen", g.Addr().String())
	case svc.KernelFilter == config.FilterRequired:
		return fmt.Errorf("kernel_filter required: %w", err)
	default:
		g.log.Warn("kernel filter not attached; the gate alone judges", "service", svc.Name,
			"listen", g.Addr().String(), "err", err)
	}
	return nil
}

// filterFits reports whether svc's ACL fits the kernel filter of a socket listening on addr; it
// lets a reload refuse a config with kernel_filter: required before it changes anything.
func filterFits(addr string, svc *service) error {
	if _, ok := config.UnixPath(addr); ok {
		return nil
	}
	family := unix.AF_INET6 // ":port" and IPv6 literals: a dual-stack or IPv6 socket
	if host, _, err := net.SplitHostPort(addr); err == nil {
		if ip, err := netip.ParseAddr(host); err == nil && ip.Is4() {
			family = unix.AF_INET
		}
	}
	if _, err := kfilter.Compile(svc.ACL.ACL, family); err != nil {
		return fmt.Errorf("kernel_filter required: %w", err)
	}
	return nil
}
