package serve

import (
	"net/netip"
	"sync"
	"time"

	"github.com/peergate/peergate/acl"
	"github.com/peergate/peergate/gate"
	"github.com/peergate/peergate/gate/bans"
	"github.com/peergate/peergate/internal/config"
	"github.com/peergate/peergate/internal/version"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// RuleLabels is how many distinct deciding rules a service's peergate_denials_total tells apart.
// The first RuleLabels rules that deny something keep their own series; denials by any other
// rule count under rule="other", so a million-line blocklist cannot explode the label set.
const RuleLabels = 100

// metrics are the Prometheus metrics of a Server, in a registry of their own.
type metrics struct {
	reg       *prometheus.Registry
	conns     *prometheus.CounterVec
	denials   *prometheus.CounterVec
	active    *prometheus.GaugeVec
	bytes     *prometheus.CounterVec
	upFail    *prometheus.CounterVec
	aborts    *prometheus.CounterVec
	upLatency *prometheus.HistogramVec
	reloads   *prometheus.CounterVec
	cfgInfo   *prometheus.GaugeVec
	cfgTime   prometheus.Gauge
	aclRules  *prometheus.GaugeVec

	banDenials  *prometheus.CounterVec
	crowdsecUp  prometheus.Gauge
	bansRefused *prometheus.CounterVec

	mu    sync.Mutex
	rules map[string]*ruleSet // by service name, kept across reloads

	hitsMu sync.Mutex
	hits   map[string]*ruleHits    // per-rule hits by service name, kept across reloads (hits.go)
	recent map[string]*recentPeers // recent distinct peers by service name (whatif.go)
}

func newMetrics() *metrics {
	m := &metrics{reg: prometheus.NewRegistry(), rules: map[string]*ruleSet{}}
	f := func(c prometheus.Collector) { m.reg.MustRegister(c) }
	m.conns = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "peergate_connections_total",
		Help: "Connections judged, by service, verdict (allow: handed on, deny: closed) and reason (gate.Reason: acl; " +
			"dry_run: the ACL or a ban denied, dry_run handed it on; ban: a ban of the ban layer denied, whatever the ACL says; " +
			"limit: a per-source limit denied; proxy: no valid PROXY header from a trusted proxy, or an untrusted peer " +
			"where the header is required; peer_error: the peer could not be found or judged, denied to fail closed)."},
		[]string{"service", "verdict", "reason"})
	m.denials = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "peergate_denials_total",
		Help: "ACL denials by deciding rule (prefix and origin; rule=\"default\" for the default, " +
			"rule=\"other\" beyond the first 100 rules of a service)."},
		[]string{"service", "rule", "origin"})
	m.active = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "peergate_connections_active",
		Help: "Allowed connections being proxied or served now."}, []string{"service"})
	m.bytes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "peergate_proxied_bytes_total",
		Help: "Bytes proxied, counted when a connection ends; direction in is client to upstream."},
		[]string{"service", "direction"})
	m.upFail = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "peergate_upstream_connect_failures_total",
		Help: "Failed connects to a service's upstream (the client is closed)."}, []string{"service"})
	m.aborts = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "peergate_proxy_aborts_total",
		Help: "Proxied connections ended before both ways reached EOF, by reason (idle: quiet both ways for " +
			"idle_timeout, closed; read: a read failed, e.g. a peer reset; write: a write failed or made no " +
			"progress for idle_timeout; both sides reset on read and write)."}, []string{"service", "reason"})
	m.upLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "peergate_upstream_connect_duration_seconds",
		Help:    "Time to connect to the upstream, successful connects only.",
		Buckets: prometheus.ExponentialBuckets(50e-6, 4, 10)}, []string{"service"})
	m.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "peergate_config_reloads_total",
		Help: "Config reloads by result (success, failure: the running config was kept)."}, []string{"result"})
	m.cfgInfo = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "peergate_config_info",
		Help: "The running config: 1 for its file and sha256."}, []string{"file", "sha256"})
	m.cfgTime = prometheus.NewGauge(prometheus.GaugeOpts{Name: "peergate_config_loaded_timestamp_seconds",
		Help: "When the running config was loaded, in seconds since the epoch."})
	m.aclRules = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "peergate_acl_rules",
		Help: "Rules in each ACL of the running config."}, []string{"acl"})
	m.banDenials = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "peergate_ban_denials_total",
		Help: "Connections denied by a ban of the ban layer, by service and the ban's origin (api, auto, crowdsec); " +
			"in dry_run, those handed on that a ban would have denied."}, []string{"service", "origin"})
	m.bansRefused = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "peergate_bans_refused_total",
		Help: "Bans refused, by reason: guarded (covers a never_ban address), full (max_bans live bans), " +
			"invalid (bad prefix, duration or reason), unsupported (a CrowdSec decision of another type or scope)."},
		[]string{"reason"})
	m.crowdsecUp = prometheus.NewGauge(prometheus.GaugeOpts{Name: "peergate_crowdsec_up",
		Help: "1 when the last pull of decisions from the CrowdSec LAPI succeeded, 0 when it failed (the bans already known stay)."})
	for _, r := range []string{"guarded", "full", "invalid", "unsupported"} {
		m.bansRefused.WithLabelValues(r)
	}
	for _, c := range []prometheus.Collector{m.banDenials, m.bansRefused, m.crowdsecUp,
		m.conns, m.denials, m.active, m.bytes, m.upFail, m.aborts, m.upLatency,
		m.reloads, m.cfgInfo, m.cfgTime, m.aclRules} {
		f(c)
	}
	m.reloads.WithLabelValues("success")
	m.reloads.WithLabelValues("failure")
	f(collectors.NewBuildInfoCollector())
	v := version.Get()
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "peergate_build_info",
		Help:        "Which build of peergate runs: 1, with its module version, VCS revision and Go version.",
		ConstLabels: prometheus.Labels{"version": v.Version, "revision": v.Revision, "goversion": v.Go}},
		func() float64 { return 1 }))
	f(collectors.NewGoCollector())
	f(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// loaded records cfg as the running config.
func (m *metrics) loaded(cfg *config.File) {
	m.cfgInfo.Reset()
	m.cfgInfo.WithLabelValues(cfg.Path, cfg.Hash).Set(1)
	m.cfgTime.Set(float64(time.Now().UnixNano()) / 1e9)
	m.aclRules.Reset()
	for _, a := range cfg.ACLs {
		m.aclRules.WithLabelValues(a.Name).Set(float64(a.ACL.Len()))
	}
}

// service returns the metrics of one service, resolved once so that counting a connection costs
// no label lookups.
func (m *metrics) service(name string) *svcMetrics {
	m.mu.Lock()
	rs := m.rules[name]
	if rs == nil {
		rs = &ruleSet{vec: m.denials, service: name, byRule: map[ruleKey]prometheus.Counter{}}
		m.rules[name] = rs
	}
	m.mu.Unlock()
	var aborts [nEnds]prometheus.Counter
	for e, reason := range abortReasons {
		if reason != "" {
			aborts[e] = m.aborts.WithLabelValues(name, reason)
		}
	}
	conns := make(map[gate.Outcome]prometheus.Counter, len(gate.Outcomes()))
	for _, o := range gate.Outcomes() {
		conns[o] = m.conns.WithLabelValues(name, o.Verdict.String(), o.Reason.String())
	}
	return &svcMetrics{
		aborts: aborts,
		conns:  conns,
		banVec: m.banDenials, service: name, byOrigin: map[string]prometheus.Counter{},
		rules:     rs,
		hits:      m.hitsOf(name),
		recent:    m.recentOf(name),
		active:    m.active.WithLabelValues(name),
		bytesIn:   m.bytes.WithLabelValues(name, "in"),
		bytesOut:  m.bytes.WithLabelValues(name, "out"),
		upFail:    m.upFail.WithLabelValues(name),
		upLatency: m.upLatency.WithLabelValues(name),
	}
}

// svcMetrics are one service's metrics.
type svcMetrics struct {
	conns                     map[gate.Outcome]prometheus.Counter // every outcome, resolved once
	banVec                    *prometheus.CounterVec
	service                   string
	banMu                     sync.Mutex
	byOrigin                  map[string]prometheus.Counter // ban denials by origin (few)
	rules                     *ruleSet
	hits                      *ruleHits
	recent                    *recentPeers
	active                    prometheus.Gauge
	bytesIn, bytesOut, upFail prometheus.Counter
	aborts                    [nEnds]prometheus.Counter // by end; nil for endDone
	upLatency                 prometheus.Observer
}

// decided counts one judged connection; it is the gate's OnDecision hook.
func (sm *svcMetrics) decided(ev gate.Event) {
	sm.hits.countEvent(ev)
	sm.recent.addEvent(ev)
	sm.conns[ev.Outcome()].Inc()
	switch {
	case ev.Err != nil:
	case ev.Ban != nil: // denied by a ban, or handed on by dry_run: by the ban's origin
		sm.banMu.Lock()
		c := sm.byOrigin[ev.Ban.Origin]
		if c == nil {
			c = sm.banVec.WithLabelValues(sm.service, ev.Ban.Origin)
			sm.byOrigin[ev.Ban.Origin] = c
		}
		sm.banMu.Unlock()
		c.Inc()
	case ev.Limit == nil && !ev.Decision.Allowed(): // the ACL denied (or would have, in dry_run)
		sm.rules.count(ev.Decision.Rule)
	}
}

// ruleKey names a deciding rule by value, so that a rule keeps its series across reloads.
type ruleKey struct {
	prefix netip.Prefix
	origin acl.Origin
}

// ruleSet counts denials by rule, with at most RuleLabels rules of their own.
type ruleSet struct {
	vec     *prometheus.CounterVec
	service string

	mu     sync.Mutex
	byRule map[ruleKey]prometheus.Counter
	def    prometheus.Counter
	other  prometheus.Counter
}

func (rs *ruleSet) count(r *acl.Rule) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if r == nil {
		if rs.def == nil {
			rs.def = rs.vec.WithLabelValues(rs.service, "default", "")
		}
		rs.def.Inc()
		return
	}
	k := ruleKey{r.Prefix, r.Origin}
	c := rs.byRule[k]
	if c == nil {
		if len(rs.byRule) < RuleLabels {
			c = rs.vec.WithLabelValues(rs.service, r.Prefix.String(), r.Origin.String())
			rs.byRule[k] = c
		} else {
			if rs.other == nil {
				rs.other = rs.vec.WithLabelValues(rs.service, "other", "")
			}
			c = rs.other
		}
	}
	c.Inc()
}

// watchBans exposes the live bans of t by origin, counted at scrape time.
func (m *metrics) watchBans(t *bans.Table) {
	m.reg.MustRegister(bansCollector{t, prometheus.NewDesc("peergate_bans_active",
		"Live bans in the ban layer, by origin (api, auto, crowdsec).", []string{"origin"}, nil)})
}

type bansCollector struct {
	t    *bans.Table
	desc *prometheus.Desc
}

func (c bansCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c bansCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.t.Count()
	for _, o := range []string{bans.OriginAPI, bans.OriginAuto, bans.OriginCrowdSec} {
		if _, ok := n[o]; !ok {
			n[o] = 0
		}
	}
	for o, k := range n {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(k), o)
	}
}
