package serve

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/peergate/peergate/gate/bans"
	"github.com/peergate/peergate/internal/config"
	"github.com/peergate/peergate/internal/redact"
)

// reporter pushes automatic bans to the CrowdSec LAPI as alerts (crowdsec.report), logged in as
// a registered machine (crowdsec.credentials_file): the LAPI turns each into a decision that
// every bouncer of the fleet, every other gate included, pulls within its interval. Bans are
// queued (bounded) and sent in batches; a failed send is kept and retried at the next tick, and
// an outage is logged once.
type reporter struct {
	s      *Server
	cfg    config.CrowdSec
	client *http.Client
	q      chan bans.Ban
	token  string
	expire time.Time
	down   bool
}

// reportQueue bounds the bans waiting to be reported.
const reportQueue = 4096

func (s *Server) startReporter(c *config.CrowdSec, done <-chan struct{}) *reporter {
	if c == nil || !c.Report {
		return nil
	}
	r := &reporter{s: s, cfg: *c, client: &http.Client{Timeout: min(max(c.Interval, time.Second), 30*time.Second)},
		q: make(chan bans.Ban, reportQueue)}
	go r.run(done)
	return r
}

// report queues b; with the queue full it is dropped and logged (the ban itself applies here).
func (r *reporter) report(b bans.Ban) {
	select {
	case r.q <- b:
	default:
		r.s.log.Warn("crowdsec report queue full; ban not reported", "ban", b.Prefix.String())
	}
}

func (r *reporter) run(done <-chan struct{}) {
	t := time.NewTicker(min(r.cfg.Interval, time.Second))
	defer t.Stop()
	var pending []bans.Ban
	for {
		select {
		case <-done:
			return
		case b := <-r.q:
			pending = append(pending, b)
			continue
		case <-t.C:
		}
		if len(pending) == 0 {
			continue
		}
		if err := r.send(pending); err != nil {
			if !r.down {
				r.down = true
				r.s.log.Error("crowdsec: auto-bans not reported; will retry", "url", redact.URL(r.cfg.URL), "pending", len(pending), "err", err)
			}
			if len(pending) > reportQueue {
				pending = pending[len(pending)-reportQueue:]
			}
			continue
		}
		if r.down {
			r.down = false
			r.s.log.Info("crowdsec: reporting again", "url", redact.URL(r.cfg.URL))
		}
		r.s.log.Info("crowdsec: auto-bans reported", "count", len(pending))
		pending = nil
	}
}

// alert is a CrowdSec alert carrying one ban decision, as POST /v1/alerts takes it.
type alert struct {
	Scenario        string        `json:"scenario"`
	ScenarioHash    string        `json:"scenario_hash"`
	ScenarioVersion string        `json:"scenario_version"`
	Message         string        `json:"message"`
	EventsCount     int           `json:"events_count"`
	StartAt         string        `json:"start_at"`
	StopAt          string        `json:"stop_at"`
	Capacity        int           `json:"capacity"`
	Leakspeed       string        `json:"leakspeed"`
	Simulated       bool          `json:"simulated"`
	Events          []any         `json:"events"`
	Source          alertSource   `json:"source"`
	Decisions       []alertAction `json:"decisions"`
}

type alertSource struct {
	Scope string `json:"scope"`
	Value string `json:"value"`
	IP    string `json:"ip,omitempty"`
	Range string `json:"range,omitempty"`
}

type alertAction struct {
	Duration string `json:"duration"`
	Origin   string `json:"origin"`
	Scenario string `json:"scenario"`
	Scope    string `json:"scope"`
	Type     string `json:"type"`
	Value    string `json:"value"`
}

// neverDuration stands for a ban with no expiry, which a CrowdSec decision cannot express.
const neverDuration = 10 * 365 * 24 * time.Hour

func toAlert(b bans.Ban, now time.Time) (alert, bool) {
	d := neverDuration
	if !b.Expires.IsZero() {
		if d = b.Expires.Sub(now).Round(time.Second); d <= 0 {
			return alert{}, false
		}
	}
	src := alertSource{Scope: "Ip", Value: b.Prefix.Addr().String(), IP: b.Prefix.Addr().String()}
	if !b.Prefix.IsSingleIP() {
		src = alertSource{Scope: "Range", Value: b.Prefix.String(), Range: b.Prefix.String()}
	}
	ts := b.Created.UTC().Format(time.RFC3339)
	return alert{Scenario: "peergate/auto-ban", Message: "peergate auto-ban " + b.Prefix.String() + ": " + b.Reason,
		EventsCount: 1, StartAt: ts, StopAt: ts, Leakspeed: "0", Events: []any{}, Source: src,
		Decisions: []alertAction{{Duration: d.String(), Origin: "peergate", Scenario: "peergate/auto-ban",
			Scope: src.Scope, Type: "ban", Value: src.Value}}}, true
}

func (r *reporter) send(list []bans.Ban) error {
	now := time.Now()
	alerts := make([]alert, 0, len(list))
	for _, b := range list {
		if a, ok := toAlert(b, now); ok {
			alerts = append(alerts, a)
		}
	}
	if len(alerts) == 0 {
		return nil
	}
	body, _ := json.Marshal(alerts)
	for attempt := 0; ; attempt++ {
		if r.token == "" || time.Now().After(r.expire.Add(-time.Minute)) {
			if err := r.login(); err != nil {
				return err
			}
		}
		code, out, err := r.do("POST", "/v1/alerts", r.token, body)
		switch {
		case err != nil:
			return err
		case code == http.StatusUnauthorized && attempt == 0:
			r.token = "" // expired early: log in again, once
			continue
		case code/100 != 2:
			return fmt.Errorf("POST /v1/alerts: %d %s", code, out)
		}
		return nil
	}
}

func (r *reporter) login() error {
	body, _ := json.Marshal(map[string]string{"machine_id": r.cfg.Login, "password": r.cfg.Password})
	code, out, err := r.do("POST", "/v1/watchers/login", "", body)
	if err != nil {
		return err
	}
	var resp struct {
		Token  string    `json:"token"`
		Expire time.Time `json:"expire"`
	}
	if code != http.StatusOK || json.Unmarshal([]byte(out), &resp) != nil || resp.Token == "" {
		return fmt.Errorf("login as machine %q: %d %s", r.cfg.Login, code, out)
	}
	r.token, r.expire = resp.Token, resp.Expire
	if r.expire.IsZero() {
		r.expire = time.Now().Add(time.Hour)
	}
	return nil
}

func (r *reporter) do(method, path, token string, body []byte) (int, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), r.client.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, r.cfg.URL+path, bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "peergate/1") // the LAPI refuses a login whose User-Agent has no "/version"
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, strings.TrimSpace(string(b)), nil
}
