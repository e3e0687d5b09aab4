package serve

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/peergate/peergate/gate/bans"
	"github.com/peergate/peergate/gate/limit"
	"github.com/peergate/peergate/internal/config"
)

// parseConfig parses text as the serve file dir/serve.yaml, without serving it.
func parseConfig(t *testing.T, text string) *config.File {
	t.Helper()
	f, err := config.Parse(t.TempDir()+"/serve.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestPortKey: a listen entry's key in Server.ports is its address, which a reload finds again,
// except for TCP port 0, which is one listener per entry; addrOf gives the address back.
func TestPortKey(t *testing.T) {
	for _, tc := range []struct {
		service, addr string
		i             int
		kept          bool // the key is the address itself
	}{
		{"p", "127.0.0.1:8080", 0, true},
		{"p", "[::1]:8080", 3, true},
		{"p", "unix:/run/p.sock", 0, true},
		{"p", "unix:/run/0", 1, true},
		{"p", "127.0.0.1:0", 0, false},
		{"q", "[::1]:0", 2, false},
		{"p", "localhost:0", 1, false},
	} {
		key := portKey(tc.service, tc.addr, tc.i)
		if (key == tc.addr) != tc.kept {
			t.Errorf("portKey(%q, %q, %d) = %q; kept as the address: %v, want %v", tc.service, tc.addr, tc.i, key, key == tc.addr, tc.kept)
		}
		if got := addrOf(key); got != tc.addr {
			t.Errorf("addrOf(portKey(%q)) = %q", tc.addr, got)
		}
		if !tc.kept {
			// Two port-0 entries never share a key: not in one service, not across two.
			if other := portKey(tc.service, tc.addr, tc.i+1); other == key {
				t.Errorf("portKey(%q): entries %d and %d share the key %q", tc.addr, tc.i, tc.i+1, key)
			}
			if other := portKey(tc.service+"x", tc.addr, tc.i); other == key {
				t.Errorf("portKey(%q): services %s and %sx share the key %q", tc.addr, tc.service, tc.service, key)
			}
		}
	}
}

// TestCheckKeep: a reload asked for through the admin API may not shut out its own peer from the
// admin listener, nor from a service that lets it in now; services that deny it now, or that the
// running config does not have, are not its to keep.
func TestCheckKeep(t *testing.T) {
	const svcs = "services:\n  - {name: p, listen: [\"127.0.0.1:0\"], acl: p, upstream: \"127.0.0.1:1\"}\n" +
		"  - {name: q, listen: [\"127.0.0.1:0\"], acl: q, upstream: \"127.0.0.1:1\"}\n"
	file := func(p, q, admin string) *config.File {
		text := svcs + "acls:\n  p: " + p + "\n  q: " + q + "\n"
		if admin != "" {
			text += "  adm: " + admin + "\nadmin: {listen: \"127.0.0.1:0\", acl: adm}\n"
		}
		return parseConfig(t, text)
	}
	const allow, deny = "{default: allow}", "{default: deny}"
	peer := netip.MustParseAddr("127.0.0.1")
	for _, tc := range []struct {
		name string
		old  *config.File
		cfg  *config.File
		want []string // in the error; none: no error
	}{
		{"nothing changes", file(allow, allow, allow), file(allow, allow, allow), nil},
		{"p shuts the peer out", file(allow, allow, ""), file(deny, allow, ""), []string{"service p: 127.0.0.1"}},
		{"p and q shut it out", file(allow, allow, ""), file(deny, "{default: allow, deny: [127.0.0.0/8]}", ""), []string{"service p:", "service q:", "deny by 127.0.0.0/8"}},
		{"q denied it already", file(allow, deny, ""), file(allow, deny, ""), nil},
		{"the admin ACL shuts it out", file(allow, allow, allow), file(allow, allow, deny), []string{"the admin listener's ACL adm would deny 127.0.0.1"}},
		{"the admin ACL denied it already", file(allow, allow, deny), file(allow, allow, deny), []string{"admin listener"}},
		{"no running config", nil, file(deny, deny, ""), nil},
	} {
		err := checkKeep(tc.old, tc.cfg, peer)
		if len(tc.want) == 0 {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		if !errors.Is(err, ErrLockout) {
			t.Errorf("%s: err %v, want ErrLockout", tc.name, err)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %v; want %q in it", tc.name, err, w)
			}
		}
	}
}

// TestCheckGuards: every guard.keep_allowed prefix that the config would deny any of is named,
// with the first address denied and the rule.
func TestCheckGuards(t *testing.T) {
	const tmpl = "acls:\n  lo: {default: allow, deny: [%s]}\nservices:\n  - name: p\n    listen: [\"127.0.0.1:0\"]\n    acl: lo\n" +
		"    upstream: \"127.0.0.1:1\"\n    guard: {keep_allowed: [127.0.0.1, 10.0.0.0/8]}\n"
	for _, tc := range []struct {
		deny string
		want []string
	}{
		{"192.0.2.0/24", nil},
		{"127.0.0.1", []string{"serve.yaml:8: guard.keep_allowed 127.0.0.1/32: 127.0.0.1 would be deny by 127.0.0.1/32"}},
		{"10.1.2.3", []string{"guard.keep_allowed 10.0.0.0/8: 10.1.2.3 would be deny"}},
		{"10.255.0.0/16, 127.0.0.0/8", []string{"10.255.0.0 would be", "127.0.0.1 would be"}},
	} {
		err := checkGuards(parseConfig(t, strings.Replace(tmpl, "%s", tc.deny, 1)))
		switch {
		case tc.want == nil && err != nil:
			t.Errorf("deny %s: %v", tc.deny, err)
		case tc.want != nil && !errors.Is(err, ErrLockout):
			t.Errorf("deny %s: err %v, want ErrLockout", tc.deny, err)
		}
		for _, w := range tc.want {
			if err != nil && !strings.Contains(err.Error(), w) {
				t.Errorf("deny %s: %v; want %q in it", tc.deny, err, w)
			}
		}
	}
}

// TestSwapSlot: the max_conns slot an accept loop took for the service it expected moves to the
// service whose policy admitted the connection, so that no slot leaks and no cap is overrun, and
// a connection no service admitted is closed (fail closed).
func TestSwapSlot(t *testing.T) {
	s := &Server{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	sem := func(n int) chan struct{} {
		if n == 0 {
			return nil
		}
		return make(chan struct{}, n)
	}
	shared := sem(2)
	for _, tc := range []struct {
		name      string
		pre, svc  chan struct{} // slots; nil: no cap
		svcFull   bool          // svc's slots are all taken
		noSvc     bool          // admitted by no service
		done      bool          // the port closed
		want      bool          // a service comes back
		preAfter  int           // slots of pre taken afterwards
		svcAfter  int
		connAlive bool
	}{
		{name: "same cap kept", pre: shared, svc: shared, want: true, preAfter: 1, svcAfter: 1, connAlive: true},
		{name: "cap changed", pre: sem(2), svc: sem(3), want: true, preAfter: 0, svcAfter: 1, connAlive: true},
		{name: "cap removed", pre: sem(2), svc: nil, want: true, preAfter: 0, connAlive: true},
		{name: "cap added", pre: nil, svc: sem(1), want: true, svcAfter: 1, connAlive: true},
		{name: "new cap full, port closed", pre: sem(1), svc: sem(1), svcFull: true, done: true, preAfter: 0, svcAfter: 1},
		{name: "no service", pre: sem(1), noSvc: true, preAfter: 0},
	} {
		near, _ := tcpPair(t)
		pre := &service{sem: tc.pre}
		if tc.pre != nil {
			tc.pre <- struct{}{} // the accept loop's slot
		}
		var svc *service
		if !tc.noSvc {
			svc = &service{sem: tc.svc}
			if tc.svcFull {
				for range cap(tc.svc) {
					tc.svc <- struct{}{}
				}
			}
		}
		done := make(chan struct{})
		if tc.done {
			close(done)
		}
		got := s.swapSlot(near, pre, svc, done, func() *service { return svc })
		if (got != nil) != tc.want || got != nil && got != svc {
			t.Errorf("%s: got %v, want a service %v", tc.name, got, tc.want)
		}
		if n := len(tc.pre); tc.pre != nil && n != tc.preAfter {
			t.Errorf("%s: %d slots of the expected service taken, want %d", tc.name, n, tc.preAfter)
		}
		if n := len(tc.svc); tc.svc != nil && n != tc.svcAfter {
			t.Errorf("%s: %d slots of the admitting service taken, want %d", tc.name, n, tc.svcAfter)
		}
		// swapSlot closes the connection it refuses: a write to it then fails at once.
		_, err := near.Write([]byte("x"))
		alive := err == nil
		if !alive && !errors.Is(err, net.ErrClosed) {
			t.Errorf("%s: write: %v", tc.name, err)
		}
		if alive != tc.connAlive {
			t.Errorf("%s: connection alive %v (%v), want %v", tc.name, alive, err, tc.connAlive)
		}
	}
}

// TestSwapSlotAfterWait: a connection that had to wait for a slot of its service's new cap is
// closed once it gets one if another reload came meanwhile (the port's service is another) or a
// ban now covers its peer; the slot it took is given back. One that waited while neither happened
// is handed on.
func TestSwapSlotAfterWait(t *testing.T) {
	for _, tc := range []struct {
		name      string
		reloaded  bool
		banned    bool
		connAlive bool
	}{
		{name: "nothing changed", connAlive: true},
		{name: "reloaded meanwhile", reloaded: true},
		{name: "banned meanwhile", banned: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Server{log: slog.New(slog.NewTextHandler(io.Discard, nil)), bans: bans.New(bans.Config{})}
			near, _ := tcpPair(t)
			pre := &service{sem: make(chan struct{}, 1)}
			pre.sem <- struct{}{} // the accept loop's slot
			svc := &service{sem: make(chan struct{}, 1)}
			svc.sem <- struct{}{} // the new cap is full: swapSlot must wait
			var cur atomic.Pointer[service]
			cur.Store(svc)
			waiting := make(chan struct{})
			slotWaitHook = func() { close(waiting) }
			defer func() { slotWaitHook = nil }()
			got := make(chan *service)
			go func() { got <- s.swapSlot(near, pre, svc, make(chan struct{}), cur.Load) }()
			<-waiting
			if tc.reloaded {
				cur.Store(&service{})
			}
			if tc.banned {
				if _, err := s.bans.Add(bans.Ban{Prefix: netip.MustParsePrefix("127.0.0.1/32"), Origin: "api"}); err != nil {
					t.Fatal(err)
				}
			}
			<-svc.sem // the connection that held the slot ends
			r := <-got
			if (r != nil) != tc.connAlive {
				t.Errorf("got %v, want a service: %v", r, tc.connAlive)
			}
			if want := map[bool]int{true: 1, false: 0}[tc.connAlive]; len(svc.sem) != want || len(pre.sem) != 0 {
				t.Errorf("slots taken: new cap %d (want %d), old cap %d (want 0)", len(svc.sem), want, len(pre.sem))
			}
			_, err := near.Write([]byte("x"))
			if alive := err == nil; alive != tc.connAlive {
				t.Errorf("connection alive %v (%v), want %v", alive, err, tc.connAlive)
			}
		})
	}
}

// TestWhatIf: POST /whatif's answer, per running service, for each way a candidate can name the
// ACL that would guard it, over the service's recent peers.
func TestWhatIf(t *testing.T) {
	cfg := parseConfig(t, "acls:\n  lo: {default: deny, allow: [127.0.0.0/8]}\n  other: {default: allow}\nservices:\n"+
		"  - {name: p, listen: [\"127.0.0.1:0\"], acl: lo, upstream: \"127.0.0.1:1\"}\n"+
		"  - {name: q, listen: [\"127.0.0.1:0\"], acl: other, upstream: \"127.0.0.1:1\"}\n")
	s := &Server{m: newMetrics()}
	now := time.Now()
	for _, a := range []string{"127.0.0.1", "127.0.0.2", "192.0.2.1", "127.0.0.1"} {
		s.m.recentOf("p").add(netip.MustParseAddr(a), now)
	}
	s.m.recentOf("q").add(netip.MustParseAddr("198.51.100.1"), now)
	type svcWant struct {
		newACL, skipped        string
		peers, denied, allowed int
	}
	for _, tc := range []struct {
		name, cand string
		want       map[string]svcWant
		changed    int
	}{
		{"same service name", "acls:\n  x: {default: deny, allow: [127.0.0.1, 192.0.2.0/24]}\nservices:\n" +
			"  - {name: p, listen: [\"127.0.0.1:0\"], acl: x, upstream: \"127.0.0.1:1\"}\n",
			map[string]svcWant{"p": {newACL: "x", peers: 3, denied: 1, allowed: 1}, "q": {skipped: `the candidate has no service "q" and no ACL "other"`}}, 2},
		{"a bare ACL file", "default: deny\nallow: [127.0.0.2]\n",
			map[string]svcWant{"p": {newACL: "serve", peers: 3, denied: 1}, "q": {newACL: "serve", peers: 1, denied: 1}}, 2},
		{"the ACL of the same name", "acls:\n  lo: {default: allow}\n  other: {default: allow}\n",
			map[string]svcWant{"p": {newACL: "lo", peers: 3, allowed: 1}, "q": {newACL: "other", peers: 1}}, 1},
	} {
		cand := parseConfig(t, tc.cand)
		got := s.whatIf(cfg, cand, "cand.yaml")
		if got.Changed != tc.changed || got.Capacity != MaxRecentPeers || got.MemoryBytes != 4*recentPeerBytes || len(got.Services) != 2 {
			t.Errorf("%s: changed %d (want %d), capacity %d, memory %d, %d services", tc.name, got.Changed, tc.changed, got.Capacity, got.MemoryBytes, len(got.Services))
		}
		for _, ws := range got.Services {
			w := tc.want[ws.Service]
			if ws.NewACL != w.newACL || ws.Skipped != w.skipped ||
				ws.Peers != w.peers || ws.NowDenied != w.denied || ws.NowAllowed != w.allowed || len(ws.Changes) != w.denied+w.allowed {
				t.Errorf("%s: service %s: %+v, want %+v", tc.name, ws.Service, ws, w)
			}
			for _, c := range ws.Changes {
				if c.Old.Action == c.New.Action || c.Old.Rule == "" || c.New.Rule == "" || !c.LastSeen.Equal(now) {
					t.Errorf("%s: service %s: change %+v", tc.name, ws.Service, c)
				}
			}
		}
	}
}

// TestSendPreamble: what goes to the upstream before the client's bytes, for each send_proxy
// setting, with and without bytes that followed an incoming PROXY header; over real loopback
// connections, an IPv4-mapped client going out as TCP4.
func TestSendPreamble(t *testing.T) {
	client, _ := tcpPair(t) // the accepted end: RemoteAddr is the client
	src, dst := client.RemoteAddr().(*net.TCPAddr), client.LocalAddr().(*net.TCPAddr)
	v1 := "PROXY TCP4 127.0.0.1 127.0.0.1 " + strconv.Itoa(src.Port) + " " + strconv.Itoa(dst.Port) + "\r\n"
	for _, tc := range []struct {
		send, early string
		want        string // "v2" for a v2 header
	}{
		{"", "", ""},
		{"", "hello", "hello"},
		{"v1", "", v1},
		{"v1", "hello", v1 + "hello"},
		{"v2", "hello", "v2"},
	} {
		up, upFar := tcpPair(t)
		svc := &service{Service: &config.Service{SendProxy: tc.send}}
		if err := sendPreamble(up, svc, client, []byte(tc.early)); err != nil {
			t.Fatal(err)
		}
		up.CloseWrite()
		got, _ := io.ReadAll(upFar)
		switch tc.want {
		case "v2":
			sig := "\r\n\r\n\x00\r\nQUIT\n"
			if !strings.HasPrefix(string(got), sig) || got[12] != 0x21 || got[13] != 0x11 || !strings.HasSuffix(string(got), tc.early) {
				t.Errorf("send_proxy v2: % x", got)
			}
		default:
			if string(got) != tc.want {
				t.Errorf("send_proxy %q, early %q: %q, want %q", tc.send, tc.early, got, tc.want)
			}
		}
	}
	mapped := &net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.1"), Port: 1}
	if h := proxyHeader(&config.Service{SendProxy: "v1"}, mapped, mapped); h.SourceAddr.(*net.TCPAddr).IP.To4() == nil || h.TransportProtocol.IsIPv6() {
		t.Errorf("an IPv4-mapped client goes out as %v %v", h.TransportProtocol, h.SourceAddr)
	}
}

// TestServicesKept: what a reload keeps of the running services, by service name: the max_conns
// slots while the cap is the same (open connections keep their slots), the per-source limiter
// while its settings are, the log_rate bucket always (a reload refills nothing), and the
// auto-ban counts while ban_after counts the same way; everything else is new. Each listen entry
// maps to its service.
func TestServicesKept(t *testing.T) {
	const svc = "  - {name: %s, listen: [%s], acl: lo, upstream: \"127.0.0.1:1\", max_conns: %d, per_source: %d, log_rate: %d%s}\n"
	file := func(svcs ...string) *config.File {
		return parseConfig(t, "acls:\n  lo: {default: allow}\nservices:\n"+strings.Join(svcs, ""))
	}
	line := func(name, listen string, maxConns, perSource, logRate int, extra string) string {
		return fmt.Sprintf(svc, name, listen, maxConns, perSource, logRate, extra)
	}
	const ban = ", ban_after: {denials: 3, within: 1m}"
	s := banServer(0)
	s.sems, s.lims, s.logLims, s.autos = map[string]chan struct{}{}, map[string]*limit.Limiter{}, map[string]*logLimit{}, map[string]*autoBan{}
	s.banner = &banner{s: s}
	// run applies cfg's services the way apply keeps them, and returns them by name.
	run := func(cfg *config.File) map[string]*service {
		want, sems, lims, logLims := s.services(cfg)
		byName := map[string]*service{}
		s.autos = map[string]*autoBan{}
		for key, v := range want {
			if prev, ok := byName[v.Name]; ok && prev != v {
				t.Fatalf("service %s: two services for its listen entries", v.Name)
			}
			byName[v.Name] = v
			if addrOf(key) == "" {
				t.Errorf("key %q: no address", key)
			}
			if v.ab != nil {
				s.autos[v.Name] = v.ab
			}
		}
		s.sems, s.lims, s.logLims = sems, lims, logLims
		return byName
	}
	old := run(file(line("p", `"127.0.0.1:0", "127.0.0.1:0"`, 2, 3, 10, ban), line("q", `"127.0.0.1:9"`, 0, 0, 0, ""), line("r", `"127.0.0.1:8"`, 5, 0, 1, ban)))
	if len(old) != 3 || cap(old["p"].sem) != 2 || old["q"].sem != nil || old["p"].lim == nil || old["q"].lim != nil || old["p"].ab == nil || old["q"].ab != nil {
		t.Fatalf("first load: %+v", old)
	}
	old["p"].sem <- struct{}{} // an open connection
	oldLog := s.logLims["p"]
	cur := run(file(line("p", `"127.0.0.1:0"`, 2, 3, 20, ban), line("q", `"127.0.0.1:9"`, 4, 0, 0, ""), line("r", `"127.0.0.1:8"`, 6, 2, 1, ", ban_after: {denials: 4, within: 1m}")))
	for _, tc := range []struct {
		what       string
		kept, want bool
	}{
		{"p's slots (same max_conns)", cur["p"].sem == old["p"].sem, true},
		{"p's limiter (same per_source)", cur["p"].lim == old["p"].lim, true},
		{"p's auto-ban counts (same ban_after)", cur["p"].ab == old["p"].ab, true},
		{"p's log bucket (log_rate changed)", s.logLims["p"] == oldLog, true},
		{"q's slots (max_conns added)", cur["q"].sem != nil && cap(cur["q"].sem) == 4, true},
		{"r's slots (max_conns changed)", cur["r"].sem == old["r"].sem, false},
		{"r's auto-ban counts (denials changed)", cur["r"].ab == old["r"].ab, false},
		{"r's limiter (per_source added)", cur["r"].lim != nil, true},
	} {
		if tc.kept != tc.want {
			t.Errorf("%s: %v, want %v", tc.what, tc.kept, tc.want)
		}
	}
	if len(cur["p"].sem) != 1 {
		t.Errorf("p's open connection lost its slot: %d taken", len(cur["p"].sem))
	}
}

// TestStateStore: a change asked for is saved before wait returns, with the save's error when it
// fails (a state_dir that is not a directory); a change asked for after the store stopped is
// not waited for forever.
func TestStateStore(t *testing.T) {
	dir := t.TempDir()
	notDir := dir + "/file"
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, dir string
		err       bool
	}{
		{"saved", dir, false},
		{"not a directory", notDir, true},
	} {
		tab := bans.New(bans.Config{})
		tab.Add(bans.Ban{Prefix: netip.MustParsePrefix("198.51.100.7/32"), Origin: bans.OriginAPI})
		st := newStateStore(tc.dir, tab, slog.New(slog.NewTextHandler(io.Discard, nil)))
		done := make(chan struct{})
		go st.run(done)
		err := st.wait(st.changed())
		if (err != nil) != tc.err {
			t.Errorf("%s: wait: %v, want an error %v", tc.name, err, tc.err)
		}
		if !tc.err {
			got, err := ReadBans(tc.dir)
			if err != nil || len(got) != 1 || got[0].Prefix.String() != "198.51.100.7/32" {
				t.Errorf("%s: saved %v, %v", tc.name, got, err)
			}
		}
		close(done)
		<-st.finished
		if err := st.wait(st.changed()); err == nil || !strings.Contains(err.Error(), "shutting down") {
			t.Errorf("%s: a change after the stop: %v", tc.name, err)
		}
	}
}
