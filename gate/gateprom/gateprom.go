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

// New returns a Collector for ln. It exposes peergate_gate_connections_total with the labels
// verdict (allow: handed on; deny: closed) and reason (gate.Reason: acl, dry_run, ban, limit,
// proxy, peer_error), one series for each of gate.Outcomes(), plus the given constant labels,
// which tell several listeners apart. These are the verdict and reason labels of peergate serve's
// peergate_connections_total.
func New(ln *gate.Listener, labels prometheus.Labels) *Collector {
	return &Collector{ln: ln, desc: prometheus.NewDesc("peergate_gate_connections_total",
		"Connections judged by a gate.Listener, by verdict (allow: handed on; deny: closed) and reason "+
			"(acl: the ACL decided; dry_run: the ACL or a ban denied, DryRun handed it on; ban: a ban of "+
			"Options.Bans denied; limit: a per-source limit denied; proxy: no valid PROXY header from a "+
			"trusted proxy, or an untrusted peer where one is required; peer_error: the peer could not be "+
			"found or judged).",
		[]string{"verdict", "reason"}, labels)}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	counts := c.ln.Counts()
	for _, o := range gate.Outcomes() {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(counts[o]),
			o.Verdict.String(), o.Reason.String())
	}
}
