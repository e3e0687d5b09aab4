//go:build !linux

package kfilter

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"

	"github.com/peergate/peergate/acl"
)

// ErrNoEBPF means the kernel or the process cannot load the eBPF socket filter. Outside Linux
// it is always so.
var ErrNoEBPF = errors.New("kfilter: eBPF socket filter unavailable")

var errNoEBPFHere = fmt.Errorf("%w: socket filters need Linux: %w", ErrNoEBPF, errors.ErrUnsupported)

// EBPF is an eBPF socket filter holding an ACL in longest-prefix-match maps. It exists only on
// Linux: here NewEBPF always fails.
type EBPF struct{}

// EBPFStats describes an eBPF filter.
type EBPFStats struct {
	ACL4, ACL6   int
	Bans4, Bans6 int
	MapBytes     uint64
	Dropped4     uint64
	Dropped6     uint64
}

// NewEBPF returns an error wrapping ErrNoEBPF and errors.ErrUnsupported.
func NewEBPF() (*EBPF, error) { return nil, errNoEBPFHere }

// EBPFAvailable returns an error wrapping ErrNoEBPF and errors.ErrUnsupported.
func EBPFAvailable() error { return errNoEBPFHere }

// Close does nothing.
func (f *EBPF) Close() error { return nil }

// Attach returns an error wrapping ErrNoEBPF.
func (f *EBPF) Attach(rc syscall.RawConn) error { return errNoEBPFHere }

// Load returns an error wrapping ErrNoEBPF.
func (f *EBPF) Load(a *acl.ACL) error { return errNoEBPFHere }

// UpdateBans returns an error wrapping ErrNoEBPF.
func (f *EBPF) UpdateBans(add, remove []netip.Prefix) error { return errNoEBPFHere }

// Stats returns an error wrapping ErrNoEBPF.
func (f *EBPF) Stats() (EBPFStats, error) { return EBPFStats{}, errNoEBPFHere }

// Dropped returns an error wrapping ErrNoEBPF.
func (f *EBPF) Dropped() (v4, v6 uint64, err error) { return 0, 0, errNoEBPFHere }
