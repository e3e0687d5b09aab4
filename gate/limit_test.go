package gate

import (
	"errors"
	"testing"
	"time"

	"github.com/peergate/peergate/acl"
	"github.com/peergate/peergate/gate/limit"
)

// A per-source cap denies the second connection from a source while the first is open, counts
// it as limited, and frees the slot when the handler closes the first.
func TestLimiterInGate(t *testing.T) {
	inner := listen(t, "tcp", "127.0.0.1:0")
	events := make(chan Event, 16)
	ln := NewListener(inner, mustACL(t, acl.Allow, acl.Deny), Options{
		Limiter:    limit.New(limit.Config{PerSource: 1}),
		OnDecision: func(ev Event) { events <- ev },
	})
	ch := server(t, ln)
	addr := inner.Addr().String()
	first := dialFrom(t, "127.0.0.7", addr)
	defer first.Close()
	held := next(t, ch)
	if _, ok := held.(*Conn); !ok {
		t.Fatalf("a conn holding a slot is %T, want *gate.Conn", held)
	}
	<-events
	other := dialFrom(t, "127.0.0.8", addr) // another source is not affected
	defer other.Close()
	next(t, ch).Close()
	<-events
	second := dialFrom(t, "127.0.0.7", addr)
	if s, err := readAll(second); s != "" || err != nil {
		t.Errorf("over the cap: read %q, %v; want a close", s, err)
	}
	if ev := <-events; !errors.Is(ev.Limit, limit.ErrConcurrency) || ev.HandedOn || !ev.Decision.Allowed() {
		t.Errorf("over the cap: event %+v", ev)
	}
	held.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c := dialFrom(t, "127.0.0.7", addr)
		ev := <-events
		c.Close()
		if ev.HandedOn {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the slot was not given back on Close")
		}
	}
	if s := ln.Stats(); s.Limited != 1 || s.Allowed != 3 {
		t.Errorf("stats %+v", s)
	}
}

// In dry run, a peer the ACL denies is handed on, and so it is held to the limits like any other:
// dry_run must not switch the limits off for exactly the peers the ACL flags.
func TestLimiterInDryRun(t *testing.T) {
	inner := listen(t, "tcp", "127.0.0.1:0")
	events := make(chan Event, 16)
	ln := NewListener(inner, mustACL(t, acl.Deny, acl.Deny), Options{
		DryRun:     true,
		Limiter:    limit.New(limit.Config{PerSource: 1}),
		OnDecision: func(ev Event) { events <- ev },
	})
	ch := server(t, ln)
	addr := inner.Addr().String()
	first := dialFrom(t, "127.0.0.7", addr)
	defer first.Close()
	held := next(t, ch)
	defer held.Close()
	if ev := <-events; !ev.HandedOn || ev.Decision.Allowed() {
		t.Fatalf("first: event %+v; want denied by the ACL and handed on", ev)
	}
	second := dialFrom(t, "127.0.0.7", addr)
	if s, err := readAll(second); s != "" || err != nil {
		t.Errorf("over the cap in dry run: read %q, %v; want a close", s, err)
	}
	if ev := <-events; !errors.Is(ev.Limit, limit.ErrConcurrency) || ev.HandedOn {
		t.Errorf("over the cap in dry run: event %+v", ev)
	}
}
