// Package hostsaccess reads the address subset of TCP Wrappers' hosts.allow and hosts.deny
// (hosts_access(5)) and translates the rules for one daemon into an equivalent peergate ACL.
//
// tcpd judges a (daemon, client) pair by the first entry of hosts.allow that matches it (access
// granted), else the first entry of hosts.deny that matches it (access denied), else grants access.
// Translate computes, by set arithmetic on prefixes, exactly which addresses that procedure allows,
// and writes the result as the smallest longest-prefix rule set with a default, so the ACL decides
// every address as tcpd would.
//
// Supported client patterns: ALL; n.n.n.n; n.n.n. (the leading fields, 10.1. = 10.1.0.0/16);
// n.n.n.n/m.m.m.m (contiguous masks); n.n.n.n/len; [ipv6] and [ipv6]/len; /path pattern files;
// EXCEPT, nested as in tcpd (a EXCEPT b EXCEPT c = a EXCEPT (b EXCEPT c)). Daemon lists take
// tcpd's daemon patterns (names, ALL, EXCEPT, in.-style prefixes, .suffixes, * and ? wildcards).
// The hosts_options(5) "allow" and "deny" options are honoured; other options are dropped with a
// warning. Host names, .domains, KNOWN, UNKNOWN, LOCAL, PARANOID, @netgroups, user@host and
// wildcards in client lists need DNS or ident, which peergate does not consult: they are errors.
//
// Like tcpd, Parse never refuses a file: problems stay with the entry they belong to, because an
// entry that never applies to the daemon being converted cannot change its ACL. File.Err reports
// every problem of a file (what tcpdchk would complain about); Translate reports those of the
// entries that apply to its daemon. Every error is a *acl.PosError naming the file, the line and
// the offending word, and wraps one of the sentinel errors below.
//
// The package is pure: it opens no sockets, and reads files only for /path patterns, through
// Options.ReadFile.
package hostsaccess

import (
	"errors"
	"net/netip"
	"strconv"

	"github.com/peergate/peergate/acl"
	"github.com/peergate/peergate/internal/strictyaml"
)

// Sentinel errors. Every error of the package wraps one of them inside a *acl.PosError.
var (
	// ErrUnsupported: a pattern or option that needs something peergate does not have (DNS, ident,
	// NIS, running commands). The file is valid for tcpd, but cannot be translated.
	ErrUnsupported = errors.New("not supported")
	// ErrPattern: a word that is meant as an address pattern but that tcpd would never match, or
	// would match differently from how it reads (octal fields, non-contiguous masks, host bits).
	ErrPattern = errors.New("invalid address pattern")
	// ErrOption: the option field of an entry in hosts.allow whose effect is not clear: tcpd
	// would refuse the client with an error, or tcpd builds disagree about it.
	ErrOption = errors.New("option cannot be translated")
	// ErrPatternFile: a /path pattern file that cannot be read, or that nests too deep.
	ErrPatternFile = errors.New("cannot read pattern file")
)

// PosError is the error type of the package: a file, a line, the offending value and the
// underlying error.
type PosError = acl.PosError

// Kind says what a Pattern is.
type Kind uint8

// The kinds of pattern.
const (
	// KindBad is a word that cannot be translated; Pattern.Err says why.
	KindBad Kind = iota
	// KindAll is the ALL wildcard: every client (or every daemon).
	KindAll
	// KindAddr is one address: 10.1.2.3, or [2001:db8::1] (in pattern files also bare).
	KindAddr
	// KindNet is the leading fields of an IPv4 address, ending in a dot: 10.1. is 10.1.0.0/16.
	KindNet
	// KindMask is an IPv4 net/mask pair: 10.0.0.0/255.0.0.0.
	KindMask
	// KindCIDR is an address and a prefix length: 10.0.0.0/8, [2001:db8::]/32.
	KindCIDR
	// KindFile is a /path pattern file: any of the patterns in it.
	KindFile
	// KindDaemon is a daemon name pattern, in a daemon list.
	KindDaemon
)

var kindNames = [...]string{"bad", "all", "addr", "net", "mask", "cidr", "file", "daemon"}

// String returns the kind's name: "addr", "net", "cidr"...
func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// File is a parsed hosts.allow or hosts.deny file.
type File struct {
	Name     string     // as given to Parse; used in origins and messages
	Action   acl.Action // what a matching entry does unless an option says otherwise
	Entries  []*Entry   // in the order tcpd tries them
	Warnings []Warning  // about lines tcpd skips
}

// Entry is one access control rule: daemon_list : client_list [ : option : option ... ].
type Entry struct {
	Origin   acl.Origin // the file, and the line where the entry starts
	Daemons  *List      // patterns of KindAll or KindDaemon
	Clients  *List
	Options  []Option  // the fields after the client list, in order
	Warnings []Warning // about the patterns of this entry; they matter only where it applies
}

// List is a daemon or client list: it matches what any of Patterns matches, unless Except
// matches it too. tcpd reads "a EXCEPT b EXCEPT c" as a EXCEPT (b EXCEPT c).
type List struct {
	Patterns []Pattern
	Except   *List // nil without EXCEPT; an empty List (which matches nothing) for a trailing EXCEPT
}

// Pattern is one word of a list, or of a pattern file.
type Pattern struct {
	Kind   Kind
	Text   string       // the word as written
	Prefix netip.Prefix // the addresses matched, for KindAddr, KindNet, KindMask and KindCIDR
	Sub    []Pattern    // KindFile: the patterns of the file, in order; nil if it does not exist
	Origin acl.Origin   // where the word was written
	// Err says why the word cannot be translated, as a *PosError: always set for KindBad, and
	// for a KindDaemon daemon@host pattern, which matters only where its daemon part matches.
	Err error
}

// Option is one field after the client list: a hosts_options(5) option such as "spawn echo %a"
// or "deny", or, for tcpd builds without options, a shell command.
type Option struct {
	Keyword string // the first word, as written ("" for an empty field)
	Value   string // the rest, without the separating blanks or '='
	Text    string // the whole field
}

// Warning is something tcpd accepts that the translation drops or that probably does not do what
// its author meant. It does not stop a translation.
type Warning struct {
	File  string
	Line  int
	Value string // the offending word or option, as written
	Msg   string
}

// String returns "file:line: "value": msg", like a *PosError.
func (w Warning) String() string {
	return (&PosError{File: w.File, Line: w.Line, Value: w.Value, Err: errors.New(w.Msg)}).Error()
}

// Options tune Parse.
type Options struct {
	// ReadFile reads /path pattern files. Nil means os.ReadFile. A file that does not exist
	// (an error wrapping fs.ErrNotExist) matches nothing, as in tcpd.
	ReadFile func(path string) ([]byte, error)
}

// Err returns every problem of the file, joined, or nil: the errors of all its entries, whichever
// daemon they are for. Translate reports only those of the entries that apply to its daemon.
func (f *File) Err() error {
	var errs strictyaml.Errors
	for _, e := range f.Entries {
		for _, l := range []*List{e.Daemons, e.Clients} {
			for ; l != nil; l = l.Except {
				for i := range l.Patterns {
					addPatternErrs(&errs, &l.Patterns[i])
				}
			}
		}
		if _, _, err := e.verdict(f.Action); err != nil {
			errs.Add(err)
		}
	}
	return errs.Err()
}

func addPatternErrs(errs *strictyaml.Errors, p *Pattern) {
	if p.Err != nil {
		errs.Add(p.Err)
	}
	for i := range p.Sub {
		addPatternErrs(errs, &p.Sub[i])
	}
}
