package serve

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestSpawnAsUser: a handler of a service with user/group runs with that uid and gid and no
// supplementary groups.
func TestSpawnAsUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("user and group need root: this test runs as uid", os.Geteuid())
	}
	for _, tc := range []struct {
		name, keys string
		want       string // id -u, id -g, id -G
	}{
		{"user", "    user: nobody\n", "65534\n65534\n65534\n"},
		{"numbers", "    user: \"65534\"\n    group: \"4242\"\n", "65534\n4242\n4242\n"},
		{"group alone", "    group: \"4242\"\n", "0\n4242\n4242\n"},
		{"neither", "", "0\n0\n"}, // root keeps its own groups: only the first two lines are compared
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startLogged(t, "acls:\n  lo: {default: deny, allow: [127.0.0.1]}\nservices:\n  - name: p\n    listen: [\"127.0.0.1:0\"]\n    acl: lo\n"+
				"    exec: [/bin/sh, -c, \"id -u; id -g; id -G\"]\n"+tc.keys, slog.NewTextHandler(io.Discard, nil))
			c, err := dialFrom("127.0.0.1", s.Addrs()["p"][0].String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			out, err := io.ReadAll(c)
			if err != nil {
				t.Fatal(err)
			}
			if got := string(out); !strings.HasPrefix(got, tc.want) || tc.keys != "" && got != tc.want {
				t.Errorf("the handler printed %q, want %q", got, tc.want)
			}
		})
	}
}

// TestBindHint: a bind refused on a port below 1024 says how to grant CAP_NET_BIND_SERVICE;
// other errors pass unchanged.
func TestBindHint(t *testing.T) {
	eacces := &net.OpError{Op: "listen", Net: "tcp", Err: os.NewSyscallError("bind", syscall.EACCES)}
	for _, tc := range []struct {
		addr string
		err  error
		hint bool
	}{
		{"127.0.0.1:80", eacces, true},
		{"[::1]:443", eacces, true},
		{":1023", eacces, true},
		{"127.0.0.1:1024", eacces, false},
		{"127.0.0.1:80", &net.OpError{Op: "listen", Net: "tcp", Err: os.NewSyscallError("bind", syscall.EADDRINUSE)}, false},
	} {
		got := bindHint(tc.addr, tc.err)
		if !errors.Is(got, tc.err) {
			t.Errorf("%s: %v lost the error it wraps", tc.addr, got)
		}
		if hint := errors.Is(got, ErrPrivilegedPort); hint != tc.hint {
			t.Errorf("%s: %v: hint %v, want %v", tc.addr, got, hint, tc.hint)
		}
		if tc.hint && (!strings.Contains(got.Error(), "setcap cap_net_bind_service=+ep /") || !strings.Contains(got.Error(), "AmbientCapabilities=CAP_NET_BIND_SERVICE")) {
			t.Errorf("%s: %v: no setcap or AmbientCapabilities advice", tc.addr, got)
		}
	}
	if os.Geteuid() == 0 {
		return
	}
	// Not root: a real bind to a low port (where the kernel keeps them privileged) says it too.
	if _, err := listen("127.0.0.1:1"); err != nil && errors.Is(err, syscall.EACCES) && !errors.Is(err, ErrPrivilegedPort) {
		t.Errorf("listen 127.0.0.1:1: %v: no hint", err)
	}
}

// TestUnixListenPerm: a Unix listen entry's mode, owner and group are set on the socket file
// right after it is bound.
func TestUnixListenPerm(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chown needs root: this test runs as uid", os.Geteuid())
	}
	for _, tc := range []struct {
		name, entry string
		mode        os.FileMode
		uid, gid    uint32
	}{
		{"mode and group", `{unix: %s, mode: "0660", group: "4242"}`, 0o660, 0, 4242},
		{"owner by name", `{unix: %s, owner: nobody, mode: "0600"}`, 0o600, 65534, 0},
		{"mode alone", `{unix: %s, mode: "0666"}`, 0o666, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "s.sock")
			startLogged(t, "acls:\n  lo: {default: deny, unix: allow}\nservices:\n  - name: p\n    listen: ["+fmt.Sprintf(tc.entry, sock)+"]\n    acl: lo\n    exec: [/bin/true]\n",
				slog.NewTextHandler(io.Discard, nil))
			fi, err := os.Stat(sock)
			if err != nil {
				t.Fatal(err)
			}
			st := fi.Sys().(*syscall.Stat_t)
			if fi.Mode().Perm() != tc.mode || st.Uid != tc.uid || st.Gid != tc.gid {
				t.Errorf("socket %v uid %d gid %d, want %v %d %d", fi.Mode().Perm(), st.Uid, st.Gid, tc.mode, tc.uid, tc.gid)
			}
		})
	}
}
