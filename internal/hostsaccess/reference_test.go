package hostsaccess

import (
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/peergate/peergate/acl"
	"github.com/peergate/peergate/internal/acltest"
)

// refDecide is the reference the translation is tested against: tcpd's procedure followed word by
// word on the parsed files for one client, with the patterns compared as tcpd compares them (as
// strings, or bit by bit), not through their Prefix. ok is false when it reaches a pattern it
// cannot judge. An invalid addr is a client without an address, which only ALL matches.
func refDecide(daemon string, addr netip.Addr, files ...*File) (act acl.Action, origin acl.Origin, ok bool) {
	addr = addr.Unmap().WithZone("")
	ok = true
	judge := func(p *Pattern) bool {
		m, good := refClient(p, addr)
		ok = ok && good
		return m
	}
	for _, f := range files {
		for _, e := range f.Entries {
			if !refList(e.Daemons, func(p *Pattern) bool { return refDaemon(p, daemon, &ok) }) {
				continue
			}
			if refList(e.Clients, judge) {
				return refVerdict(e, f.Action), e.Origin, ok
			}
		}
	}
	return acl.Allow, acl.Origin{}, ok
}

// refList is tcpd's list_match.
func refList(l *List, match func(*Pattern) bool) bool {
	for i := range l.Patterns {
		if match(&l.Patterns[i]) {
			return l.Except == nil || !refList(l.Except, match)
		}
	}
	return false
}

func refDaemon(p *Pattern, daemon string, ok *bool) bool {
	tok := p.Text
	if i := strings.IndexByte(tok[1:], '@'); i >= 0 {
		if refDaemonName(tok[:i+1], daemon) {
			*ok = false
		}
		return false
	}
	return refDaemonName(tok, daemon)
}

func refDaemonName(tok, daemon string) bool {
	if strings.ContainsAny(tok, "*?") {
		return ylo(daemon, tok)
	}
	lt, ld := strings.ToLower(tok), strings.ToLower(daemon)
	switch {
	case strings.HasPrefix(tok, "."):
		return len(ld) > len(lt) && strings.HasSuffix(ld, lt)
	case lt == "all":
		return true
	case lt == "known":
		return ld != "unknown"
	case strings.HasSuffix(tok, "."):
		return strings.HasPrefix(ld, lt)
	}
	return lt == ld
}

// ylo is match_pattern_ylo, Debian tcpd's wildcard matcher, transcribed: '*' any run of bytes,
// '?' any one byte, anything else itself.
func ylo(s, pat string) bool {
	for {
		if pat == "" {
			return s == ""
		}
		if pat[0] == '*' {
			pat = strings.TrimLeft(pat, "*") // a run of stars is one star
			for i := 0; i <= len(s); i++ {
				if ylo(s[i:], pat) {
					return true
				}
			}
			return false
		}
		if s == "" || (pat[0] != '?' && pat[0] != s[0]) {
			return false
		}
		s, pat = s[1:], pat[1:]
	}
}

// refClient judges one client pattern the way tcpd does, from its text.
func refClient(p *Pattern, a netip.Addr) (match, ok bool) {
	switch p.Kind {
	case KindAll:
		return true, true
	case KindFile:
		for i := range p.Sub {
			m, ok := refClient(&p.Sub[i], a)
			if m || !ok {
				return m, ok
			}
		}
		return false, true
	case KindBad, KindDaemon:
		return false, false
	}
	if !a.IsValid() {
		return false, true
	}
	text := p.Text
	if strings.HasPrefix(text, "[") || strings.Contains(text, ":") { // IPv6
		if !a.Is6() {
			return false, true
		}
		text = strings.NewReplacer("[", "", "]", "").Replace(text)
		addrText, lenText, hasLen := strings.Cut(text, "/")
		net := netip.MustParseAddr(addrText).As16()
		n := 128
		if hasLen {
			n, _ = strconv.Atoi(lenText)
		}
		b := a.As16()
		for i := range n {
			if net[i/8]>>(7-i%8)&1 != b[i/8]>>(7-i%8)&1 {
				return false, true
			}
		}
		return true, true
	}
	if !a.Is4() {
		return false, true
	}
	switch p.Kind {
	case KindAddr:
		return a.String() == text, true
	case KindNet:
		return strings.HasPrefix(a.String(), text), true
	}
	netText, maskText, _ := strings.Cut(text, "/")
	net := dotted(netText)
	var mask uint32
	if p.Kind == KindMask {
		mask = dotted(maskText)
	} else {
		n, _ := strconv.Atoi(maskText)
		mask = ^uint32(0) << (32 - n)
	}
	return dotted(a.String())&mask == net, true
}

func dotted(s string) uint32 {
	var v uint32
	for _, f := range strings.Split(s, ".") {
		n, _ := strconv.Atoi(f)
		v = v<<8 | uint32(n)
	}
	return v
}

