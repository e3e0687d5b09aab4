package acl

import (
	"errors"
	"net/netip"
	"testing"
)

// TestParseSpecAt reads an ACL embedded in a larger file by the keys that lead to it, with errors
// at the lines of the whole file, and refuses keys that lead nowhere.
func TestParseSpecAt(t *testing.T) {
	const file = "services: []\n" +
		"acls:\n" +
		"  office: {default: deny, allow: [10.0.0.0/8]}\n" +
		"  bad:\n" +
		"    default: deny\n" +
		"    allow: [10.0.0.1/8]\n"
	spec, err := ParseSpecAt("serve.yaml", []byte(file), "acls", "office")
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(spec)
	if err != nil {
		t.Fatal(err)
	}
	if d := a.Decide(netip.MustParseAddr("10.1.2.3")); d.Action != Allow || d.Rule == nil || d.Rule.Origin.Line != 3 {
		t.Errorf("office decides 10.1.2.3 as %+v, want allow by the rule of line 3", d)
	}
	for _, tc := range []struct {
		keys []string
		line int
		want error
	}{
		{[]string{"acls", "bad"}, 6, ErrHostBits},
		{[]string{"acls", "home"}, 2, ErrNoKey},
		{[]string{"nothing"}, 1, ErrNoKey},
		{[]string{"services", "x"}, 1, ErrSyntax}, // a list, not a mapping
	} {
		_, err := ParseSpecAt("serve.yaml", []byte(file), tc.keys...)
		var pe *PosError
		if !errors.Is(err, tc.want) || !errors.As(err, &pe) || pe.File != "serve.yaml" || pe.Line != tc.line {
			t.Errorf("keys %q: err %v; want a *PosError at serve.yaml:%d wrapping %v", tc.keys, err, tc.line, tc.want)
		}
	}
	// No keys: the whole file is the ACL, as ParseSpec reads it.
	if _, err := ParseSpecAt("acl.yaml", []byte("default: allow\n")); err != nil {
		t.Fatal(err)
	}
}

// TestPosErrorType checks that errors of the shared YAML walkers (syntax, unknown and duplicate
// keys) are the package's own *PosError, found by errors.As and by a plain type assertion.
func TestPosErrorType(t *testing.T) {
	for _, text := range []string{"default: [\n", "default: deny\ncolour: red\n", "default: deny\ndefault: allow\n"} {
		_, err := ParseSpec("a.yaml", []byte(text))
		var pe *PosError
		if !errors.As(err, &pe) || pe.File != "a.yaml" || pe.Line == 0 {
			t.Errorf("%q: err %v (%T); want a *PosError with a line", text, err, err)
		}
	}
	if _, err := ParseSpec("a.yaml", []byte("default: [\n")); err != nil {
		if _, ok := err.(*PosError); !ok {
			t.Errorf("syntax error is %T, want *PosError", err)
		}
	}
}
