package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// TestREADMECommands keeps README's Commands table in step with the command table: one row per
// command, in order, whose first cell is the usage line, whose description starts with the
// summary, and whose exit statuses are the table's.
func TestREADMECommands(t *testing.T) {
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(data), "| command | does | exit status |\n|---|---|---|\n")
	if !ok {
		t.Fatal("README.md has no Commands table")
	}
	table, _, _ = strings.Cut(table, "\n\n")
	rows := strings.Split(table, "\n")
	if len(rows) != len(commands) {
		t.Errorf("README lists %d commands, the table %d", len(rows), len(commands))
	}
	for i, c := range commands {
		if i >= len(rows) {
			t.Errorf("README lacks %q", c.name)
			continue
		}
		cells := splitRow(rows[i])
		want := "`" + strings.TrimSpace("peergate "+c.name+" "+c.synopsis) + "`"
		if len(cells) != 3 || cells[0] != want || !strings.HasPrefix(cells[1], c.summary) || cells[2] != c.exits {
			t.Errorf("README row %d:\n  %q\nwant the command table's\n  %q | %q… | %q", i+1, rows[i], want, c.summary, c.exits)
		}
	}
}

// splitRow splits a Markdown table row on the bars that are not escaped.
func splitRow(row string) []string {
	row = strings.TrimSuffix(strings.TrimPrefix(row, "| "), " |")
	parts := strings.Split(strings.ReplaceAll(row, `\|`, "\x00"), " | ")
	for i, p := range parts {
		parts[i] = strings.ReplaceAll(p, "\x00", "|")
	}
	return parts
}

func TestHelpAndFlags(t *testing.T) {
	acl := t.TempDir() + "/acl.yaml"
	if err := os.WriteFile(acl, []byte("default: deny\nallow: [127.0.0.1]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	uacl := t.TempDir() + "/uacl.yaml"
	if err := os.WriteFile(uacl, []byte("default: deny\nunix: {allow_uids: [root], allow_gids: [nogroup]}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args     []string
		status   int
		out, err string // substrings of stdout and stderr
		notInOut string
	}{
		{args: []string{"help"}, status: 0, out: "peergate version"},
		{args: []string{"-h"}, status: 0, out: "peergate serve -config FILE"},
		{args: []string{"help", "serve"}, status: 0, out: "-watch"},
		{args: []string{"help", "wrap"}, status: 0, out: "-reset"},
		{args: []string{"help", "frob"}, status: 2, err: `unknown command "frob"`},
		{args: []string{"serve", "-h"}, status: 0, err: "usage: peergate serve"},
		{args: []string{"check", "-help"}, status: 0, err: "usage: peergate check"},
		{args: []string{"convert", "-h"}, status: 0, err: "-daemon"},
		{args: []string{"serve", "-nope"}, status: 2, err: "flag provided but not defined: -nope"},
		{args: []string{"version"}, status: 0, out: "peergate "},
		{args: []string{"-version"}, status: 0, out: "go1."},
		{args: []string{"version", "extra"}, status: 2, err: "unexpected arguments"},
		// Flags after the arguments are read.
		{args: []string{"check", "127.0.0.1", "-config", acl}, status: 0, out: "127.0.0.1  allow"},
		{args: []string{"check", "127.0.0.2", "-config", acl, "127.0.0.1"}, status: 1, out: "127.0.0.2  deny"},
		// Unix-domain peers by credentials.
		{args: []string{"check", "-config", uacl, "unix:uid=root"}, status: 0, out: "unix:uid=root  allow  uid 0"},
		{args: []string{"check", "-config", uacl, "unix:uid=1234,gid=nogroup"}, status: 0, out: "allow  gid 65534"},
		{args: []string{"check", "-config", uacl, "unix:uid=1234"}, status: 1, out: "unix:uid=1234  deny  unix policy"},
		{args: []string{"check", "-config", uacl, "unix:uid=no-such-user-pg"}, status: 2, err: "unknown user or group"},
		// ... but not after "--".
		{args: []string{"check", "-config", acl, "--", "-acl"}, status: 2, err: `"-acl" is not an IP address`},
	} {
		var stdout, stderr bytes.Buffer
		status := run(tc.args, &stdout, &stderr)
		if status != tc.status || !strings.Contains(stdout.String(), tc.out) || !strings.Contains(stderr.String(), tc.err) {
			t.Errorf("peergate %q: exit %d, want %d\nstdout: %s\nstderr: %s", tc.args, status, tc.status, stdout.String(), stderr.String())
		}
	}
}

// TestPackageDoc keeps the usage in the package doc of main.go in step with the command table.
func TestPackageDoc(t *testing.T) {
	data, err := os.ReadFile("main.go")
	if err != nil {
		t.Fatal(err)
	}
	var doc strings.Builder
	for _, line := range strings.Split(string(data), "\n") {
		if l, ok := strings.CutPrefix(line, "//\t"); ok {
			doc.WriteString("  " + l + "\n")
		}
	}
	_, want, _ := strings.Cut(usage(), "usage:\n")
	want, _, _ = strings.Cut(want, "\n\n")
	if got := strings.TrimSuffix(doc.String(), "\n"); got != want {
		t.Errorf("main.go's package doc lists\n%s\nthe command table\n%s", got, want)
	}
}
