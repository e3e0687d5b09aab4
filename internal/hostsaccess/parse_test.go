package hostsaccess

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/peergate/peergate/acl"
)

var testFiles = map[string]string{
	"/pats":   "10.2.0.0/16 [2001:db8:1::]/48\n  192.0.2.7\t/more\n",
	"/more":   "172.16.\n",
	"/loop":   "/loop\n",
	"/bad":    "10.1.2.3 host.example # comment\n",
	"/except": "10. EXCEPT 10.1.\n",
	"/v6bare": "2001:db8::1\n2001:db8::/32\n",
}

func testOpts() *Options {
	o := memFiles(testFiles)
	read := o.ReadFile
	o.ReadFile = func(p string) ([]byte, error) {
		if p == "/unreadable" {
			return nil, errors.New("permission denied")
		}
		return read(p)
	}
	return o
}

// parseOne parses "sshd: word" as hosts.allow and returns the only client pattern.
func parseOne(t *testing.T, word string) (Pattern, *Entry) {
	t.Helper()
	f := Parse("hosts.allow", []byte("sshd: "+word+"\n"), acl.Allow, testOpts())
	if len(f.Entries) != 1 || len(f.Entries[0].Clients.Patterns) != 1 {
		t.Fatalf("%q: want one entry with one pattern, got %s", word, dump(f))
	}
	return f.Entries[0].Clients.Patterns[0], f.Entries[0]
}

func TestPatterns(t *testing.T) {
	for _, tc := range []struct {
		word   string
		kind   Kind
		prefix string // "" for none
		warn   string // a warning of the entry, if any
	}{
		{"ALL", KindAll, "", ""},
		{"all", KindAll, "", ""},
		{"10.1.2.3", KindAddr, "10.1.2.3/32", ""},
		{"0.0.0.0", KindAddr, "0.0.0.0/32", ""},
		{"10.", KindNet, "10.0.0.0/8", ""},
		{"131.155.", KindNet, "131.155.0.0/16", ""},
		{"10.1.2.", KindNet, "10.1.2.0/24", ""},
		{"0.", KindNet, "0.0.0.0/8", ""},
		{"10.0.0.0/255.0.0.0", KindMask, "10.0.0.0/8", ""},
		{"131.155.72.0/255.255.254.0", KindMask, "131.155.72.0/23", ""},
		{"0.0.0.0/0.0.0.0", KindMask, "0.0.0.0/0", ""},
		{"10.1.2.3/255.255.255.254", KindMask, "", "x"}, // host bits: an error, below
		{"10.0.0.0/8", KindCIDR, "10.0.0.0/8", ""},
		{"10.0.0.0/08", KindCIDR, "10.0.0.0/8", ""},
		{"1.2.3.4/32", KindCIDR, "1.2.3.4/32", ""},
		{"128.0.0.0/1", KindCIDR, "128.0.0.0/1", ""},
		{"[2001:db8::1]", KindAddr, "2001:db8::1/128", ""},
		{"[2001:DB8::]/32", KindCIDR, "2001:db8::/32", ""},
		{"[3ffe:505:2:1::]/64", KindCIDR, "3ffe:505:2:1::/64", ""},
		{"[::]/0", KindCIDR, "::/0", ""},
		{"[::1]", KindAddr, "::1/128", ""},
		{"[::10.1.2.3]/128", KindCIDR, "::a01:203/128", ""},
		{"[2001:db8::]/064", KindCIDR, "2001:db8::/64", ""},
		{"[2001:db8::1]/32", KindCIDR, "2001:db8::/32", "host bits set: tcpd ignores them, so this matches [2001:db8::]/32"},
		{"/pats", KindFile, "", ""},
		{"/missing", KindFile, "", "no such pattern file: tcpd matches nothing from it"},
	} {
		t.Run(tc.word, func(t *testing.T) {
			p, e := parseOne(t, tc.word)
			if tc.warn == "x" {
				if p.Kind != KindBad {
					t.Fatalf("kind %s, want bad", p.Kind)
				}
				return
			}
			if p.Kind != tc.kind || p.Err != nil {
				t.Fatalf("kind %s (err %v), want %s", p.Kind, p.Err, tc.kind)
			}
			if got := p.Prefix; tc.prefix != "" && got.String() != tc.prefix || tc.prefix == "" && got.IsValid() {
				t.Errorf("prefix %s, want %q", got, tc.prefix)
			}
			if p.Text != tc.word || p.Origin != (acl.Origin{File: "hosts.allow", Line: 1}) {
				t.Errorf("text %q origin %s", p.Text, p.Origin)
			}
			var warns []string
			for _, w := range e.Warnings {
				warns = append(warns, w.Msg)
			}
			if want := tc.warn; (want == "") != (len(warns) == 0) || want != "" && !strings.Contains(strings.Join(warns, "\n"), want) {
				t.Errorf("warnings %q, want %q", warns, want)
			}
		})
	}
}

