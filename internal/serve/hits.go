package serve

import (
	"cmp"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/peergate/peergate/acl"
	"github.com/peergate/peergate/gate"
	"github.com/peergate/peergate/internal/config"
)

// MaxRuleHits is how many distinct rules a service's hit table tracks. Decisions by rules beyond
// it count in the table's "untracked" total, so a million-line list cannot grow it without bound:
// at most MaxRuleHits × ~100 bytes a service.
const MaxRuleHits = 10_000

// hitKey names a deciding rule by value, so that its count survives a reload that keeps it.
type hitKey struct {
	prefix netip.Prefix // zero for the default and unix entries
	unix   string       // "uid 0" for a unix-policy entry; "default" for the default
	origin acl.Origin
	action acl.Action
}

type hitCount struct {
	hits uint64
	last time.Time
}

// ruleHits counts, per service, how many connections each rule of its ACL decided and when it
// last did: what an operator reads before pruning rules.
type ruleHits struct {
	mu        sync.Mutex
	since     time.Time
	byRule    map[hitKey]*hitCount
	untracked hitCount // decisions by rules beyond MaxRuleHits
	overflow  bool     // some rule was not tracked: "never matched" cannot be told
}

func newRuleHits() *ruleHits {
	return &ruleHits{since: time.Now(), byRule: map[hitKey]*hitCount{}}
}

// count records one ACL decision.
func (h *ruleHits) count(d acl.Decision, now time.Time) {
	k := hitKey{action: d.Action, unix: "default"}
	switch {
	case d.Rule != nil:
		k = hitKey{prefix: d.Rule.Prefix, origin: d.Rule.Origin, action: d.Action}
	case d.UnixRule != nil:
		rule, _ := d.By()
		k = hitKey{unix: rule, origin: d.UnixRule.Origin, action: d.Action}
	}
	h.mu.Lock()
	c := h.byRule[k]
	if c == nil {
		if len(h.byRule) >= MaxRuleHits {
			h.untracked.hits++
			h.untracked.last = now
			h.overflow = true
			h.mu.Unlock()
			return
		}
		c = &hitCount{}
		h.byRule[k] = c
	}
	c.hits++
	c.last = now
	h.mu.Unlock()
}

// countEvent records the ACL decision of ev, if the ACL decided it.
func (h *ruleHits) countEvent(ev gate.Event) {
	if h == nil {
		return
	}
	if ev.Err != nil || ev.Ban != nil {
		return
	}
	h.count(ev.Decision, time.Now())
}

// RuleHit is one rule's line of GET /rules.
type RuleHit struct {
	Rule    string    `json:"rule"` // prefix, "uid 0", or "default"
	Origin  string    `json:"origin,omitempty"`
	Action  string    `json:"action"`
	Hits    uint64    `json:"hits"`
	LastHit time.Time `json:"last_hit"`
}

// RuleHits is the answer of GET /rules?service=S: the top rules by hits and what the rest add up to.
type RuleHits struct {
	Service  string    `json:"service"`
	ACL      string    `json:"acl"`
	Since    time.Time `json:"since"` // when counting started (the first load of the service)
	Capacity int       `json:"capacity"`
	Top      []RuleHit `json:"top"`
	Rest     struct {
		Rules int    `json:"rules"`
		Hits  uint64 `json:"hits"`
	} `json:"rest"` // tracked rules beyond top, plus untracked decisions
	Untracked uint64 `json:"untracked"` // decisions by rules beyond capacity (also in rest.hits)
	// Unused lists rules of the running ACL that decided nothing since Since (at most top of
	// them, with UnusedCount the full number); absent when the table overflowed and that cannot
	// be told.
	Unused      []string `json:"unused,omitempty"`
	UnusedCount *int     `json:"unused_count,omitempty"`
}

// snapshot returns the top n rules by hits, the rest's totals and, given the service's ACL, the
// rules it holds that decided nothing.
func (h *ruleHits) snapshot(n int, svc *config.Service) RuleHits {
	h.mu.Lock()
	all := make([]RuleHit, 0, len(h.byRule))
	seen := make(map[hitKey]bool, len(h.byRule))
	for k, c := range h.byRule {
		r := RuleHit{Rule: k.unix, Origin: k.origin.String(), Action: k.action.String(), Hits: c.hits, LastHit: c.last}
		if k.prefix.IsValid() {
			r.Rule = k.prefix.String()
		}
		if k.origin == (acl.Origin{}) {
			r.Origin = ""
		}
		all = append(all, r)
		seen[k] = true
	}
	out := RuleHits{Service: svc.Name, ACL: svc.ACL.Name, Since: h.since, Capacity: MaxRuleHits, Untracked: h.untracked.hits}
	overflow := h.overflow
	h.mu.Unlock()
	slices.SortFunc(all, func(a, b RuleHit) int {
		if c := cmp.Compare(b.Hits, a.Hits); c != 0 {
			return c
		}
		return b.LastHit.Compare(a.LastHit)
	})
	out.Top = all[:min(n, len(all))]
	for _, r := range all[len(out.Top):] {
		out.Rest.Rules++
		out.Rest.Hits += r.Hits
	}
	out.Rest.Hits += out.Untracked
	if !overflow && svc.ACL.ACL != nil {
		unused := 0
		out.Unused = []string{}
		for _, r := range svc.ACL.ACL.Rules() {
			if !seen[hitKey{prefix: r.Prefix, origin: r.Origin, action: r.Action}] {
				if unused < n {
					out.Unused = append(out.Unused, r.String())
				}
				unused++
			}
		}
		for _, r := range svc.ACL.ACL.UnixRules() {
			rule, _ := acl.Decision{UnixRule: &r}.By()
			if !seen[hitKey{unix: rule, origin: r.Origin, action: r.Action}] {
				if unused < n {
					out.Unused = append(out.Unused, r.String())
				}
				unused++
			}
		}
		out.UnusedCount = &unused
	}
	return out
}

// getRules serves GET /rules?service=S[&top=N]: per-rule hits of one service.
func (s *Server) getRules(w http.ResponseWriter, r *http.Request) {
	n := 100
	if t := r.URL.Query().Get("top"); t != "" {
		v, err := strconv.Atoi(t)
		if err != nil || v < 0 || v > MaxRuleHits {
			jsonError(w, http.StatusBadRequest, fmt.Errorf("top %q: want a number from 0 to %d", t, MaxRuleHits))
			return
		}
		n = v
	}
	svc := s.requestedService(w, r)
	if svc == nil {
		return
	}
	writeJSON(w, http.StatusOK, s.m.hitsOf(svc.Name).snapshot(n, svc))
}

// hitsOf returns the hit table of service name, made on first use and kept across reloads.
func (m *metrics) hitsOf(name string) *ruleHits {
	m.hitsMu.Lock()
	defer m.hitsMu.Unlock()
	if m.hits == nil {
		m.hits = map[string]*ruleHits{}
	}
	h := m.hits[name]
	if h == nil {
		h = newRuleHits()
		m.hits[name] = h
	}
	return h
}