// refVerdict follows an entry's options as tcpd's process_options does: allow and deny decide;
// twist hands the client to a command (a deny for peergate); any option tcpd stops at refuses.
func refVerdict(e *Entry, table acl.Action) acl.Action {
	for i, o := range e.Options {
		kw := strings.ToLower(o.Keyword)
		args, known := optionTable[kw]
		last := i == len(e.Options)-1
		if !known || (args&argNeed != 0 && o.Value == "") || (args&argNone != 0 && o.Value != "") || (args&argLast != 0 && !last) {
			return acl.Deny
		}
		switch kw {
		case "allow":
			return acl.Allow
		case "deny", "twist", "aclexec":
			return acl.Deny
		}
	}
	return table
}

// probeAddrs returns addresses worth judging for files: the edges of every pattern's prefix and
// the addresses just outside them, in both the plain and (for IPv4) the IPv4-mapped form, and a
// few fixed ones.
func probeAddrs(files ...*File) []netip.Addr {
	var out []netip.Addr
	add := func(a netip.Addr) {
		if a.IsValid() {
			out = append(out, a)
			if a.Is4() {
				out = append(out, netip.AddrFrom16(a.As16()))
			}
		}
	}
	var walk func(ps []Pattern)
	walk = func(ps []Pattern) {
		for _, p := range ps {
			walk(p.Sub)
			if !p.Prefix.IsValid() {
				continue
			}
			first, last := p.Prefix.Addr(), acltest.LastAddr(p.Prefix)
			add(first)
			add(last)
			add(first.Prev())
			add(last.Next())
		}
	}
	for _, f := range files {
		for _, e := range f.Entries {
			for l := e.Clients; l != nil; l = l.Except {
				walk(l.Patterns)
			}
		}
	}
	for _, s := range []string{"0.0.0.0", "255.255.255.255", "10.1.2.3", "192.0.2.1", "::", "::1", "2001:db8::1",
		"::ffff:0:0", "::fffe:ffff:ffff", "::1:0:0:0", "::ffff:10.1.2.3", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"} {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

// checkAgainstReference translates files for daemon and, if that succeeds, compares the ACL with
// the reference on addrs, on the edges of every pattern, and for a client without an address. It
// reports whether the files translated.
func checkAgainstReference(t *testing.T, daemon string, addrs []netip.Addr, files ...*File) bool {
	t.Helper()
	res, err := Translate(daemon, files...)
	if err != nil {
		return false
	}
	a, err := acl.New(res.Spec)
	if err != nil {
		t.Fatalf("Translate made a Spec that acl.New rejects: %v\n%s", err, dump(files...))
	}
	for _, addr := range append(addrs, probeAddrs(files...)...) {
		if isBroadcast(addr) {
			continue // no TCP peer; tcpd's net/mask patterns never match it; Translate may decide it either way
		}
		want, _, ok := refDecide(daemon, addr, files...)
		if !ok {
			t.Fatalf("%s: Translate succeeded, but the reference met a pattern it cannot judge\n%s", addr, dump(files...))
		}
		if got := a.Decide(addr); got.Action != want {
			t.Fatalf("%s: ACL says %s, tcpd says %s\n%s\nrules: %v default %s", addr, got, want, dump(files...), res.Spec.Rules, res.Spec.Default)
		}
	}
	want, origin, _ := refDecide(daemon, netip.Addr{}, files...)
	if res.Spec.Unix != want || res.UnixOrigin != origin {
		t.Fatalf("client without an address: ACL says %s (%s), tcpd says %s (%s)\n%s", res.Spec.Unix, res.UnixOrigin, want, origin, dump(files...))
	}
	return true
}

// dump shows parsed files in test failures.
func dump(files ...*File) string {
	var b strings.Builder
	for _, f := range files {
		b.WriteString("--- " + f.Name + "\n")
		for _, e := range f.Entries {
			b.WriteString(strconv.Itoa(e.Origin.Line) + ": " + listText(e.Daemons) + " : " + listText(e.Clients))
			for _, o := range e.Options {
				b.WriteString(" : " + o.Text)
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}

func listText(l *List) string {
	var words []string
	for _, p := range l.Patterns {
		w := p.Text
		if p.Kind == KindFile {
			var sub []string
			for _, s := range p.Sub {
				sub = append(sub, s.Text)
			}
			w += "{" + strings.Join(sub, " ") + "}"
		}
		words = append(words, w)
	}
	if l.Except != nil {
		words = append(words, "EXCEPT", listText(l.Except))
	}
	return strings.Join(words, " ")
}

func isBroadcast(a netip.Addr) bool { return a.Unmap() == netip.AddrFrom4([4]byte{255, 255, 255, 255}) }
