package hostsaccess

import (
	"fmt"
	"net/netip"
	"strings"
)

// chooser turns fuzz bytes into choices; when they run out, every choice is 0.
type chooser struct{ b []byte }

func (c *chooser) n(k int) int {
	if len(c.b) == 0 || k <= 1 {
		return 0
	}
	v := int(c.b[0]) % k
	c.b = c.b[1:]
	return v
}

func (c *chooser) pick(s ...string) string { return s[c.n(len(s))] }

// Small pools, so that the generated patterns overlap, nest and touch each other often.
var (
	octets1 = []byte{10, 192, 0, 255, 1, 127}
	octets  = []byte{0, 1, 2, 128, 255, 10}
	hextets = []uint16{0x2001, 0xdb8, 0, 1, 0xffff, 0x8000}
)

func (c *chooser) v4() netip.Addr {
	return netip.AddrFrom4([4]byte{octets1[c.n(len(octets1))], octets[c.n(len(octets))], octets[c.n(len(octets))], octets[c.n(len(octets))]})
}

func (c *chooser) v6() netip.Addr {
	var b [16]byte
	b[0], b[1], b[2], b[3] = 0x20, 0x01, 0x0d, 0xb8
	switch c.n(4) {
	case 1: // low addresses: ::, ::1, ::a.b.c.d
		b = [16]byte{}
	case 2:
		b[0], b[1] = 0xfe, 0x80
	}
	for i := 4; i < 16; i += 2 {
		if c.n(3) == 0 {
			h := hextets[c.n(len(hextets))]
			b[i], b[i+1] = byte(h>>8), byte(h)
		}
	}
	return netip.AddrFrom16(b)
}

// addr returns an address to judge: IPv4, IPv6 or IPv4-mapped.
func (c *chooser) addr() netip.Addr {
	switch c.n(3) {
	case 0:
		return c.v4()
	case 1:
		return c.v6()
	}
	return netip.AddrFrom16(c.v4().As16())
}

// pattern returns one client pattern as tcpd would read it; files are the /path patterns it may
// name.
func (c *chooser) pattern(files []string) string {
	switch k := c.n(24); {
	case k == 0:
		return c.pick("ALL", "all")
	case k <= 3:
		f := c.v4().As4()
		n := 1 + c.n(3)
		parts := make([]string, n)
		for i := range parts {
			parts[i] = fmt.Sprint(f[i])
		}
		return strings.Join(parts, ".") + "."
	case k <= 6:
		bits := c.n(33)
		p := netip.PrefixFrom(c.v4(), bits).Masked()
		m := netip.PrefixFrom(netip.AddrFrom4([4]byte{255, 255, 255, 255}), bits).Masked().Addr()
		if bits == 32 {
			return p.Addr().String()
		}
		return p.Addr().String() + "/" + m.String()
	case k <= 10:
		return netip.PrefixFrom(c.v4(), 1+c.n(32)).Masked().String()
	case k <= 12:
		return "[" + c.v6().String() + "]"
	case k <= 17:
		p := netip.PrefixFrom(c.v6(), c.n(129))
		if c.n(4) != 0 {
			p = p.Masked()
		}
		return "[" + p.Addr().String() + "]/" + fmt.Sprint(p.Bits())
	case k == 18 && len(files) > 0:
		return files[c.n(len(files))]
	case k == 19:
		return c.pick("host.example", ".example.com", "KNOWN", "LOCAL", "user@10.0.0.1", "@ng", "10.*", "[::ffff:10.0.0.0]/104", "10.1.2.3/8")
	}
	return c.v4().String()
}

func (c *chooser) list(files []string, depth int) string {
	var words []string
	for range 1 + c.n(3) {
		words = append(words, c.pattern(files))
	}
	s := strings.Join(words, c.pick(" ", ", ", ","))
	if depth < 4 && c.n(3) == 1 { // 0, what exhausted bytes give, must end the recursion
		s += " EXCEPT " + c.list(files, depth+1)
	}
	return s
}

// files returns a random hosts.allow, hosts.deny and set of pattern files named with prefix
// (which must be an absolute directory path).
func (c *chooser) files(prefix string) (allow, deny string, patternFiles map[string]string) {
	names := []string{prefix + "/p1", prefix + "/p2", prefix + "/missing"}
	patternFiles = map[string]string{}
	for _, n := range names[:2] {
		var words []string
		for range c.n(4) {
			words = append(words, c.pattern(names[:1]))
		}
		patternFiles[n] = strings.Join(words, c.pick("\n", " ", "\t")) + "\n"
	}
	table := func() string {
		var b strings.Builder
		for range 1 + c.n(4) {
			b.WriteString(c.pick("sshd", "ALL", "ftpd", "ALL EXCEPT ftpd", "ALL EXCEPT sshd", "ss*", "SSHD", "in.", ".d", "ftpd,sshd", "sshd@10.0.0.1", "ftpd@10.0.0.1"))
			b.WriteString(": ")
			b.WriteString(c.list(names, 0))
			b.WriteString(c.pick("", "", "", " : allow", " : deny", " : spawn echo %a", " : spawn x : deny", " : twist /bin/echo no", " : ALLOW", " : setenv A b : allow"))
			b.WriteString("\n")
		}
		return b.String()
	}
	return table(), table(), patternFiles
}
