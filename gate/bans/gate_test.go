package bans_test

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/peergate/peergate/acl"
	"github.com/peergate/peergate/gate"
	"github.com/peergate/peergate/gate/bans"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// TestGateBans runs a gate with a ban table over real loopback sockets: a banned peer is denied
// though the ACL allows it, the others pass, and the decision names the ban.
func TestGateBans(t *testing.T) {
	for _, tc := range []struct {
		name, listen string
		ban          string // the prefix banned
		dryRun       bool
	}{
		{"ipv4", "127.0.0.1:0", "127.0.0.2", false},
		{"ipv4 ban, dual-stack listener (mapped peer)", "[::]:0", "127.0.0.2", false},
		{"mapped ban", "[::]:0", "::ffff:127.0.0.0/126", false},
		{"dry run hands on", "127.0.0.1:0", "127.0.0.2", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inner, err := net.Listen("tcp", tc.listen)
			if err != nil {
				t.Skipf("listen %s: %v", tc.listen, err)
			}
			tb := bans.New(bans.Config{Guard: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
			p, err := acl.ParsePrefix(tc.ban)
			if err != nil {
				t.Fatal(err)
			}
			if p.Bits() < 32 { // the guard refuses a range over 127.0.0.1: cut it instead
				for _, q := range bans.Exclude(p, tb.Guard()) {
					if _, err := tb.Add(bans.Ban{Prefix: q, Origin: bans.OriginCrowdSec, Reason: "range"}); err != nil {
						t.Fatal(err)
					}
				}
			} else if _, err := tb.Add(bans.Ban{Prefix: p, Origin: bans.OriginAPI, Reason: "scanner", Expires: time.Now().Add(time.Hour)}); err != nil {
				t.Fatal(err)
			}
			var logs syncBuf
			events := make(chan gate.Event, 8)
			g := gate.NewListener(inner, acl.MustNew(acl.Spec{Default: acl.Allow}), gate.Options{Bans: tb, DryRun: tc.dryRun,
				Logger:     slog.New(slog.NewTextHandler(&logs, nil)),
				OnDecision: func(ev gate.Event) { ev.Conn = nil; events <- ev }})
			defer g.Close()
			accepted := make(chan net.Conn, 8)
			go func() {
				for {
					c, err := g.Accept()
					if err != nil {
						close(accepted)
						return
					}
					c.Write([]byte("ok\n"))
					accepted <- c
				}
			}()
			port := inner.Addr().(*net.TCPAddr).Port
			dial := func(src string) string {
				d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
				c, err := d.Dial("tcp", net.JoinHostPort("127.0.0.1", itoa(port)))
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				b, _ := io.ReadAll(io.LimitReader(c, 3))
				return string(b)
			}
			wantBanned := "" // what the banned peer reads
			if tc.dryRun {
				wantBanned = "ok\n"
			}
			if got := dial("127.0.0.2"); got != wantBanned {
				t.Errorf("banned peer read %q, want %q", got, wantBanned)
			}
			ev := <-events
			if ev.Ban == nil || ev.Decision.Allowed() || ev.HandedOn != tc.dryRun {
				t.Fatalf("banned peer's event: ban %v, decision %v, handed on %v", ev.Ban, ev.Decision, ev.HandedOn)
			}
			if got := dial("127.0.0.1"); got != "ok\n" {
				t.Errorf("allowed peer read %q", got)
			}
			if ev := <-events; ev.Ban != nil || !ev.HandedOn {
				t.Errorf("allowed peer's event: ban %v, handed on %v", ev.Ban, ev.HandedOn)
			}
			if s := g.Stats(); s.Banned != 1 || s.Allowed != 1 || s.Denied != 0 {
				t.Errorf("stats %+v", s)
			}
			l := logs.String()
			if !strings.Contains(l, "layer=ban") || !strings.Contains(l, "ban=127.0.0.") || !strings.Contains(l, "peer=127.0.0.2:") {
				t.Errorf("log does not name the ban: %q", l)
			}
		})
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
