package serve

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"syscall"

	"github.com/peergate/peergate/acl"
	"github.com/peergate/peergate/gate"
	"github.com/peergate/peergate/gate/bans"
	"github.com/peergate/peergate/gate/kfilter"
	"github.com/peergate/peergate/internal/config"
	"golang.org/x/sys/unix"
)

// gated is a listener guarded by the gate whose policy a reload can change.
type gated interface {
	net.Listener
	// AcceptTag returns an allowed connection and the *service whose policy admitted it.
	AcceptTag() (net.Conn, any, error)
	Configure(*service) error
	filterState() filterState
}

type gateListener struct {
	*gate.Listener
	log  *slog.Logger
	rc   syscall.RawConn // the TCP listening socket, for the kernel filter; nil for Unix sockets
	bans *bans.Table     // the ban layer the eBPF filter mirrors

	mu      sync.Mutex    // guards what follows, read by /metrics and /config
	backend string        // the kernel filter attached: "", "ebpf" or "cbpf"
	ebpf    *kfilter.EBPF // the eBPF filter attached; nil when none
	gone    [2]uint64     // packets dropped (IPv4, IPv6) by eBPF filters of this listener closed before
	feed    *banFeed      // mirrors the ban layer into the eBPF filter; nil until one is attached
}

// newGate wraps ln in a gate configured for svc. It fails only when svc requires a kernel filter
// that cannot be attached.
func newGate(ln net.Listener, svc *service, log *slog.Logger) (gated, error) {
	g := &gateListener{Listener: gate.NewListener(ln, nil, gate.Options{}), log: log}
	inner := ln
	if a, ok := ln.(*adopted); ok {
		inner = a.Listener
	}
	if tl, ok := inner.(*net.TCPListener); ok {
		g.rc, _ = tl.SyscallConn()
	}
	return g, g.Configure(svc)
}

// Close closes the listener, and with it the kernel filter's hold on the socket, and releases the
// eBPF filter.
func (g *gateListener) Close() error {
	err := g.Listener.Close()
	g.mu.Lock()
	g.closeEBPF()
	g.backend = ""
	if g.feed != nil {
		g.feed.close()
		g.feed = nil
	}
	g.mu.Unlock()
	return err
}

