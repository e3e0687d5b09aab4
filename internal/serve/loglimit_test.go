package serve

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestLogLimit(t *testing.T) {
	var out bytes.Buffer
	lim := &logLimit{}
	lim.setRate(10)
	log := slog.New(limitHandler{slog.NewTextHandler(&out, nil), lim}).With("service", "s")
	t0 := time.Unix(1e9, 0)
	lines := func() int { return strings.Count(out.String(), "msg=denied") }
	emit := func(at time.Time, n int) {
		for range n {
			r := slog.NewRecord(at, slog.LevelInfo, "denied", 0)
			log.Handler().Handle(t.Context(), r)
		}
	}
	lim.last = t0
	lim.tokens = 10 // a full bucket
	emit(t0, 1000)
	if n := lines(); n != 10 {
		t.Fatalf("a burst of 1000 let %d lines through, want 10 (the bucket)", n)
	}
	emit(t0.Add(500*time.Millisecond), 1000)
	if n := lines(); n != 15 {
		t.Fatalf("half a second later, %d lines in all, want 15", n)
	}
	if !strings.Contains(out.String(), `msg="log lines dropped by log_rate" service=s dropped=990`) {
		t.Errorf("no summary of the 990 dropped lines:\n%s", out.String())
	}
	lim.setRate(0) // no limit: everything goes, after a summary of what was dropped
	emit(t0.Add(time.Second), 100)
	if n := lines(); n != 115 {
		t.Errorf("with no limit, %d lines in all, want 115", n)
	}
	if !strings.Contains(out.String(), "dropped=995") {
		t.Errorf("no summary of the 995 dropped before the limit was lifted")
	}
}
