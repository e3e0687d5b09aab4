package acl

import (
	"fmt"
	"net/netip"
	"strings"
)

// ParsePrefix parses one rule target as written in a config or list file: a prefix in CIDR
// notation ("10.0.0.0/8", "2001:db8::/32") or a bare address, which stands for a /32 or /128.
// IPv4-mapped forms ("::ffff:10.0.0.0/104", "::ffff:10.1.2.3") become the IPv4 prefix they denote.
// A prefix with host bits set ("10.0.0.1/8") is an error wrapping ErrHostBits that shows the masked
// form, and an IPv6 zone is an error wrapping ErrZone: both are usually typos.
func ParsePrefix(s string) (netip.Prefix, error) {
	if strings.IndexByte(s, '%') >= 0 {
		return netip.Prefix{}, ErrZone
	}
	var p netip.Prefix
	if strings.IndexByte(s, '/') >= 0 {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return netip.Prefix{}, fmt.Errorf("%w: %s", ErrPrefix, cleanErr(err))
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%w: %s", ErrPrefix, cleanErr(err))
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	return normalPrefix(p)
}

// normalPrefix checks p and maps an IPv4-mapped IPv6 prefix of length 96 or more to IPv4.
func normalPrefix(p netip.Prefix) (netip.Prefix, error) {
	if !p.IsValid() {
		return netip.Prefix{}, fmt.Errorf("%w: %v", ErrPrefix, p)
	}
	if p.Addr().Zone() != "" {
		return netip.Prefix{}, ErrZone
	}
	if m := p.Masked(); m != p {
		return netip.Prefix{}, fmt.Errorf("%w (did you mean %s?)", ErrHostBits, m)
	}
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(a.Unmap(), p.Bits()-96), nil
	}
	return p, nil
}

// cleanErr drops the repeated input that net/netip puts in front of its parse errors, since the
// caller's PosError already quotes the value.
func cleanErr(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, "): "); i >= 0 {
		return s[i+3:]
	}
	return s
}
