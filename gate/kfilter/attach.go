//go:build linux

package kfilter

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/peergate/peergate/acl"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Attach installs prog, as Compile returns it, as the socket filter of the socket behind rc
// (SO_ATTACH_FILTER), replacing atomically any filter it had. On a listening socket it should be
// called before traffic is expected; connections accepted before keep the filter they inherited.
// The kernel's refusal is returned wrapped, so errors.Is(err, unix.ENOMEM) tells that the
// program does not fit the socket's option memory (net.core.optmem_max); on an MPTCP socket the
// error wraps ErrMPTCP. On error the socket keeps the filter it had.
func Attach(rc syscall.RawConn, prog []bpf.RawInstruction) error {
	switch {
	case len(prog) == 0:
		return ErrEmpty
	case len(prog) > MaxInstructions:
		return fmt.Errorf("%w: %d instructions (the kernel takes %d)", ErrTooLarge, len(prog), MaxInstructions)
	}
	filter := make([]unix.SockFilter, len(prog))
	for i, ins := range prog {
		filter[i] = unix.SockFilter{Code: ins.Op, Jt: ins.Jt, Jf: ins.Jf, K: ins.K}
	}
	fprog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	var serr error
	var proto int
	err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptSockFprog(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fprog)
		if errors.Is(serr, unix.EOPNOTSUPP) {
			proto, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PROTOCOL)
		}
	})
	switch {
	case err != nil:
		return fmt.Errorf("kfilter: attach: %w", err)
	case serr != nil && proto == unix.IPPROTO_MPTCP:
		return fmt.Errorf("%w: %w", ErrMPTCP, serr)
	case serr != nil:
		return fmt.Errorf("kfilter: attach (SO_ATTACH_FILTER, %d instructions): %w", len(prog), serr)
	}
	return nil
}

// Detach removes the socket filter of the socket behind rc (SO_DETACH_FILTER). A socket with no
// filter is left as it is, with no error. Connections already accepted keep theirs.
func Detach(rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DETACH_FILTER, 0)
	})
	switch {
	case err != nil:
		return fmt.Errorf("kfilter: detach: %w", err)
	case serr != nil && !errors.Is(serr, unix.ENOENT): // ENOENT: there was no filter
		return fmt.Errorf("kfilter: detach (SO_DETACH_FILTER): %w", serr)
	}
	return nil
}

// Apply compiles a for the family of the socket behind rc, an IPv4 or IPv6 TCP listener, and
// attaches the program, replacing any filter the socket had. It is what a listener calls when it
// starts and after each reload. Whatever happens, Apply leaves the socket filtering by a, or not
// filtering at all, never by a stale ACL: when a cannot be compiled (ErrTooLarge) or attached,
// it detaches the old filter and returns the error, and the gate alone judges from then on. (If
// the detach fails too, as on a socket whose filter was locked with SO_LOCK_FILTER, the error
// joins both.)
//
// The kernel charges a filter to the socket's option memory (net.core.optmem_max: 128 KiB by
// default on recent kernels, 20 KiB on older ones), and during an atomic replacement it holds the
// old and the new filter at once, so two programs near MaxInstructions may not fit together.
// When the replacement fails with ENOMEM, Apply detaches the old filter and attaches the new one:
// in between, the socket has no filter and every SYN reaches accept, where the gate judges it.
func Apply(rc syscall.RawConn, a *acl.ACL) error {
	family, err := Family(rc)
	if err != nil {
		return err // not a socket Apply could have filtered before
	}
	prog, err := Compile(a, family)
	if err == nil {
		if err = Attach(rc, prog); err == nil || errors.Is(err, ErrMPTCP) {
			return err // attached, or a socket that takes no filter and so has none
		}
	}
	// No new filter: remove the old one, so that it judges no more.
	if derr := Detach(rc); derr != nil {
		return errors.Join(err, derr)
	}
	if errors.Is(err, unix.ENOMEM) { // the old and the new did not fit together
		return Attach(rc, prog)
	}
	return err
}

// Family returns the address family of the socket behind rc, unix.AF_INET or unix.AF_INET6, or
// an error wrapping ErrFamily for any other socket.
func Family(rc syscall.RawConn) (int, error) {
	var family int
	var serr error
	err := rc.Control(func(fd uintptr) {
		family, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN)
	})
	switch {
	case err != nil:
		return 0, fmt.Errorf("kfilter: %w", err)
	case serr != nil:
		return 0, fmt.Errorf("kfilter: SO_DOMAIN: %w", serr)
	case family != unix.AF_INET && family != unix.AF_INET6:
		return 0, fmt.Errorf("%w: family %d", ErrFamily, family)
	}
	return family, nil
}
