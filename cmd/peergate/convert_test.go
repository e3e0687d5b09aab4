package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestConvert converts a hosts.allow and hosts.deny pair, then asks "peergate check" about
// addresses on both sides of every boundary: the answers must be tcpd's (and, where Debian's tcpd
// package is installed, tcpdmatch's own).
func TestConvert(t *testing.T) {
	dir := t.TempDir()
	trusted := writeFile(t, dir, "trusted", "192.0.2.7 198.51.100.0/24\n[2001:db9:ffff::]/48\n")
	allow := writeFile(t, dir, "hosts.allow", "# office and VPN, but not the lab\n"+
		"sshd: 10. EXCEPT 10.66. EXCEPT 10.66.1.0/255.255.255.0 : spawn logger %a\n"+
		"sshd, in.ftpd : [2001:db8::]/32 EXCEPT [2001:db8:bad::]/48\n"+
		"ALL: "+trusted+"\n"+
		"in.ftpd: .example.com\n") // not for sshd: no error
	deny := writeFile(t, dir, "hosts.deny", "sshd: 172.16.0.0/12 : allow\nALL: ALL\n")
	out := filepath.Join(dir, "sshd.yaml")

	stdout, stderr, status := runBin(t, "convert", "-daemon", "sshd", allow, deny)
	if status != 0 {
		t.Fatalf("exit %d: %s", status, stderr)
	}
	want := `# peergate ACL for the daemon "sshd", converted from TCP Wrappers by "peergate convert":
#   hosts.allow: DIR/hosts.allow
#   hosts.deny:  DIR/hosts.deny
# It decides every address as tcpd does: the first entry of hosts.allow that matches allows,
# else the first of hosts.deny denies, else allow. Each comment names the entry that decides.
default: deny   # DIR/hosts.deny:2
unix: deny      # a client without an address, as tcpd judges one: DIR/hosts.deny:2
allow:
  - 10.0.0.0/8            # DIR/hosts.allow:2
  - 10.66.1.0/24          # DIR/hosts.allow:2
  - 172.16.0.0/12         # DIR/hosts.deny:1
  - 192.0.2.7/32          # DIR/hosts.allow:4
  - 198.51.100.0/24       # DIR/hosts.allow:4
  - "2001:db8::/32"       # DIR/hosts.allow:3
  - "2001:db9:ffff::/48"  # DIR/hosts.allow:4
deny:
  - 10.66.0.0/16          # DIR/hosts.deny:2
  - "2001:db8:bad::/48"   # DIR/hosts.deny:2
`
	if want = strings.ReplaceAll(want, "DIR", dir); stdout != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", stdout, want)
	}
	if !strings.Contains(stderr, `warning: `+allow+`:2: "spawn logger %a": spawn: dropped`) {
		t.Errorf("stderr %q lacks the dropped option's warning", stderr)
	}

	if _, stderr, status = runBin(t, "convert", "-daemon", "sshd", "-o", out, allow, deny); status != 0 {
		t.Fatalf("-o: exit %d: %s", status, stderr)
	}
	if b, err := os.ReadFile(out); err != nil || string(b) != stdout {
		t.Fatalf("-o wrote %q (%v), stdout had %q", b, err, stdout)
	}
	if !strings.Contains(stderr, "default deny, 9 rules, from 5 entries for sshd") {
		t.Errorf("-o summary: %q", stderr)
	}
	if _, stderr, status := runBin(t, "lint", "-config", out); status != 0 {
		t.Errorf("lint of the converted ACL: exit %d: %s", status, stderr)
	}

	tcpdmatch, _ := exec.LookPath("tcpdmatch")
	for addr, want := range map[string]string{
		"10.0.0.1": "allow", "10.65.255.255": "allow", "10.66.0.1": "deny", "10.66.1.9": "allow",
		"10.66.2.0": "deny", "10.255.255.255": "allow", "11.0.0.0": "deny", "9.255.255.255": "deny",
		"172.16.0.1": "allow", "172.32.0.0": "deny", "192.0.2.7": "allow", "192.0.2.8": "deny",
		"198.51.100.255": "allow", "2001:db8::1": "allow", "2001:db8:bad::1": "deny",
		"2001:db9:ffff::1": "allow", "2001:db9::": "deny", "::1": "deny", "::ffff:10.66.1.9": "allow",
		"::ffff:10.66.2.0": "deny",
	} {
		stdout, stderr, status := runBin(t, "check", "-config", out, addr)
		if f := strings.Fields(stdout); len(f) < 2 || f[1] != want || (status == 0) != (want == "allow") {
			t.Errorf("check %s: %q (exit %d, %s), want %s", addr, stdout, status, stderr, want)
		}
		if tcpdmatch == "" {
			continue
		}
		// tcpdmatch -d reads hosts.allow and hosts.deny in its working directory.
		cmd := exec.Command(tcpdmatch, "-d", "sshd", addr)
		cmd.Dir = dir
		b, err := cmd.CombinedOutput()
		m := regexp.MustCompile(`access:\s+(\w+)`).FindSubmatch(b)
		if err != nil || m == nil {
			t.Fatalf("tcpdmatch: %v\n%s", err, b)
		}
		if tcpd := map[string]string{"granted": "allow"}[string(m[1])]; tcpd != want && !(tcpd == "" && want == "deny") {
			t.Errorf("%s: tcpdmatch says %s, the converted ACL %s", addr, m[1], want)
		}
	}
}

func TestConvertErrors(t *testing.T) {
	dir := t.TempDir()
	allow := writeFile(t, dir, "hosts.allow", "sshd: 10. EXCEPT lab.example.com\nsshd: KNOWN\nsshd: 10.1.2.3/8\n")
	deny := writeFile(t, dir, "hosts.deny", "ALL: ALL\n")
	for _, tc := range []struct {
		name   string
		args   []string
		errSub []string
	}{
		{"host names", []string{"-daemon", "sshd", allow, deny}, []string{
			"peergate convert: 3 errors:",
			allow + `:1: "lab.example.com": not supported: host names need DNS; peergate judges addresses only`,
			allow + `:2: "KNOWN": not supported`,
			allow + `:3: "10.1.2.3/8": invalid address pattern: host bits set: tcpd never matches it (did you mean 10.0.0.0/8?)`,
		}},
		{"no daemon", []string{allow, deny}, []string{"usage: peergate convert -daemon NAME"}},
		{"one file", []string{"-daemon", "sshd", allow}, []string{"usage: peergate convert"}},
		{"missing file", []string{"-daemon", "sshd", filepath.Join(dir, "nope"), deny}, []string{"no such file", "give /dev/null for it"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(dir, "out.yaml")
			stdout, stderr, status := runBin(t, append([]string{"convert", "-o", out}, tc.args...)...)
			if status != 2 || stdout != "" {
				t.Fatalf("exit %d, stdout %q; want 2 and nothing", status, stdout)
			}
			for _, s := range tc.errSub {
				if !strings.Contains(stderr, s) {
					t.Errorf("stderr %q\ndoes not contain %q", stderr, s)
				}
			}
			if _, err := os.Stat(out); err == nil {
				t.Error("an output file was written")
			}
		})
	}
	// Other daemons' entries do not matter, and /dev/null is an empty file.
	if stdout, stderr, status := runBin(t, "convert", "-daemon", "in.ftpd", allow, "/dev/null"); status != 0 || !strings.Contains(stdout, "default: allow") {
		t.Errorf("in.ftpd: exit %d\n%s%s", status, stdout, stderr)
	}
}
