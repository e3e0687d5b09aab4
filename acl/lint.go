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
	l := &linter{a: a, used: usedRules(a)}
	var have6 bool
	l.all4Rule, have6 = wholeFamilies(a)
	for i := range a.rules {
		l.rule(i)
	}
	if r := l.all4Rule; r != nil && r.Action == Deny && a.def == Allow && !have6 {
		l.add(NotIPv6, r, nil, "it denies all of IPv4, but IPv6 peers are left to default allow; add \"::/0\" to deny them too")
	}
	if a.def == Deny && l.allows == 0 && a.unix == Deny {
		l.add(DeniesAll, nil, nil, "default deny and no allow rule that decides any address: every peer is denied")
	}
	sortFindings(l.out)
	return l.out, nil
}

// linter is the state of Lint's walk over the sorted rules of a. Rules are sorted so that a
// prefix precedes those it contains, and equal prefixes are adjacent with the deciding one first
// (deny before allow, then in the order written): a stack of enclosing rules gives each rule its
// parent.
type linter struct {
	a          *ACL
	used       []bool // by rule: decides at least one segment
	out        []Finding
	stack      []*Rule
	first      *Rule // deciding rule of the current run of equal prefixes
	firstAllow *Rule // first allow rule of that run when it conflicts with a deny
	allows     int   // allow rules that decide at least one address
	all4Rule   *Rule // the first rule for 0.0.0.0/0; nil: none
}

func (l *linter) add(k Kind, r, other *Rule, msg string) {
	l.out = append(l.out, Finding{k, r, other, msg})
}

// usedRules reports, by rule of a, whether it decides at least one segment.
func usedRules(a *ACL) []bool {
	used := make([]bool, len(a.rules))
	mark := func(v uint32) {
		if r := v >> 1; r != 0 {
			used[r-1] = true
		}
	}
	for _, s := range a.v4.Segs {
		mark(s.Val)
	}
	for _, s := range a.v6.Segs {
		mark(s.Val)
	}
	return used
}

// wholeFamilies returns the first rule of a for all of IPv4 (nil: none), and whether a has one
// for all of IPv6.
func wholeFamilies(a *ACL) (all4Rule *Rule, have6 bool) {
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
	return all4Rule, have6
}

// rule lints the i-th rule of the walk.
func (l *linter) rule(i int) {
	r := &l.a.rules[i]
	if r.Action == Allow && l.used[i] {
		l.allows++ // an allow rule that decides some address
	}
	if r.Prefix.Addr().Is6() && r.Prefix.Bits() < 96 && r.Prefix.Contains(mapped) && l.all4Rule == nil {
		l.add(NotIPv4, r, nil, "IPv4 and IPv4-mapped peers are judged by IPv4 rules only; add 0.0.0.0/0 if they are meant too")
	}
	if r.Prefix.Bits() >= linkLocal.Bits() && linkLocal.Contains(r.Prefix.Addr()) {
		l.add(LinkLocal, r, nil, "link-local addresses are unique only on one link and rules carry no zone: it matches that address on every interface")
	}
	if l.repeats(r) {
		return
	}
	l.first, l.firstAllow = r, nil
	l.nest(i, r)
}

// repeats lints r when it repeats the prefix of the current run's deciding rule, and reports
// whether it does.
func (l *linter) repeats(r *Rule) bool {
	first := l.first
	if first == nil || first.Prefix != r.Prefix {
		return false
	}
	switch {
	case r.Action == first.Action:
		l.add(Duplicate, r, first, "same rule at "+first.Origin.String())
	case l.firstAllow == nil:
		l.firstAllow = r
		l.add(Conflict, r, first, "same prefix is denied at "+first.Origin.String()+"; deny wins, so this rule never decides")
	default:
		l.add(Duplicate, r, l.firstAllow, "same rule at "+l.firstAllow.Origin.String())
	}
	return true
}

// nest lints the i-th rule r, the first of its prefix, against the rule enclosing it (or the
// default), and pushes it on the stack.
func (l *linter) nest(i int, r *Rule) {
	a := l.a
	conflicted := false // the same prefix is also written with the other action
	for j := i + 1; j < len(a.rules) && a.rules[j].Prefix == r.Prefix; j++ {
		if a.rules[j].Action != r.Action {
			conflicted = true
			break
		}
	}
	for len(l.stack) > 0 && !l.stack[len(l.stack)-1].Prefix.Contains(r.Prefix.Addr()) {
		l.stack = l.stack[:len(l.stack)-1]
	}
	var parent *Rule
	inherited, from := a.def, "the default"
	if len(l.stack) > 0 {
		parent = l.stack[len(l.stack)-1]
		inherited, from = parent.Action, parent.Prefix.String()+" at "+parent.Origin.String()
	}
	switch {
	case !l.used[i]:
		l.add(Hidden, r, nil, "more specific rules cover all of it, so it never decides")
	case inherited == r.Action && !conflicted:
		l.add(Redundant, r, parent, "changes nothing: "+from+" already "+verb(r.Action, "allows", "denies")+" it")
	}
	l.stack = append(l.stack, r)
}

// sortFindings orders findings by where their rule was written, those of no rule last.
func sortFindings(out []Finding) {
	slices.SortStableFunc(out, func(x, y Finding) int {
		switch {
		case x.Rule == nil || y.Rule == nil:
			return cmp.Compare(boolInt(x.Rule == nil), boolInt(y.Rule == nil))
		case x.Rule.Origin.File != y.Rule.Origin.File:
			return cmp.Compare(x.Rule.Origin.File, y.Rule.Origin.File)
		}
		return cmp.Compare(x.Rule.Origin.Line, y.Rule.Origin.Line)
	})
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
