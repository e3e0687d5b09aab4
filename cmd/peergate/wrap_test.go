package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/syslog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const wrapACL = "default: deny\nallow: [127.0.0.1]\n"

// acceptOne listens on loopback, connects from src, and returns the server side's file (what
// inetd would hand its child) and the client side.
func acceptOne(t *testing.T, src string) (*os.File, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client := dial(t, src, ln.Addr().String())
	t.Cleanup(func() { client.Close() })
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	f, err := sc.(*net.TCPConn).File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f, client
}

// runWrap starts `peergate wrap` the way inetd or systemd does and returns its exit status and
// log, and what the client read.
func runWrap(t *testing.T, style, src string, extra ...string) (status int, log, got string) {
	t.Helper()
	status, log, got, _ = runWrapRead(t, style, src, true, extra...)
	return status, log, got
}

// runWrapRead is runWrap, with the error of the client's read (nil at EOF). Without ping the
// client sends nothing (data left unread makes any close an RST).
func runWrapRead(t *testing.T, style, src string, ping bool, extra ...string) (status int, log, got string, readErr error) {
	t.Helper()
	cfg := writeFile(t, t.TempDir(), "acl.yaml", wrapACL)
	f, client := acceptOne(t, src)
	args := append([]string{"wrap", "-config", cfg}, extra...)
	args = append(args, "--", "/bin/sh", "-c", `echo "hello $TCPREMOTEIP from $PROTO, fds $LISTEN_FDS"; read l; echo "got $l"`)
	var cmd *exec.Cmd
	switch style {
	case "inetd": // the connection is fd 0 and 1
		cmd = exec.Command(bin, args...)
		cmd.Stdin, cmd.Stdout = f, f
	case "systemd": // the connection is fd 3; LISTEN_PID must be the pid of wrap itself
		cmd = exec.Command("/bin/sh", append([]string{"-c", `LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@"`, bin}, args...)...)
		cmd.ExtraFiles = []*os.File{f}
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close() // only the child holds the connection now
	client.SetDeadline(time.Now().Add(10 * time.Second))
	if ping {
		io.WriteString(client, "ping\n")
	}
	b, readErr := io.ReadAll(client)
	err := cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		status = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return status, stderr.String(), string(b), readErr
}

// TestWrapOnDeny: -on-deny reset and -reset end a denied connection with an RST, the default and
// -on-deny close with a FIN; an unknown action is a usage error.
func TestWrapOnDeny(t *testing.T) {
	for _, tc := range []struct {
		flags []string
		reset bool
	}{
		{nil, false},
		{[]string{"-on-deny", "close"}, false},
		{[]string{"-on-deny", "reset"}, true},
		{[]string{"-reset"}, true},
	} {
		status, log, _, err := runWrapRead(t, "inetd", "127.0.0.2", false, tc.flags...)
		if status != 1 || tc.reset != errors.Is(err, syscall.ECONNRESET) || !tc.reset && err != nil {
			t.Errorf("%q: exit %d, client read error %v, want reset %v\n%s", tc.flags, status, err, tc.reset, log)
		}
	}
	cfg := writeFile(t, t.TempDir(), "acl.yaml", wrapACL)
	var stderr bytes.Buffer
	if got := cmdWrap([]string{"-config", cfg, "-on-deny", "drop", "--", "/bin/true"}, io.Discard, &stderr); got != exitError ||
		!strings.Contains(stderr.String(), "drop") {
		t.Errorf("-on-deny drop: exit %d, %q", got, stderr.String())
	}
}

func TestWrap(t *testing.T) {
	for _, style := range []string{"inetd", "systemd"} {
		t.Run(style+"/allowed", func(t *testing.T) {
			status, log, got := runWrap(t, style, "127.0.0.1")
			if status != 0 || got != "hello 127.0.0.1 from TCP, fds \ngot ping\n" {
				t.Errorf("exit %d, client read %q\n%s", status, got, log)
			}
			if !strings.Contains(log, `msg="peer allowed" peer=127.0.0.1:`) || !strings.Contains(log, "rule=127.0.0.1/32") {
				t.Errorf("log %q", log)
			}
		})
		t.Run(style+"/denied", func(t *testing.T) {
			status, log, got := runWrap(t, style, "127.0.0.2")
			if status != 1 || got != "" {
				t.Errorf("exit %d, client read %q\n%s", status, got, log)
			}
			if !strings.Contains(log, `msg="peer denied" peer=127.0.0.2:`) || !strings.Contains(log, "rule=default") {
				t.Errorf("log %q", log)
			}
		})
	}
}

func TestWrapNotASocket(t *testing.T) {
	cfg := writeFile(t, t.TempDir(), "acl.yaml", wrapACL)
	cmd := exec.Command(bin, "wrap", "-config", cfg, "--", "/bin/true")
	cmd.Stdin = strings.NewReader("") // a pipe
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), "fd 0 is not a socket") {
		t.Errorf("%v: %s", err, out)
	}
}

