package serve

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/peergate/peergate/acl"
)

// TestRuleHits connects from allowed and denied loopback sources and reads the per-rule hits on
// GET /rules: counts and last times per rule, the default, and the rules that never matched.
func TestRuleHits(t *testing.T) {
	up := upstream(t, "echo")
	s := startLogged(t, "acls:\n  lo: {default: deny, allow: [127.0.0.1], deny: [10.0.0.0/8]}\nservices:\n  - name: p\n"+
		"    listen: [\"127.0.0.1:0\"]\n    acl: lo\n    upstream: "+up+"\nadmin: {listen: \"127.0.0.1:0\"}\n",
		slog.NewTextHandler(io.Discard, nil))
	addr := s.Addrs()["p"][0].String()
	for _, tc := range []struct {
		src   string
		times int
	}{{"127.0.0.1", 3}, {"127.0.0.2", 2}} {
		for range tc.times {
			c, err := dialFrom(tc.src, addr)
			if err != nil {
				t.Fatal(err)
			}
			c.Write([]byte("x"))
			c.Read(make([]byte, 1))
			c.Close()
		}
	}
	url := fmt.Sprintf("http://%s/rules?service=p", s.AdminAddr())
	var got RuleHits
	for deadline := time.Now().Add(5 * time.Second); ; {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		got = RuleHits{}
		err = json.NewDecoder(resp.Body).Decode(&got)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET /rules: %d %v", resp.StatusCode, err)
		}
		var total uint64
		for _, r := range got.Top {
			total += r.Hits
		}
		if total == 5 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(got.Top) != 2 || got.Top[0].Rule != "127.0.0.1/32" || got.Top[0].Hits != 3 || got.Top[0].Action != "allow" ||
		got.Top[1].Rule != "default" || got.Top[1].Hits != 2 || got.Top[1].Action != "deny" || got.Top[0].LastHit.IsZero() {
		t.Errorf("top: %+v", got.Top)
	}
	if got.UnusedCount == nil || *got.UnusedCount != 1 || len(got.Unused) != 1 || got.Unused[0] != "deny 10.0.0.0/8 ("+s.cfg.Path+":2)" || got.Rest.Rules != 0 || got.Capacity != MaxRuleHits {
		t.Errorf("rest/unused: %+v", got)
	}
	// top=1 puts the default in the rest.
	resp, err := http.Get(url + "&top=1")
	if err != nil {
		t.Fatal(err)
	}
	got = RuleHits{}
	json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	if len(got.Top) != 1 || got.Rest.Rules != 1 || got.Rest.Hits != 2 {
		t.Errorf("top=1: %+v", got)
	}
	for _, bad := range []string{"?service=nope", "?service=p&top=x"} {
		resp, err := http.Get(fmt.Sprintf("http://%s/rules%s", s.AdminAddr(), bad))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400", bad, resp.StatusCode)
		}
	}
}

// TestRuleHitsBounded: past MaxRuleHits distinct rules, decisions count as untracked, the table
// stops growing, and "never matched" is no longer claimed.
func TestRuleHitsBounded(t *testing.T) {
	h := newRuleHits()
	a := mustRules(t, MaxRuleHits+50)
	now := time.Now()
	for _, r := range a.Rules() {
		h.count(a.Decide(r.Prefix.Addr()), now)
	}
	if len(h.byRule) != MaxRuleHits || h.untracked.hits != 50 || !h.overflow {
		t.Errorf("tracked %d, untracked %d, overflow %v", len(h.byRule), h.untracked.hits, h.overflow)
	}
}

// mustRules returns an ACL of n allow rules, one address each.
func mustRules(t *testing.T, n int) *acl.ACL {
	t.Helper()
	spec := acl.Spec{Default: acl.Deny}
	for i := range n {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		spec.Rules = append(spec.Rules, acl.Rule{Prefix: netip.PrefixFrom(a, 32), Action: acl.Allow, Origin: acl.Origin{File: "t", Line: i + 1}})
	}
	return acl.MustNew(spec)
}

// TestRecentPeersBounded: the record keeps the last MaxRecentPeers distinct peers, the oldest
// replaced first, and a peer seen again is not added twice.
func TestRecentPeersBounded(t *testing.T) {
	var r recentPeers
	now := time.Now()
	addr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}) }
	for i := range MaxRecentPeers + 100 {
		r.add(addr(i), now)
		r.add(addr(i), now) // again: no second entry
	}
	snap := r.snapshot()
	if len(snap) != MaxRecentPeers || len(r.idx) != MaxRecentPeers {
		t.Fatalf("%d peers, %d indexed, want %d", len(snap), len(r.idx), MaxRecentPeers)
	}
	if _, ok := r.idx[addr(99)]; ok {
		t.Error("peer 99 (among the oldest) kept")
	}
	for _, i := range []int{100, MaxRecentPeers + 99} {
		if _, ok := r.idx[addr(i)]; !ok {
			t.Errorf("peer %d dropped", i)
		}
	}
}
