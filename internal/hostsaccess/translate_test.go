package hostsaccess

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/peergate/peergate/acl"
)

func parsePair(allow, deny string) (*File, *File) {
	return Parse("hosts.allow", []byte(allow), acl.Allow, testOpts()), Parse("hosts.deny", []byte(deny), acl.Deny, testOpts())
}

func TestTranslate(t *testing.T) {
	for _, tc := range []struct {
		name        string
		allow, deny string
		daemon      string
		def         string   // "deny by hosts.deny:1"
		rules       []string // acl.Rule.String()
		unix        string
		warn        string // a part of the warnings, if any
	}{
		{
			name: "no files: tcpd grants everything",
			def:  "allow by -", unix: "allow by -",
		},
		{
			name:  "mostly closed",
			allow: "sshd: 10. EXCEPT 10.1.\n", deny: "ALL: ALL\n",
			def:   "deny by hosts.deny:1",
			rules: []string{"allow 10.0.0.0/8 (hosts.allow:1)", "deny 10.1.0.0/16 (hosts.deny:1)"},
			unix:  "deny by hosts.deny:1",
		},
		{
			name: "mostly open",
			deny: "ALL: 192.0.2.0/255.255.255.0, [2001:db8::]/32\nin.fingerd: ALL\n",
			def:  "allow by -",
			rules: []string{"deny 192.0.2.0/24 (hosts.deny:1)",
				"deny 2001:db8::/32 (hosts.deny:1)"},
			unix: "allow by -",
		},
		{
			name:  "the first match wins, whatever its size",
			allow: "sshd: 10.1.\n", deny: "sshd: 10.\n",
			def:   "allow by -",
			rules: []string{"deny 10.0.0.0/8 (hosts.deny:1)", "allow 10.1.0.0/16 (hosts.allow:1)"},
			unix:  "allow by -",
		},
		{
			name:  "a wide entry first hides a narrow one after it",
			allow: "sshd: 10.\nsshd: 10.1. : deny\n", deny: "ALL: ALL\n",
			def:   "deny by hosts.deny:1",
			rules: []string{"allow 10.0.0.0/8 (hosts.allow:1)"},
			unix:  "deny by hosts.deny:1",
		},
		{
			name:  "nested EXCEPT: a EXCEPT (b EXCEPT c)",
			allow: "sshd: 10. EXCEPT 10.1. EXCEPT 10.1.2.0/255.255.255.0\n", deny: "ALL: ALL\n",
			def: "deny by hosts.deny:1",
			rules: []string{"allow 10.0.0.0/8 (hosts.allow:1)", "deny 10.1.0.0/16 (hosts.deny:1)",
				"allow 10.1.2.0/24 (hosts.allow:1)"},
			unix: "deny by hosts.deny:1",
		},
		{
			name:   "entries for other daemons do not count, nor do their errors",
			allow:  "in.ftpd: 10.\nALL EXCEPT sshd: 11.\nftpd: .example.com KNOWN\nftpd@host: ALL\n",
			deny:   "ALL EXCEPT in.ftpd: 12.\n",
			daemon: "sshd",
			def:    "allow by -",
			rules:  []string{"deny 12.0.0.0/8 (hosts.deny:1)"},
			unix:   "allow by -",
		},
		{
			name:  "single-file configuration with allow and deny options (hosts_options(5))",
			allow: "ALL: 10.1.: deny\nALL: 10. [::1] : allow\nALL: ALL: DENY\n",
			def:   "deny by hosts.allow:3",
			rules: []string{"allow 10.0.0.0/8 (hosts.allow:2)", "deny 10.1.0.0/16 (hosts.allow:1)",
				"allow ::1/128 (hosts.allow:2)"},
			unix: "deny by hosts.allow:3",
		},
		{
			name: "allow in hosts.deny grants",
			deny: "sshd: 10.1.: allow\nsshd: 10.\n",
			def:  "allow by -",
			rules: []string{"deny 10.0.0.0/8 (hosts.deny:2)",
				"allow 10.1.0.0/16 (hosts.deny:1)"},
			unix: "allow by -",
		},
		{
			name:  "IPv6 only: IPv4 and IPv4-mapped clients stay with the default",
			allow: "sshd: [2001:db8::]/32\n", deny: "sshd: [::]/0\n",
			def:   "allow by -",
			rules: []string{"deny ::/0 (hosts.deny:1)", "allow 2001:db8::/32 (hosts.allow:1)"},
			unix:  "allow by -",
		},
		{
			name:  "pattern files",
			allow: "sshd: /pats /missing\n", deny: "ALL: ALL\n",
			def: "deny by hosts.deny:1",
			rules: []string{"allow 10.2.0.0/16 (hosts.allow:1)", "allow 172.16.0.0/16 (hosts.allow:1)",
				"allow 192.0.2.7/32 (hosts.allow:1)", "allow 2001:db8:1::/48 (hosts.allow:1)"},
			unix: "deny by hosts.deny:1",
			warn: `hosts.allow:1: "/missing": no such pattern file`,
		},
		{
			name:  "ALL in an allow entry decides the client without an address",
			allow: "sshd: ALL EXCEPT 10.\n", deny: "ALL: ALL\n",
			def:   "allow by hosts.allow:1",
			rules: []string{"deny 10.0.0.0/8 (hosts.deny:1)"},
			unix:  "allow by hosts.allow:1",
		},
		{
			name:  "patterns after ALL are never looked at",
			allow: "sshd: ALL host.example.com\n",
			def:   "allow by hosts.allow:1", unix: "allow by hosts.allow:1",
		},
		{
			name:  "all of IPv4 as net/mask; equal sizes: tcpd's default allow",
			allow: "sshd: 0.0.0.0/0.0.0.0\n", deny: "ALL: ALL\n",
			def:   "allow by hosts.allow:1",
			rules: []string{"deny ::/0 (hosts.deny:1)"},
			unix:  "deny by hosts.deny:1",
		},
		{
			name:  "dropped options warn",
			allow: "sshd: 10. : spawn (echo %a | mail root) & : severity auth.info\n", deny: "ALL: ALL : twist /bin/echo go away\n",
			def:   "deny by hosts.deny:1",
			rules: []string{"allow 10.0.0.0/8 (hosts.allow:1)"},
			unix:  "deny by hosts.deny:1",
			warn:  `hosts.allow:1: "spawn (echo %a | mail root) &": spawn: dropped`,
		},
		{
			name: "a shell command in hosts.deny denies whatever the tcpd build",
			deny: "sshd: 10.: (/usr/sbin/safe_finger -l @%h | /usr/bin/mail -s %d-%h root) &\n",
			def:  "allow by -", rules: []string{"deny 10.0.0.0/8 (hosts.deny:1)"}, unix: "allow by -",
			warn: "not a hosts_options(5) option",
		},
		{
			name:  "twist is a deny",
			allow: "sshd: 10.: twist /bin/echo 421 go away\n",
			def:   "allow by -", rules: []string{"deny 10.0.0.0/8 (hosts.allow:1)"}, unix: "allow by -",
			warn: "twist: tcpd serves these clients with a command instead of the daemon",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			allow, deny := parsePair(tc.allow, tc.deny)
			daemon := tc.daemon
			if daemon == "" {
				daemon = "sshd"
			}
			res, err := Translate(daemon, allow, deny)
			if err != nil {
				t.Fatal(err)
			}
			if got := fmt.Sprintf("%s by %s", res.Spec.Default, res.DefaultOrigin); got != tc.def {
				t.Errorf("default %s, want %s", got, tc.def)
			}
			if got := fmt.Sprintf("%s by %s", res.Spec.Unix, res.UnixOrigin); got != tc.unix {
				t.Errorf("unix %s, want %s", got, tc.unix)
			}
			var rules []string
			for _, r := range res.Spec.Rules {
				rules = append(rules, r.String())
			}
			if strings.Join(rules, "\n") != strings.Join(tc.rules, "\n") {
				t.Errorf("rules:\n%s\nwant:\n%s", strings.Join(rules, "\n"), strings.Join(tc.rules, "\n"))
			}
			var warns []string
			for _, w := range res.Warnings {
				warns = append(warns, w.String())
			}
			if all := strings.Join(warns, "\n"); (tc.warn == "") != (all == "") || !strings.Contains(all, tc.warn) {
				t.Errorf("warnings %q, want %q", warns, tc.warn)
			}
			// Fewest rules: none of them changes nothing, hides or repeats another.
			findings, err := acl.Lint(res.Spec)
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range findings {
				if f.Kind != acl.NotIPv4 && f.Kind != acl.DeniesAll {
					t.Errorf("lint: %s", f)
				}
			}
			checkAgainstReference(t, daemon, nil, allow, deny)
		})
	}
}

