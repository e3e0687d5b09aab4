// Package gateprom exposes the counters of gate.Listeners as Prometheus metrics, for programs that
// embed the gate and have their own registry. It lives apart from package gate so that the gate
// itself does not depend on the Prometheus client.
//
//	reg.MustRegister(gateprom.New(ln, prometheus.Labels{"listener": "http"}))
package gateprom

import (
	"github.com/peergate/peergate/gate"
	"github.com/prometheus/client_golang/prometheus"
)

// Collector is a prometheus.Collector for one gate.Listener. It reads the listener's counters at
// scrape time, so it adds nothing to the cost of Accept.
type Collector struct {
	ln   *gate.Listener
	desc *prometheus.Desc
}

// New returns a Collector for ln. It exposes peergate_gate_connections_total with a result label
// (allowed, denied, error, limited, banned) plus the given constant labels, which tell several listeners apart.
func New(ln *gate.Listener, labels prometheus.Labels) *Collector {
	return &Collector{ln: ln, desc: prometheus.NewDesc("peergate_gate_connections_total",
		"Connections judged by a gate.Listener, by result: allowed, denied (by the ACL; in dry-run "+
			"mode, would have been), error (the peer could not be found or judged; closed), "+
			"limited (allowed by the ACL, over a per-source limit; closed), banned (denied by a ban of "+
			"the ban layer, Options.Bans).",
		[]string{"result"}, labels)}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	s := c.ln.Stats()
	for _, r := range []struct {
		result string
		n      uint64
	}{{"allowed", s.Allowed}, {"denied", s.Denied}, {"error", s.Errors}, {"limited", s.Limited}, {"banned", s.Banned}} {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(r.n), r.result)
	}
}
