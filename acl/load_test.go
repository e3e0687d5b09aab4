package acl

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func write(t *testing.T, dir, name, text string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "drop.txt", "; Spamhaus DROP List\n192.0.2.0/24 ; SBL123\n\n# a comment\n  198.51.100.7\t# host\n2001:db8:bad::/48;SBL9\n")
	path := write(t, dir, "acl.yaml", `# office ACL
default: deny
allow: [10.0.0.0/8, "2001:db8::/32", 192.0.2.128/25]
deny:
  - 10.66.0.0/16
include:
  - {path: drop.txt, action: deny}
unix: allow
`)
	a, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	drop := filepath.Join(dir, "drop.txt")
	for _, tc := range []struct{ addr, want string }{
		{"10.1.2.3", "allow by 10.0.0.0/8 (" + path + ":3)"},
		{"10.66.1.1", "deny by 10.66.0.0/16 (" + path + ":5)"},
		{"192.0.2.1", "deny by 192.0.2.0/24 (" + drop + ":2)"},
		{"192.0.2.200", "allow by 192.0.2.128/25 (" + path + ":3)"},
		{"198.51.100.7", "deny by 198.51.100.7/32 (" + drop + ":5)"},
		{"2001:db8:bad::1", "deny by 2001:db8:bad::/48 (" + drop + ":6)"},
		{"2001:db8::1", "allow by 2001:db8::/32 (" + path + ":3)"},
		{"8.8.8.8", "deny by default"},
	} {
		if got := a.Decide(netip.MustParseAddr(tc.addr)).String(); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.addr, got, tc.want)
		}
	}
	if !a.Unix().Allowed() {
		t.Error("unix: allow not honoured")
	}
}

