package serve

import (
	"sort"
	"sync"

	"github.com/peergate/peergate/acl"
	"github.com/peergate/peergate/gate/bans"
	"github.com/peergate/peergate/gate/kfilter"
	"github.com/prometheus/client_golang/prometheus"
)

// kernelDropped is peergate_kernel_dropped_total: the packets the eBPF filter of a service (one a
// service, shared by its listeners) dropped, read from its per-CPU counters at each scrape.
var kernelDropped = prometheus.NewDesc("peergate_kernel_dropped_total",
	"Packets (SYNs) of denied peers dropped by the eBPF kernel filter, by service and IP version of "+
		"the packet (family ipv4, ipv6); these peers never reach accept, so no other metric counts them. "+
		"The classic BPF filter (kernel_filter: cbpf, or auto without eBPF) counts nothing.",
	[]string{"service", "family"}, nil)

// kernelCollector reports the kernel filters' counters of a Server.
type kernelCollector struct{ s *Server }

// Describe implements prometheus.Collector.
func (c kernelCollector) Describe(ch chan<- *prometheus.Desc) { ch <- kernelDropped }

// Collect implements prometheus.Collector.
func (c kernelCollector) Collect(ch chan<- prometheus.Metric) {
	names := map[string]bool{}
	c.s.mu.Lock()
	for _, p := range c.s.ports {
		if svc := p.svc.Load(); svc != nil {
			names[svc.Name] = true
		}
	}
	c.s.mu.Unlock()
	for name := range names {
		v4, v6 := c.s.kf.dropped(name) // each service's filter once, whatever its listeners
		ch <- prometheus.MustNewConstMetric(kernelDropped, prometheus.CounterValue, float64(v4), name, "ipv4")
		ch <- prometheus.MustNewConstMetric(kernelDropped, prometheus.CounterValue, float64(v6), name, "ipv6")
	}
}

// effectiveFilter is a listener's kernel filter as /config shows it. The eBPF figures are those of
// the service's filter, whose maps and counters all its eBPF listeners share (Shared says how many):
// they are the same on each, and count once.
type effectiveFilter struct {
	Listen   string `json:"listen"`
	Backend  string `json:"backend"`                    // "ebpf", "cbpf" or "none"
	Shared   int    `json:"maps_shared_by,omitempty"`   // eBPF: listeners of the service sharing the maps
	ACL4     int    `json:"ipv4_prefixes,omitempty"`    // eBPF: entries of the ACL maps, the /0 included
	ACL6     int    `json:"ipv6_prefixes,omitempty"`    //
	Bans4    int    `json:"ipv4_bans,omitempty"`        // eBPF: entries of the ban maps
	Bans6    int    `json:"ipv6_bans,omitempty"`        //
	MapBytes uint64 `json:"kernel_map_bytes,omitempty"` // eBPF: what the kernel charges for the maps, once
	Dropped  uint64 `json:"kernel_dropped,omitempty"`   // packets the service's eBPF filters dropped, both families
}

// kernelFilters returns the kernel filters of the listeners of each service, by service name.
// s.mu is held.
func (s *Server) kernelFilters() map[string][]effectiveFilter {
	out := map[string][]effectiveFilter{}
	for _, p := range s.ports {
		svc := p.svc.Load()
		if svc == nil {
			continue
		}
		st := p.ln.filterState()
		e := effectiveFilter{Listen: p.addr, Backend: st.Backend}
		if e.Backend == "" {
			e.Backend = "none"
		}
		if st.Backend == "ebpf" {
			e.Shared, e.ACL4, e.ACL6, e.Bans4, e.Bans6, e.MapBytes = st.Listeners, st.EBPF.ACL4, st.EBPF.ACL6, st.EBPF.Bans4, st.EBPF.Bans6, st.EBPF.MapBytes
		}
		v4, v6 := s.kf.dropped(svc.Name)
		e.Dropped = v4 + v6
		out[svc.Name] = append(out[svc.Name], e)
	}
	for _, fs := range out {
		sort.Slice(fs, func(i, j int) bool { return fs[i].Listen < fs[j].Listen })
	}
	return out
}

// kernelFilters are the eBPF filters of a Server: one a service, its maps and program shared by
// every TCP listener of the service that uses eBPF (SO_ATTACH_BPF takes one program on any
// number of sockets), so a service listening on N addresses holds its ACL in kernel memory once,
// not N times, and a reload or a ban changes one set of maps. A filter is counted by the
// listeners attached to it: a listener leaving it (closed, moved to another service, or to the
// classic filter or none) lets it go, and the last one frees its maps. The zero value is ready.
type kernelFilters struct {
	mu   sync.Mutex             // guards everything below and in the sharedEBPFs, Loads included
	by   map[string]*sharedEBPF // by service name
	gone map[string][2]uint64   // packets dropped (IPv4, IPv6) by the service's filters since closed
	// loads counts the Loads into the maps, for tests: one a service and reload.
	loads int
}