// Configure applies svc's ACL, deny options, metrics and kernel filter to connections accepted
// from now on. It returns an error only when svc requires a kernel filter (kernel_filter: ebpf,
// cbpf or required) and none could be attached; the gate then still judges every connection.
func (g *gateListener) Configure(svc *service) error {
	// Tag: the accept loop hands each connection to the service whose ACL admitted it.
	opts := gate.Options{OnDeny: svc.OnDeny, DryRun: svc.DryRun, Logger: svc.log, OnDecision: svc.decided, Tag: svc}
	if len(svc.TrustedProxies) > 0 {
		opts.Proxy = &gate.ProxyOptions{Trusted: svc.TrustedProxies, Required: svc.ProxyRequired, Timeout: svc.ProxyHeaderTimeout}
	}
	if svc.lim != nil { // not a nil *limit.Limiter in a non-nil interface
		opts.Limiter = svc.lim
	}
	if svc.ban != nil {
		opts.Bans = svc.ban
		g.mu.Lock()
		g.bans = svc.ban
		g.mu.Unlock()
	}
	g.SetPolicy(svc.ACL.ACL, opts) // one store: no connection is judged by half of a reload
	if g.rc == nil {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	log := g.log.With("service", svc.Name, "listen", g.Addr().String())
	mode := svc.KernelFilter
	if mode == config.FilterOff {
		if g.backend != "" {
			if err := kfilter.Detach(g.rc); err != nil {
				log.Warn("kernel filter not detached", "err", err)
			}
			g.closeEBPF()
			g.backend = ""
		}
		return nil
	}
	var errE error
	if mode != config.FilterCBPF {
		was := g.backend
		if errE = g.useEBPF(svc.ACL.ACL); errE == nil {
			st, _ := g.ebpf.Stats()
			msg := "kernel filter updated"
			if was != "ebpf" {
				msg = "kernel filter attached"
			}
			log.Info(msg, "backend", "ebpf", "prefixes", st.ACL4+st.ACL6, "map_bytes", st.MapBytes)
			return nil
		}
		if mode == config.FilterEBPF {
			return fmt.Errorf("kernel_filter ebpf: %w", errE)
		}
	}
	// The classic filter replaces an eBPF one atomically; when it cannot, Apply detaches.
	errC := kfilter.Apply(g.rc, svc.ACL.ACL)
	g.closeEBPF()
	if errC == nil {
		g.backend = "cbpf"
		log.Info("kernel filter attached", "backend", "cbpf", "ebpf_err", errE)
		return nil
	}
	g.backend = ""
	err := errC
	if errE != nil {
		err = fmt.Errorf("ebpf: %w; cbpf: %w", errE, errC)
	}
	if mode != config.FilterAuto {
		return fmt.Errorf("kernel_filter %s: %w", mode, err)
	}
	log.Warn("kernel filter not attached; the gate alone judges", "err", err)
	return nil
}

// useEBPF brings the listener's eBPF filter to a, creating and attaching it if there is none.
// On failure no eBPF filter is left attached. g.mu is held.
func (g *gateListener) useEBPF(a *acl.ACL) error {
	if g.ebpf != nil {
		if err := g.ebpf.Load(a); err != nil {
			// Half-updated maps: take the filter off, the caller attaches another or none.
			kfilter.Detach(g.rc)
			g.closeEBPF()
			g.backend = ""
			return err
		}
		return nil
	}
	f, err := kfilter.NewEBPF()
	if err == nil {
		if err = f.Load(a); err == nil {
			err = f.Attach(g.rc)
		}
		if err != nil {
			f.Close()
		}
	}
	if err != nil {
		return err
	}
	g.ebpf, g.backend = f, "ebpf"
	if g.bans != nil {
		if g.feed == nil {
			g.feed = newBanFeed(g.bans, g.log.With("listen", g.Addr().String()))
		}
		g.feed.use(f)
	}
	return nil
}

// closeEBPF releases the eBPF filter, keeping its drop counts. g.mu is held.
func (g *gateListener) closeEBPF() {
	if g.ebpf == nil {
		return
	}
	if g.feed != nil {
		g.feed.use(nil)
	}
	if v4, v6, err := g.ebpf.Dropped(); err == nil {
		g.gone[0] += v4
		g.gone[1] += v6
	}
	g.ebpf.Close()
	g.ebpf = nil
}

// filterState is what a listener's kernel filter is and holds, for /config and /metrics.
type filterState struct {
	Backend string            // "", "ebpf" or "cbpf"
	EBPF    kfilter.EBPFStats // with Backend "ebpf"; Dropped4 and Dropped6 always, across filters
}

func (g *gateListener) filterState() filterState {
	g.mu.Lock()
	defer g.mu.Unlock()
	st := filterState{Backend: g.backend}
	if g.ebpf != nil {
		st.EBPF, _ = g.ebpf.Stats()
	}
	st.EBPF.Dropped4 += g.gone[0]
	st.EBPF.Dropped6 += g.gone[1]
	return st
}

// ebpfAvailable tells, once a process, whether the eBPF filter can be loaded here.
var ebpfAvailable = sync.OnceValue(kfilter.EBPFAvailable)

// filterFits reports whether a kernel filter of svc's kernel_filter mode (ebpf, cbpf or required)
// can hold svc's ACL on a socket listening on addr; it lets a reload refuse a config before it
// changes anything.
func filterFits(addr string, svc *service) error {
	if _, ok := config.UnixPath(addr); ok {
		return nil
	}
	mode := svc.KernelFilter
	if mode != config.FilterCBPF {
		err := ebpfAvailable()
		if err == nil || mode == config.FilterEBPF {
			if err != nil {
				return fmt.Errorf("kernel_filter ebpf: %w", err)
			}
			return nil
		}
	}
	family := unix.AF_INET6 // ":port" and IPv6 literals: a dual-stack or IPv6 socket
	if host, _, err := net.SplitHostPort(addr); err == nil {
		if ip, err := netip.ParseAddr(host); err == nil && ip.Is4() {
			family = unix.AF_INET
		}
	}
	if _, err := kfilter.Compile(svc.ACL.ACL, family); err != nil {
		return fmt.Errorf("kernel_filter %s: %w", mode, err)
	}
	return nil
}
