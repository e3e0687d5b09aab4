package serve

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/peergate/peergate/acl"
	"github.com/peergate/peergate/gate"
	"github.com/peergate/peergate/gate/bans"
	"github.com/peergate/peergate/internal/config"
)

func event(addr string, allowed, limited bool) gate.Event {
	ev := gate.Event{Peer: gate.Peer{AddrPort: netip.AddrPortFrom(netip.MustParseAddr(addr), 1)}}
	if allowed {
		ev.Decision.Action = acl.Allow
	}
	if limited {
		ev.Limit = errors.New("over")
	}
	return ev
}

func TestAutoBanCounts(t *testing.T) {
	var got []bans.Ban
	now := time.Unix(1000, 0)
	c := &config.Service{Name: "s", SourcePrefix4: 24, MaxSources: 3,
		BanAfter: &config.BanAfter{Denials: 3, LimitHits: 2, Within: time.Minute, For: time.Hour}}
	a := newAutoBan(c, func(b bans.Ban) { got = append(got, b) })
	a.now = func() time.Time { return now }
	for _, tc := range []struct {
		addr             string
		allowed, limited bool
		advance          time.Duration
		bans             int // bans made so far
	}{
		{"192.0.2.1", false, false, 0, 0},
		{"192.0.2.2", false, false, 0, 0},               // same /24: the same source
		{"192.0.2.3", true, false, 0, 0},                // allowed: not counted
		{"192.0.2.4", false, false, 2 * time.Minute, 0}, // the window passed: starts over at 1
		{"192.0.2.5", false, false, 0, 0},
		{"192.0.2.6", false, false, 0, 1}, // 3 in the window: banned as 192.0.2.0/24
		{"198.51.100.1", true, true, 0, 1},
		{"198.51.100.1", true, true, 0, 2}, // 2 limit hits
	} {
		now = now.Add(tc.advance)
		a.observe(event(tc.addr, tc.allowed, tc.limited))
		if len(got) != tc.bans {
			t.Fatalf("after %s: %d bans, want %d", tc.addr, len(got), tc.bans)
		}
	}
	if got[0].Prefix != netip.MustParsePrefix("192.0.2.0/24") || got[0].Origin != "auto" || !got[0].Expires.Equal(now.Add(time.Hour)) {
		t.Errorf("ban %+v", got[0])
	}
	// Bounded: a flood from many sources keeps at most MaxSources entries.
	for i := range 1000 {
		a.observe(event(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 1}).String(), false, false))
	}
	if n := len(a.bySource); n > 3 || a.lru.Len() != n {
		t.Errorf("%d sources kept, want at most 3", n)
	}
}