// sharedEBPF is the eBPF filter of one service and the listeners attached to it.
type sharedEBPF struct {
	name  string
	f     *kfilter.EBPF
	acl   *acl.ACL                   // what f's ACL maps hold
	users map[*gateListener]*acl.ACL // the listeners attached, each with the ACL its gate has
	feed  *banFeed                   // mirrors the ban layer into f; nil: no ban layer
	dead  bool                       // a Load failed: detached from every listener and closed
}

// acquire attaches the eBPF filter of service name, holding a, to g's socket: the service's
// filter if it has one (its maps brought to a first, unless they hold a already: all the listeners
// of a service get the same *acl.ACL from a reload, so the diff is applied once), or a new one.
// A listener already attached stays attached; one attached to another filter has it replaced
// atomically (the caller releases the old one). When the maps cannot be brought to a the filter is
// dead: detached from all its listeners, which the gate alone guards until their next Configure.
// g.mu is held.
func (k *kernelFilters) acquire(g *gateListener, name string, a *acl.ACL, bt *bans.Table) (*sharedEBPF, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	sf := k.by[name]
	if sf == nil {
		f, err := kfilter.NewEBPF()
		if err == nil {
			k.loads++
			if err = f.Load(a); err != nil {
				f.Close()
			}
		}
		if err != nil {
			return nil, err
		}
		sf = &sharedEBPF{name: name, f: f, acl: a, users: map[*gateListener]*acl.ACL{}}
		if k.by == nil {
			k.by = map[string]*sharedEBPF{}
		}
		k.by[name] = sf
	} else if sf.acl != a {
		k.loads++
		if err := sf.f.Load(a); err != nil {
			k.kill(sf)
			return nil, err
		}
		sf.acl = a
	}
	if _, ok := sf.users[g]; !ok {
		if err := sf.f.Attach(g.rc); err != nil {
			if len(sf.users) == 0 {
				k.free(sf)
			}
			return nil, err
		}
	}
	sf.users[g] = a
	if sf.feed == nil && bt != nil {
		sf.feed = newBanFeed(bt, g.log.With("service", name))
		sf.feed.use(sf.f)
	}
	return sf, nil
}

// release takes g off sf's listeners; the caller has detached sf from g's socket or replaced it,
// or is closing the socket. The last listener frees the filter. When the listeners left all have
// another ACL than the maps hold (g brought them to a new ACL in a reload that failed afterwards
// and closed g), the maps go back to theirs. g.mu is held.
func (k *kernelFilters) release(g *gateListener, sf *sharedEBPF) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, ok := sf.users[g]; !ok || sf.dead {
		return
	}
	delete(sf.users, g)
	if len(sf.users) == 0 {
		k.free(sf)
		return
	}
	var back *acl.ACL
	for _, a := range sf.users {
		if a == sf.acl {
			return
		}
		back = a
	}
	k.loads++
	if err := sf.f.Load(back); err != nil {
		g.log.Warn("kernel filter: the ACL of an abandoned reload not undone; filter detached, the gate alone judges",
			"service", sf.name, "err", err)
		k.kill(sf)
		return
	}
	sf.acl = back
}

// free closes sf, keeping its drop counts. k.mu is held.
func (k *kernelFilters) free(sf *sharedEBPF) {
	if sf.feed != nil {
		sf.feed.close()
	}
	if v4, v6, err := sf.f.Dropped(); err == nil {
		if k.gone == nil {
			k.gone = map[string][2]uint64{}
		}
		n := k.gone[sf.name]
		k.gone[sf.name] = [2]uint64{n[0] + v4, n[1] + v6}
	}
	sf.f.Close()
	sf.users, sf.dead = nil, true
	if k.by[sf.name] == sf {
		delete(k.by, sf.name)
	}
}

// kill detaches sf from every listener (its maps are half-updated) and frees it. k.mu is held.
func (k *kernelFilters) kill(sf *sharedEBPF) {
	for u := range sf.users {
		if err := kfilter.Detach(u.rc); err != nil {
			u.log.Warn("kernel filter not detached", "service", sf.name, "listen", u.Addr().String(), "err", err)
		}
	}
	k.free(sf)
}

// stats returns what sf holds and has dropped (zero when dead) and how many listeners share it.
func (k *kernelFilters) stats(sf *sharedEBPF) (st kfilter.EBPFStats, listeners int, ok bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if sf.dead {
		return st, 0, false
	}
	st, _ = sf.f.Stats()
	return st, len(sf.users), true
}

// dropped returns the packets the eBPF filters of service name dropped, the closed ones included.
func (k *kernelFilters) dropped(name string) (v4, v6 uint64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	n := k.gone[name]
	v4, v6 = n[0], n[1]
	if sf := k.by[name]; sf != nil {
		if d4, d6, err := sf.f.Dropped(); err == nil {
			v4, v6 = v4+d4, v6+d6
		}
	}
	return v4, v6
}
