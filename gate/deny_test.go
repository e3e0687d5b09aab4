package gate

import (
	"errors"
	"flag"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestDenyActionText: each action's name reads back as the action; other words are errors.
func TestDenyActionText(t *testing.T) {
	for _, a := range []DenyAction{DenyClose, DenyReset} {
		text, err := a.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var back DenyAction
		if err := back.UnmarshalText(text); err != nil || back != a || a.String() != string(text) {
			t.Errorf("%v: text %q reads back as %v, %v", a, text, back, err)
		}
	}
	if DenyClose.String() != "close" || DenyReset.String() != "reset" || DenyAction(9).String() != "DenyAction(9)" {
		t.Errorf("names: %v %v %v", DenyClose, DenyReset, DenyAction(9))
	}
	for _, w := range []string{"", "drop", "Reset", "close "} {
		if _, err := ParseDenyAction(w); !errors.Is(err, ErrDenyAction) {
			t.Errorf("ParseDenyAction(%q) = %v, want ErrDenyAction", w, err)
		}
	}
	if _, err := DenyAction(9).MarshalText(); !errors.Is(err, ErrDenyAction) {
		t.Errorf("MarshalText of DenyAction(9): %v", err)
	}
	// A flag, as peergate wrap's -on-deny.
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	var a DenyAction
	fs.TextVar(&a, "on-deny", DenyClose, "")
	if err := fs.Parse([]string{"-on-deny", "reset"}); err != nil || a != DenyReset {
		t.Errorf("-on-deny reset: %v, %v", a, err)
	}
}

// TestDenyFD: DenyFD ends a connection held as a bare descriptor as Deny does one held as a
// net.Conn: reset sends an RST, close a FIN.
func TestDenyFD(t *testing.T) {
	for _, a := range []DenyAction{DenyClose, DenyReset} {
		t.Run(a.String(), func(t *testing.T) {
			ln := listen(t, "tcp", "127.0.0.1:0")
			client, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			c, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			f, err := c.(*net.TCPConn).File()
			if err != nil {
				t.Fatal(err)
			}
			fd, err := unix.Dup(int(f.Fd()))
			f.Close()
			c.Close() // the socket lives on in fd
			if err != nil {
				t.Fatal(err)
			}
			if err := a.DenyFD(fd); err != nil {
				t.Fatal(err)
			}
			client.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err = io.ReadAll(client)
			if a == DenyReset && !errors.Is(err, syscall.ECONNRESET) || a == DenyClose && err != nil {
				t.Errorf("client read: %v", err)
			}
		})
	}
}
