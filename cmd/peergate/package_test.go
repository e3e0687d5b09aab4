package main

import (
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

// TestInstalledPackage checks the Debian package of dist/deb.sh as installed with dpkg -i: the
// binary, the man pages and the unit are where the package puts them, and the installed binary
// serves the installed example config, guarded (127.0.0.1 echoed, 127.0.0.2 refused). .ci/run
// builds and installs the package and sets PEERGATE_DEB_INSTALLED; elsewhere the test skips.
func TestInstalledPackage(t *testing.T) {
	if os.Getenv("PEERGATE_DEB_INSTALLED") == "" {
		t.Skip("PEERGATE_DEB_INSTALLED is not set: .ci/run installs dist/deb.sh's package and sets it")
	}
	out, err := exec.Command("/usr/bin/peergate", "version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "peergate ") {
		t.Fatalf("/usr/bin/peergate version: %v: %s", err, out)
	}
	for _, f := range []string{"/usr/share/man/man1/peergate.1.gz", "/usr/share/man/man1/peergate-serve.1.gz",
		"/lib/systemd/system/peergate.service", "/etc/peergate/serve.yaml", "/usr/share/doc/peergate/copyright"} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("installed package lacks %s: %v", f, err)
		}
	}
	if out, err := exec.Command("/usr/bin/peergate", "lint", "-config", "/etc/peergate/serve.yaml").CombinedOutput(); err != nil {
		t.Errorf("lint of the installed config: %v: %s", err, out)
	}
	p := startProc(t, "/usr/bin/peergate", "serve", "-config", "/etc/peergate/serve.yaml")
	addr := p.addr("echo")
	c := dial(t, "127.0.0.1", addr)
	roundTrip(t, c, "hello\n")
	c.Close()
	if !refused(t, "127.0.0.2", addr) {
		t.Error("127.0.0.2 was served by the installed example config, which admits 127.0.0.1 and ::1 only")
	}
	p.signal(syscall.SIGTERM)
	if status := p.wait(); status != 0 {
		t.Errorf("serve exited %d after SIGTERM", status)
	}
}
