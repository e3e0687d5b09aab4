package hostsaccess

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/peergate/peergate/acl"
)

// maxFileDepth bounds how deep /path pattern files may name further pattern files, so a file that
// names itself is an error rather than a hang.
const maxFileDepth = 8

// Parse parses data, the text of a hosts.allow or hosts.deny file called name. table is what an
// entry that matches does unless an option says otherwise: acl.Allow for hosts.allow, acl.Deny for
// hosts.deny. /path patterns are read through opts.ReadFile (opts may be nil).
//
// Parse reads the file as tcpd does: a backslash before a newline joins the lines (the entry's
// line is where it starts); a line whose first character is '#' and a blank line are skipped; a
// line without a ':' is skipped with a warning; a last line without a newline counts. It never
// fails: words that cannot be translated become patterns of KindBad, which File.Err and
// Translate report.
func Parse(name string, data []byte, table acl.Action, opts *Options) *File {
	p := &parser{file: &File{Name: name, Action: table}, cache: map[string][]byte{}}
	p.readFile = os.ReadFile
	if opts != nil && opts.ReadFile != nil {
		p.readFile = opts.ReadFile
	}
	for _, l := range logicalLines(string(data)) {
		p.line(l.text, l.line)
	}
	return p.file
}

type parser struct {
	file     *File
	readFile func(string) ([]byte, error)
	cache    map[string][]byte
	warns    *[]Warning // where warnings about the current entry go
}

type logical struct {
	text string
	line int // where it starts
}

