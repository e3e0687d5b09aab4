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
	// Conflict: the same prefix is both allowed and denied; the deny rule wins, so the allow rule
	// never decides. It is reported once, on the first allow rule; further allow rules of that
	// prefix are duplicates of it.
	Conflict Kind = "conflict"
	// Duplicate: the same prefix with the same action twice; the first one decides, and deleting
	// the duplicate changes no decision.
	Duplicate Kind = "duplicate"
	// Redundant: the rule changes nothing, because the rule it sits inside (or the default) already
	// gives the same action: deleting it changes no decision. A rule whose prefix is also written
	// with the other action is never called redundant (the Conflict comes first: deleting the deny
	// of a conflict would let the allow decide).
	Redundant Kind = "redundant"
	// Hidden: more specific rules cover all of the rule, so it never decides an address.
	Hidden Kind = "hidden"
	// NotIPv4: an IPv6 rule shorter than /96 that covers the IPv4-mapped range; IPv4 peers are
	// judged by IPv4 rules only, so it does not apply to them. Not reported when the ACL has a
	// 0.0.0.0/0 rule, which decides IPv4 explicitly.
	NotIPv4 Kind = "not-ipv4"
	// NotIPv6: a lone "deny 0.0.0.0/0" with default allow and no ::/0 rule: it denies all of IPv4
	// while IPv6 peers are still allowed by the default.
	NotIPv6 Kind = "not-ipv6"
	// LinkLocal: a rule inside fe80::/10. Link-local addresses are only unique on one link and
	// rules carry no zone, so the rule matches a peer with that address on every interface.
	LinkLocal Kind = "link-local"
	// DeniesAll: default deny, Unix peers denied, and no allow rule that decides an address (none
	// written, or each one hidden or losing a conflict): every peer is refused.
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

var (
	mapped    = netip.MustParseAddr("::ffff:0.0.0.0")
	all4      = netip.MustParsePrefix("0.0.0.0/0")
	all6      = netip.MustParsePrefix("::/0")
	linkLocal = netip.MustParsePrefix("fe80::/10")
)

// Lint compiles spec and reports rules that change nothing, never decide, or contradict each
// other, ordered by where they were written. It returns New's error if spec does not compile.
//
// Its advice is safe to follow: deleting any rule it calls Redundant, Duplicate or Hidden, or all
// the Redundant and Duplicate ones at once, changes no decision.
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
	// with the deciding one first (deny before allow, then in the order written): a stack of
	// enclosing rules gives each rule its parent.
	var stack []*Rule
	var first *Rule      // deciding rule of the current run of equal prefixes
	var firstAllow *Rule // first allow rule of that run when it conflicts with a deny
	allows := 0          // allow rules that decide at least one address
	var all4Rule *Rule
	have6 := false
	for i := range a.rules {
		switch r := &a.rules[i]; r.Prefix {
		case all4:
			if all4Rule == nil {
				all4Rule = r
			}
		case all6:
			have6 = true
		}
	}
	for i := range a.rules {
		r := &a.rules[i]
		if r.Action == Allow && used[i] {
			allows++ // an allow rule that decides some address
		}
		if r.Prefix.Addr().Is6() && r.Prefix.Bits() < 96 && r.Prefix.Contains(mapped) && all4Rule == nil {
			add(NotIPv4, r, nil, "IPv4 and IPv4-mapped peers are judged by IPv4 rules only; add 0.0.0.0/0 if they are meant too")
		}
		if r.Prefix.Bits() >= linkLocal.Bits() && linkLocal.Contains(r.Prefix.Addr()) {
			add(LinkLocal, r, nil, "link-local addresses are unique only on one link and rules carry no zone: it matches that address on every interface")
		}
		if first != nil && first.Prefix == r.Prefix {
			switch {
			case r.Action == first.Action:
				add(Duplicate, r, first, "same rule at "+first.Origin.String())
			case firstAllow == nil:
				firstAllow = r
				add(Conflict, r, first, "same prefix is denied at "+first.Origin.String()+"; deny wins, so this rule never decides")
			default:
				add(Duplicate, r, firstAllow, "same rule at "+firstAllow.Origin.String())
			}
			continue
		}
		first, firstAllow = r, nil
		conflicted := false // the same prefix is also written with the other action
		for j := i + 1; j < len(a.rules) && a.rules[j].Prefix == r.Prefix; j++ {
			if a.rules[j].Action != r.Action {
				conflicted = true
				break
			}
		}
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
		case inherited == r.Action && !conflicted:
			add(Redundant, r, parent, "changes nothing: "+from+" already "+verb(r.Action, "allows", "denies")+" it")
		}
		stack = append(stack, r)
	}
	if r := all4Rule; r != nil && r.Action == Deny && a.def == Allow && !have6 {
		add(NotIPv6, r, nil, "it denies all of IPv4, but IPv6 peers are left to default allow; add \"::/0\" to deny them too")
	}
	if a.def == Deny && allows == 0 && a.unix == Deny {
		add(DeniesAll, nil, nil, "default deny and no allow rule that decides any address: every peer is denied")
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
