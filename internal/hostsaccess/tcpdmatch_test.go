package hostsaccess

import (
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/peergate/peergate/acl"
)

var accessLine = regexp.MustCompile(`(?m)^access:\s+(\w+)`)

// TestAgainstTcpdmatch checks translations against tcpd itself where it is installed (Debian's
// tcpd package): random files, as FuzzConvert makes them, are written to a directory, and
// tcpdmatch -d, which predicts what tcpd would do with them, judges addresses near their patterns.
// "delegated" (a twist option) counts as a deny. Skipped without tcpdmatch.
func TestAgainstTcpdmatch(t *testing.T) {
	tcpdmatch, err := exec.LookPath("tcpdmatch")
	if err != nil {
		t.Skip("tcpdmatch not installed (Debian: apt-get install tcpd)")
	}
	configs, perConfig := 60, 5
	if testing.Short() {
		configs = 20
	}
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(11, 7))
	checked := 0
	for try := 0; checked < configs && try < 50*configs; try++ {
		b := make([]byte, 256)
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		c := &chooser{b: b}
		allowText, denyText, pf := c.files(dir)
		opts := memFiles(pf)
		allow := Parse("hosts.allow", []byte(allowText), acl.Allow, opts)
		deny := Parse("hosts.deny", []byte(denyText), acl.Deny, opts)
		res, err := Translate("sshd", allow, deny)
		if err != nil {
			continue
		}
		checked++
		write := func(name, text string) {
			if err := os.WriteFile(name, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		write(filepath.Join(dir, "hosts.allow"), allowText)
		write(filepath.Join(dir, "hosts.deny"), denyText)
		for name, text := range pf {
			write(name, text)
		}
		a := acl.MustNew(res.Spec)
		probes := probeAddrs(allow, deny)
		for range perConfig {
			addr := c.addr()
			if rng.IntN(3) != 0 {
				addr = probes[rng.IntN(len(probes))]
			}
			if isBroadcast(addr) {
				continue
			}
			cmd := exec.Command(tcpdmatch, "-d", "sshd", addr.String())
			cmd.Dir = dir
			out, err := cmd.CombinedOutput()
			m := accessLine.FindSubmatch(out)
			if err != nil || m == nil {
				t.Fatalf("tcpdmatch %s: %v\n%s", addr, err, out)
			}
			tcpd := acl.Deny
			if string(m[1]) == "granted" {
				tcpd = acl.Allow
			}
			if got := a.Decide(addr); got.Action != tcpd {
				t.Errorf("%s: ACL says %s, tcpdmatch says %s\nhosts.allow:\n%shosts.deny:\n%spattern files: %q\nrules: default %s, %v",
					addr, got, m[1], allowText, denyText, pf, res.Spec.Default, res.Spec.Rules)
			}
		}
		if t.Failed() {
			return
		}
	}
	if checked < configs {
		t.Fatalf("only %d of %d random configurations translated", checked, configs)
	}
}
