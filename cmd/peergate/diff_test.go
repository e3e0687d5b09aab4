package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// TestDiff runs "peergate diff" on bare ACL files, a serve file with several ACLs and the output of
// "peergate convert", and checks the changes, the counts and the exit status.
func TestDiff(t *testing.T) {
	dir := t.TempDir()
	old := writeFile(t, dir, "old.yaml", "default: deny\nallow: [10.0.0.0/8, \"2001:db8::/32\"]\n")
	same := writeFile(t, dir, "same.yaml", "default: deny\nallow: [10.0.0.0/9, 10.128.0.0/9, \"2001:db8::/32\"]\n")
	hole := writeFile(t, dir, "hole.yaml", "default: deny\nallow: [10.0.0.0/8, \"2001:db8::/32\"]\ndeny: [10.66.0.1, 10.66.0.2/31]\nunix: allow\n")
	serve := writeFile(t, dir, "serve.yaml", `acls:
  office: {default: deny, allow: [10.0.0.0/8, "2001:db8::/32"]}
  lab: {default: deny, allow: [10.0.0.0/8, 192.168.0.0/16, "2001:db8::/32"]}
services: []
`)
	hostsAllow := writeFile(t, dir, "hosts.allow", "sshd: 10.0.0.0/255.0.0.0 [2001:db8::]/32\n")
	hostsDeny := writeFile(t, dir, "hosts.deny", "ALL: ALL\n")
	conv := filepath.Join(dir, "conv.yaml")
	if _, stderr, status := runBin(t, "convert", "-daemon", "sshd", "-o", conv, hostsAllow, hostsDeny); status != 0 {
		t.Fatalf("convert: %d %s", status, stderr)
	}
	for _, tc := range []struct {
		name   string
		args   []string
		status int
		out    []string // lines or substrings of stdout, in order
		err    string
	}{
		{"no change", []string{"-config", old, same}, 0, []string{"no change"}, ""},
		{"converted hosts.allow decides alike", []string{"-config", conv, old}, 0, []string{"no change"}, ""},
		{"hole punched", []string{"-config", old, hole}, 1, []string{
			"10.66.0.1/32  allow -> deny  1          10.0.0.0/8 " + old + ":2  10.66.0.1/32 " + hole + ":3",
			"10.66.0.2/31  allow -> deny  2          10.0.0.0/8 " + old + ":2  10.66.0.2/31 " + hole + ":3",
			"unix          deny -> allow",
			"2 prefixes in 2 ranges change verdict: IPv4 3 now denied, 0 now allowed",
			"Unix-domain peers now allowed by default"}, ""},
		{"unix entries", []string{"-config", old, writeFile(t, dir, "uids.yaml", "default: deny\nallow: [10.0.0.0/8, \"2001:db8::/32\"]\nunix: {allow_uids: [0]}\n")}, 1,
			[]string{"unix  entries", "none", "allow uid 0 (", "0 prefixes in 0 ranges", "the unix policy's uid/gid entries change"}, ""},
		{"reverse", []string{"-config", hole, old}, 1, []string{"10.66.0.1/32  deny -> allow", "IPv4 0 now denied, 3 now allowed"}, ""},
		{"serve file, -acl for each side", []string{"-config", serve, "-acl", "office", serve, "-acl", "lab"}, 1,
			[]string{"192.168.0.0/16  deny -> allow  65536      default " + serve + "  192.168.0.0/16 " + serve + ":3"}, ""},
		{"one -acl names both sides", []string{"-config", serve, "-acl", "lab", serve}, 0, []string{"no change"}, ""},
		{"serve file against a bare file", []string{"-config", old, serve, "-acl", "office"}, 0, []string{"no change"}, ""},
		{"default flipped, IPv6 counted", []string{"-config", old, writeFile(t, dir, "open.yaml", "default: allow\n")}, 1,
			[]string{"0.0.0.0/5", "IPv4 0 now denied, 4278190080 now allowed; IPv6 0 now denied, 340282366841710300949110269833929293824 now allowed"}, ""}, // 2^128 - 2^96 (2001:db8::/32) - 2^32 (::ffff:0:0/96, judged as IPv4),
		{"several ACLs, none named", []string{"-config", serve, old}, 2, nil, "choose one with -acl NAME"},
		{"missing NEW", []string{"-config", old}, 2, nil, "need -config OLD and NEW"},
		{"two NEW", []string{"-config", old, same, hole}, 2, nil, "more than one NEW"},
		{"bad file", []string{"-config", old, writeFile(t, dir, "bad.yaml", "default: deny\nallow: [10.0.0.1/8]\n")}, 2, nil, "bad.yaml:2"},
		{"unknown flag", []string{"-config", old, "-frob", same}, 2, nil, "flag provided but not defined: -frob"},
		{"help", []string{"-h"}, 0, nil, "usage: peergate diff"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, status := runBin(t, append([]string{"diff"}, tc.args...)...)
			if status != tc.status || !strings.Contains(stderr, tc.err) {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s (want %q)", status, tc.status, stdout, stderr, tc.err)
			}
			rest := stdout
			for _, want := range tc.out {
				i := strings.Index(rest, want)
				if i < 0 {
					t.Fatalf("stdout lacks %q (in order)\n%s", want, stdout)
				}
				rest = rest[i+len(want):]
			}
		})
	}

	// -json: the same changes, machine-readable.
	stdout, stderr, status := runBin(t, "diff", "-json", "-config", old, hole)
	if status != 1 {
		t.Fatalf("-json: exit %d: %s", status, stderr)
	}
	var rep diffReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("-json: %v\n%s", err, stdout)
	}
	if len(rep.Changes) != 2 || strings.Join(rep.Changes[1].Prefixes, " ") != "10.66.0.2/31" ||
		rep.Changes[1].Addresses != "2" || rep.Changes[1].Old.Rule != "10.0.0.0/8" || rep.Changes[1].New.Action != "deny" ||
		rep.Changes[1].New.Origin != hole+":3" || rep.Unix == nil || rep.Unix.New != "allow" || rep.Summary["ipv4_now_denied"] != "3" {
		t.Errorf("-json: %+v", rep)
	}
}
