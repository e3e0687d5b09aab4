package serve

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/peergate/peergate/gate/bans"
	"github.com/peergate/peergate/internal/config"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// banServer returns a Server with a ban table guarding guard and at most max bans, metrics and a
// silent log: enough for the ban paths, which need no listener.
func banServer(max int, guard ...string) *Server {
	var g []netip.Prefix
	for _, p := range guard {
		g = append(g, netip.MustParsePrefix(p))
	}
	return &Server{log: slog.New(slog.NewTextHandler(io.Discard, nil)), m: newMetrics(), bans: bans.New(bans.Config{Max: max, Guard: g})}
}

// banned lists the table's bans as "prefix origin", sorted.
func banned(t *bans.Table) string {
	var out []string
	for _, b := range t.List() {
		out = append(out, b.Prefix.String()+" "+b.Origin)
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

// lapi is a fake CrowdSec LAPI on a loopback port: each GET of the decision stream gets the next
// scripted answer (status and body), and the startup parameter and API key it was asked with
// are recorded.
type lapi struct {
	mu      sync.Mutex
	answers [][2]string // status, body
	asked   []string    // "startup=true key=K"
}

func (l *lapi) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.asked = append(l.asked, fmt.Sprintf("startup=%s key=%s", r.URL.Query().Get("startup"), r.Header.Get("X-Api-Key")))
	a := l.answers[0]
	l.answers = l.answers[1:]
	var code int
	fmt.Sscan(a[0], &code)
	w.WriteHeader(code)
	io.WriteString(w, a[1])
}

// TestCrowdSecPull: pulls from a fake LAPI, in order: a startup pull (ip and range bans, a range
// cut around never_ban, what is not a ban or not an IP counted as unsupported, an expired one
// skipped), a delta (deletions, an addition), an outage (the bans stay, up 0), and the resync
// after it (a startup pull again, which replaces the crowdsec bans and leaves others alone).
func TestCrowdSecPull(t *testing.T) {
	const d = `{"duration": "%s", "scenario": "crowdsecurity/ssh-bf", "scope": "%s", "type": "%s", "value": "%s"}`
	dec := func(dur, scope, typ, value string) string { return fmt.Sprintf(d, dur, scope, typ, value) }
	l := &lapi{}
	srv := httptest.NewServer(l) // 127.0.0.1
	defer srv.Close()
	s := banServer(0, "192.0.2.1/32")
	if _, err := s.bans.Add(bans.Ban{Prefix: netip.MustParsePrefix("203.0.113.1/32"), Origin: bans.OriginAPI}); err != nil {
		t.Fatal(err)
	}
	cs := &crowdsec{s: s, cfg: config.CrowdSec{URL: srv.URL, APIKey: "k"}, client: &http.Client{Timeout: 5 * time.Second}}
	for _, step := range []struct {
		name        string
		status      string
		body        string
		asked       string // the query the pull makes
		bans        string // the table afterwards
		up          float64
		unsupported float64 // counted so far
	}{
		{"startup", "200", `{"new": [` + strings.Join([]string{
			dec("1h", "Ip", "ban", "198.51.100.7"),
			dec("1h", "Range", "ban", "192.0.2.0/31"),
			dec("1h", "ip", "captcha", "198.51.100.8"),
			dec("1h", "country", "ban", "FR"),
			dec("-5s", "ip", "ban", "198.51.100.9"),
		}, ",") + `], "deleted": null}`, "startup=true key=k",
			"192.0.2.0/32 crowdsec, 198.51.100.7/32 crowdsec, 203.0.113.1/32 api", 1, 2},
		{"delta", "200", `{"new": [` + dec("30m", "ip", "ban", "198.51.100.10") + `], "deleted": [` +
			dec("0s", "ip", "ban", "198.51.100.7") + "," + dec("0s", "ip", "ban", "203.0.113.1") + `]}`, "startup=false key=k",
			"192.0.2.0/32 crowdsec, 198.51.100.10/32 crowdsec, 203.0.113.1/32 api", 1, 2},
		{"outage", "503", "down for maintenance", "startup=false key=k",
			"192.0.2.0/32 crowdsec, 198.51.100.10/32 crowdsec, 203.0.113.1/32 api", 0, 2},
		{"garbage", "200", "{", "startup=true key=k",
			"192.0.2.0/32 crowdsec, 198.51.100.10/32 crowdsec, 203.0.113.1/32 api", 0, 2},
		{"resync", "200", `{"new": [` + dec("1h", "ip", "ban", "198.51.100.11") + `]}`, "startup=true key=k",
			"198.51.100.11/32 crowdsec, 203.0.113.1/32 api", 1, 2},
		{"after the resync", "200", `{}`, "startup=false key=k", "198.51.100.11/32 crowdsec, 203.0.113.1/32 api", 1, 2},
	} {
		l.mu.Lock()
		l.answers, l.asked = [][2]string{{step.status, step.body}}, nil
		l.mu.Unlock()
		cs.pull()
		if len(l.asked) != 1 || l.asked[0] != step.asked {
			t.Errorf("%s: asked %q, want %q", step.name, l.asked, step.asked)
		}
		if got := banned(s.bans); got != step.bans {
			t.Errorf("%s: bans %s, want %s", step.name, got, step.bans)
		}
		if got := testutil.ToFloat64(s.m.crowdsecUp); got != step.up {
			t.Errorf("%s: up %v, want %v", step.name, got, step.up)
		}
		if got := testutil.ToFloat64(s.m.bansRefused.WithLabelValues("unsupported")); got != step.unsupported {
			t.Errorf("%s: %v unsupported, want %v", step.name, got, step.unsupported)
		}
	}
}

// TestBannerApply: a batch of auto-bans goes into the table in one step, but for those that
// cover a never_ban address, and those over max_bans, which are refused and counted; a ban that
// finds the queue full is refused and counted.
func TestBannerApply(t *testing.T) {
	ban := func(p string) bans.Ban {
		return bans.Ban{Prefix: netip.MustParsePrefix(p), Origin: bans.OriginAuto, Reason: "3 denials", Created: time.Now()}
	}
	for _, tc := range []struct {
		name     string
		max      int
		batch    []bans.Ban
		want     string
		refused  map[string]float64
		queueCap int
	}{
		{name: "all in", max: 10, batch: []bans.Ban{ban("198.51.100.0/24"), ban("2001:db8::/64")},
			want: "198.51.100.0/24 auto, 2001:db8::/64 auto", refused: map[string]float64{}},
		{name: "one guarded", max: 10, batch: []bans.Ban{ban("192.0.2.0/24"), ban("198.51.100.7/32")},
			want: "198.51.100.7/32 auto", refused: map[string]float64{"guarded": 1}},
		{name: "over max_bans", max: 1, batch: []bans.Ban{ban("198.51.100.7/32"), ban("198.51.100.8/32")},
			want: "198.51.100.7/32 auto", refused: map[string]float64{"full": 1}},
	} {
		s := banServer(tc.max, "192.0.2.1/32")
		b := &banner{s: s}
		b.apply(tc.batch)
		if got := banned(s.bans); got != tc.want {
			t.Errorf("%s: bans %s, want %s", tc.name, got, tc.want)
		}
		for reason, want := range tc.refused {
			if got := testutil.ToFloat64(s.m.bansRefused.WithLabelValues(reason)); got != want {
				t.Errorf("%s: refused %s %v, want %v", tc.name, reason, got, want)
			}
		}
	}
	s := banServer(0)
	b := &banner{s: s, q: make(chan bans.Ban, 1)} // no run: the queue fills
	b.add(ban("198.51.100.1/32"))
	b.add(ban("198.51.100.2/32"))
	if got := testutil.ToFloat64(s.m.bansRefused.WithLabelValues("full")); got != 1 || len(b.q) != 1 {
		t.Errorf("full queue: %v refused, %d queued; want 1 and 1", got, len(b.q))
	}
}

// TestAutoBanSame: a reload keeps an auto-ban's counts only when it counts the same way: the same
// ban_after and the same source prefix lengths.
func TestAutoBanSame(t *testing.T) {
	base := config.Service{Name: "s", SourcePrefix4: 24, SourcePrefix6: 64,
		BanAfter: &config.BanAfter{Denials: 3, Within: time.Minute, For: time.Hour}}
	a := newAutoBan(&base, func(bans.Ban) {})
	for _, tc := range []struct {
		name string
		edit func(c *config.Service)
		same bool
	}{
		{"unchanged", func(c *config.Service) {}, true},
		{"a copy of ban_after", func(c *config.Service) { b := *c.BanAfter; c.BanAfter = &b }, true},
		{"another service setting", func(c *config.Service) { c.MaxConns = 7 }, true},
		{"denials", func(c *config.Service) { b := *c.BanAfter; b.Denials = 4; c.BanAfter = &b }, false},
		{"window", func(c *config.Service) { b := *c.BanAfter; b.Within = time.Hour; c.BanAfter = &b }, false},
		{"ban_after removed", func(c *config.Service) { c.BanAfter = nil }, false},
		{"IPv4 prefix", func(c *config.Service) { c.SourcePrefix4 = 32 }, false},
		{"IPv6 prefix", func(c *config.Service) { c.SourcePrefix6 = 48 }, false},
	} {
		c := base
		tc.edit(&c)
		if got := a.same(&c); got != tc.same {
			t.Errorf("%s: same %v, want %v", tc.name, got, tc.same)
		}
	}
}

// TestLimitedLogGroups: a log_rate logger's groups and attributes reach the handler beneath, and
// the bucket is the one shared by every logger derived from it.
func TestLimitedLogGroups(t *testing.T) {
	var out strings.Builder
	lim := &logLimit{}
	lim.setRate(1)
	log := limitedLog(slog.New(slog.NewTextHandler(&out, nil)), lim, "p")
	log.WithGroup("conn").With("peer", "127.0.0.1").Info("allowed")
	log.Info("dropped") // the bucket of one is empty
	if got := out.String(); !strings.Contains(got, "msg=allowed service=p conn.peer=127.0.0.1") || strings.Contains(got, "msg=dropped") {
		t.Errorf("log:\n%s", got)
	}
}

// reportLAPI is a fake CrowdSec LAPI for the reporter: logins hand out tokens t1, t2, …; each
// POST /v1/alerts gets the next scripted status (200 when none is left) and its alerts are kept.
type reportLAPI struct {
	mu       sync.Mutex
	login    int   // status of a login; 0: 200
	statuses []int // of the next POST /v1/alerts
	logins   int
	log      []string // "POST /v1/alerts Bearer t1"
	alerts   []alert
}

func (l *reportLAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.log = append(l.log, strings.TrimSpace(r.Method+" "+r.URL.Path+" "+r.Header.Get("Authorization")))
	switch r.URL.Path {
	case "/v1/watchers/login":
		var c struct {
			MachineID string `json:"machine_id"`
			Password  string `json:"password"`
		}
		json.NewDecoder(r.Body).Decode(&c)
		if l.login != 0 || c.MachineID != "m" || c.Password != "pw" {
			http.Error(w, "no", max(l.login, http.StatusForbidden))
			return
		}
		l.logins++
		fmt.Fprintf(w, `{"token": "t%d", "expire": %q}`, l.logins, time.Now().Add(time.Hour).Format(time.RFC3339))
	case "/v1/alerts":
		code := http.StatusOK
		if len(l.statuses) > 0 {
			code, l.statuses = l.statuses[0], l.statuses[1:]
		}
		if code == http.StatusOK {
			var as []alert
			json.NewDecoder(r.Body).Decode(&as)
			l.alerts = append(l.alerts, as...)
		}
		w.WriteHeader(code)
	}
}

// TestReporterSend: auto-bans go to the LAPI as alerts, after a login whose token is kept; an
// early 401 logs in again once; failures come back as errors; expired bans are not sent.
func TestReporterSend(t *testing.T) {
	l := &reportLAPI{}
	srv := httptest.NewServer(l)
	defer srv.Close()
	r := &reporter{s: banServer(0), cfg: config.CrowdSec{URL: srv.URL, Login: "m", Password: "pw"}, client: &http.Client{Timeout: 5 * time.Second}}
	now := time.Now()
	ip := bans.Ban{Prefix: netip.MustParsePrefix("198.51.100.7/32"), Origin: bans.OriginAuto, Reason: "3 denials", Created: now, Expires: now.Add(time.Hour + 10*time.Second)}
	rng := bans.Ban{Prefix: netip.MustParsePrefix("2001:db8::/64"), Origin: bans.OriginAuto, Reason: "2 limit hits", Created: now}
	gone := bans.Ban{Prefix: netip.MustParsePrefix("198.51.100.8/32"), Origin: bans.OriginAuto, Created: now, Expires: now.Add(-time.Second)}
	for _, step := range []struct {
		name     string
		list     []bans.Ban
		login    int
		statuses []int
		err      string // "" none
		log      string // the requests made
		alerts   int    // kept by the LAPI so far
	}{
		{"first", []bans.Ban{ip, rng, gone}, 0, nil, "", "POST /v1/watchers/login, POST /v1/alerts Bearer t1", 2},
		{"token kept", []bans.Ban{ip}, 0, nil, "", "POST /v1/alerts Bearer t1", 3},
		{"only expired", []bans.Ban{gone}, 0, nil, "", "", 3},
		{"401: log in again", []bans.Ban{rng}, 0, []int{401}, "", "POST /v1/alerts Bearer t1, POST /v1/watchers/login, POST /v1/alerts Bearer t2", 4},
		{"401 twice", []bans.Ban{rng}, 0, []int{401, 401}, "POST /v1/alerts: 401", "POST /v1/alerts Bearer t2, POST /v1/watchers/login, POST /v1/alerts Bearer t3", 4},
		{"500", []bans.Ban{rng}, 0, []int{500}, "POST /v1/alerts: 500", "POST /v1/alerts Bearer t3", 4},
	} {
		l.mu.Lock()
		l.statuses, l.log = step.statuses, nil
		l.mu.Unlock()
		err := r.send(step.list)
		if step.err == "" && err != nil || step.err != "" && (err == nil || !strings.Contains(err.Error(), step.err)) {
			t.Errorf("%s: err %v, want %q", step.name, err, step.err)
		}
		if got := strings.Join(l.log, ", "); got != step.log || len(l.alerts) != step.alerts {
			t.Errorf("%s: requests %q, %d alerts; want %q, %d", step.name, got, len(l.alerts), step.log, step.alerts)
		}
	}
	if len(l.alerts) < 2 {
		t.Fatalf("%d alerts kept", len(l.alerts))
	}
	a, b := l.alerts[0], l.alerts[1]
	if a.Source.Scope != "Ip" || a.Source.IP != "198.51.100.7" || a.Decisions[0].Duration != "1h0m10s" || a.Decisions[0].Type != "ban" ||
		b.Source.Scope != "Range" || b.Source.Range != "2001:db8::/64" || b.Decisions[0].Duration != neverDuration.String() ||
		!strings.Contains(a.Message, "3 denials") {
		t.Errorf("alerts: %+v\n%+v", a, b)
	}
	// A login refused: the error names the machine; nothing is sent.
	r.token, l.login = "", http.StatusForbidden
	if err := r.send([]bans.Ban{ip}); err == nil || !strings.Contains(err.Error(), `login as machine "m": 403`) {
		t.Errorf("login refused: %v", err)
	}
}
