package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// bin is the peergate binary built once for the end-to-end tests, which run it as a real process.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "peergate-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "peergate")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	if out, err := exec.Command("go", append(args, ".")...).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building peergate: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// runBin runs peergate with args and returns its stdout, stderr and exit status.
func runBin(t *testing.T, args ...string) (stdout, stderr string, status int) {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		status = ee.ExitCode()
	default:
		t.Fatalf("running peergate: %v", err)
	}
	return out.String(), errb.String(), status
}

func writeFile(t *testing.T, dir, name, text string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	cfg := writeFile(t, dir, "office.yaml", "default: deny\nallow: [10.0.0.0/8]\ndeny: [10.66.0.0/16]\nunix: allow\n")
	serveCfg := writeFile(t, dir, "serve.yaml", "acls:\n  a: {default: allow}\n  b: {default: deny}\n")
	for _, tc := range []struct {
		name   string
		args   []string
		status int
		out    []string // lines of stdout, fields separated by single spaces
		errSub string
	}{
		{"allowed", []string{"-config", cfg, "10.1.2.3"}, 0, []string{"10.1.2.3 allow 10.0.0.0/8 " + cfg + ":2"}, ""},
		{"denied by rule", []string{"-config", cfg, "10.66.1.1"}, 1, []string{"10.66.1.1 deny 10.66.0.0/16 " + cfg + ":3"}, ""},
		{"mapped address", []string{"-config", cfg, "::ffff:10.66.1.1"}, 1, []string{"::ffff:10.66.1.1 deny 10.66.0.0/16 " + cfg + ":3"}, ""},
		{"default", []string{"-config", cfg, "192.0.2.1", "10.0.0.1"}, 1, []string{"192.0.2.1 deny default", "10.0.0.1 allow 10.0.0.0/8 " + cfg + ":2"}, ""},
		{"unix", []string{"-config", cfg, "unix"}, 0, []string{"unix allow unix policy"}, ""},
		{"bracketed v6", []string{"-config", cfg, "[2001:db8::1]"}, 1, []string{"[2001:db8::1] deny default"}, ""},
		{"not an address", []string{"-config", cfg, "example.com"}, 2, nil, `"example.com" is not an IP address`},
		{"no address", []string{"-config", cfg}, 2, nil, "give one or more addresses"},
		{"no config", []string{"10.0.0.1"}, 2, nil, "-config FILE is required"},
		{"several ACLs need -acl", []string{"-config", serveCfg, "10.0.0.1"}, 2, nil, "choose one with -acl NAME"},
		{"-acl picks", []string{"-config", serveCfg, "-acl", "b", "10.0.0.1"}, 1, []string{"10.0.0.1 deny default"}, ""},
		{"-acl unknown", []string{"-config", serveCfg, "-acl", "c", "10.0.0.1"}, 2, nil, `"c"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, status := runBin(t, append([]string{"check"}, tc.args...)...)
			if status != tc.status {
				t.Fatalf("exit %d, want %d; stderr %s", status, tc.status, errOut)
			}
			var lines []string
			for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
				if l != "" {
					lines = append(lines, strings.Join(strings.Fields(l), " "))
				}
			}
			if fmt.Sprint(lines) != fmt.Sprint(tc.out) {
				t.Errorf("stdout %q, want %q", lines, tc.out)
			}
			if !strings.Contains(errOut, tc.errSub) {
				t.Errorf("stderr %q does not contain %q", errOut, tc.errSub)
			}
		})
	}
}

func TestLint(t *testing.T) {
	dir := t.TempDir()
	clean := writeFile(t, dir, "clean.yaml", "default: deny\nallow: [10.0.0.0/8]\n")
	warn := writeFile(t, dir, "warn.yaml", "default: deny\nallow: [10.0.0.0/8, 10.0.0.0/8]\ndeny: [192.0.2.0/24]\n")
	broken := writeFile(t, dir, "broken.yaml", "default: deny\nallow: [10.0.0.1/8]\ntypo: 1\n")
	twoDocs := writeFile(t, dir, "two.yaml", "default: allow\n---\ndeny: [0.0.0.0/0]\n")
	twice := writeFile(t, dir, "twice.yaml", "acls:\n  x: {default: deny}\nservices:\n"+
		"  - {name: strict, acl: x, upstream: \"y:1\", listen: [\"127.0.0.1:7000\"]}\n"+
		"  - {name: open, acl: x, upstream: \"y:1\", listen: [\":7000\"]}\n")
	svc := "acls:\n  a: {default: deny, allow: [10.0.0.0/8]}\nservices:\n  - name: web\n    listen: [\"127.0.0.1:1\"]\n    acl: a\n    upstream: 127.0.0.1:2\n"
	trustsAll := writeFile(t, dir, "trusts-all.yaml", svc+"    trusted_proxies: [10.0.0.1, \"::/0\", 0.0.0.0/1, 128.0.0.0/1]\n")
	trustsSome := writeFile(t, dir, "trusts-some.yaml", svc+"    trusted_proxies: [10.0.0.1, \"2001:db8::/32\", 0.0.0.0/1]\n")
	for _, tc := range []struct {
		name   string
		file   string
		status int
		out    []string
		errSub []string
	}{
		{"clean", clean, 0, nil, nil},
		{"warnings", warn, 1, []string{warn + ":2: duplicate: allow 10.0.0.0/8: same rule at " + warn + ":2", warn + ":3: redundant: deny 192.0.2.0/24: changes nothing: the default already denies it"}, []string{"2 warning(s)"}},
		{"trusted_proxies covers everything", trustsAll, 1, []string{trustsAll + ":8: service web: trusts-all: trusted_proxies covers all of IPv4 and IPv6: " +
			"any client there can send a PROXY header and be judged as whatever address it writes in it; list only your proxies"}, []string{"1 warning(s)"}},
		{"trusted_proxies covers some", trustsSome, 0, nil, nil},
		{"second document", twoDocs, 2, nil, []string{twoDocs + `:2: syntax error: more than one YAML document`}},
		{"listen overlap", twice, 2, nil, []string{twice + `:5: ":7000": invalid config: listen address overlaps another: service open: "127.0.0.1:7000" (line 4) of service strict takes it already`}},
		{"errors", broken, 2, nil, []string{"2 errors", broken + `:2: "10.0.0.1/8": prefix has host bits set (did you mean 10.0.0.0/8?)`, broken + `:3: "typo": unknown key`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, status := runBin(t, "lint", "-config", tc.file)
			if status != tc.status {
				t.Fatalf("exit %d, want %d; stderr %s", status, tc.status, errOut)
			}
			var lines []string
			if s := strings.TrimSpace(out); s != "" {
				lines = strings.Split(s, "\n")
			}
			if fmt.Sprint(lines) != fmt.Sprint(tc.out) {
				t.Errorf("stdout %q, want %q", lines, tc.out)
			}
			for _, sub := range tc.errSub {
				if !strings.Contains(errOut, sub) {
					t.Errorf("stderr %q does not contain %q", errOut, sub)
				}
			}
		})
	}
}

func TestShippedExamplesLintClean(t *testing.T) {
	for _, f := range []string{"../../examples/quickstart/serve.yaml", "../../examples/inetd/office.yaml"} {
		if out, errOut, status := runBin(t, "lint", "-config", f); status != 0 {
			t.Errorf("lint %s: exit %d\n%s%s", f, status, out, errOut)
		}
	}
}

func TestUsage(t *testing.T) {
	if _, errOut, status := runBin(t); status != 2 || !strings.Contains(errOut, "usage:") {
		t.Errorf("no args: exit %d, %q", status, errOut)
	}
	if _, errOut, status := runBin(t, "frobnicate"); status != 2 || !strings.Contains(errOut, `unknown command "frobnicate"`) {
		t.Errorf("unknown command: exit %d, %q", status, errOut)
	}
}
