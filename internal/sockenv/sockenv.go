// Package sockenv reads and writes the environment variables that hand a socket from one process
// to the next: systemd's socket activation (LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES), read by serve
// and wrap, and the UCSPI-TCP variables (TCPREMOTEIP, TCPREMOTEPORT, ...) that serve's spawned
// handlers and the program wrap runs are given.
package sockenv

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// ListenFDsStart is the first descriptor systemd passes (SD_LISTEN_FDS_START).
const ListenFDsStart = 3

// ErrListenFDs marks LISTEN_FDS or LISTEN_FDNAMES that cannot be read.
var ErrListenFDs = errors.New("bad socket activation variables")

// ListenFDs returns the descriptors systemd passed this process (socket activation: LISTEN_PID
// names this process, LISTEN_FDS counts them from fd 3) and their names (LISTEN_FDNAMES; "" for
// each where it is not set). It returns none when LISTEN_PID is not this process's.
func ListenFDs() (fds []int, names []string, err error) {
	if os.Getenv("LISTEN_PID") != strconv.Itoa(os.Getpid()) {
		return nil, nil, nil
	}
	n, err := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	if err != nil || n < 0 || n > 1<<16 {
		return nil, nil, fmt.Errorf("%w: LISTEN_FDS=%q", ErrListenFDs, os.Getenv("LISTEN_FDS"))
	}
	names = make([]string, n)
	if v, ok := os.LookupEnv("LISTEN_FDNAMES"); ok && n > 0 {
		given := strings.Split(v, ":")
		if len(given) != n {
			return nil, nil, fmt.Errorf("%w: LISTEN_FDNAMES=%q names %d sockets, LISTEN_FDS=%d", ErrListenFDs, v, len(given), n)
		}
		copy(names, given)
	}
	fds = make([]int, 0, n) // not nil: LISTEN_PID is this process's
	for i := range n {
		fds = append(fds, ListenFDsStart+i)
	}
	return fds, names, nil
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
