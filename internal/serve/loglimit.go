package serve

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// logLimit is a token bucket for log lines: rate a second, in bursts of up to rate. A flood of
// denied peers must not become a flood of log lines that fills the disk or stalls the logger.
type logLimit struct {
	mu      sync.Mutex
	rate    float64 // 0: no limit
	tokens  float64
	last    time.Time
	dropped uint64 // since the last line let through
}

// setRate changes the rate, keeping what is dropped so far.
func (l *logLimit) setRate(perSecond int) {
	l.mu.Lock()
	l.rate = float64(perSecond)
	l.tokens = min(l.tokens, l.rate)
	l.mu.Unlock()
}

// take reports whether a line may go out now, and how many were dropped before it.
func (l *logLimit) take(now time.Time) (ok bool, dropped uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.rate == 0 {
		dropped, l.dropped = l.dropped, 0
		return true, dropped
	}
	l.tokens = min(l.rate, l.tokens+now.Sub(l.last).Seconds()*l.rate)
	l.last = now
	if l.tokens < 1 {
		l.dropped++
		return false, 0
	}
	l.tokens--
	dropped, l.dropped = l.dropped, 0
	return true, dropped
}

// limitedLog returns a logger that writes to log's handler as l allows, with the service's name.
func limitedLog(log *slog.Logger, l *logLimit, service string) *slog.Logger {
	return slog.New(limitHandler{log.Handler(), l}).With("service", service)
}

// limitHandler passes records to h as its logLimit allows and drops the rest; the next record it
// passes is preceded by a line that says how many were dropped.
type limitHandler struct {
	h slog.Handler
	l *logLimit
}

func (h limitHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.h.Enabled(ctx, level)
}

func (h limitHandler) Handle(ctx context.Context, r slog.Record) error {
	ok, dropped := h.l.take(r.Time)
	if !ok {
		return nil
	}
	if dropped > 0 {
		s := slog.NewRecord(r.Time, slog.LevelWarn, "log lines dropped by log_rate", 0)
		s.AddAttrs(slog.Uint64("dropped", dropped))
		h.h.Handle(ctx, s)
	}
	return h.h.Handle(ctx, r)
}

func (h limitHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return limitHandler{h.h.WithAttrs(as), h.l}
}
func (h limitHandler) WithGroup(name string) slog.Handler {
	return limitHandler{h.h.WithGroup(name), h.l}
}
