package gate

import (
	"errors"
	"strconv"

	"github.com/peergate/peergate/acl"
)

// Reason says why a judged connection was handed on or closed. It is the one vocabulary of the
// gate's counters (Listener.Counts), of gateprom's peergate_gate_connections_total and of
// peergate serve's peergate_connections_total, whose reason label is its String.
type Reason uint8

// The reasons, each with the verdicts it comes with (see Outcomes).
const (
	// ReasonACL: the ACL decided, and it was done: allowed and handed on, or denied and closed.
	ReasonACL Reason = iota
	// ReasonDryRun: the ACL or a ban would have denied the peer, and Options.DryRun handed the
	// connection on (verdict allow).
	ReasonDryRun
	// ReasonBan: a ban of the ban layer (Options.Bans) denied the peer, whatever the ACL says.
	ReasonBan
	// ReasonLimit: the peer would have been handed on, and a per-source limit (Options.Limiter)
	// denied it, DryRun or not.
	ReasonLimit
	// ReasonProxy: no valid PROXY header from a trusted proxy, or a peer that is not a trusted
	// proxy where the header is required (Options.Proxy): the error wraps ErrProxyHeader or
	// ErrProxyRequired.
	ReasonProxy
	// ReasonPeerError: the peer could not be found or judged (Event.Err is set and is not a
	// PROXY header error); closed, to fail closed.
	ReasonPeerError
)

// reasonNames are the reasons' label values, indexed by Reason.
var reasonNames = [...]string{ReasonACL: "acl", ReasonDryRun: "dry_run", ReasonBan: "ban",
	ReasonLimit: "limit", ReasonProxy: "proxy", ReasonPeerError: "peer_error"}

// String returns the reason's label value: "acl", "dry_run", "ban", "limit", "proxy" or
// "peer_error".
func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return "Reason(" + strconv.Itoa(int(r)) + ")"
}

// Outcome is what became of a judged connection: its verdict (acl.Allow: handed on to the
// caller; acl.Deny: closed) and the reason.
type Outcome struct {
	Verdict acl.Action
	Reason  Reason
}

// outcomes lists every outcome there can be, in the order Outcomes returns them; an outcome's
// index in it is its counter's in a Listener.
var outcomes = [...]Outcome{
	{acl.Allow, ReasonACL}, {acl.Allow, ReasonDryRun},
	{acl.Deny, ReasonACL}, {acl.Deny, ReasonBan}, {acl.Deny, ReasonLimit},
	{acl.Deny, ReasonProxy}, {acl.Deny, ReasonPeerError},
}

// Indexes into outcomes.
const (
	outAllowACL = iota
	outDryRun
	outDenyACL
	outBan
	outLimit
	outProxy
	outPeerError
	numOutcomes
)

// Outcomes returns every outcome a judged connection can have, in a fixed order: allow by acl and
// dry_run; deny by acl, ban, limit, proxy and peer_error.
func Outcomes() []Outcome { return append([]Outcome(nil), outcomes[:]...) }

// String returns "verdict/reason", such as "deny/ban".
func (o Outcome) String() string { return o.Verdict.String() + "/" + o.Reason.String() }

// MarshalText returns the outcome's String, so that Stats encodes as JSON.
func (o Outcome) MarshalText() ([]byte, error) { return []byte(o.String()), nil }

// Outcome returns what became of the connection of ev: the reason, from ev's Err, Limit, Ban and
// Decision, and the verdict, from HandedOn. It is what the Listener counts, and what an
// OnDecision hook should count to agree with it.
func (ev *Event) Outcome() Outcome { return outcomes[ev.outcome()] }

// outcome is Outcome as an index into outcomes.
func (ev *Event) outcome() int {
	switch {
	case ev.Err != nil:
		if errors.Is(ev.Err, ErrProxyHeader) || errors.Is(ev.Err, ErrProxyRequired) {
			return outProxy
		}
		return outPeerError
	case ev.Limit != nil:
		return outLimit
	case ev.HandedOn && !ev.Decision.Allowed():
		return outDryRun
	case ev.Ban != nil:
		return outBan
	case ev.Decision.Allowed():
		return outAllowACL
	default:
		return outDenyACL
	}
}

// Counts returns how many connections the Listener judged with each outcome of Outcomes(),
// zeros included, each connection once. A dry-run connection counts as allow/dry_run here, and in
// Stats' Denied or Banned; a proxy error as deny/proxy here, and in Stats' Errors.
func (l *Listener) Counts() map[Outcome]uint64 {
	m := make(map[Outcome]uint64, numOutcomes)
	for i, o := range outcomes {
		m[o] = l.counts[i].Load()
	}
	return m
}

// count counts the outcome of ev, once its HandedOn is set.
func (l *Listener) count(ev *Event) {
	o := ev.outcome()
	l.counts[o].Add(1)
	if o == outDryRun && ev.Ban != nil {
		l.dryRunBans.Add(1)
	}
}
