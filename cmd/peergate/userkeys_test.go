package main

import (
	"errors"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
)

// TestUserKeysNeedRootOnlyToServe: a serve file with user/group keys is checked (check) by any
// user, as an operator checks the production file before a reload; serving it needs root, and a
// non-root serve refuses it naming the file, the line and the value.
func TestUserKeysNeedRootOnlyToServe(t *testing.T) {
	setpriv, err := exec.LookPath("setpriv")
	if err != nil || os.Geteuid() != 0 {
		t.Skip("needs root and setpriv(1) to run peergate as nobody")
	}
	if _, err := user.Lookup("nobody"); err != nil {
		t.Skipf("no user nobody here: %v", err)
	}
	dir, err := os.MkdirTemp("", "peergate-userkeys") // t.TempDir's parents are not nobody's to enter
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	exe, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	nb := filepath.Join(dir, "peergate")
	if err := os.WriteFile(nb, exe, 0o755); err != nil {
		t.Fatal(err)
	}
	conf := writeFile(t, dir, "serve.yaml", `acls:
  a: {default: deny, allow: [127.0.0.1]}
services:
  - name: s
    listen: ["127.0.0.1:0"]
    acl: a
    exec: [/bin/true]
    user: nobody
`)
	asNobody := func(args ...string) ([]byte, error) {
		u, _ := user.Lookup("nobody")
		return exec.Command(setpriv, append([]string{"--reuid=" + u.Uid, "--regid=" + u.Gid, "--clear-groups", "--", nb}, args...)...).CombinedOutput()
	}
	if out, err := asNobody("check", "-config", conf, "127.0.0.1"); err != nil {
		t.Errorf("check as nobody: %v\n%s", err, out)
	}
	out, err := asNobody("serve", "-config", conf, "-watch", "0")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || !strings.Contains(string(out), conf+`:8: "nobody"`) ||
		!strings.Contains(string(out), "need peergate to run as root") {
		t.Errorf("serve as nobody: %v\n%s\nwant it refused naming %s:8 and root", err, out, conf)
	}
}
