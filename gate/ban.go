package gate

import (
	"net/netip"
	"strconv"
	"time"
)

// Ban is one live denial of a ban layer (Options.Bans): every address inside Prefix is denied,
// whatever the ACL says, until Expires. Package gate/bans keeps a table of them.
type Ban struct {
	Prefix  netip.Prefix // masked; IPv4-mapped prefixes are stored as IPv4
	Origin  string       // who made it: "api", "auto", "crowdsec", or an embedder's word
	Reason  string
	Created time.Time
	Expires time.Time // the zero Time: never
}

// String returns the ban as "ban 192.0.2.7/32 origin=api reason=scanner expires=2026-12-02T18:00:00Z"
// (expires=never for a ban with no expiry).
func (b Ban) String() string {
	return "ban " + b.Prefix.String() + " origin=" + b.Origin + " reason=" + strconv.Quote(b.Reason) + " expires=" + b.ExpiresString()
}

// ExpiresString returns Expires in RFC 3339 (UTC, to the second), or "never".
func (b Ban) ExpiresString() string {
	if b.Expires.IsZero() {
		return "never"
	}
	return b.Expires.UTC().Format(time.RFC3339)
}

// Bans is a layer of live denials consulted before the ACL. Banned reports the ban that covers
// addr, if any. It is called for every IP peer on the accept path, with an unmapped address (an
// IPv4-mapped peer is asked about as IPv4), so implementations must be safe for concurrent use,
// should not allocate and should not block.
type Bans interface {
	Banned(addr netip.Addr) (Ban, bool)
}
