package gate

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/peergate/peergate/acl"
)

// TestEventOutcome: each kind of event has one verdict and reason, the same the Listener counts
// and peergate serve labels its metrics with. A dry-run denial is allow/dry_run (it was handed
// on), whether the ACL or a ban would have denied it.
func TestEventOutcome(t *testing.T) {
	allow, deny := acl.Decision{Action: acl.Allow}, acl.Decision{Action: acl.Deny}
	ban := &Ban{Origin: "api"}
	for _, tc := range []struct {
		ev   Event
		want string
	}{
		{Event{Decision: allow, HandedOn: true}, "allow/acl"},
		{Event{Decision: deny}, "deny/acl"},
		{Event{Decision: deny, HandedOn: true}, "allow/dry_run"},
		{Event{Decision: deny, Ban: ban}, "deny/ban"},
		{Event{Decision: deny, Ban: ban, HandedOn: true}, "allow/dry_run"},
		{Event{Decision: allow, Limit: errors.New("over")}, "deny/limit"},
		{Event{Decision: deny, Ban: ban, Limit: errors.New("over")}, "deny/limit"}, // dry run, over a limit
		{Event{Decision: deny, Err: fmt.Errorf("x: %w", ErrProxyHeader)}, "deny/proxy"},
		{Event{Decision: deny, Err: ErrProxyRequired}, "deny/proxy"},
		{Event{Decision: deny, Err: ErrProxyBusy}, "deny/proxy"},
		{Event{Decision: deny, Err: ErrNoACL}, "deny/peer_error"},
	} {
		if got := tc.ev.Outcome().String(); got != tc.want {
			t.Errorf("%+v: outcome %s, want %s", tc.ev, got, tc.want)
		}
	}
	seen := map[Outcome]bool{}
	for _, o := range Outcomes() {
		if seen[o] || o.Reason.String() == "" {
			t.Errorf("outcome %v twice or unnamed", o)
		}
		seen[o] = true
	}
	if len(seen) != numOutcomes || Reason(99).String() != "Reason(99)" {
		t.Errorf("%d outcomes, want %d; %v", len(seen), numOutcomes, Reason(99))
	}
}

// TestCountsAgree: the Listener's Counts, its Stats and what an OnDecision hook sees through
// Event.Outcome agree, in dry-run mode too.
func TestCountsAgree(t *testing.T) {
	for _, dry := range []bool{false, true} {
		inner := listen(t, "tcp", "127.0.0.1:0")
		seen := make(chan Outcome, 8)
		g := NewListener(inner, mustACL(t, acl.Deny, acl.Deny, "allow 127.0.0.1"),
			Options{DryRun: dry, OnDecision: func(ev Event) { seen <- ev.Outcome() }})
		handled := server(t, g)
		for _, src := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.1"} {
			c := dialFrom(t, src, inner.Addr().String())
			defer c.Close()
			if dry || src == "127.0.0.1" { // a denied connection is not handed to the server
				next(t, handled)
			}
		}
		hooked := map[Outcome]uint64{}
		for range 3 {
			select {
			case o := <-seen:
				hooked[o]++
			case <-time.After(5 * time.Second):
				t.Fatal("OnDecision not called")
			}
		}
		counts := g.Counts()
		for o, n := range hooked {
			if counts[o] != n {
				t.Errorf("dry %v: Counts %v, hook saw %v", dry, counts, hooked)
			}
		}
		dryRun := counts[Outcome{acl.Allow, ReasonDryRun}]
		if s := g.Stats(); s.Denied != 2 || s.Allowed != 1 || dry && dryRun != 2 || !dry && dryRun != 0 {
			t.Errorf("dry %v: stats %+v, counts %v", dry, s, counts)
		}
	}
}
