// Package acl decides whether a peer address is allowed, and says which rule decided.
//
// An ACL is a set of rules, each a prefix with an action, plus a default action for addresses no
// rule covers and a policy for Unix-domain peers, which have no address. The most specific prefix
// that contains an address decides (longest-prefix match, as in a routing table), so the order of
// rules never matters. When the same prefix is both allowed and denied, deny wins.
//
// Addresses are normalised before lookup: an IPv4-mapped IPv6 address (::ffff:10.1.2.3) is judged
// as the IPv4 address it carries, and zones are dropped, so a dual-stack listener cannot slip past
// IPv4 rules. An ACL is immutable once built and safe for concurrent use; to change policy, build a
// new ACL and swap a pointer.
//
// The package is pure: it opens no sockets and reads files only through its loaders.
package acl

import (
	"fmt"
	"iter"
	"net/netip"
	"slices"
	"strconv"

	"github.com/peergate/peergate/internal/rangetab"
)

// Action is what an ACL does with a peer. The zero value is Deny, so an Action nobody set fails
// closed.
type Action uint8

const (
	// Deny refuses the peer.
	Deny Action = iota
	// Allow accepts the peer.
	Allow
)

// String returns "allow" or "deny".
func (a Action) String() string {
	switch a {
	case Allow:
		return "allow"
	case Deny:
		return "deny"
	}
	return "Action(" + strconv.Itoa(int(a)) + ")"
}

// ParseAction parses "allow" or "deny". Any other word is an error wrapping ErrAction.
func ParseAction(s string) (Action, error) {
	switch s {
	case "allow":
		return Allow, nil
	case "deny":
		return Deny, nil
	}
	return Deny, fmt.Errorf("%w %q (want allow or deny)", ErrAction, s)
}

// Origin says where a rule was written. The zero Origin means the rule was built in code.
type Origin struct {
	File string // path of the file, as it was given to the loader
	Line int    // 1-based line number; 0 when unknown
}

// String returns "file:line", "file" when the line is unknown, or "-" for a rule built in code.
func (o Origin) String() string {
	switch {
	case o.File == "":
		return "-"
	case o.Line == 0:
		return o.File
	}
	return o.File + ":" + strconv.Itoa(o.Line)
}

// Rule is one entry of an ACL: every address inside Prefix gets Action, unless a more specific
// rule covers it.
type Rule struct {
	Prefix netip.Prefix
	Action Action
	Origin Origin
}

// String returns the rule as "allow 10.0.0.0/8 (acl.yaml:3)".
func (r Rule) String() string {
	return r.Action.String() + " " + r.Prefix.String() + " (" + r.Origin.String() + ")"
}

// Decision is the answer for one peer: the action and the rule that decided it. Rule is nil when
// no rule covers the address and the ACL's default decided, and for Unix-domain peers. Rule points
// into the ACL and must not be modified.
type Decision struct {
	Action Action
	Rule   *Rule
	// UnixRule is the entry of the unix policy that decided a Unix-domain peer by its
	// credentials (see DecideUnix); nil when the policy's default decided, and for IP peers.
	UnixRule *UnixRule
}

// By returns what decided, as logs and check print it: the rule's prefix ("10.0.0.0/8") or the
// unix policy's entry ("uid alice=1000") and its origin, or "default" and "".
func (d Decision) By() (rule, origin string) {
	switch {
	case d.UnixRule != nil:
		return d.UnixRule.target(), d.UnixRule.Origin.String()
	case d.Rule != nil:
		return d.Rule.Prefix.String(), d.Rule.Origin.String()
	}
	return "default", ""
}

// Allowed reports whether the decision lets the peer in.
func (d Decision) Allowed() bool { return d.Action == Allow }

// String returns "allow by 10.0.0.0/8 (acl.yaml:3)" or "deny by default".
func (d Decision) String() string {
	if r := d.UnixRule; r != nil {
		return d.Action.String() + " by " + r.target() + " (" + r.Origin.String() + ")"
	}
	if d.Rule == nil {
		return d.Action.String() + " by default"
	}
	return d.Action.String() + " by " + d.Rule.Prefix.String() + " (" + d.Rule.Origin.String() + ")"
}

// Spec is an ACL before it is compiled: what a loader reads from a file, and what lint inspects.
type Spec struct {
	Default Action // decides addresses that no rule covers
	Unix    Action // decides Unix-domain peers no UnixRules entry decides; the zero value denies them
	Rules   []Rule
	// UnixRules judge Unix-domain peers by the credentials of their process (see DecideUnix).
	UnixRules []UnixRule
}

// ACL is a compiled, immutable access list. Its methods are safe for concurrent use.
type ACL struct {
	def, unix Action
	rules     []Rule // sorted by prefix; ruleVal indexes into it
	v4        rangetab.Table4[uint32]
	v6        rangetab.Table6[uint32]
	unixRules unixPolicy
}

