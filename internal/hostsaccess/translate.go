package hostsaccess

import (
	"errors"
	"net/netip"
	"strings"

	"github.com/peergate/peergate/acl"
	"github.com/peergate/peergate/internal/strictyaml"
)

// Result is the translation of the access control files for one daemon.
type Result struct {
	// Spec decides every address as tcpd would. Each rule's Origin is the entry that decides the
	// largest block of the addresses the rule decides (the zero Origin where that block is
	// decided by tcpd's final "otherwise grant").
	Spec acl.Spec
	// DefaultOrigin is the same for the addresses no rule covers.
	DefaultOrigin acl.Origin
	// UnixOrigin is the entry that decides a client without an address (Spec.Unix), as tcpd
	// judges one: only ALL matches it.
	UnixOrigin acl.Origin
	// Entries are the entries that apply to the daemon, in the order tcpd tries them.
	Entries []*Entry
	// Warnings are about the files' skipped lines and about the entries that apply.
	Warnings []Warning
}

// Translate returns the ACL that decides, for daemon, as tcpd does with files, given in the order
// tcpd reads them (hosts.allow, then hosts.deny; a nil File is an empty one): the first entry
// that applies to the daemon and matches the client decides, by its file's Action or by an allow
// or deny option; when none matches, access is granted.
//
// The ACL is computed by set arithmetic on prefixes, one trie per address family, and written
// with the fewest longest-prefix rules that decide each address the same way (ORTC), the default
// included; where both defaults are as small, it is tcpd's "allow". IPv4-mapped IPv6 clients are
// judged as IPv4, as tcpd and peergate both do. 255.255.255.255, which no TCP peer has and which
// tcpd's net/mask patterns never match, may be decided either way.
//
// An error reports every pattern and option of the entries that apply to daemon that cannot be
// translated, and no Result.
func Translate(daemon string, files ...*File) (*Result, error) {
	if daemon == "" {
		return nil, errors.New("no daemon name: tcpd's rules depend on it (the daemon's argv[0], e.g. sshd or in.telnetd)")
	}
	res := &Result{}
	var errs strictyaml.Errors
	type step struct {
		e   *Entry
		act acl.Action
		set set
	}
	var steps []step
	for _, f := range files {
		if f == nil {
			continue
		}
		res.Warnings = append(res.Warnings, f.Warnings...)
		for _, e := range f.Entries {
			applies, err := daemonListMatch(e.Daemons, daemon)
			if err != nil {
				errs.Add(err)
			}
			if !applies {
				continue
			}
			act, warns, err := e.verdict(f.Action)
			if err != nil {
				errs.Add(err)
			}
			s := clientSet(e.Clients, &errs)
			res.Entries = append(res.Entries, e)
			res.Warnings = append(res.Warnings, e.Warnings...)
			res.Warnings = append(res.Warnings, warns...)
			steps = append(steps, step{e, act, s})
		}
	}
	if err := errs.Err(); err != nil {
		return nil, err
	}

	// First match wins: paint the entries from the last to the first over tcpd's final "grant".
	v4, v6 := leaf(label{act: acl.Allow}), leaf(label{act: acl.Allow})
	res.Spec.Unix = acl.Allow
	for i := len(steps) - 1; i >= 0; i-- {
		st := steps[i]
		l := label{act: st.act, origin: st.e.Origin}
		v4 = overlay(v4, st.set.v4, l)
		v6 = overlay(v6, st.set.v6, l)
		if matchesNoAddr(st.e.Clients) {
			res.Spec.Unix, res.UnixOrigin = st.act, st.e.Origin
		}
	}
	// Addresses no TCP peer is judged as: IPv4-mapped ones, which peergate judges as IPv4, and the
	// limited broadcast address, which tcpd's net/mask patterns never match (it is inet_addr's
	// error value) and no TCP peer has. Either action will do for them.
	v6 = paint(v6, netip.MustParseAddr("::ffff:0:0").AsSlice(), 96, 0, label{any: true})
	v4 = paint(v4, []byte{255, 255, 255, 255}, 32, 0, label{any: true})

	// The rules: ORTC over both families under one root, whose choice is the default.
	hops := computeHops(v4) & computeHops(v6)
	if hops == 0 {
		hops = v4.hops | v6.hops
	}
	res.Spec.Default = acl.Deny
	if hops&hopAllow != 0 {
		res.Spec.Default = acl.Allow
	}
	e := &emitter{defDepth: 129}
	e.walk(v4, make([]byte, 4), 0, res.Spec.Default, -1)
	e.walk(v6, make([]byte, 16), 0, res.Spec.Default, -1)
	if e.bad {
		return nil, errors.New("hostsaccess: internal error: the generated rules disagree with the entries")
	}
	res.Spec.Rules, res.DefaultOrigin = e.rules, e.defOrigin
	return res, nil
}

