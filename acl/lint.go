package acl

import (
	"cmp"
	"net/netip"
	"slices"
)

// Kind names what a lint Finding is about.
type Kind string

// The kinds of lint findings. None of them is an error: the ACL they describe still works, and
// decides as the package documentation says, but probably not as its author meant.
const (
	// Conflict: the same prefix is both allowed and denied; the deny rule wins.
	Conflict Kind = "conflict"
	// Duplicate: the same prefix with the same action twice; the first one decides.
	Duplicate Kind = "duplicate"
	// Redundant: the rule changes nothing, because the rule it sits inside (or the default) already
	// gives the same action.
	Redundant Kind = "redundant"
	// Hidden: more specific rules cover all of the rule, so it never decides an address.
	Hidden Kind = "hidden"
	// NotIPv4: an IPv6 rule shorter than /96 that covers the IPv4-mapped range; IPv4 peers are
	// judged by IPv4 rules only, so it does not apply to them.
	NotIPv4 Kind = "not-ipv4"
	// DeniesAll: default deny with no allow rule and Unix peers denied: every peer is refused.
	DeniesAll Kind = "denies-all"
)

// Finding is one lint warning.
type Finding struct {
	Kind  Kind
	Rule  *Rule  // the rule the finding is about; nil when it is about the whole ACL
	Other *Rule  // the other rule involved (the winner of a conflict, the enclosing rule), or nil
	Msg   string // a sentence for people
}

// String returns "origin: kind: rule: message".
func (f Finding) String() string {
	if f.Rule == nil {
		return string(f.Kind) + ": " + f.Msg
	}
	return f.Rule.Origin.String() + ": " + string(f.Kind) + ": " + f.Rule.Action.String() + " " +
		f.Rule.Prefix.String() + ": " + f.Msg
}

var mapped = netip.MustParseAddr("::ffff:0.0.0.0")

// Lint compiles spec and reports rules that change nothing, never decide, or contradict each
// other, ordered by where they were written. It returns New's error if spec does not compile.
func Lint(spec Spec) ([]Finding, error) {
	a, err := New(spec)
	if err != nil {
		return nil, err
	}
	used := make([]bool, len(a.rules)) // decides at least one segment
	for _, vals := range [][]uint32{a.v4.vals, a.v6.vals} {
		for _, v := range vals {
			if r := v >> 1; r != 0 {
				used[r-1] = true
			}
		}
	}
	var out []Finding
	add := func(k Kind, r, other *Rule, msg string) { out = append(out, Finding{k, r, other, msg}) }

	// Rules are sorted so that a prefix precedes those it contains, and equal prefixes are adjacent
	// with the deciding one first: a stack of enclosing rules gives each rule its parent.
	var stack []*Rule
	var first *Rule // first rule of the current run of equal prefixes
	allows := 0
	for i := range a.rules {
		r := &a.rules[i]
		if r.Action == Allow {
			allows++
		}
		if r.Prefix.Addr().Is6() && r.Prefix.Bits() < 96 && r.Prefix.Contains(mapped) {
			add(NotIPv4, r, nil, "IPv4 and IPv4-mapped peers are judged by IPv4 rules only; add 0.0.0.0/0 if they are meant too")
		}
		if first != nil && first.Prefix == r.Prefix {
			if first.Action != r.Action {
				add(Conflict, r, first, "same prefix is "+verb(first.Action, "allowed", "denied")+" at "+first.Origin.String()+"; deny wins")
			} else {
				add(Duplicate, r, first, "same rule at "+first.Origin.String())
			}
			continue
		}
		first = r
		for len(stack) > 0 && !stack[len(stack)-1].Prefix.Contains(r.Prefix.Addr()) {
			stack = stack[:len(stack)-1]
		}
		var parent *Rule
		inherited, from := a.def, "the default"
		if len(stack) > 0 {
			parent = stack[len(stack)-1]
			inherited, from = parent.Action, parent.Prefix.String()+" at "+parent.Origin.String()
		}
		switch {
		case !used[i]:
			add(Hidden, r, nil, "more specific rules cover all of it, so it never decides")
		case inherited == r.Action:
			add(Redundant, r, parent, "changes nothing: "+from+" already "+verb(r.Action, "allows", "denies")+" it")
		}
		stack = append(stack, r)
	}
	if a.def == Deny && allows == 0 && a.unix == Deny {
		add(DeniesAll, nil, nil, "default deny with no allow rule: every peer is denied")
	}
	slices.SortStableFunc(out, func(x, y Finding) int {
		switch {
		case x.Rule == nil || y.Rule == nil:
			return cmp.Compare(boolInt(x.Rule == nil), boolInt(y.Rule == nil))
		case x.Rule.Origin.File != y.Rule.Origin.File:
			return cmp.Compare(x.Rule.Origin.File, y.Rule.Origin.File)
		}
		return cmp.Compare(x.Rule.Origin.Line, y.Rule.Origin.Line)
	})
	return out, nil
}

func verb(a Action, allow, deny string) string {
	if a == Allow {
		return allow
	}
	return deny
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