// New compiles spec into an ACL. Each rule's prefix must be valid and have no host bits set;
// IPv4-mapped IPv6 prefixes (::ffff:10.0.0.0/104) are stored as the IPv4 prefixes they denote.
// New keeps no reference to spec.Rules.
func New(spec Spec) (*ACL, error) {
	if err := checkAction(spec.Default); err != nil {
		return nil, fmt.Errorf("default: %w", err)
	}
	if err := checkAction(spec.Unix); err != nil {
		return nil, fmt.Errorf("unix: %w", err)
	}
	// Sort so that a prefix comes before the prefixes it contains and, for the same prefix, deny
	// comes before allow and an earlier rule before a later one: the first of equals decides.
	// IPv4 rules sort as packed integers (the bulk of a big blocklist), IPv6 rules as small keys;
	// either is several times faster than sorting the rules themselves.
	var keys4 []uint64
	var keys6 []sortKey
	if len(spec.Rules) >= 1<<key4Bits {
		return nil, fmt.Errorf("%w: %d, an ACL holds at most %d", ErrTooMany, len(spec.Rules), 1<<key4Bits-1)
	}
	for i, r := range spec.Rules {
		p, err := normalPrefix(r.Prefix)
		if err == nil {
			err = checkAction(r.Action)
		}
		if err != nil {
			return nil, fmt.Errorf("rule %d %s (%s): %w", i, r.Prefix, r.Origin, err)
		}
		first, _ := rangetab.Span(p)
		if p.Addr().Is4() {
			if keys4 == nil {
				keys4 = make([]uint64, 0, len(spec.Rules))
			}
			keys4 = append(keys4, first.Lo<<32|uint64(p.Bits())<<(key4Bits+1)|uint64(r.Action)<<key4Bits|uint64(i))
		} else {
			keys6 = append(keys6, sortKey{first, uint8(p.Bits()), r.Action, int32(i)})
		}
	}
	slices.Sort(keys4)
	slices.SortFunc(keys6, compareKeys)
	rules := make([]Rule, 0, len(spec.Rules))
	for _, k := range keys4 {
		rules = append(rules, spec.Rules[k&(1<<key4Bits-1)])
	}
	for _, k := range keys6 {
		rules = append(rules, spec.Rules[k.i])
	}
	for i := range rules {
		rules[i].Prefix, _ = normalPrefix(rules[i].Prefix)
	}
	for i, r := range spec.UnixRules {
		if err := checkAction(r.Action); err != nil {
			return nil, fmt.Errorf("unix rule %d %s (%s): %w", i, r.target(), r.Origin, err)
		}
	}
	a := &ACL{def: spec.Default, unix: spec.Unix, rules: rules, unixRules: newUnixPolicy(spec.UnixRules)}
	a.compile()
	return a, nil
}

// MustNew is New for rules known to be valid, such as literals in tests and examples; it panics on
// error.
func MustNew(spec Spec) *ACL {
	a, err := New(spec)
	if err != nil {
		panic(err)
	}
	return a
}

// Decide returns the decision for addr. IPv4-mapped IPv6 addresses are judged as IPv4 and zones are
// ignored. The zero (invalid) Addr is denied with no rule: fail closed.
func (a *ACL) Decide(addr netip.Addr) Decision {
	var v uint32
	switch {
	case addr.Is4():
		v = a.v4.Lookup(be32(addr.As4()))
	case addr.Is4In6():
		v = a.v4.Lookup(be32(addr.Unmap().As4()))
	case addr.Is6():
		v = a.v6.Lookup(be128(addr.As16()))
	default:
		return Decision{Action: Deny}
	}
	return a.decision(v)
}

// Unix returns the decision for a Unix-domain peer, which has no address, when its credentials
// are unknown: the default of the ACL's unix policy. DecideUnix judges a peer by its credentials.
func (a *ACL) Unix() Decision { return Decision{Action: a.unix} }

// Default returns the action for addresses that no rule covers.
func (a *ACL) Default() Action { return a.def }

// Len returns the number of rules.
func (a *ACL) Len() int { return len(a.rules) }

// Rules returns a copy of the ACL's rules, ordered by prefix.
func (a *ACL) Rules() []Rule { return slices.Clone(a.rules) }

// All returns the ACL's rules in the order of Rules (by prefix; for the same prefix, deny first),
// without copying them all: for a consumer that translates a large ACL.
func (a *ACL) All() iter.Seq[Rule] {
	return func(yield func(Rule) bool) {
		for _, r := range a.rules {
			if !yield(r) {
				return
			}
		}
	}
}

// key4Bits is how many low bits of an IPv4 sort key hold the rule's index. Above them: the action
// (1 bit), the prefix length (6 bits) and the first address (32 bits).
const key4Bits = 24

// sortKey orders IPv6 rules.
type sortKey struct {
	first u128
	bits  uint8
	act   Action
	i     int32
}

func compareKeys(a, b sortKey) int {
	switch {
	case a.first != b.first:
		if a.first.Less(b.first) {
			return -1
		}
		return 1
	case a.bits != b.bits:
		return int(a.bits) - int(b.bits)
	case a.act != b.act:
		return int(a.act) - int(b.act) // Deny (0) first
	}
	return int(a.i - b.i)
}

func checkAction(a Action) error {
	if a != Allow && a != Deny {
		return fmt.Errorf("%w %v", ErrAction, a)
	}
	return nil
}
