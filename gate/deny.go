package gate

import (
	"errors"
	"fmt"
	"net"
)

// DenyAction is what a Listener (and peergate's wrap) does with a connection it denies. The zero
// value is DenyClose. Its text form ("close", "reset") is what String returns and ParseDenyAction
// reads; it implements encoding.TextMarshaler and TextUnmarshaler with it.
type DenyAction uint8

// The deny actions.
const (
	// DenyClose closes the connection: the client sees an orderly end (FIN).
	DenyClose DenyAction = iota
	// DenyReset closes it with SO_LINGER 0, so the kernel sends an RST and the client sees
	// ECONNRESET; no TIME_WAIT is left on this side.
	DenyReset
)

// denyActions holds each action's name, indexed by the action.
var denyActions = [...]string{DenyClose: "close", DenyReset: "reset"}

// ErrDenyAction marks a word that names no deny action.
var ErrDenyAction = errors.New("unknown deny action")

// String returns the action's name: "close", "reset", or "DenyAction(N)" for a value that is none.
func (a DenyAction) String() string {
	if int(a) < len(denyActions) {
		return denyActions[a]
	}
	return fmt.Sprintf("DenyAction(%d)", uint8(a))
}

// ParseDenyAction returns the action named s ("close" or "reset"); any other word is an error
// wrapping ErrDenyAction that lists the names.
func ParseDenyAction(s string) (DenyAction, error) {
	for a, name := range denyActions {
		if s == name {
			return DenyAction(a), nil
		}
	}
	return DenyClose, fmt.Errorf("%w %q (want close or reset)", ErrDenyAction, s)
}

// MarshalText returns the action's name.
func (a DenyAction) MarshalText() ([]byte, error) {
	if int(a) >= len(denyActions) {
		return nil, fmt.Errorf("%w: %d", ErrDenyAction, uint8(a))
	}
	return []byte(a.String()), nil
}

// UnmarshalText sets the action named by text (see ParseDenyAction).
func (a *DenyAction) UnmarshalText(text []byte) error {
	v, err := ParseDenyAction(string(text))
	if err != nil {
		return err
	}
	*a = v
	return nil
}

// Deny ends c as the action says and returns the error of its Close. DenyReset on a connection
// that has no SetLinger (not a TCP socket) closes it plainly.
func (a DenyAction) Deny(c net.Conn) error {
	if lc, ok := c.(interface{ SetLinger(int) error }); ok {
		a.prepare(lc.SetLinger)
	}
	return c.Close()
}

// prepare does what the action does to a socket before it is closed, through setLinger (SO_LINGER
// in seconds, 0: reset on close). It is the one place an action's effect is written: Deny and
// DenyFD both call it.
func (a DenyAction) prepare(setLinger func(sec int) error) {
	switch a {
	case DenyReset:
		setLinger(0) // best effort: the close that follows denies either way
	}
}

// deny ends c with the action opts asks for.
func deny(c net.Conn, opts *Options) { opts.denyAction().Deny(c) }

// denyAction is the action of opts: OnDeny, or DenyReset where only the older Reset is set.
func (o *Options) denyAction() DenyAction {
	if o.OnDeny == DenyClose && o.Reset {
		return DenyReset
	}
	return o.OnDeny
}
