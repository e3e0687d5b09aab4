package main

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
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
	io.WriteString(client, "ping\n")
	b, _ := io.ReadAll(client)
	err := cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		status = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return status, stderr.String(), string(b)
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