func TestTranslateErrors(t *testing.T) {
	for _, tc := range []struct {
		name        string
		allow, deny string
		daemon      string
		kind        error
		msgs        []string
	}{
		{
			name:  "host names in an entry that applies",
			allow: "sshd: 10. EXCEPT bad.example.com\n", deny: "ALL: .example.com, 192.0.2.1\n",
			kind: ErrUnsupported,
			msgs: []string{`hosts.allow:1: "bad.example.com": not supported: host names need DNS; peergate judges addresses only`,
				`hosts.deny:1: ".example.com": not supported`},
		},
		{
			name:  "a pattern tcpd never matches",
			allow: "\n\nsshd: 10.1.2.3/8\n",
			kind:  ErrPattern,
			msgs:  []string{`hosts.allow:3: "10.1.2.3/8": invalid address pattern: host bits set: tcpd never matches it (did you mean 10.0.0.0/8?)`},
		},
		{
			name:  "a shell command in hosts.allow: tcpd builds disagree",
			allow: "sshd: 10.: /bin/echo hello\n",
			kind:  ErrOption,
			msgs:  []string{`hosts.allow:1: "/bin/echo hello": option cannot be translated: not a hosts_options(5) option`},
		},
		{
			name:  "allow must be last",
			allow: "sshd: 10.: allow : spawn x\n",
			kind:  ErrOption,
			msgs:  []string{`"allow": option cannot be translated: allow must be the last option: tcpd stops with an error and refuses the client`},
		},
		{
			name:  "deny takes no value",
			allow: "sshd: 10.: deny now\n",
			kind:  ErrOption,
			msgs:  []string{`"deny now": option cannot be translated: deny takes no value`},
		},
		{
			name:  "aclexec",
			allow: "sshd: 10.: aclexec /usr/local/bin/check %a\n",
			kind:  ErrUnsupported,
			msgs:  []string{`"aclexec /usr/local/bin/check %a": not supported: aclexec: a command decides access`},
		},
		{
			name:  "daemon@host that applies",
			allow: "sshd@192.0.2.1: ALL\n",
			kind:  ErrUnsupported,
			msgs:  []string{`hosts.allow:1: "sshd@192.0.2.1": not supported: daemon@host patterns`},
		},
		{
			name:  "a pattern file with a host name",
			allow: "sshd: /bad\n",
			kind:  ErrUnsupported,
			msgs:  []string{`/bad:1: "host.example": not supported`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			allow, deny := parsePair(tc.allow, tc.deny)
			daemon := tc.daemon
			if daemon == "" {
				daemon = "sshd"
			}
			res, err := Translate(daemon, allow, deny)
			if err == nil {
				t.Fatalf("no error; rules %v", res.Spec.Rules)
			}
			if !errors.Is(err, tc.kind) {
				t.Errorf("%v does not wrap %v", err, tc.kind)
			}
			for _, m := range tc.msgs {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error:\n%v\ndoes not contain\n%s", err, m)
				}
			}
			checkErrs(t, err)
		})
	}
	if _, err := Translate(""); err == nil {
		t.Error("no daemon name: no error")
	}
}