// TestLoadErrors checks that each kind of bad input gives no ACL and an error that names the
// file, the line and the value, and wraps the right sentinel.
func TestLoadErrors(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, list string
		want             error
		line             int    // line of the error in acl.yaml (or in list.txt when list is set)
		value            string // what the message must quote
	}{
		{"missing default", "allow: [10.0.0.0/8]\n", "", ErrMissingDefault, 1, ""},
		{"empty file", "", "", ErrMissingDefault, 1, ""},
		{"unknown key", "default: deny\nalow: [10.0.0.0/8]\n", "", ErrUnknownKey, 2, "alow"},
		{"duplicate key", "default: deny\nallow: [10.0.0.0/8]\nallow: [11.0.0.0/8]\n", "", ErrDuplicateKey, 3, "allow"},
		{"bad default", "default: permit\n", "", ErrAction, 1, "permit"},
		{"bad unix", "default: deny\nunix: yes\n", "", ErrAction, 2, "yes"},
		{"host bits", "default: deny\nallow:\n  - 10.0.0.0/8\n  - 10.0.0.1/8\n", "", ErrHostBits, 4, "10.0.0.1/8"},
		{"bad prefix", "default: deny\ndeny: [10.0.0.0/33]\n", "", ErrPrefix, 2, "10.0.0.0/33"},
		{"host name", "default: deny\ndeny: [example.com]\n", "", ErrPrefix, 2, "example.com"},
		{"zone", "default: deny\nallow: [\"fe80::1%eth0\"]\n", "", ErrZone, 2, "fe80::1%eth0"},
		{"not a list", "default: deny\nallow: {a: b}\n", "", ErrSyntax, 2, ""},
		{"nested list item", "default: deny\nallow:\n  - [10.0.0.0/8]\n", "", ErrSyntax, 3, ""},
		{"top level list", "- default\n", "", ErrSyntax, 1, ""},
		{"yaml syntax", "default: deny\nallow: 10.0.0.0/8: x\n", "", ErrSyntax, 2, ""},
		{"second document", "default: allow\n---\ndeny: [0.0.0.0/0, \"::/0\"]\n", "", ErrSecondDocument, 2, ""},
		{"content after end of document", "default: allow\n...\ndeny: [0.0.0.0/0]\n", "", ErrSecondDocument, 3, ""},
		{"empty second document", "default: deny\nallow: [10.0.0.0/8]\n---\n", "", ErrSecondDocument, 3, ""},
		{"url include without resolver", "default: deny\ninclude:\n  - {url: \"https://example.net/drop.txt\", action: deny}\n", "", ErrRemote, 3, "https://example.net/drop.txt"},
		{"url include bad refresh", "default: deny\ninclude:\n  - {url: \"https://x/d\", action: deny, refresh: 10ms}\n", "", ErrSyntax, 3, "10ms"},
		{"url include bad sha256", "default: deny\ninclude:\n  - {url: \"https://x/d\", action: deny, sha256: abc}\n", "", ErrSyntax, 3, "abc"},
		{"url include bad max_shrink", "default: deny\ninclude:\n  - {url: \"https://x/d\", action: deny, max_shrink: 150%}\n", "", ErrSyntax, 3, "150%"},
		{"url include unknown key", "default: deny\ninclude:\n  - {url: \"https://x/d\", action: deny, path: a}\n", "", ErrUnknownKey, 3, "path"},
		{"url include without action", "default: deny\ninclude:\n  - {url: \"https://x/d\"}\n", "", ErrSyntax, 3, ""},
		{"include missing file", "default: deny\ninclude:\n  - {path: nope.txt, action: deny}\n", "", ErrInclude, 3, "nope.txt"},
		{"include without action", "default: deny\ninclude:\n  - {path: list.txt}\n", "10.0.0.0/8\n", ErrSyntax, 3, ""},
		{"include unknown key", "default: deny\ninclude:\n  - {path: list.txt, action: deny, mode: x}\n", "10.0.0.0/8\n", ErrUnknownKey, 3, "mode"},
		{"include bad action", "default: deny\ninclude:\n  - {path: list.txt, action: drop}\n", "10.0.0.0/8\n", ErrAction, 3, "drop"},
		{"list bad line", "default: deny\ninclude:\n  - {path: list.txt, action: deny}\n", "10.0.0.0/8\n\n10.0.0.256\n", ErrPrefix, 3, "10.0.0.256"},
		{"list two fields", "default: deny\ninclude:\n  - {path: list.txt, action: deny}\n", "# x\n10.0.0.0/8 11.0.0.0/8\n", ErrSyntax, 2, "10.0.0.0/8 11.0.0.0/8"},
		{"list host bits", "default: deny\ninclude:\n  - {path: list.txt, action: deny}\n", "10.0.0.1/8 ; SBL1\n", ErrHostBits, 1, "10.0.0.1/8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			file := write(t, dir, "acl.yaml", tc.yaml)
			if tc.list != "" {
				list := write(t, dir, "list.txt", tc.list)
				if strings.Contains(tc.name, "list") {
					file = list
				}
			}
			a, err := Load(filepath.Join(dir, "acl.yaml"))
			if a != nil || !errors.Is(err, tc.want) {
				t.Fatalf("Load = (ACL %v), %v; want no ACL and %v", a != nil, err, tc.want)
			}
			var pe *PosError
			if !errors.As(err, &pe) || pe.File != file || pe.Line != tc.line {
				t.Fatalf("error %q: want a *PosError at %s:%d", err, file, tc.line)
			}
			if tc.value != "" && !strings.Contains(pe.Value, tc.value) {
				t.Errorf("error %q does not quote %q", err, tc.value)
			}
			if want := fmt.Sprintf("%s:%d", file, tc.line); tc.line > 0 && !strings.HasPrefix(err.Error(), want) {
				t.Errorf("message %q does not start with %s", err, want)
			}
		})
	}
}

func TestLoadErrorsAreAllReported(t *testing.T) {
	_, err := ParseSpec("x.yaml", []byte("default: deny\nallow: [10.0.0.1/8, 300.0.0.0/8]\nfoo: 1\n"))
	for _, want := range []string{"x.yaml:2: \"10.0.0.1/8\"", "x.yaml:2: \"300.0.0.0/8\"", "x.yaml:3: \"foo\""} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v: missing %s", err, want)
		}
	}
}

func TestParseListBoundsErrors(t *testing.T) {
	var b strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&b, "bad%d\n", i)
	}
	_, err := ParseList("big.txt", strings.NewReader(b.String()), Deny)
	if err == nil {
		t.Fatal("no error")
	}
	if n := strings.Count(err.Error(), "\n") + 1; n > 21 {
		t.Errorf("%d error lines for 1000 bad lines, want at most 21", n)
	}
	if !strings.Contains(err.Error(), "more errors") {
		t.Errorf("error does not say more errors were dropped: %v", err)
	}
}

func TestIncludePathsAreRelativeToTheIncludingFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "lists"), 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, dir, "lists/allow.txt", "127.0.0.0/8\n")
	write(t, dir, "acl.yaml", "default: deny\ninclude: [{path: lists/allow.txt, action: allow}]\n")
	t.Chdir(t.TempDir()) // somewhere else entirely
	a, err := Load(filepath.Join(dir, "acl.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !a.Decide(netip.MustParseAddr("127.0.0.2")).Allowed() {
		t.Error("included allow rule not applied")
	}
}

