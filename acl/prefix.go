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

// parse4 is the fast path of ParsePrefix for the common case of a big list: a canonical IPv4
// address or prefix ("192.0.2.0/24", "192.0.2.1") with no host bits set. It reports false for
// anything else, including input ParsePrefix would accept or reject, and never disagrees with
// ParsePrefix when it reports true.
func parse4(b []byte) (netip.Prefix, bool) {
	var ip [4]byte
	i := 0
	for k := range 4 {
		if k > 0 {
			if i >= len(b) || b[i] != '.' {
				return netip.Prefix{}, false
			}
			i++
		}
		v, n := digits(b[i:], 255)
		if n == 0 {
			return netip.Prefix{}, false
		}
		ip[k] = byte(v)
		i += n
	}
	bits := 32
	if i < len(b) {
		if b[i] != '/' {
			return netip.Prefix{}, false
		}
		v, n := digits(b[i+1:], 32)
		if n == 0 || i+1+n != len(b) {
			return netip.Prefix{}, false
		}
		bits = v
	}
	p := netip.PrefixFrom(netip.AddrFrom4(ip), bits)
	if p.Masked() != p {
		return netip.Prefix{}, false // host bits: let ParsePrefix say so
	}
	return p, true
}

// digits reads a decimal number of at most 3 digits, without a leading zero, no greater than max,
// from the front of b. It returns the number of bytes read, 0 if there is no such number.
func digits(b []byte, max int) (v, n int) {
	for n < len(b) && n < 3 && '0' <= b[n] && b[n] <= '9' {
		v = v*10 + int(b[n]-'0')
		n++
	}
	if n == 0 || n > 1 && b[0] == '0' || v > max || n < len(b) && '0' <= b[n] && b[n] <= '9' {
		return 0, 0
	}
	return v, n
}
