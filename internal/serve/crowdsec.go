package serve

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/peergate/peergate/acl"
	"github.com/peergate/peergate/gate/bans"
	"github.com/peergate/peergate/internal/config"
	"github.com/peergate/peergate/internal/redact"
)

// crowdsec is peergate as a CrowdSec bouncer: it pulls the decisions of a local API (LAPI) in
// stream mode, GET /v1/decisions/stream?startup=true first (all live decisions, which replace
// the table's crowdsec bans in one step) and then the deltas every interval. Decisions of type
// ban with scope Ip or Range become bans of origin crowdsec, expiring after their duration;
// others are ignored and counted. The LAPI being down or slow never blocks an accept: the
// bans already known stay, the outage is logged once and peergate_crowdsec_up is 0; when it
// answers again, the next pull is a full startup pull (resync).
type crowdsec struct {
	s      *Server
	cfg    config.CrowdSec
	client *http.Client
	down   bool // in an outage: logged once
	synced bool // a startup pull succeeded since the last outage
}

// decision is one entry of the LAPI's stream.
type decision struct {
	Duration string `json:"duration"`
	Origin   string `json:"origin"`
	Scenario string `json:"scenario"`
	Scope    string `json:"scope"`
	Type     string `json:"type"`
	Value    string `json:"value"`
}

type stream struct {
	New     []decision `json:"new"`
	Deleted []decision `json:"deleted"`
}

func (s *Server) startCrowdSec(c *config.CrowdSec, done <-chan struct{}) {
	if c == nil {
		return
	}
	timeout := min(max(c.Interval, time.Second), 30*time.Second)
	cs := &crowdsec{s: s, cfg: *c, client: &http.Client{Timeout: timeout}}
	s.m.crowdsecUp.Set(0)
	go cs.run(done)
}

func (cs *crowdsec) run(done <-chan struct{}) {
	t := time.NewTicker(cs.cfg.Interval)
	defer t.Stop()
	for {
		cs.pull()
		select {
		case <-done:
			return
		case <-t.C:
		}
	}
}

// pull fetches one batch of decisions and applies it.
func (cs *crowdsec) pull() {
	startup := !cs.synced
	st, err := cs.fetch(startup)
	if err != nil {
		cs.s.m.crowdsecUp.Set(0)
		if !cs.down {
			cs.down = true
			cs.s.log.Error("crowdsec LAPI unreachable; keeping the bans already known", "url", redact.URL(cs.cfg.URL), "err", err,
				"bans", cs.s.bans.Count()[bans.OriginCrowdSec])
		}
		cs.synced = false // resync when it is back
		return
	}
	if cs.down {
		cs.down = false
		cs.s.log.Info("crowdsec LAPI reachable again; resynced", "url", redact.URL(cs.cfg.URL))
	}
	cs.s.m.crowdsecUp.Set(1)
	cs.apply(st, startup)
	cs.synced = true
}

func (cs *crowdsec) fetch(startup bool) (*stream, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cs.client.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("%s/v1/decisions/stream?startup=%t", cs.cfg.URL, startup), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("X-Api-Key", cs.cfg.APIKey)
	req.Header.Set("User-Agent", "peergate-bouncer/1")
	resp, err := cs.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	var st stream
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return nil, fmt.Errorf("decisions: %w", err)
	}
	return &st, nil
}

// toBans turns decisions into bans (ranges cut around never_ban addresses); the rest is counted.
func (cs *crowdsec) toBans(ds []decision, now time.Time) []bans.Ban {
	out := make([]bans.Ban, 0, len(ds))
	guard := cs.s.bans.Guard()
	for _, d := range ds {
		p, ok := cs.prefix(d)
		if !ok || !strings.EqualFold(d.Type, "ban") {
			cs.s.m.bansRefused.WithLabelValues("unsupported").Inc()
			continue
		}
		dur, err := time.ParseDuration(d.Duration)
		if err != nil || dur <= 0 {
			continue // already expired
		}
		b := bans.Ban{Origin: bans.OriginCrowdSec, Reason: d.Scenario, Created: now, Expires: now.Add(dur)}
		if len(b.Reason) > bans.MaxReason {
			b.Reason = b.Reason[:bans.MaxReason]
		}
		for _, q := range bans.Exclude(p, guard) {
			b.Prefix = q
			out = append(out, b)
		}
	}
	return out
}

func (cs *crowdsec) prefix(d decision) (netip.Prefix, bool) {
	switch strings.ToLower(d.Scope) {
	case "ip", "range":
		p, err := acl.ParsePrefix(d.Value)
		return p, err == nil
	}
	return netip.Prefix{}, false
}

func (cs *crowdsec) apply(st *stream, startup bool) {
	now := time.Now()
	t := cs.s.bans
	news := cs.toBans(st.New, now)
	if startup {
		n, err := t.ReplaceOrigin(bans.OriginCrowdSec, news)
		if err != nil {
			cs.s.refused(err)
			cs.s.log.Warn("crowdsec decisions refused", "added", n, "err", err)
		}
		cs.s.log.Info("crowdsec decisions loaded", "bans", n)
		return
	}
	removed := 0
	for _, d := range st.Deleted {
		if p, ok := cs.prefix(d); ok {
			for _, q := range bans.Exclude(p, t.Guard()) {
				if t.RemoveOrigin(q, bans.OriginCrowdSec) {
					removed++
				}
			}
		}
	}
	n := 0
	if len(news) > 0 {
		var err error
		if n, err = t.AddBatch(news); err != nil {
			cs.s.refused(err)
			cs.s.log.Warn("crowdsec decisions refused", "added", n, "err", err)
		}
	}
	if n > 0 || removed > 0 {
		cs.s.log.Info("crowdsec decisions applied", "added", n, "removed", removed)
	}
}