func TestPatternFile(t *testing.T) {
	p, _ := parseOne(t, "/pats")
	var got []string
	for _, s := range p.Sub {
		got = append(got, fmt.Sprintf("%s %s %s %s", s.Kind, s.Text, s.Prefix, s.Origin))
	}
	want := []string{
		"cidr 10.2.0.0/16 10.2.0.0/16 /pats:1",
		"cidr [2001:db8:1::]/48 2001:db8:1::/48 /pats:1",
		"addr 192.0.2.7 192.0.2.7/32 /pats:2",
		"file /more invalid Prefix /pats:2",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	if more := p.Sub[3].Sub; len(more) != 1 || more[0].Prefix.String() != "172.16.0.0/16" || more[0].Origin.String() != "/more:1" {
		t.Errorf("nested file: %+v", more)
	}
	// A bare IPv6 address is fine in a pattern file (no ':' splits it there); a bare prefix is not.
	p, _ = parseOne(t, "/v6bare")
	if p.Sub[0].Kind != KindAddr || p.Sub[0].Prefix.String() != "2001:db8::1/128" || p.Sub[1].Kind != KindBad {
		t.Errorf("/v6bare: %+v", p.Sub)
	}
}

func TestPatternErrors(t *testing.T) {
	for _, tc := range []struct {
		word string
		kind error
		msg  string // the whole message, or a part of it
	}{
		{"host.example.com", ErrUnsupported, `hosts.allow:1: "host.example.com": not supported: host names need DNS; peergate judges addresses only`},
		{".example.com", ErrUnsupported, "host names need DNS"},
		{"KNOWN", ErrUnsupported, "KNOWN depends on the client's host name"},
		{"unknown", ErrUnsupported, "UNKNOWN depends on the client's host name"},
		{"LOCAL", ErrUnsupported, "LOCAL depends"},
		{"PARANOID", ErrUnsupported, "PARANOID depends"},
		{"user@10.0.0.1", ErrUnsupported, "user@host patterns need ident"},
		{"ALL@ALL", ErrUnsupported, "user@host"},
		{"@trusted", ErrUnsupported, "@netgroup patterns need NIS"},
		{"10.0.0.*", ErrUnsupported, "wildcards"},
		{"10.?.1.1", ErrUnsupported, "wildcards"},
		{"foo.", ErrUnsupported, "host names need DNS"},
		{"#", ErrUnsupported, `"#" starts a comment only in the first column`},
		{"etc/hosts.ok", ErrUnsupported, "a pattern file needs an absolute path"},
		{"fe80", ErrUnsupported, "write it in brackets"},
		{"10.0.0.0/255.0.255.0", ErrPattern, `hosts.allow:1: "10.0.0.0/255.0.255.0": invalid address pattern: non-contiguous netmask`},
		{"10.1.2.3/8", ErrPattern, "host bits set: tcpd never matches it (did you mean 10.0.0.0/8?)"},
		{"10.1.2.3/255.255.255.254", ErrPattern, "did you mean 10.1.2.2/31?"},
		{"1.2.3.4/255.255.255.255", ErrPattern, "write the address alone"},
		{"10.0.0.0/33", ErrPattern, "len 1-32"},
		{"10.0.0.0/8/", ErrPattern, "len 1-32"},
		{"10.0.0.0/", ErrPattern, "len 1-32"},
		{"0.0.0.0/0", ErrPattern, "zero length"},
		{"010.0.0.0/255.0.0.0", ErrPattern, "no leading zeros"},
		{"10.0.0.0/255.000.0.0", ErrPattern, "the mask is not"},
		{"2001:db8::/32", ErrPattern, "write [2001:db8::]/32"}, // only possible in a pattern file
		{"10.1", ErrPattern, "not an IPv4 address tcpd can match"},
		{"010.1.2.3", ErrPattern, "no leading zeros"},
		{"1.2.3.256", ErrPattern, "fields 0-255"},
		{"1.2.3.4.", ErrPattern, "1 to 3 leading fields"},
		{"01.", ErrPattern, "1 to 3 leading fields"},
		{"2001", ErrPattern, "must be in brackets"},
		{"[10.1.2.3]", ErrPattern, "an IPv4 address in brackets"},
		{"[::ffff:10.0.0.0]/104", ErrPattern, "IPv4-mapped address: tcpd judges IPv4 clients as IPv4, so it never matches; write 10.0.0.0/8"},
		{"[::ffff:10.1.2.3]", ErrPattern, "write 10.1.2.3"},
		{"[fe80::1%eth0]", ErrPattern, "zone"},
		{"[2001:db8::]/129", ErrPattern, "len 0-128"},
		{"[2001:db8::]/", ErrPattern, "len 0-128"},
		{"[2001:db8::]x", ErrPattern, "len 0-128"},
		{"[2001:db8::", ErrPattern, `missing "]"`},
		{"[zz]", ErrPattern, "invalid address pattern"},
		{"/unreadable", ErrPatternFile, `hosts.allow:1: "/unreadable": cannot read pattern file: permission denied`},
		{"/loop", ErrPatternFile, "nest more than 8 deep"},
	} {
		t.Run(tc.word, func(t *testing.T) {
			var p Pattern
			if tc.word == "2001:db8::/32" {
				f, _ := parseOne(t, "/v6bare")
				p = f.Sub[1]
			} else {
				p, _ = parseOne(t, tc.word)
			}
			for p.Kind == KindFile && len(p.Sub) == 1 { // /loop
				p = p.Sub[0]
			}
			if p.Kind != KindBad {
				t.Fatalf("kind %s, want bad", p.Kind)
			}
			if !errors.Is(p.Err, tc.kind) {
				t.Errorf("error %v does not wrap %v", p.Err, tc.kind)
			}
			var pe *PosError
			if !errors.As(p.Err, &pe) || pe.Line == 0 || pe.File == "" {
				t.Errorf("error %v has no file:line", p.Err)
			}
			if !strings.Contains(p.Err.Error(), tc.msg) {
				t.Errorf("error %q\n  does not contain %q", p.Err, tc.msg)
			}
		})
	}
}

// TestPatternFileErrorsNameTheirLine: a bad word in a pattern file is reported at its own line.
func TestPatternFileErrorsNameTheirLine(t *testing.T) {
	f := Parse("hosts.deny", []byte("\n\nsshd: /bad /except\n"), acl.Deny, testOpts())
	err := f.Err()
	for _, want := range []string{
		`/bad:1: "host.example": not supported: host names need DNS`,
		`/bad:1: "#": not supported`,
		`/bad:1: "comment": not supported`,
		`/except:1: "EXCEPT": not supported: EXCEPT has no meaning in a pattern file`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("File.Err() = %v\nwant it to contain %q", err, want)
		}
	}
}

