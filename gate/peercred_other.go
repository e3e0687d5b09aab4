//go:build unix && !linux

package gate

import "github.com/peergate/peergate/acl"

// peerCred is not implemented on this system: the credentials are unknown (not Valid), so only
// the default of the unix policy decides Unix-domain peers.
func peerCred(fd int) (acl.UnixCred, error) { return acl.UnixCred{}, nil }
