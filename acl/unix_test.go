package acl

import (
	"errors"
	"strings"
	"testing"
)

func TestUnixPolicyYAML(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		err        string // substring of the error; "" for none
		cases      []struct {
			cred UnixCred
			want string // Decision.String()
		}
	}{
		{name: "scalar still works", yaml: "default: deny\nunix: allow\n", cases: []struct {
			cred UnixCred
			want string
		}{{UnixCred{UID: 7, Valid: true}, "allow by default"}, {UnixCred{}, "allow by default"}}},
		{name: "lists, names and numbers", yaml: "default: deny\nunix:\n  allow_uids: [root, 1000]\n  allow_gids: [nogroup]\n  deny_uids: [nobody]\n  default: deny\n",
			cases: []struct {
				cred UnixCred
				want string
			}{
				{UnixCred{UID: 0, GID: 0, Valid: true}, "allow by uid root=0 (t.yaml:3)"},
				{UnixCred{UID: 1000, GID: 1000, Valid: true}, "allow by uid 1000 (t.yaml:3)"},
				{UnixCred{UID: 5, GID: 65534, Valid: true}, "allow by gid nogroup=65534 (t.yaml:4)"},
				{UnixCred{UID: 65534, GID: 65534, Valid: true}, "deny by uid nobody=65534 (t.yaml:5)"}, // deny wins
				{UnixCred{UID: 5, GID: 5, Valid: true}, "deny by default"},
				{UnixCred{UID: 0}, "deny by default"}, // unknown credentials: the default
			}},
		{name: "default deny when not given", yaml: "default: allow\nunix: {allow_uids: [42]}\n", cases: []struct {
			cred UnixCred
			want string
		}{{UnixCred{UID: 43, Valid: true}, "deny by default"}, {UnixCred{UID: 42, Valid: true}, "allow by uid 42 (t.yaml:2)"}}},
		{name: "unknown user", yaml: "default: deny\nunix:\n  allow_uids: [no-such-user-pg]\n", err: `t.yaml:3: "no-such-user-pg": unknown user or group`},
		{name: "unknown group", yaml: "default: deny\nunix:\n  allow_gids: [no-such-group-pg]\n", err: `t.yaml:3: "no-such-group-pg": unknown user or group`},
		{name: "out of range", yaml: "default: deny\nunix: {allow_uids: [4294967295]}\n", err: "t.yaml:2"},
		{name: "unknown key", yaml: "default: deny\nunix: {allow_users: [root]}\n", err: "allow_uids, allow_gids"},
		{name: "bad default", yaml: "default: deny\nunix: {default: maybe}\n", err: "t.yaml:2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec, err := ParseSpec("t.yaml", []byte(tc.yaml))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				if strings.Contains(tc.err, "unknown user") && !errors.Is(err, ErrUnixID) {
					t.Errorf("err %v is not ErrUnixID", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			a := MustNew(spec)
			for _, c := range tc.cases {
				if got := a.DecideUnix(c.cred).String(); got != c.want {
					t.Errorf("%v: %s, want %s", c.cred, got, c.want)
				}
			}
		})
	}
}

func TestDecideUnixAllocs(t *testing.T) {
	a := MustNew(Spec{Unix: Deny, UnixRules: []UnixRule{{Kind: UID, ID: 1, Action: Allow}}})
	if n := testing.AllocsPerRun(100, func() { a.DecideUnix(UnixCred{UID: 1, Valid: true}) }); n != 0 {
		t.Errorf("DecideUnix allocates %v times", n)
	}
}