// logicalLines splits text into lines, joining a line that ends in a backslash with the next one
// as tcpd's xgets does: the backslash and the newline disappear, nothing takes their place.
func logicalLines(text string) []logical {
	var out []logical
	var cur strings.Builder
	start := 0
	for n := 1; text != ""; n++ {
		line, rest, newline := strings.Cut(text, "\n")
		text = rest
		if start == 0 {
			start = n
		}
		if newline && strings.HasSuffix(line, `\`) {
			cur.WriteString(line[:len(line)-1])
			if text != "" {
				continue
			}
		} else {
			cur.WriteString(line)
		}
		out = append(out, logical{cur.String(), start})
		cur.Reset()
		start = 0
	}
	return out
}

func (p *parser) line(text string, n int) {
	origin := acl.Origin{File: p.file.Name, Line: n}
	if strings.HasPrefix(text, "#") || strings.Trim(text, " \t\r\n") == "" {
		return
	}
	daemons, rest, ok := splitAt(text, ':')
	if !ok {
		msg := `no ":" separator: tcpd skips this line`
		if strings.HasPrefix(strings.TrimLeft(text, " \t\r"), "#") {
			msg += ` (a "#" comment must start in the first column)`
		}
		p.file.Warnings = append(p.file.Warnings, Warning{File: origin.File, Line: n, Value: strings.TrimSpace(text), Msg: msg})
		return
	}
	e := &Entry{Origin: origin}
	p.warns = &e.Warnings
	clients, options, hasOptions := splitAt(rest, ':')
	e.Daemons = p.list(origin, daemons, "daemon", p.daemon)
	e.Clients = p.list(origin, clients, "client", func(w string, o acl.Origin) Pattern { return p.client(w, o, 0) })
	if hasOptions {
		e.Options = splitOptions(options)
	}
	p.file.Entries = append(p.file.Entries, e)
}

// splitAt cuts s at the first sep outside square brackets, as tcpd's split_at does in its IPv6
// builds, so "[2001:db8::1]" survives.
func splitAt(s string, sep byte) (before, after string, found bool) {
	depth := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '[':
			depth++
		case ']':
			depth--
		case sep:
			if depth == 0 {
				return s[:i], s[i+1:], true
			}
		}
	}
	return s, "", false
}

func isListSep(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\r' || r == '\n' }

// list parses a daemon or client list: words separated by blanks or commas, and EXCEPT.
func (p *parser) list(origin acl.Origin, text, what string, parse func(string, acl.Origin) Pattern) *List {
	words := strings.FieldsFunc(text, isListSep)
	if len(words) == 0 {
		p.warn(origin, "", "empty "+what+" list: the entry matches nothing")
	}
	return p.buildList(origin, words, what, parse)
}

func (p *parser) buildList(origin acl.Origin, words []string, what string, parse func(string, acl.Origin) Pattern) *List {
	l := &List{}
	for i, w := range words {
		if foldEq(w, "EXCEPT") {
			if i == 0 {
				p.warn(origin, w, "nothing before EXCEPT: this "+what+" list matches nothing")
			}
			l.Except = p.buildList(origin, words[i+1:], what, parse)
			return l
		}
		l.Patterns = append(l.Patterns, parse(w, origin))
	}
	return l
}

func (p *parser) warn(o acl.Origin, value, msg string) {
	*p.warns = append(*p.warns, Warning{File: o.File, Line: o.Line, Value: value, Msg: msg})
}

// daemon parses a word of a daemon list.
func (p *parser) daemon(w string, o acl.Origin) Pattern {
	pat := Pattern{Kind: KindDaemon, Text: w, Origin: o}
	if strings.IndexByte(w[1:], '@') >= 0 {
		pat.Err = posErr(o, w, ErrUnsupported, "daemon@host patterns need the address the client connected to; peergate ACLs judge the client only")
	} else if foldEq(w, "ALL") {
		pat.Kind = KindAll
	}
	return pat
}

// bad returns a KindBad pattern for word w whose error wraps kind.
func bad(o acl.Origin, w string, kind error, format string, args ...any) Pattern {
	return Pattern{Kind: KindBad, Text: w, Origin: o, Err: posErr(o, w, kind, format, args...)}
}

func posErr(o acl.Origin, w string, kind error, format string, args ...any) error {
	return &PosError{File: o.File, Line: o.Line, Value: w, Err: fmt.Errorf("%w: %s", kind, fmt.Sprintf(format, args...))}
}

const noDNS = "peergate judges addresses only"

// client parses a word of a client list or of a pattern file, in the order of tcpd's
// client_match and host_match.
func (p *parser) client(w string, o acl.Origin, depth int) Pattern {
	switch {
	case strings.HasPrefix(w, "#"):
		return bad(o, w, ErrUnsupported, `"#" starts a comment only in the first column of a line, and never in a pattern file: tcpd reads this word, and the ones after it, as host names`)
	case strings.IndexByte(w[1:], '@') >= 0:
		return bad(o, w, ErrUnsupported, "user@host patterns need ident (RFC 931) lookups; "+noDNS)
	case w[0] == '@':
		return bad(o, w, ErrUnsupported, "@netgroup patterns need NIS; "+noDNS)
	case w[0] == '/':
		return p.patternFile(w, o, depth)
	case foldEq(w, "ALL"):
		return Pattern{Kind: KindAll, Text: w, Origin: o}
	case foldEq(w, "KNOWN") || foldEq(w, "UNKNOWN") || foldEq(w, "LOCAL") || foldEq(w, "PARANOID"):
		return bad(o, w, ErrUnsupported, "%s depends on the client's host name: host names need DNS; %s", strings.ToUpper(w), noDNS)
	case strings.ContainsAny(w, "*?"):
		return bad(o, w, ErrUnsupported, "wildcards match host names and address strings; write the address as a prefix (10.1.0.0/16, 10.1.)")
	case w[0] == '.':
		return bad(o, w, ErrUnsupported, "host names need DNS; "+noDNS)
	case w[0] == '[':
		return parseBracket(w, o, p.warns)
	case strings.Contains(w, "/"):
		return parseSlash(w, o)
	case strings.HasSuffix(w, "."):
		return parseNet(w, o)
	}
	if a, err := netip.ParseAddr(w); err == nil {
		if a.Is4() {
			return Pattern{Kind: KindAddr, Text: w, Prefix: netip.PrefixFrom(a, 32), Origin: o}
		}
		return addr6(w, a, 128, o, p.warns) // bare IPv6, possible in pattern files
	}
	if isAddrWord(w) {
		hint := ""
		if !strings.Contains(w, ".") {
			hint = " (an IPv6 address must be in brackets, [2001:db8::1], or the ':' in it splits the entry)"
		}
		return bad(o, w, ErrPattern, "not an IPv4 address tcpd can match: want n.n.n.n with fields 0-255 and no leading zeros%s", hint)
	}
	if len(w) <= 4 && strings.Trim(strings.ToLower(w), "0123456789abcdef") == "" {
		return bad(o, w, ErrUnsupported, "host names need DNS; %s (if this is part of an IPv6 address, write it in brackets: [2001:db8::1])", noDNS)
	}
	return bad(o, w, ErrUnsupported, "host names need DNS; "+noDNS)
}

// isAddrWord reports whether tcpd takes w for an address rather than a host name (its NOT_INADDR).
func isAddrWord(w string) bool { return strings.Trim(w, "0123456789./") == "" }

// patternFile reads a /path pattern: whitespace-separated words, each a client pattern. tcpd
// knows no comments and no EXCEPT in these files.
func (p *parser) patternFile(path string, o acl.Origin, depth int) Pattern {
	if depth >= maxFileDepth {
		return bad(o, path, ErrPatternFile, "pattern files nest more than %d deep", maxFileDepth)
	}
	data, ok := p.cache[path]
	if !ok {
		var err error
		data, err = p.readFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			p.warn(o, path, "no such pattern file: tcpd matches nothing from it")
			return Pattern{Kind: KindFile, Text: path, Origin: o}
		}
		if err != nil {
			return bad(o, path, ErrPatternFile, "%v", err)
		}
		p.cache[path] = data
	}
	pat := Pattern{Kind: KindFile, Text: path, Origin: o, Sub: []Pattern{}}
	for i, line := range strings.Split(string(data), "\n") {
		lo := acl.Origin{File: path, Line: i + 1}
		for _, w := range strings.FieldsFunc(line, isCSpace) {
			if foldEq(w, "EXCEPT") {
				pat.Sub = append(pat.Sub, bad(lo, w, ErrUnsupported, "EXCEPT has no meaning in a pattern file: tcpd reads it as a host name"))
				continue
			}
			pat.Sub = append(pat.Sub, p.client(w, lo, depth+1))
		}
	}
	return pat
}

// isCSpace is C's isspace, which separates the words of a pattern file (fscanf "%s").
func isCSpace(r rune) bool {
	return r == ' ' || r == '\t' || r == '\n' || r == '\v' || r == '\f' || r == '\r'
}

// parseBracket parses [ipv6] and [ipv6]/len.
func parseBracket(w string, o acl.Origin, warns *[]Warning) Pattern {
	inner, rest, ok := strings.Cut(w[1:], "]")
	if !ok {
		return bad(o, w, ErrPattern, `missing "]"`)
	}
	a, err := netip.ParseAddr(inner)
	if err != nil {
		return bad(o, w, ErrPattern, "%s", cleanErr(err))
	}
	if a.Is4() {
		return bad(o, w, ErrPattern, "an IPv4 address in brackets: tcpd never matches it; write %s without brackets", inner)
	}
	bits := 128
	if rest != "" {
		n, ok := cutLen(rest)
		if !ok || n > 128 {
			return bad(o, w, ErrPattern, "want [ipv6] or [ipv6]/len with len 0-128")
		}
		bits = n
	}
	return addr6(w, a, bits, o, warns)
}

// addr6 checks an IPv6 pattern: no zone, not IPv4-mapped (tcpd judges such clients as IPv4, and
// so does peergate); host bits are masked, as tcpd does.
func addr6(w string, a netip.Addr, bits int, o acl.Origin, warns *[]Warning) Pattern {
	if a.Zone() != "" {
		return bad(o, w, ErrPattern, "IPv6 zone not allowed")
	}
	mapped := netip.PrefixFrom(netip.MustParseAddr("::ffff:0:0"), 96)
	if bits >= 96 && mapped.Contains(a) {
		v4 := netip.PrefixFrom(a.Unmap(), bits-96).Masked()
		return bad(o, w, ErrPattern, "an IPv4-mapped address: tcpd judges IPv4 clients as IPv4, so it never matches; write %s", strings.TrimSuffix(v4.String(), "/32"))
	}
	pfx := netip.PrefixFrom(a, bits)
	if m := pfx.Masked(); m != pfx {
		*warns = append(*warns, Warning{File: o.File, Line: o.Line, Value: w, Msg: "host bits set: tcpd ignores them, so this matches [" + m.Addr().String() + "]/" + strconv.Itoa(bits)})
		pfx = m
	}
	kind := KindCIDR
	if !strings.Contains(w, "/") {
		kind = KindAddr
	}
	return Pattern{Kind: kind, Text: w, Prefix: pfx, Origin: o}
}

// cutLen parses "/len": decimal digits, leading zeros allowed as tcpd's sscanf allows them.
func cutLen(s string) (int, bool) {
	if len(s) < 2 || s[0] != '/' || len(s) > 5 || strings.Trim(s[1:], "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.Atoi(s[1:])
	return n, err == nil
}

// parseSlash parses n.n.n.n/m.m.m.m and n.n.n.n/len.
func parseSlash(w string, o acl.Origin) Pattern {
	netText, maskText, _ := strings.Cut(w, "/")
	netBytes, ok := parseV4(netText, 4)
	if !ok {
		if a, err := netip.ParseAddr(netText); err == nil && a.Is6() {
			return bad(o, w, ErrPattern, "tcpd matches an IPv6 prefix only in brackets: write [%s]/%s", netText, maskText)
		}
		if !isAddrWord(netText) {
			return bad(o, w, ErrUnsupported, "neither net/mask nor a pattern file (a pattern file needs an absolute path; tcpd reads this word as a host name)")
		}
		return bad(o, w, ErrPattern, "the network is not an IPv4 address tcpd can match: want n.n.n.n with fields 0-255 and no leading zeros")
	}
	net := netip.AddrFrom4([4]byte(netBytes))
	kind, bits := KindCIDR, 0
	if strings.Contains(maskText, ".") {
		kind = KindMask
		mb, ok := parseV4(maskText, 4)
		if !ok {
			return bad(o, w, ErrPattern, "the mask is not n.n.n.n with fields 0-255 and no leading zeros")
		}
		mask := uint32(mb[0])<<24 | uint32(mb[1])<<16 | uint32(mb[2])<<8 | uint32(mb[3])
		if mask == 0xffffffff || netText == "255.255.255.255" {
			return bad(o, w, ErrPattern, "tcpd cannot tell 255.255.255.255 from an error, so it never matches this; write the address alone")
		}
		inv := ^mask
		if inv&(inv+1) != 0 {
			return bad(o, w, ErrPattern, "non-contiguous netmask: the one bits must come first")
		}
		for ; mask != 0; mask <<= 1 {
			bits++
		}
	} else {
		n, ok := cutLen("/" + maskText)
		if !ok || n > 32 {
			return bad(o, w, ErrPattern, "want n.n.n.n/m.m.m.m or n.n.n.n/len with len 1-32")
		}
		if n == 0 {
			return bad(o, w, ErrPattern, "tcpd mis-reads a zero length and never matches this; write ALL, or 0.0.0.0/0.0.0.0 for every IPv4 client")
		}
		bits = n
	}
	pfx := netip.PrefixFrom(net, bits)
	if m := pfx.Masked(); m != pfx {
		return bad(o, w, ErrPattern, "host bits set: tcpd never matches it (did you mean %s?)", m)
	}
	return Pattern{Kind: kind, Text: w, Prefix: pfx, Origin: o}
}

// parseNet parses the "n.", "n.n." and "n.n.n." patterns.
func parseNet(w string, o acl.Origin) Pattern {
	if !isAddrWord(w) {
		return bad(o, w, ErrUnsupported, "host names need DNS; "+noDNS)
	}
	fields := strings.Count(w, ".")
	b, ok := parseV4(w[:len(w)-1], fields)
	if !ok || fields > 3 {
		return bad(o, w, ErrPattern, "want 1 to 3 leading fields of an IPv4 address, each 0-255 without leading zeros, and a dot: 10.1.")
	}
	var a [4]byte
	copy(a[:], b)
	return Pattern{Kind: KindNet, Text: w, Prefix: netip.PrefixFrom(netip.AddrFrom4(a), 8*fields), Origin: o}
}

// parseV4 parses n dot-separated decimal fields 0-255, rejecting leading zeros: tcpd compares some
// patterns as strings and reads others with inet_addr, which takes 010 for octal 8.
func parseV4(s string, n int) ([]byte, bool) {
	parts := strings.Split(s, ".")
	if len(parts) != n {
		return nil, false
	}
	out := make([]byte, n)
	for i, f := range parts {
		if f == "" || len(f) > 3 || strings.Trim(f, "0123456789") != "" || (len(f) > 1 && f[0] == '0') {
			return nil, false
		}
		v, _ := strconv.Atoi(f)
		if v > 255 {
			return nil, false
		}
		out[i] = byte(v)
	}
	return out, true
}

func cleanErr(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, "): "); i >= 0 {
		return s[i+3:]
	}
	return s
}

// splitOptions splits the option field at ':' as tcpd's get_field does: "\:" is a colon that does
// not split, and a trailing ':' ends the list.
func splitOptions(s string) []Option {
	var out []Option
	var b strings.Builder
	flush := func() {
		out = append(out, parseOption(b.String()))
		b.Reset()
	}
	if s == "" {
		return nil
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == ':' {
			flush()
			if i+1 == len(s) {
				return out
			}
			continue
		}
		if c == '\\' && i+1 < len(s) && s[i+1] == ':' {
			i++
			c = ':'
		}
		b.WriteByte(c)
	}
	flush()
	return out
}

// parseOption separates "keyword value" or "keyword = value", as tcpd's process_options does.
func parseOption(field string) Option {
	text := strings.TrimFunc(field, isCSpace)
	kw, value := text, ""
	if i := strings.IndexAny(text, " \t\r\n\v\f="); i >= 0 {
		kw, value = text[:i], text[i:]
		if value[0] != '=' {
			value = strings.TrimLeft(value[1:], " \t\r\n\v\f")
		}
		if strings.HasPrefix(value, "=") {
			value = strings.TrimLeft(value[1:], " \t\r\n\v\f")
		}
	}
	return Option{Keyword: kw, Value: value, Text: text}
}

// foldEq is tcpd's STR_EQ: strcasecmp, ASCII only.
func foldEq(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		if lower(a[i]) != lower(b[i]) {
			return false
		}
	}
	return true
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}