// daemonListMatch is tcpd's list_match over a daemon list: the first pattern that matches
// decides, unless the EXCEPT list matches too.
func daemonListMatch(l *List, daemon string) (bool, error) {
	for i := range l.Patterns {
		ok, err := daemonMatch(&l.Patterns[i], daemon)
		if err != nil || !ok {
			if err != nil {
				return false, err
			}
			continue
		}
		if l.Except == nil {
			return true, nil
		}
		ex, err := daemonListMatch(l.Except, daemon)
		return !ex, err
	}
	return false, nil
}

// daemonMatch is tcpd's server_match: daemon@host needs the server address, but only matters
// when the daemon part matches.
func daemonMatch(p *Pattern, daemon string) (bool, error) {
	if p.Kind == KindAll {
		return true, nil
	}
	if p.Err != nil {
		name := p.Text[:1+strings.IndexByte(p.Text[1:], '@')]
		if stringMatch(name, daemon) {
			return false, p.Err
		}
		return false, nil
	}
	return stringMatch(p.Text, daemon), nil
}

// stringMatch is tcpd's string_match for daemon names: wildcards (case-sensitive, as Debian's
// tcpd has them), .suffix, ALL, KNOWN, prefix. (a trailing dot) and the exact name, the last
// ones ignoring ASCII case.
func stringMatch(tok, s string) bool {
	n := len(s) - len(tok)
	switch {
	case strings.ContainsAny(tok, "*?"):
		return wildcard(tok, s)
	case tok[0] == '.':
		return n > 0 && foldEq(tok, s[n:])
	case foldEq(tok, "ALL"):
		return true
	case foldEq(tok, "KNOWN"):
		return !foldEq(s, "unknown")
	case tok[len(tok)-1] == '.':
		return n >= 0 && foldEq(tok, s[:len(tok)])
	}
	return foldEq(tok, s)
}

// wildcard matches s against a pattern of '*' (any run of bytes) and '?' (any one byte).
func wildcard(pat, s string) bool {
	// match[j]: pat[:i] matches s[:j], row by row.
	match := make([]bool, len(s)+1)
	match[0] = true
	for i := 0; i < len(pat); i++ {
		next := make([]bool, len(s)+1)
		for j := 0; j <= len(s); j++ {
			switch {
			case pat[i] == '*':
				next[j] = match[j] || (j > 0 && next[j-1])
			case j > 0 && (pat[i] == '?' || pat[i] == s[j-1]):
				next[j] = match[j-1]
			}
		}
		match = next
	}
	return match[len(s)]
}

// clientSet returns the addresses a client list matches, recording in errs the patterns that
// tcpd would reach but that cannot be translated.
func clientSet(l *List, errs *strictyaml.Errors) set {
	s := emptySet()
	for i := range l.Patterns {
		if addPattern(&s, &l.Patterns[i], errs) {
			break // ALL: tcpd never looks at the rest
		}
	}
	if l.Except != nil && !s.empty() {
		s = s.minus(clientSet(l.Except, errs))
	}
	return s
}

// addPattern adds the addresses p matches to s, and reports whether p matches all of them.
func addPattern(s *set, p *Pattern, errs *strictyaml.Errors) (all bool) {
	switch p.Kind {
	case KindAll:
		*s = set{leaf(true), leaf(true)}
		return true
	case KindFile:
		for i := range p.Sub {
			if addPattern(s, &p.Sub[i], errs) {
				return true
			}
		}
	case KindAddr, KindNet, KindMask, KindCIDR:
		s.add(p.Prefix)
	default:
		if p.Err != nil {
			errs.Add(p.Err)
		}
	}
	return false
}