func TestParseLines(t *testing.T) {
	text := "# a comment: ALL\n" +
		"\n" +
		"   \t\n" +
		"sshd, in.ftpd : 10.1.2.3\n" + // 4
		"sshd: 10.0.\\\n" + // 5: continued, joined without a blank
		"0.1 \\\n" +
		", 192.0.2.1\n" +
		"  # indented, so not a comment, but no colon either\n" + // 8
		"  # indented with a colon: ALL\n" + // 9: an entry for daemons "#", "indented"...
		"just words\n" + // 10
		"ALL EXCEPT in.fingerd EXCEPT x : ALL EXCEPT 10. EXCEPT 10.1. : spawn echo a\\:b : allow\r\n" + // 11
		"sshd : [2001:db8::1] : deny\n" + // 12
		"sshd : \n" + // 13
		"ALL: ALL" // 14: no newline at the end: still read, as Debian's tcpd does
	f := Parse("hosts.allow", []byte(text), acl.Allow, nil)
	var got []string
	for _, e := range f.Entries {
		s := fmt.Sprintf("%d [%s] [%s]", e.Origin.Line, listText(e.Daemons), listText(e.Clients))
		for _, o := range e.Options {
			s += fmt.Sprintf(" {%s|%s}", o.Keyword, o.Value)
		}
		got = append(got, s)
	}
	want := []string{
		"4 [sshd in.ftpd] [10.1.2.3]",
		"5 [sshd] [10.0.0.1 192.0.2.1]",
		"9 [# indented with a colon] [ALL]",
		"11 [ALL EXCEPT in.fingerd EXCEPT x] [ALL EXCEPT 10. EXCEPT 10.1.] {spawn|echo a:b} {allow|}",
		"12 [sshd] [[2001:db8::1]] {deny|}",
		"13 [sshd] []",
		"14 [ALL] [ALL]",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("entries:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	var warns []string
	for _, w := range f.Warnings {
		warns = append(warns, w.String())
	}
	wantWarns := []string{
		`hosts.allow:8: "# indented, so not a comment, but no colon either": no ":" separator: tcpd skips this line (a "#" comment must start in the first column)`,
		`hosts.allow:10: "just words": no ":" separator: tcpd skips this line`,
	}
	if fmt.Sprint(warns) != fmt.Sprint(wantWarns) {
		t.Errorf("warnings:\n%q\nwant\n%q", warns, wantWarns)
	}
	if w := f.Entries[5].Warnings; len(w) != 1 || !strings.Contains(w[0].String(), "hosts.allow:13: empty client list") {
		t.Errorf("empty client list warnings: %v", w)
	}
	// EXCEPT nests to the right.
	c := f.Entries[3].Clients
	if c.Patterns[0].Kind != KindAll || c.Except.Patterns[0].Prefix.String() != "10.0.0.0/8" ||
		c.Except.Except.Patterns[0].Prefix.String() != "10.1.0.0/16" || c.Except.Except.Except != nil {
		t.Errorf("EXCEPT structure: %s", listText(c))
	}
}

func TestOptions(t *testing.T) {
	for _, tc := range []struct {
		field string
		want  []Option
	}{
		{"", nil},
		{"allow", []Option{{"allow", "", "allow"}}},
		{" spawn (echo %a) & ", []Option{{"spawn", "(echo %a) &", "spawn (echo %a) &"}}},
		{"setenv = A b : deny", []Option{{"setenv", "A b", "setenv = A b"}, {"deny", "", "deny"}}},
		{"twist=/bin/echo a\\:b", []Option{{"twist", "/bin/echo a:b", "twist=/bin/echo a:b"}}},
		{"allow:", []Option{{"allow", "", "allow"}}},
		{" : allow", []Option{{"", "", ""}, {"allow", "", "allow"}}},
	} {
		if got := splitOptions(tc.field); fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("splitOptions(%q) = %q, want %q", tc.field, got, tc.want)
		}
	}
}

func TestDaemonPatterns(t *testing.T) {
	for _, tc := range []struct {
		list, daemon string
		match        bool
		err          string
	}{
		{"sshd", "sshd", true, ""},
		{"SSHD", "sshd", true, ""},
		{"ftpd", "sshd", false, ""},
		{"ALL", "sshd", true, ""},
		{"ALL EXCEPT sshd", "sshd", false, ""},
		{"ALL EXCEPT ftpd", "sshd", true, ""},
		{"ALL EXCEPT in. EXCEPT in.telnetd", "in.telnetd", true, ""},
		{"ALL EXCEPT in. EXCEPT in.telnetd", "in.ftpd", false, ""},
		{"in.", "in.telnetd", true, ""},
		{"in.", "in", false, ""},
		{".telnetd", "in.telnetd", true, ""},
		{".telnetd", ".telnetd", false, ""},
		{"in.*", "in.telnetd", true, ""},
		{"IN.*", "in.telnetd", false, ""}, // wildcards are case-sensitive in Debian's tcpd
		{"s?hd", "sshd", true, ""},
		{"KNOWN", "sshd", true, ""},
		{"ftpd, sshd", "sshd", true, ""},
		{"EXCEPT sshd", "sshd", false, ""},
		{"", "sshd", false, ""},
		{"sshd@10.0.0.1", "sshd", false, "daemon@host patterns need the address the client connected to"},
		{"sshd@10.0.0.1", "ftpd", false, ""},
		{"ALL@10.0.0.1", "ftpd", false, "daemon@host"},
		{"ftpd sshd@10.0.0.1", "ftpd", true, ""}, // tcpd stops at the first match
	} {
		f := Parse("hosts.allow", []byte(tc.list+": ALL\n"), acl.Allow, nil)
		match, err := daemonListMatch(f.Entries[0].Daemons, tc.daemon)
		if match != tc.match || (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%q for %s: %v, %v; want %v, %q", tc.list, tc.daemon, match, err, tc.match, tc.err)
		}
	}
}

func TestFileErr(t *testing.T) {
	f := Parse("hosts.allow", []byte("ftpd: .example.com\nsshd: 10.1.2.3/8 : allow : deny\nsshd@host: ALL\n"), acl.Allow, nil)
	err := f.Err()
	for _, want := range []string{
		`hosts.allow:1: ".example.com": not supported`,
		`hosts.allow:2: "10.1.2.3/8": invalid address pattern`,
		`hosts.allow:2: "allow": option cannot be translated: allow must be the last option`,
		`hosts.allow:3: "sshd@host": not supported: daemon@host`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("File.Err() = %v\nwant it to contain %q", err, want)
		}
	}
	if err := Parse("x", []byte("ALL: 10. [::1]\n"), acl.Deny, nil).Err(); err != nil {
		t.Errorf("clean file: %v", err)
	}
}

// TestCRLF: a file with DOS line ends reads the same.
func TestCRLF(t *testing.T) {
	f := Parse("hosts.deny", []byte("sshd: 10.1.\r\nALL: ALL : deny\r\n"), acl.Deny, nil)
	if err := f.Err(); err != nil || len(f.Entries) != 2 || f.Entries[0].Clients.Patterns[0].Prefix != netip.MustParsePrefix("10.1.0.0/16") {
		t.Errorf("%v %s", err, dump(f))
	}
}
