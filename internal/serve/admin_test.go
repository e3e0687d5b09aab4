package serve

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// adminClient returns an HTTP client whose connections come from src (a 127.0.0.0/8 address), so
// that the admin listener sees that peer.
func adminClient(src string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
}

// adminStep is one request to the admin API and what its answer must be.
type adminStep struct {
	name         string
	method, path string
	body         string
	from         string // source address; "" is 127.0.0.1
	code         int
	want         []string // in the body
	config       string   // written to serve.yaml before the request ("" keeps it); %s is the upstream
}

// runAdmin runs steps in order against the admin listener of s.
func runAdmin(t *testing.T, s *Server, dir, up string, steps []adminStep) {
	t.Helper()
	base := "http://" + s.AdminAddr().String()
	for _, st := range steps {
		if st.config != "" {
			replace(t, dir, "serve.yaml", fmt.Sprintf(st.config, up))
		}
		from := st.from
		if from == "" {
			from = "127.0.0.1"
		}
		req, err := http.NewRequest(st.method, base+st.path, strings.NewReader(st.body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := adminClient(from).Do(req)
		if st.code == 0 { // the admin ACL denies from: the connection is closed unanswered
			if err == nil {
				resp.Body.Close()
				t.Errorf("%s: %s %s from %s answered %d, want the connection closed", st.name, st.method, st.path, from, resp.StatusCode)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != st.code {
			t.Errorf("%s: %s %s: %d, want %d: %s", st.name, st.method, st.path, resp.StatusCode, st.code, body)
			continue
		}
		for _, w := range st.want {
			if !strings.Contains(string(body), w) {
				t.Errorf("%s: %s %s: body lacks %q:\n%s", st.name, st.method, st.path, w, body)
			}
		}
	}
}

// TestAdminBans drives the ban endpoints of the admin API, over a real admin listener, with a
// state_dir: POST (one ban and a list, with every kind of refusal), GET, /explain, DELETE. Each
// accepted change is in the state file when the answer comes.
func TestAdminBans(t *testing.T) {
	const cfg = "acls:\n  lo: {default: deny, allow: [127.0.0.0/8], deny: [127.0.0.66]}\n" +
		"services:\n  - {name: p, listen: [\"127.0.0.1:0\"], acl: lo, upstream: %s}\n" +
		"admin: {listen: \"127.0.0.1:0\"}\nnever_ban: [127.0.0.1]\nmax_bans: 4\nstate_dir: state\n"
	s, addr, dir := startFiles(t, map[string]string{"serve.yaml": cfg}, false, nil)
	if !admits(t, "127.0.0.2", addr) { // a recent peer, for /whatif
		t.Fatal("127.0.0.2 refused")
	}
	state := filepath.Join(dir, "state", stateName)
	saved := func() string {
		b, _ := os.ReadFile(state)
		return string(b)
	}
	runAdmin(t, s, dir, "", []adminStep{
		{name: "one ban", method: "POST", path: "/bans", body: `{"prefix": "127.0.0.9", "for": "1h", "reason": "scan"}`,
			code: 201, want: []string{`"prefix": "127.0.0.9/32"`, `"origin": "api"`, `"reason": "scan"`, `"expires": "`}},
		{name: "bad body", method: "POST", path: "/bans", body: `{"prefix": `, code: 400, want: []string{"body: "}},
		{name: "bad prefix", method: "POST", path: "/bans", body: `{"prefix": "nope"}`, code: 400, want: []string{`prefix \"nope\"`}},
		{name: "bad for", method: "POST", path: "/bans", body: `{"prefix": "127.0.0.8", "for": "-1s"}`, code: 400, want: []string{"want a duration more than 0"}},
		{name: "long reason", method: "POST", path: "/bans", body: `{"prefix": "127.0.0.8", "reason": "` + strings.Repeat("x", 1<<10) + `"}`, code: 400, want: []string{"reason: longer than"}},
		{name: "guarded", method: "POST", path: "/bans", body: `{"prefix": "127.0.0.0/24"}`, code: 409, want: []string{"never_ban", "127.0.0.1"}},
		{name: "list", method: "POST", path: "/bans", body: ` [{"prefix": "127.0.0.10"}, {"prefix": "127.0.0.11", "for": "1m"}]`,
			code: 201, want: []string{`"prefix": "127.0.0.10/32"`, `"expires": null`, `"prefix": "127.0.0.11/32"`}},
		{name: "list, one guarded", method: "POST", path: "/bans", body: `[{"prefix": "127.0.0.12"}, {"prefix": "127.0.0.1"}]`, code: 409, want: []string{"127.0.0.1/32 covers 127.0.0.1/32"}},
		{name: "list, one bad", method: "POST", path: "/bans", body: `[{"prefix": "127.0.0.12"}, {"prefix": "x"}]`, code: 400},
		{name: "list over max_bans", method: "POST", path: "/bans", body: `[{"prefix": "127.0.0.12"}, {"prefix": "127.0.0.13"}]`, code: 409, want: []string{"1 of 2 added"}},
		{name: "one over max_bans", method: "POST", path: "/bans", body: `{"prefix": "127.0.0.14"}`, code: 409},
		{name: "list", method: "GET", path: "/bans", code: 200, want: []string{"127.0.0.9/32", "127.0.0.10/32", "127.0.0.11/32", "127.0.0.12/32"}},
		{name: "explain ban", method: "GET", path: "/explain?addr=127.0.0.9", code: 200, want: []string{`"layer": "ban"`, `"action": "deny"`, `"reason": "scan"`}},
		{name: "explain mapped", method: "GET", path: "/explain?addr=::ffff:127.0.0.9&service=p", code: 200, want: []string{`"addr": "127.0.0.9"`, `"layer": "ban"`}},
		{name: "explain rule", method: "GET", path: "/explain?addr=127.0.0.66", code: 200, want: []string{`"layer": "acl"`, `"action": "deny"`, `"rule": "127.0.0.66/32"`, `serve.yaml:2`}},
		{name: "explain default", method: "GET", path: "/explain?addr=192.0.2.1", code: 200, want: []string{`"rule": "default"`, `"action": "deny"`}},
		{name: "explain bad addr", method: "GET", path: "/explain?addr=127.0.0.0/8", code: 400, want: []string{"want an IP address"}},
		{name: "explain no service", method: "GET", path: "/explain?addr=127.0.0.1&service=q", code: 400, want: []string{`service \"q\": want one of p`}},
		{name: "delete", method: "DELETE", path: "/bans/127.0.0.9", code: 204},
		{name: "delete again", method: "DELETE", path: "/bans/127.0.0.9/32", code: 404, want: []string{"no ban of 127.0.0.9/32"}},
		{name: "delete escaped", method: "DELETE", path: "/bans/127.0.0.10%2F32", code: 204},
		{name: "delete bad", method: "DELETE", path: "/bans/x", code: 400},
		{name: "healthz", method: "GET", path: "/healthz", code: 200, want: []string{"ok"}},
		{name: "whatif", method: "POST", path: "/whatif?name=../cand.yaml", body: "default: deny\nallow: [127.0.0.3]\n", code: 200,
			want: []string{`"candidate": "` + dir + `/cand.yaml"`, `"peer": "127.0.0.2"`, `"now_denied": 1`, `"new_acl": "cand"`}},
		{name: "whatif, bad candidate", method: "POST", path: "/whatif", body: "default: maybe\n", code: 400, want: []string{"candidate: ", "candidate.yaml:1"}},
		{name: "config", method: "GET", path: "/config", code: 200, want: []string{`"name": "p"`, `"on_deny": "close"`, `"state_dir": "` + dir + `/state"`, `"max_bans": 4`, `"api": 2`}},
	})
	got := saved()
	for _, w := range []string{"127.0.0.11/32", "127.0.0.12/32"} {
		if !strings.Contains(got, w) {
			t.Errorf("state file lacks %s:\n%s", w, got)
		}
	}
	for _, w := range []string{"127.0.0.9/32", "127.0.0.10/32"} {
		if strings.Contains(got, w) {
			t.Errorf("state file still has %s, removed:\n%s", w, got)
		}
	}
}

// TestAdminReload drives POST /reload: its arguments, the guards (keep_allowed, and the request's
// own peer), ?force, and a config that does not load.
func TestAdminReload(t *testing.T) {
	const head = "services:\n  - {name: p, listen: [\"127.0.0.1:0\"], acl: lo, upstream: %%s}\nadmin: {listen: \"127.0.0.1:0\", acl: adm}\n"
	acls := func(lo, adm string) string {
		return fmt.Sprintf(head+"acls:\n  lo: %s\n  adm: %s\n", lo, adm)
	}
	open := acls("{default: allow}", "{default: allow}")
	s, _, dir := startFiles(t, map[string]string{"serve.yaml": open}, false, nil)
	up := s.cfg.Services[0].Upstream
	runAdmin(t, s, dir, up, []adminStep{
		{name: "plain", method: "POST", path: "/reload", code: 200, want: []string{`"reloaded": true`, `"forced": false`, `"sha256": "`}},
		{name: "bad force", method: "POST", path: "/reload?force=maybe", code: 400, want: []string{`force=\"maybe\"`}},
		{name: "bad body", method: "POST", path: "/reload", body: "{force", code: 400, want: []string{"body: want"}},
		{name: "empty body", method: "POST", path: "/reload", body: " \n", code: 200},
		{name: "denies the requester", method: "POST", path: "/reload", config: acls("{default: allow, deny: [127.0.0.1]}", "{default: allow}"),
			code: 409, want: []string{"service p: 127.0.0.1, the peer of this reload request, is allowed now and would be denied"}},
		{name: "denies another peer", method: "POST", path: "/reload", from: "127.0.0.2", code: 200},
		{name: "admin ACL denies the requester", method: "POST", path: "/reload", from: "127.0.0.3",
			config: acls("{default: allow}", "{default: allow, deny: [127.0.0.3]}"), code: 409, want: []string{"the admin listener's ACL adm would deny 127.0.0.3"}},
		{name: "forced by query", method: "POST", path: "/reload?force=1", from: "127.0.0.3", code: 200, want: []string{`"forced": true`}},
		{name: "now denied by the admin ACL", method: "GET", path: "/healthz", from: "127.0.0.3", code: 0},
		{name: "forced by body", method: "POST", path: "/reload", body: `{"force": true}`,
			config: acls("{default: allow, deny: [127.0.0.1]}", "{default: allow}"), code: 200, want: []string{`"forced": true`}},
		{name: "does not load", method: "POST", path: "/reload", config: acls("{default: maybe}", "{default: allow}"), code: 422, want: []string{"serve.yaml:5", "maybe"}},
		{name: "still served", method: "GET", path: "/healthz", code: 200},
	})
}
