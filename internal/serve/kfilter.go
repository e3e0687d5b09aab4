package serve

import (
	"sort"

	"github.com/prometheus/client_golang/prometheus"
)

// kernelDropped is peergate_kernel_dropped_total: the packets the eBPF filters of a service's
// listeners dropped, read from their per-CPU counters at each scrape.
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
	type counts struct{ v4, v6 uint64 }
	by := map[string]*counts{}
	c.s.mu.Lock()
	for _, p := range c.s.ports {
		svc := p.svc.Load()
		if svc == nil {
			continue
		}
		st := p.ln.filterState()
		n := by[svc.Name]
		if n == nil {
			n = &counts{}
			by[svc.Name] = n
		}
		n.v4 += st.EBPF.Dropped4
		n.v6 += st.EBPF.Dropped6
	}
	c.s.mu.Unlock()
	for name, n := range by {
		ch <- prometheus.MustNewConstMetric(kernelDropped, prometheus.CounterValue, float64(n.v4), name, "ipv4")
		ch <- prometheus.MustNewConstMetric(kernelDropped, prometheus.CounterValue, float64(n.v6), name, "ipv6")
	}
}

// effectiveFilter is a listener's kernel filter as /config shows it.
type effectiveFilter struct {
	Listen   string `json:"listen"`
	Backend  string `json:"backend"`                    // "ebpf", "cbpf" or "none"
	ACL4     int    `json:"ipv4_prefixes,omitempty"`    // eBPF: entries of the ACL maps, the /0 included
	ACL6     int    `json:"ipv6_prefixes,omitempty"`    //
	Bans4    int    `json:"ipv4_bans,omitempty"`        // eBPF: entries of the ban maps
	Bans6    int    `json:"ipv6_bans,omitempty"`        //
	MapBytes uint64 `json:"kernel_map_bytes,omitempty"` // eBPF: what the kernel charges for the maps
	Dropped  uint64 `json:"kernel_dropped,omitempty"`   // eBPF: packets dropped, both families
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
			e.ACL4, e.ACL6, e.Bans4, e.Bans6, e.MapBytes = st.EBPF.ACL4, st.EBPF.ACL6, st.EBPF.Bans4, st.EBPF.Bans6, st.EBPF.MapBytes
		}
		e.Dropped = st.EBPF.Dropped4 + st.EBPF.Dropped6
		out[svc.Name] = append(out[svc.Name], e)
	}
	for _, fs := range out {
		sort.Slice(fs, func(i, j int) bool { return fs[i].Listen < fs[j].Listen })
	}
	return out
}
