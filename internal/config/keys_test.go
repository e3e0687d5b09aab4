package config

import (
	"encoding/json"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// readmeServeTable returns the rows of README's serve-file table, each split into its cells.
func readmeServeTable(t *testing.T) [][]string {
	t.Helper()
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(data), "| key | meaning | default |\n|---|---|---|\n")
	if !ok {
		t.Fatal("README.md has no serve-file table")
	}
	table, _, _ = strings.Cut(table, "\n\n")
	var rows [][]string
	for _, row := range strings.Split(table, "\n") {
		row = strings.TrimSuffix(strings.TrimPrefix(row, "| "), " |")
		cells := strings.Split(strings.ReplaceAll(row, `\|`, "\x00"), " | ")
		for i, c := range cells {
			cells[i] = strings.ReplaceAll(c, "\x00", "|")
		}
		if len(cells) != 3 {
			t.Fatalf("README serve-file row %q: want 3 cells, have %d", row, len(cells))
		}
		rows = append(rows, cells)
	}
	return rows
}

var backticked = regexp.MustCompile("`([^`]+)`")

// TestREADMEServeKeys keeps README's serve-file table in step with the tables of keys the parser
// is made from (serviceKeys, fileKeys, adminKeys): a row for every key, whose default is the key's
// and whose meaning starts with its doc, and no row for a key the parser does not know.
func TestREADMEServeKeys(t *testing.T) {
	type fact struct{ def, doc string }
	known := map[string]fact{}
	for _, k := range serviceKeys {
		known["services[]."+k.name] = fact{k.def, k.doc}
	}
	for _, k := range adminKeys {
		known["admin."+k.name] = fact{k.def, k.doc}
	}
	for _, k := range fileKeys {
		name := k.name
		if k.readme != "" {
			name = k.readme
		}
		if k.doc != "" { // "": README has rows for its keys instead
			known[name] = fact{k.def, k.doc}
		}
	}
	seen := map[string]bool{}
	for _, row := range readmeServeTable(t) {
		for _, m := range backticked.FindAllStringSubmatch(row[0], -1) {
			name := m[1]
			k, ok := known[name]
			switch {
			case !ok:
				t.Errorf("README documents %s, which the parser does not know", name)
			case seen[name]:
				t.Errorf("README documents %s twice", name)
			case row[2] != k.def || !strings.HasPrefix(row[1], k.doc):
				t.Errorf("README's row of %s:\n  %q | %q\nwant the table's\n  %q… | %q", name, row[1], row[2], k.doc, k.def)
			}
			seen[name] = true
		}
	}
	for name := range known {
		if !seen[name] {
			t.Errorf("README's serve-file table has no row for %s", name)
		}
	}
}

// literalDefault is a default written as one value, such as "`5s`" or "`0` (no cap)".
var literalDefault = regexp.MustCompile("^`([^`]+)`(?: \\(.*\\))?$")

// TestDefaultsAsDocumented: writing a key's documented default changes nothing: a service shows
// the same in /config with and without it, and a file holds the same.
func TestDefaultsAsDocumented(t *testing.T) {
	// trusted_proxies and rate, so the keys that need them can be written alone.
	const svc = "acls:\n  a: {default: deny}\nservices:\n  - name: s\n    listen: [\"127.0.0.1:1\"]\n    acl: a\n" +
		"    upstream: x:1\n    trusted_proxies: [10.0.0.1]\n    rate: 10/s\n"
	parse := func(text string) *File {
		t.Helper()
		f, err := Parse("c.yaml", []byte(text))
		if err != nil {
			t.Fatalf("%v in\n%s", err, text)
		}
		return f
	}
	view := func(f *File) string {
		b, err := json.Marshal(ShowService(f.Services[0], ViewOptions{}))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	base := parse(svc)
	n := 0
	for _, k := range serviceKeys {
		m := literalDefault.FindStringSubmatch(k.def)
		if m == nil {
			continue
		}
		n++
		if got, want := view(parse(svc+"    "+k.name+": "+m[1]+"\n")), view(base); got != want {
			t.Errorf("%s: %s, its documented default, shows\n  %s\nwant, as when it is not written,\n  %s", k.name, m[1], got, want)
		}
	}
	if n < 10 {
		t.Errorf("only %d service keys have a literal default: is the pattern wrong?", n)
	}
	file := func(f *File) File {
		c := *f
		c.Hash = ""
		if c.MaxFileSize == 0 {
			c.MaxFileSize = DefaultMaxFileSize
		}
		return c
	}
	for _, k := range fileKeys {
		m := literalDefault.FindStringSubmatch(k.def)
		if m == nil || k.doc == "" {
			continue
		}
		if got, want := file(parse(svc+k.name+": "+m[1]+"\n")), file(base); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: %s, its documented default, gives\n  %+v\nwant, as when it is not written,\n  %+v", k.name, m[1], got, want)
		}
	}
}

// TestUnknownKeyLists: an unknown key's error lists every key of its table.
func TestUnknownKeyLists(t *testing.T) {
	const svc = "acls:\n  a: {default: deny}\nservices:\n  - name: s\n    listen: [\"127.0.0.1:1\"]\n    acl: a\n    upstream: x:1\n"
	for _, tc := range []struct {
		text  string
		names []string
	}{
		{svc + "    nope: 1\n", slices.Collect(func(yield func(string) bool) {
			for _, k := range serviceKeys {
				yield(k.name)
			}
		})},
		{svc + "nope: 1\n", slices.Collect(func(yield func(string) bool) {
			for _, k := range fileKeys {
				yield(k.name)
			}
		})},
		{svc + "admin: {listen: \"127.0.0.1:9\", nope: 1}\n", []string{"listen", "acl", "token_file"}},
	} {
		_, err := Parse("c.yaml", []byte(tc.text))
		if err == nil {
			t.Fatalf("no error for\n%s", tc.text)
		}
		for _, name := range tc.names {
			if !strings.Contains(err.Error(), name) {
				t.Errorf("%v: does not name %s", err, name)
			}
		}
	}
}
