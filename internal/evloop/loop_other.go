//go:build !linux

package evloop

import (
	"errors"
	"syscall"
)

// Available reports whether event loops run on this platform: only on Linux.
const Available = false

// Loop is not available on this platform: New fails.
type Loop struct{}

// A Watch is not available on this platform.
type Watch struct{}

// New returns an error: event loops are built on epoll.
func New() (*Loop, error) { return nil, errors.ErrUnsupported }

func (l *Loop) Run()                                            {}
func (l *Loop) Stop()                                           {}
func (l *Loop) Do(func())                                       {}
func (l *Loop) Abort()                                          {}
func (l *Loop) Watch(syscall.RawConn, func(*Watch) bool) *Watch { return nil }
func (l *Loop) Proxy(int, Upstream, Handler)                    {}
func (l *Loop) SetRawWaits(bool)                                {}
func (l *Loop) Done() <-chan struct{}                           { return nil }
func (w *Watch) Pause()                                         {}
func (w *Watch) Resume() bool                                   { return false }
func (w *Watch) Close()                                         {}
func (w *Watch) Remove()                                        {}
func (w *Watch) Loop() *Loop                                    { return nil }
