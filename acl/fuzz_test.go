package acl

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// FuzzParseSpec feeds arbitrary bytes to the YAML loader: it must return an ACL or an error, never
// panic, and never both.
func FuzzParseSpec(f *testing.F) {
	for _, s := range []string{
		"default: deny\nallow: [10.0.0.0/8, \"2001:db8::/32\"]\ndeny: [10.66.0.0/16]\nunix: allow\n",
		"default: allow\ndeny: 192.0.2.1\n",
		"default: deny\nallow: [10.0.0.1/8]\n",
		"default: deny\ninclude: [{path: nope, action: deny}]\n",
		"default: deny\ndefault: allow\n",
		"- a\n- b\n",
		"default: allow\n---\ndeny: [0.0.0.0/0]\n",
		"default: allow\n...\ndeny: [0.0.0.0/0]\n",
		"{",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if strings.Contains(s, "include") {
			return // don't let the fuzzer read files
		}
		spec, err := ParseSpec("fuzz.yaml", []byte(s))
		if err != nil {
			return
		}
		a, err := New(spec)
		if err != nil {
			t.Fatalf("ParseSpec accepted a spec that New rejects: %v", err)
		}
		a.Decide(netip.MustParseAddr("10.0.0.1"))
	})
}

// FuzzParseList feeds arbitrary bytes to the list parser: every rule it returns must be a valid,
// masked prefix that New accepts, and a line it rejects must be named in the error.
func FuzzParseList(f *testing.F) {
	for _, s := range []string{
		"192.0.2.0/24 ; SBL123\n# c\n\n2001:db8::/32\n",
		"10.0.0.1/8\n",
		"::ffff:10.0.0.0/104\n",
		"fe80::1%eth0\n",
		"1.2.3.4 5.6.7.8\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		rules, err := ParseList("fuzz.txt", strings.NewReader(s), Deny)
		if err != nil {
			var pe *PosError
			if !errors.As(err, &pe) || pe.File != "fuzz.txt" {
				t.Fatalf("error without position: %v", err)
			}
			return
		}
		for _, r := range rules {
			if !r.Prefix.IsValid() || r.Prefix.Masked() != r.Prefix || r.Prefix.Addr().Is4In6() {
				t.Fatalf("bad rule %v", r)
			}
		}
		if _, err := New(Spec{Rules: rules}); err != nil {
			t.Fatal(err)
		}
	})
}

// FuzzParsePrefix checks that what ParsePrefix accepts round-trips through its String form.
func FuzzParsePrefix(f *testing.F) {
	for _, s := range []string{"10.0.0.0/8", "::1", "::ffff:1.2.3.4/120", "10.0.0.1/8", "fe80::%x/64",
		"1.2.3.4", "01.2.3.4", "1.2.3.0/024", "255.255.255.255/32", "256.1.1.1", "1.2.3.4/33", "1.2.3.4/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePrefix(s)
		if fast, ok := parse4([]byte(s)); ok && (err != nil || fast != p) {
			t.Fatalf("parse4(%q) = %v, but ParsePrefix gives %v, %v", s, fast, p, err)
		}
		if err != nil {
			return
		}
		q, err := ParsePrefix(p.String())
		if err != nil || q != p {
			t.Fatalf("ParsePrefix(%q) = %v, but %v parses as %v, %v", s, p, p, q, err)
		}
	})
}
