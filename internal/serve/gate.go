package serve

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"syscall"

	"github.com/peergate/peergate/gate"
	"github.com/peergate/peergate/gate/kfilter"
	"github.com/peergate/peergate/internal/config"
	"golang.org/x/sys/unix"
)

// gated is a listener guarded by the gate whose policy a reload can change.
type gated interface {
	net.Listener
	// AcceptTag returns an allowed connection and the *service whose policy admitted it.
	AcceptTag() (net.Conn, any, error)
	// AcceptFD accepts and judges a queued connection without making a net.Conn of it.
	AcceptFD() (gate.Socket, bool, error)
	Configure(*service) error
	filterState() filterState
}

type gateListener struct {
	*gate.Listener
	log *slog.Logger
	rc  syscall.RawConn // the TCP listening socket, for the kernel filter; nil for Unix sockets
	kf  *kernelFilters  // where the eBPF filter of each service is, shared by its listeners
	// adopted is the wrapper of a socket systemd passed, when the gate wraps its TCP listener.
	adopted *adopted

	mu      sync.Mutex  // guards what follows, read by /metrics and /config
	backend string      // the kernel filter attached: "", "ebpf" or "cbpf"
	sf      *sharedEBPF // the service's eBPF filter, with Backend "ebpf"; nil when none
}

// newGate wraps ln in a gate configured for svc. Its eBPF filter is the one kf holds for svc, shared
// with the service's other listeners; with a nil kf it has one of its own. It fails only when svc
// requires a kernel filter that cannot be attached.
func newGate(ln net.Listener, svc *service, log *slog.Logger, kf *kernelFilters) (gated, error) {
	if kf == nil {
		kf = &kernelFilters{}
	}
	inner := ln
	a, adopt := ln.(*adopted)
	if adopt {
		inner = a.Listener
	}
	tl, tcp := inner.(*net.TCPListener)
	// A socket systemd passed is gated as the *net.TCPListener it is, so that the gate may accept
	// from it without making a net.Conn (the event loops, the shed path); its wrapper is closed
	// with it.
	gated := ln
	if adopt && tcp {
		gated = tl
	} else {
		a = nil
	}
	g := &gateListener{Listener: gate.NewListener(gated, nil, gate.Options{}), log: log, kf: kf, adopted: a}
	if tcp {
		g.rc, _ = tl.SyscallConn()
	}
	return g, g.Configure(svc)
}

// Close detaches the kernel filter from the listener (a socket systemd passed outlives it) and
// closes it, and lets go of the service's eBPF filter, which its last listener frees.
func (g *gateListener) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.backend != "" {
		kfilter.Detach(g.rc) // the socket may be gone already: nothing left to detach then
	}
	err := g.Listener.Close()
	if g.adopted != nil {
		g.adopted.Close() // its bookkeeping; the socket is closed already
	}
	g.closeEBPF()
	g.backend = ""
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
		was := g.sf
		if errE = g.useEBPF(svc); errE == nil {
			st, n, _ := g.kf.stats(g.sf)
			msg := "kernel filter updated"
			if was != g.sf {
				msg = "kernel filter attached"
			}
			log.Info(msg, "backend", "ebpf", "prefixes", st.ACL4+st.ACL6, "map_bytes", st.MapBytes, "listeners", n)
			return nil
		}
		if mode == config.FilterEBPF {
			// No filter of another service or ACL stays on the socket.
			if g.backend != "" {
				if err := kfilter.Detach(g.rc); err != nil {
					log.Warn("kernel filter not detached", "err", err)
				}
			}
			g.closeEBPF()
			g.backend = ""
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

// useEBPF attaches svc's eBPF filter, shared by its listeners, to the listener, its maps brought to
// svc's ACL (kernelFilters.acquire): in place when the listener has it already, replacing
// atomically a filter it has of another kind or service. On failure the listener may still have
// the filter it had, which the caller replaces or detaches, and g.sf is left for it to release.
// g.mu is held.
func (g *gateListener) useEBPF(svc *service) error {
	sf, err := g.kf.acquire(g, svc.Name, svc.ACL.ACL, svc.ban)
	if err != nil {
		return err
	}
	if g.sf != nil && g.sf != sf {
		g.kf.release(g, g.sf)
	}
	g.sf, g.backend = sf, "ebpf"
	return nil
}

// closeEBPF lets go of the service's eBPF filter: the caller has detached it from the socket,
// replaced it or closed the socket. g.mu is held.
func (g *gateListener) closeEBPF() {
	if g.sf != nil {
		g.kf.release(g, g.sf)
		g.sf = nil
	}
}

// filterState is what a listener's kernel filter is and holds, for /config and /metrics.
type filterState struct {
	Backend   string            // "", "ebpf" or "cbpf"
	EBPF      kfilter.EBPFStats // with Backend "ebpf": the service's filter, shared by its listeners
	Listeners int               // with Backend "ebpf": how many listeners of the service share it
}

func (g *gateListener) filterState() filterState {
	g.mu.Lock()
	defer g.mu.Unlock()
	st := filterState{Backend: g.backend}
	if g.sf != nil {
		var ok bool
		if st.EBPF, st.Listeners, ok = g.kf.stats(g.sf); !ok {
			st.Backend = "" // detached after a failed update (kernelFilters.kill)
		}
	}
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
