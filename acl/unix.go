package acl

import (
	"strconv"
)

// UnixCred is what the kernel reports about the process at the other end of a Unix-domain socket
// (SO_PEERCRED on Linux): its user, primary group and process id at the time it connected.
type UnixCred struct {
	UID, GID uint32
	PID      int32
	// Valid is false when the credentials are unknown: on systems where peergate cannot read
	// them, or for a Unix-domain client named by a PROXY header. Only the default of the unix
	// policy decides such a peer.
	Valid bool
}

// String returns "uid=1000 gid=1000 pid=4242", or "creds unknown".
func (c UnixCred) String() string {
	if !c.Valid {
		return "creds unknown"
	}
	return "uid=" + strconv.FormatUint(uint64(c.UID), 10) + " gid=" + strconv.FormatUint(uint64(c.GID), 10) +
		" pid=" + strconv.FormatInt(int64(c.PID), 10)
}

// UnixKind says what a UnixRule matches: the peer's user or its primary group.
type UnixKind uint8

const (
	// UID matches the peer process's user id.
	UID UnixKind = iota
	// GID matches the peer process's primary group id.
	GID
)

// String returns "uid" or "gid".
func (k UnixKind) String() string {
	if k == GID {
		return "gid"
	}
	return "uid"
}

// UnixRule is one entry of a unix policy: Unix-domain peers whose process runs as ID (a user or a
// group, by Kind) get Action.
type UnixRule struct {
	Kind   UnixKind
	ID     uint32
	Name   string // the name as written, when the rule named the user or group; "" for a number
	Action Action
	Origin Origin
}

// String returns "allow uid 1000 (acl.yaml:4)" or "allow gid adm=4 (acl.yaml:5)".
func (r UnixRule) String() string {
	return r.Action.String() + " " + r.target() + " (" + r.Origin.String() + ")"
}

// target returns "uid 1000" or "gid adm=4".
func (r UnixRule) target() string {
	s := r.Kind.String() + " "
	if r.Name != "" {
		s += r.Name + "="
	}
	return s + strconv.FormatUint(uint64(r.ID), 10)
}

// unixPolicy is the compiled unix policy: for each id the index of its deciding rule.
type unixPolicy struct {
	rules []UnixRule
	uids  map[uint32]int
	gids  map[uint32]int
}

func newUnixPolicy(rules []UnixRule) unixPolicy {
	p := unixPolicy{rules: append([]UnixRule(nil), rules...)}
	for i, r := range p.rules {
		m := &p.uids
		if r.Kind == GID {
			m = &p.gids
		}
		if *m == nil {
			*m = make(map[uint32]int)
		}
		if j, ok := (*m)[r.ID]; !ok || r.Action == Deny && p.rules[j].Action == Allow {
			(*m)[r.ID] = i // the first rule for an id decides, unless a later one denies
		}
	}
	return p
}

// DecideUnix returns the decision for a Unix-domain peer with credentials c. A deny rule that
// matches the peer's uid or gid denies; else an allow rule that matches either allows; else the
// policy's default (Unix) decides. Peers with unknown credentials get the default. The deciding
// rule is in the Decision's UnixRule.
func (a *ACL) DecideUnix(c UnixCred) Decision {
	d := Decision{Action: a.unix}
	if !c.Valid || len(a.unixRules.rules) == 0 {
		return d
	}
	var allow *UnixRule
	for _, i := range [2]int{lookupID(a.unixRules.uids, c.UID), lookupID(a.unixRules.gids, c.GID)} {
		if i < 0 {
			continue
		}
		r := &a.unixRules.rules[i]
		if r.Action == Deny {
			return Decision{Action: Deny, UnixRule: r}
		}
		if allow == nil {
			allow = r
		}
	}
	if allow != nil {
		return Decision{Action: Allow, UnixRule: allow}
	}
	return d
}

// UnixRules returns a copy of the rules of the ACL's unix policy, in the order written.
func (a *ACL) UnixRules() []UnixRule { return append([]UnixRule(nil), a.unixRules.rules...) }

func lookupID(m map[uint32]int, id uint32) int {
	if i, ok := m[id]; ok {
		return i
	}
	return -1
}
