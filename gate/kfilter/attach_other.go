//go:build !linux

package kfilter

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/peergate/peergate/acl"
	"golang.org/x/net/bpf"
)

var errNotLinux = fmt.Errorf("kfilter: socket filters need Linux: %w", errors.ErrUnsupported)

// Attach installs prog as the socket filter of the socket behind rc. Socket filters are a Linux
// feature: here it returns an error wrapping errors.ErrUnsupported.
func Attach(rc syscall.RawConn, prog []bpf.RawInstruction) error { return errNotLinux }

// Detach removes the socket filter of the socket behind rc. Socket filters are a Linux feature:
// here it returns an error wrapping errors.ErrUnsupported.
func Detach(rc syscall.RawConn) error { return errNotLinux }

// Apply compiles a and attaches it to the socket behind rc. Socket filters are a Linux feature:
// here it returns an error wrapping errors.ErrUnsupported.
func Apply(rc syscall.RawConn, a *acl.ACL) error { return errNotLinux }

// Family returns the address family of the socket behind rc. Here it returns an error wrapping
// errors.ErrUnsupported.
func Family(rc syscall.RawConn) (int, error) { return 0, errNotLinux }