func ExampleParseSpec() {
	spec, err := ParseSpec("office.yaml", []byte(`
default: deny
allow: [10.0.0.0/8]
deny: [10.66.0.0/16]
`))
	if err != nil {
		panic(err)
	}
	a := MustNew(spec)
	fmt.Println(a.Decide(netip.MustParseAddr("10.66.1.1")))

	_, err = ParseSpec("typo.yaml", []byte("default: deny\nallow: [10.0.0.1/8]\n"))
	fmt.Println(err)
	// Output:
	// deny by 10.66.0.0/16 (office.yaml:4)
	// typo.yaml:2: "10.0.0.1/8": prefix has host bits set (did you mean 10.0.0.0/8?)
}

func ExampleParseList() {
	rules, err := ParseList("drop.txt", strings.NewReader("; Spamhaus DROP\n192.0.2.0/24 ; SBL123\n"), Deny)
	fmt.Println(rules, err)
	// Output:
	// [deny 192.0.2.0/24 (drop.txt:2)] <nil>
}

// TestListErrorsHideContent: an include may name any file (say /etc/shadow), and load errors reach
// logs, `check` and reload failures that others read. A bad line is repeated only when it looks
// like an address (hex digits, '.', ':', '/', blanks) and is at most 64 bytes; otherwise the error
// gives its line and "not an address", nothing of its content. Before, the first 20 lines of
// /etc/shadow went into the error, hashes included.
func TestListErrorsHideContent(t *testing.T) {
	long := strings.Repeat("1", 65)
	for _, tc := range []struct {
		name, line string
		want       error
		shown      bool
	}{
		{"shadow line", "root:$6$s3cr3tHash:19000:0:99999:7:::", ErrPrefix, false},
		{"word", "hunter2", ErrPrefix, false},
		{"words", "password is hunter2", ErrSyntax, false},
		{"zone", "fe80::1%eth0", ErrZone, false},
		{"too long", long, ErrPrefix, false},
		{"bad address", "10.0.0.256", ErrPrefix, true},
		{"host bits", "10.0.0.1/8", ErrHostBits, true},
		{"two prefixes", "10.0.0.0/8 11.0.0.0/8", ErrSyntax, true},
		{"bad v6", "2001:db8:::1", ErrPrefix, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseList("secret.txt", strings.NewReader("10.0.0.0/8\n"+tc.line+"\n"), Deny)
			if !errors.Is(err, tc.want) {
				t.Fatalf("error %v; want %v", err, tc.want)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "secret.txt:2: ") {
				t.Errorf("error %q does not start with secret.txt:2", msg)
			}
			if shown := strings.Contains(msg, strconv.Quote(tc.line)); shown != tc.shown {
				t.Errorf("error %q: line shown %v, want %v", msg, shown, tc.shown)
			}
			if !tc.shown {
				for _, part := range []string{"s3cr3t", "hunter", "eth0", "root", long} {
					if strings.Contains(msg, part) {
						t.Errorf("error %q gives away %q", msg, part)
					}
				}
				if !strings.Contains(msg, "not an address") {
					t.Errorf("error %q does not say the line is not an address", msg)
				}
			}
		})
	}
}

type fakeResolver struct{ got []Remote }

func (f *fakeResolver) Resolve(_ context.Context, r Remote) ([]Rule, error) {
	f.got = append(f.got, r)
	return []Rule{{Prefix: netip.MustParsePrefix("192.0.2.0/24"), Action: r.Action, Origin: Origin{r.Name(), 7}}}, nil
}

// A Loader with a Resolver hands it every url include with its options, and decisions name the
// URL and line the Resolver gave.
func TestLoaderResolver(t *testing.T) {
	f := &fakeResolver{}
	l := &Loader{Resolver: f}
	spec, err := l.ParseSpec(context.Background(), "a.yaml", []byte("default: allow\ninclude:\n"+
		"  - {url: \"https://x/ip.json\", action: deny, refresh: 2h, sha256: "+strings.Repeat("A", 64)+", min_entries: 3, max_shrink: 25%, select: \"p[].ip\"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := Remote{URL: "https://x/ip.json", Action: Deny, Refresh: 2 * time.Hour, SHA256: strings.Repeat("a", 64), MinEntries: 3, MaxShrink: 0.25, Select: "p[].ip", File: "a.yaml", Line: 3}
	if len(f.got) != 1 || f.got[0] != want {
		t.Fatalf("resolver got %+v, want %+v", f.got, want)
	}
	d := MustNew(spec).Decide(netip.MustParseAddr("192.0.2.9"))
	if d.Action != Deny || d.Rule.Origin.String() != "https://x/ip.json#p[].ip:7" {
		t.Errorf("decision %v", d)
	}
}
