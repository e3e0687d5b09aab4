package serve

import (
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/peergate/peergate/gate/bans"
)

func TestStateRoundTrip(t *testing.T) {
	now := time.Unix(1764694800, 0)
	list := []bans.Ban{
		{Prefix: netip.MustParsePrefix("192.0.2.7/32"), Origin: "api", Reason: "tab\there \"quoted\"\nnewline", Created: now, Expires: now.Add(time.Hour)},
		{Prefix: netip.MustParsePrefix("2001:db8::/48"), Origin: "auto", Created: now},
		{Prefix: netip.MustParsePrefix("198.51.100.0/24"), Origin: "crowdsec", Created: now}, // not kept
	}
	got, err := decodeState("f", encodeState(list))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Reason != list[0].Reason || !got[0].Expires.Equal(list[0].Expires) || !got[1].Expires.IsZero() || got[1].Origin != "auto" {
		t.Fatalf("round trip: %+v", got)
	}
}

func TestStateDamage(t *testing.T) {
	good := encodeState([]bans.Ban{{Prefix: netip.MustParsePrefix("192.0.2.7/32"), Origin: "api", Created: time.Unix(1, 0)}})
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"torn", good[:len(good)-20]},
		{"empty", nil},
		{"flipped", []byte(strings.Replace(string(good), "192.0.2.7", "192.0.2.8", 1))},
		{"no header", good[14:]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := decodeState("f", tc.data); !errors.Is(err, ErrState) {
				t.Errorf("decode: %v, want ErrState", err)
			}
			// The damaged current file is set aside and the previous state loaded.
			dir := t.TempDir()
			os.WriteFile(filepath.Join(dir, "bans"), tc.data, 0o600)
			os.WriteFile(filepath.Join(dir, "bans.prev"), good, 0o600)
			list, err := loadState(dir, slog.New(slog.DiscardHandler))
			if err != nil || len(list) != 1 {
				t.Fatalf("loadState with a good bans.prev: %v, %v", list, err)
			}
			if m, _ := filepath.Glob(filepath.Join(dir, "bans.bad-*")); len(m) != 1 {
				t.Errorf("damaged file not kept aside: %v", m)
			}
			// With no good state at all, start is refused (fail closed).
			dir = t.TempDir()
			os.WriteFile(filepath.Join(dir, "bans"), tc.data, 0o600)
			if _, err := loadState(dir, slog.New(slog.DiscardHandler)); !errors.Is(err, ErrState) {
				t.Errorf("loadState with no good state: %v, want ErrState", err)
			}
		})
	}
}

func TestWriteStateKeepsPrevious(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "bans")
	for _, s := range []string{"one", "two"} {
		if err := writeState(f, []byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	cur, _ := os.ReadFile(f)
	prev, _ := os.ReadFile(f + ".prev")
	if string(cur) != "two" || string(prev) != "one" {
		t.Errorf("current %q, previous %q", cur, prev)
	}
}

// TestStateSpecialFile: a FIFO where the state file should be is refused at once (it hung the
// start, read with os.ReadFile), and the previous copy is used.
func TestStateSpecialFile(t *testing.T) {
	dir := t.TempDir()
	if err := syscall.Mkfifo(filepath.Join(dir, stateName), 0o600); err != nil {
		t.Skip("mkfifo:", err)
	}
	prev := encodeState([]bans.Ban{{Prefix: netip.MustParsePrefix("192.0.2.7/32"), Origin: "api", Created: time.Unix(1, 0)}})
	if err := os.WriteFile(filepath.Join(dir, stateName+".prev"), prev, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var list []bans.Ban
	var err error
	go func() { list, err = ReadBans(dir); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("ReadBans hung on a FIFO")
	}
	if err != nil || len(list) != 1 {
		t.Fatalf("ReadBans = %v, %v; want the previous copy's ban", list, err)
	}
}