func TestWrapUsage(t *testing.T) {
	cfg := writeFile(t, t.TempDir(), "acl.yaml", wrapACL)
	if _, errOut, status := runBin(t, "wrap", "-config", cfg); status != 2 || !strings.Contains(errOut, "no program to run") {
		t.Errorf("exit %d, %q", status, errOut)
	}
	if _, errOut, status := runBin(t, "wrap", "-config", cfg, "-log", "file", "--", "x"); status != 2 || !strings.Contains(errOut, "-log must be") {
		t.Errorf("exit %d, %q", status, errOut)
	}
}

// TestWrapSyslogSeverity: wrap logs to syslog at tcpd's severities (refusals at warning, errors
// at err, the rest at info), facility auth. Before, every line went out at auth.info.
func TestWrapSyslogSeverity(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	w, err := syslog.Dial("unixgram", path, syslog.LOG_INFO|syslog.LOG_AUTH, "peergate")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	log := syslogLogger(newFlags("wrap", io.Discard), w)
	for _, tc := range []struct {
		log  func(msg string, args ...any)
		msg  string
		want syslog.Priority
	}{
		{log.Info, "peer allowed", syslog.LOG_INFO},
		{log.Warn, "peer denied", syslog.LOG_WARNING},
		{log.Error, "wrap: cannot run program; connection closed", syslog.LOG_ERR},
		{log.Debug, "not enabled", -1},
		{log.Warn, "peer not judged; connection closed", syslog.LOG_WARNING},
	} {
		tc.log(tc.msg, "peer", "127.0.0.2:1234")
		if tc.want < 0 {
			continue
		}
		ln.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 4096)
		n, err := ln.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		line := string(buf[:n])
		want := fmt.Sprintf("<%d>", syslog.LOG_AUTH|tc.want)
		if !strings.HasPrefix(line, want) || !strings.Contains(line, tc.msg) {
			t.Errorf("%q went out as %q; want priority %s (auth.%d)", tc.msg, line, want, tc.want)
		}
	}
}

// TestWrapNoSyslog: with -log syslog and no syslog to be reached, wrap says so on stderr (which
// is not the client's socket here) and logs there. Before, it stayed silent.
func TestWrapNoSyslog(t *testing.T) {
	if _, err := os.Stat("/dev/log"); err == nil {
		t.Skip("this machine has a syslog socket")
	}
	status, log, got := runWrap(t, "inetd", "127.0.0.2", "-log", "syslog")
	if status != 1 || got != "" {
		t.Errorf("exit %d, client read %q", status, got)
	}
	if !strings.Contains(log, "syslog unavailable") || !strings.Contains(log, `level=WARN msg="peer denied"`) {
		t.Errorf("stderr %q; want a line that syslog is unavailable, then the denial at WARN", log)
	}
}
