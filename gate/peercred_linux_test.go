package gate

import (
	"bufio"
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/peergate/peergate/acl"
)

// TestHelperUnixDial is not a test: run as a child (by TestUnixCreds, under another uid) it dials
// the Unix socket named by PEERGATE_UNIX_DIAL and prints what the server writes.
func TestHelperUnixDial(t *testing.T) {
	path := os.Getenv("PEERGATE_UNIX_DIAL")
	if path == "" {
		t.Skip("helper for TestUnixCreds")
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		fmt.Println("dial:", err)
		os.Exit(3)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, _ := bufio.NewReader(c).ReadString('\n') // "ok\n" when allowed, EOF when denied
	fmt.Printf("read %q pid=%d\n", b, os.Getpid())
	os.Exit(0)
}

// TestUnixCreds judges real Unix-domain clients by SO_PEERCRED: this process (root) and a child
// run as nobody (uid and gid 65534) by setpriv, against uid and gid rules.
func TestUnixCreds(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, to run a child as another uid (setpriv --reuid)")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("needs setpriv (util-linux) to run a child as another uid")
	}
	// A directory nobody can reach, holding a copy of this test binary and the socket.
	dir, err := os.MkdirTemp("", "peergate-creds")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "gate.test")
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}

	rule := func(kind acl.UnixKind, id uint32, act acl.Action, line int) acl.UnixRule {
		return acl.UnixRule{Kind: kind, ID: id, Action: act, Origin: acl.Origin{File: "acl.yaml", Line: line}}
	}
	for _, tc := range []struct {
		name             string
		def              acl.Action
		rules            []acl.UnixRule
		rootOK, nobodyOK bool
		nobodyBy         string // the rule logged for the nobody client
	}{
		{"allow root's uid", acl.Deny, []acl.UnixRule{rule(acl.UID, 0, acl.Allow, 3)}, true, false, "rule=default"},
		{"allow nobody's uid", acl.Deny, []acl.UnixRule{rule(acl.UID, 65534, acl.Allow, 3)}, false, true, ""},
		{"allow nobody's gid", acl.Deny, []acl.UnixRule{rule(acl.GID, 65534, acl.Allow, 4)}, false, true, ""},
		{"deny nobody's uid, default allow", acl.Allow, []acl.UnixRule{rule(acl.UID, 65534, acl.Deny, 5)}, true, false, `rule="uid 65534" origin=acl.yaml:5`},
		{"deny by gid beats allow by uid", acl.Deny, []acl.UnixRule{rule(acl.UID, 65534, acl.Allow, 3), rule(acl.GID, 65534, acl.Deny, 4), rule(acl.UID, 0, acl.Allow, 5)},
			true, false, `rule="gid 65534" origin=acl.yaml:4`},
		{"plain unix: allow", acl.Allow, nil, true, true, ""},
		{"plain unix: deny", acl.Deny, nil, false, false, "rule=default"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, "s.sock")
			os.Remove(path)
			inner := listen(t, "unix", path)
			if err := os.Chmod(path, 0o777); err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			var logs bytes.Buffer
			events := make(chan Event, 4)
			a := acl.MustNew(acl.Spec{Default: acl.Deny, Unix: tc.def, UnixRules: tc.rules})
			g := NewListener(inner, a, Options{
				Logger:     slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &mu}, nil)),
				OnDecision: func(ev Event) { events <- ev },
			})
			defer g.Close()
			server(t, g)

			// This process: root.
			c, err := net.Dial("unix", path)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := bufRead(c)
			c.Close()
			ev := nextEvent(t, events)
			if (got == "ok\n") != tc.rootOK || ev.Decision.Allowed() != tc.rootOK {
				t.Errorf("root: read %q, decision %v, want allowed=%v", got, ev.Decision, tc.rootOK)
			}
			if !ev.Peer.Unix || !ev.Peer.Cred.Valid || ev.Peer.Cred.UID != 0 || ev.Peer.Cred.PID != int32(os.Getpid()) {
				t.Errorf("root: peer %+v, want uid 0 pid %d", ev.Peer, os.Getpid())
			}

			// A child running as nobody.
			cmd := exec.Command(setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", bin, "-test.run=^TestHelperUnixDial$")
			cmd.Env = append(os.Environ(), "PEERGATE_UNIX_DIAL="+path)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("child: %v\n%s", err, out)
			}
			ev = nextEvent(t, events)
			childOK := strings.Contains(string(out), `read "ok\n"`)
			if childOK != tc.nobodyOK || ev.Decision.Allowed() != tc.nobodyOK {
				t.Errorf("nobody: %s, decision %v, want allowed=%v", out, ev.Decision, tc.nobodyOK)
			}
			cr := ev.Peer.Cred
			if !cr.Valid || cr.UID != 65534 || cr.GID != 65534 || !strings.Contains(string(out), fmt.Sprintf("pid=%d", cr.PID)) {
				t.Errorf("nobody: peer %+v; child said %s", ev.Peer, out)
			}
			g.Close()
			mu.Lock()
			l := logs.String()
			mu.Unlock()
			if tc.nobodyBy != "" && (!strings.Contains(l, "peer=\"unix uid=65534 gid=65534 pid=") || !strings.Contains(l, tc.nobodyBy)) {
				t.Errorf("log lacks the nobody peer and %s:\n%s", tc.nobodyBy, l)
			}
		})
	}
}

func nextEvent(t *testing.T, ch <-chan Event) Event {
	t.Helper()
	select {
	case ev := <-ch:
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no decision")
		return Event{}
	}
}
