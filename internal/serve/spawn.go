package serve

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"syscall"
)

// spawn starts prog with the connection as its standard input and output, like inetd's "nowait"
// services, and the UCSPI variables describing the connection in its environment (PROTO,
// TCPREMOTEIP, TCPREMOTEPORT, TCPLOCALIP, TCPLOCALPORT). Its standard error is peergate's. The
// caller still owns c and should close it once spawn returns: the child has its own copy of the fd.
func spawn(c net.Conn, argv []string) (*exec.Cmd, error) {
	sc, ok := c.(interface{ File() (*os.File, error) })
	if !ok {
		return nil, fmt.Errorf("spawn: %T has no file descriptor", c)
	}
	f, err := sc.File() // a dup in blocking mode, which is what a child expects
	if err != nil {
		return nil, fmt.Errorf("spawn: %w", err)
	}
	defer f.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = f, f, os.Stderr
	cmd.Env = append(os.Environ(), ucspi(c)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // signals to peergate's group spare the child
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("spawn %s: %w", argv[0], err)
	}
	return cmd, nil
}

// ucspi returns the UCSPI-TCP environment for c (see tcpserver(1)).
func ucspi(c net.Conn) []string {
	remote, rok := addrPort(c.RemoteAddr())
	local, lok := addrPort(c.LocalAddr())
	if !rok || !lok {
		return []string{"PROTO=UNIX"}
	}
	return UCSPI(remote, local)
}

// UCSPI returns the UCSPI-TCP variables (PROTO, TCPREMOTEIP, TCPREMOTEPORT, TCPLOCALIP,
// TCPLOCALPORT) for a connection between remote and local, as "NAME=value" strings.
func UCSPI(remote, local netip.AddrPort) []string {
	return []string{
		"PROTO=TCP",
		"TCPREMOTEIP=" + remote.Addr().String(),
		"TCPREMOTEPORT=" + strconv.Itoa(int(remote.Port())),
		"TCPLOCALIP=" + local.Addr().String(),
		"TCPLOCALPORT=" + strconv.Itoa(int(local.Port())),
	}
}

func addrPort(a net.Addr) (netip.AddrPort, bool) {
	t, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}, false
	}
	ap := t.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port()), true
}