// TestTranslateSmallest: where the default changes the count, the smaller table is chosen, and
// the IPv4-mapped range is never written as a rule (acl would read it as IPv4).
func TestTranslateSmallest(t *testing.T) {
	// Everything denied but two networks: default deny and two allows, not a deny per gap.
	allow, deny := parsePair("sshd: 10. 192.168.\nsshd: [2001:db8::]/32\n", "ALL: ALL\n")
	res, err := Translate("sshd", allow, deny)
	if err != nil {
		t.Fatal(err)
	}
	if res.Spec.Default != acl.Deny || len(res.Spec.Rules) != 3 {
		t.Errorf("default %s, rules %v", res.Spec.Default, res.Spec.Rules)
	}
	// Every IPv6 address but the IPv4-mapped range allowed, every IPv4 one denied.
	allow, deny = parsePair("sshd: [::]/0\n", "ALL: 0.0.0.0/0.0.0.0\n")
	res, err = Translate("sshd", allow, deny)
	if err != nil {
		t.Fatal(err)
	}
	mapped := netip.MustParsePrefix("::ffff:0:0/96")
	for _, r := range res.Spec.Rules {
		if r.Prefix.Addr().Is6() && r.Prefix.Bits() >= 96 && mapped.Contains(r.Prefix.Addr()) {
			t.Errorf("rule inside the IPv4-mapped range: %s", r)
		}
	}
	if len(res.Spec.Rules) != 1 {
		t.Errorf("want one rule, got default %s and %v", res.Spec.Default, res.Spec.Rules)
	}
	checkAgainstReference(t, "sshd", nil, allow, deny)
}

// TestTranslateLarge: a blocklist of many single addresses and networks translates quickly into
// as many rules, and decides as tcpd on a sample of their edges.
func TestTranslateLarge(t *testing.T) {
	var b strings.Builder
	for i := range 10000 {
		fmt.Fprintf(&b, "ALL: %d.%d.%d.%d\n", 1+i%200, i/200%256, i%256, i%251)
		if i%100 == 0 {
			fmt.Fprintf(&b, "ALL: [2001:db8:%x::]/48\n", i)
		}
	}
	allow, deny := parsePair("sshd: 10.\n", b.String())
	start := time.Now()
	res, err := Translate("sshd", allow, deny)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d entries: %d rules in %v", len(deny.Entries)+1, len(res.Spec.Rules), time.Since(start))
	if res.Spec.Default != acl.Allow || len(res.Spec.Rules) < 10000 {
		t.Errorf("default %s, %d rules", res.Spec.Default, len(res.Spec.Rules))
	}
	a := acl.MustNew(res.Spec)
	probes := probeAddrs(allow, deny)
	for i := 0; i < len(probes); i += len(probes) / 300 {
		want, _, _ := refDecide("sshd", probes[i], allow, deny)
		if got := a.Decide(probes[i]); got.Action != want && !isBroadcast(probes[i]) {
			t.Errorf("%s: ACL %s, tcpd %s", probes[i], got, want)
		}
	}
}
