//go:build unix

// Package kerneltest holds what the tests of the kernel filter share, in gate/kfilter,
// internal/serve and cmd/peergate: sending a bare SYN, telling a dropped SYN from a refused
// connection, and reading the CPU time and kernel memory a filter costs.
package kerneltest

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// SynFrom opens a non-blocking socket bound to src and starts a connect to dst, which sends one
// SYN; the caller closes the returned descriptor.
func SynFrom(src netip.Addr, dst netip.AddrPort) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: src.As4()}); err != nil {
		unix.Close(fd)
		return -1, err
	}
	err = unix.Connect(fd, &unix.SockaddrInet4{Addr: dst.Addr().As4(), Port: int(dst.Port())})
	if err != nil && err != unix.EINPROGRESS {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// Dropped reports whether a connect from src to addr gets no answer at all within a short time,
// as when the kernel filter drops the SYN (a denial in userspace completes the handshake first).
func Dropped(src, addr string) bool {
	d := net.Dialer{Timeout: 300 * time.Millisecond, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err == nil {
		c.Close()
		return false
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// CPUTime returns the CPU time (user and system) the process has used.
func CPUTime() time.Duration {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// SlabKB returns the kernel's unreclaimable slab memory (SUnreclaim in /proc/meminfo), in KiB:
// where LPM-trie nodes live. Machine-wide, so other processes move it too.
func SlabKB() int64 {
	b, _ := os.ReadFile("/proc/meminfo")
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "SUnreclaim:"); ok {
			n, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return n
		}
	}
	return 0
}