// matchesNoAddr reports whether a client list matches a client without an address, which only
// ALL does.
func matchesNoAddr(l *List) bool {
	for i := range l.Patterns {
		if patternMatchesNoAddr(&l.Patterns[i]) {
			return l.Except == nil || !matchesNoAddr(l.Except)
		}
	}
	return false
}

func patternMatchesNoAddr(p *Pattern) bool {
	if p.Kind == KindAll {
		return true
	}
	for i := range p.Sub {
		if patternMatchesNoAddr(&p.Sub[i]) {
			return true
		}
	}
	return false
}

// An option's arguments, as tcpd's hosts_options(5) table has them.
const (
	argNeed = 1 << iota // needs a value
	argNone             // takes no value
	argLast             // must be the last option
	argOpt              // value optional
)

var optionTable = map[string]int{
	"user": argNeed, "group": argNeed, "umask": argNeed, "linger": argNeed, "keepalive": argNone,
	"spawn": argNeed, "twist": argNeed | argLast, "rfc931": argOpt, "setenv": argNeed, "nice": argOpt,
	"severity": argNeed, "allow": argNone | argLast, "deny": argNone | argLast, "banners": argNeed,
	"aclexec": argNeed,
}

// verdict is what the entry does to a client it matches, in a file whose entries do table: the
// allow and deny options override it; twist (a command serves the client instead of the daemon)
// is a deny for peergate; other options are dropped with a warning. An option that makes tcpd
// stop with an error refuses the client: harmless in hosts.deny, an error in hosts.allow.
func (e *Entry) verdict(table acl.Action) (acl.Action, []Warning, error) {
	var warns []Warning
	warn := func(o Option, msg string) {
		warns = append(warns, Warning{File: e.Origin.File, Line: e.Origin.Line, Value: o.Text, Msg: msg})
	}
	refuses := func(o Option, why string) (acl.Action, []Warning, error) {
		if table == acl.Deny {
			warn(o, why+": tcpd refuses the client, as this hosts.deny entry does anyway")
			return acl.Deny, warns, nil
		}
		return acl.Deny, warns, posErr(e.Origin, o.Text, ErrOption, "%s: tcpd stops with an error and refuses the client; fix the entry", why)
	}
	for i, o := range e.Options {
		kw := strings.ToLower(o.Keyword)
		args, known := optionTable[kw]
		switch {
		case kw == "":
			return refuses(o, "empty option")
		case !known:
			if table == acl.Deny {
				warn(o, "not a hosts_options(5) option: tcpd runs it as a shell command, or refuses the client; peergate runs no commands, and this hosts.deny entry denies either way")
				return acl.Deny, warns, nil
			}
			return acl.Deny, warns, posErr(e.Origin, o.Text, ErrOption, `not a hosts_options(5) option: a tcpd built without options runs it as a shell command and grants access, one built with them (the usual build) refuses the client; end the entry with ": allow" or ": deny" to say which`)
		case args&argNeed != 0 && o.Value == "":
			return refuses(o, kw+" needs a value")
		case args&argNone != 0 && o.Value != "":
			return refuses(o, kw+" takes no value")
		case args&argLast != 0 && i != len(e.Options)-1:
			return refuses(o, kw+" must be the last option")
		}
		switch kw {
		case "allow":
			return acl.Allow, warns, nil
		case "deny":
			return acl.Deny, warns, nil
		case "twist":
			warn(o, "twist: tcpd serves these clients with a command instead of the daemon; peergate runs no commands, so it denies them")
			return acl.Deny, warns, nil
		case "aclexec":
			return acl.Deny, warns, posErr(e.Origin, o.Text, ErrUnsupported, "aclexec: a command decides access; peergate judges addresses only")
		}
		warn(o, kw+": dropped (peergate runs no options or commands)")
	}
	return table, warns, nil
}
