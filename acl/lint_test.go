package acl

import (
	"fmt"
	"strings"
	"testing"
)

func TestLint(t *testing.T) {
	for _, tc := range []struct {
		name string
		def  Action
		unix Action
		// rules as "allow 10.0.0.0/8"; their origin is t:<index+1>
		rules []string
		want  []string // findings as "t:line kind"
	}{
		{"clean", Deny, Deny, []string{"allow 10.0.0.0/8", "deny 10.66.0.0/16"}, nil},
		{"conflict", Allow, Deny, []string{"allow 10.0.0.0/8", "deny 10.0.0.0/8"}, []string{"t:1 conflict"}},
		// Issue 14 item 10: the deny of a conflict is not "redundant" under default deny (deleting it
		// would let the allow decide), and a conflict is reported once, further rules as duplicates.
		{"conflict under default deny", Deny, Deny, []string{"allow 10.0.0.0/8", "deny 10.0.0.0/8"}, []string{"t:1 conflict", "denies-all"}},
		{"conflict under denying parent", Allow, Deny, []string{"deny 10.0.0.0/8", "allow 10.1.0.0/16", "deny 10.1.0.0/16"}, []string{"t:2 conflict"}},
		{"conflict once, then duplicates", Deny, Deny, []string{"allow 10.0.0.0/8", "allow 10.0.0.0/8", "deny 10.0.0.0/8", "deny 10.0.0.0/8"},
			[]string{"t:1 conflict", "t:2 duplicate", "t:4 duplicate", "denies-all"}},
		{"duplicate", Deny, Deny, []string{"allow 10.0.0.0/8", "allow 10.0.0.0/8"}, []string{"t:2 duplicate"}},
		{"redundant under default", Deny, Deny, []string{"allow 10.0.0.0/8", "deny 192.0.2.0/24"}, []string{"t:2 redundant"}},
		{"redundant under parent", Deny, Deny, []string{"allow 10.0.0.0/8", "allow 10.1.0.0/16"}, []string{"t:2 redundant"}},
		{"not redundant when parent differs", Deny, Deny, []string{"allow 10.0.0.0/8", "deny 10.1.0.0/16", "allow 10.1.1.0/24"}, nil},
		{"hidden", Deny, Deny, []string{"deny 10.0.0.0/8", "allow 10.0.0.0/9", "allow 10.128.0.0/9"}, []string{"t:1 hidden"}},
		{"v6 rule does not cover v4", Deny, Deny, []string{"allow ::/0"}, []string{"t:1 not-ipv4"}},
		{"v6 rule outside mapped range", Deny, Deny, []string{"allow 2001:db8::/32"}, nil},
		// Issue 15: both /0 rules written is not "not-ipv4"; a lone deny 0.0.0.0/0 leaves IPv6 open.
		{"both /0 rules", Allow, Deny, []string{"deny 0.0.0.0/0", "deny ::/0", "allow 10.0.0.0/8"}, nil},
		{"both /0 rules, v6 allowed", Deny, Deny, []string{"deny 0.0.0.0/0", "allow ::/0"}, []string{"t:1 redundant"}},
		{"lone deny 0.0.0.0/0", Allow, Deny, []string{"deny 0.0.0.0/0", "allow 10.0.0.0/8"}, []string{"t:1 not-ipv6"}},
		{"lone deny 0.0.0.0/0 written mapped", Allow, Deny, []string{"deny ::ffff:0.0.0.0/96"}, []string{"t:1 not-ipv6"}},
		{"lone deny 0.0.0.0/0 under default deny", Deny, Allow, []string{"deny 0.0.0.0/0"}, []string{"t:1 redundant"}},
		{"lone allow 0.0.0.0/0", Deny, Deny, []string{"allow 0.0.0.0/0"}, nil},
		{"link-local prefix", Deny, Deny, []string{"allow fe80::/10", "allow 2001:db8::/32"}, []string{"t:1 link-local"}},
		{"link-local address", Deny, Deny, []string{"allow fe80::1"}, []string{"t:1 link-local"}},
		{"link-local deny", Allow, Deny, []string{"deny fe80::/64"}, []string{"t:1 link-local"}},
		{"wider than link-local", Deny, Deny, []string{"allow fe00::/7"}, nil},
		{"denies all", Deny, Deny, []string{"deny 10.0.0.0/8"}, []string{"t:1 redundant", "denies-all"}},
		{"unix allowed is not denies-all", Deny, Allow, nil, nil},
		{"empty default allow", Allow, Deny, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs, err := Lint(Spec{Default: tc.def, Unix: tc.unix, Rules: rules(tc.rules...)})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, f := range fs {
				s := string(f.Kind)
				if f.Rule != nil {
					s = f.Rule.Origin.String() + " " + s
				}
				got = append(got, s)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("findings %q, want %q\n%v", got, tc.want, fs)
			}
		})
	}
}

func TestLintMessage(t *testing.T) {
	fs, _ := Lint(Spec{Default: Deny, Rules: rules("allow 10.0.0.0/8", "allow 10.1.0.0/16")})
	if len(fs) != 1 || !strings.Contains(fs[0].String(), "t:2: redundant: allow 10.1.0.0/16: changes nothing: 10.0.0.0/8 at t:1 already allows it") {
		t.Errorf("findings %v", fs)
	}
}

func ExampleLint() {
	spec, _ := ParseSpec("office.yaml", []byte(`default: deny
allow: [10.0.0.0/8, 10.1.0.0/16]
deny: [10.0.0.0/8]
`))
	findings, _ := Lint(spec)
	for _, f := range findings {
		fmt.Println(f)
	}
	// Output:
	// office.yaml:2: conflict: allow 10.0.0.0/8: same prefix is denied at office.yaml:3; deny wins, so this rule never decides
}
