//go:build !linux

package gate

import (
	"errors"
	"net"
)

// rawAccepterOf: the shed path is built on Linux's accept4(2) only; elsewhere no listener sheds.
func rawAccepterOf(net.Listener) rawAccepter { return nil }

func (l *Listener) acceptShed() (net.Conn, bool, any, error) {
	return nil, false, nil, errors.New("gate: no shed path on this platform")
}

// AcceptFD returns ErrNeedsConn: bare sockets are handed on only on Linux.
func (l *Listener) AcceptFD() (Socket, bool, error) { return Socket{}, false, ErrNeedsConn }
