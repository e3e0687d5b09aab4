package serve

import (
	"io"
	"net"
	"net/netip"
	"testing"
)

// TestActivationMatches: which inherited socket address a listen entry names.
func TestActivationMatches(t *testing.T) {
	tcp := func(s string) net.Addr { return net.TCPAddrFromAddrPort(netip.MustParseAddrPort(s)) }
	for _, tc := range []struct {
		entry string
		got   net.Addr
		want  bool
	}{
		{"127.0.0.1:80", tcp("127.0.0.1:80"), true},
		{"127.0.0.1:80", tcp("[::ffff:127.0.0.1]:80"), true},
		{"127.0.0.1:80", tcp("127.0.0.2:80"), false},
		{"127.0.0.1:80", tcp("127.0.0.1:81"), false},
		{"[::1]:80", tcp("[::1]:80"), true},
		{":80", tcp("0.0.0.0:80"), true},
		{":80", tcp("[::]:80"), true},
		{":80", tcp("127.0.0.1:80"), false},
		{"127.0.0.1:0", tcp("127.0.0.1:0"), false},
		{"unix:/run/x.sock", &net.UnixAddr{Name: "/run/x.sock", Net: "unix"}, true},
		{"unix:/run/x.sock", &net.UnixAddr{Name: "/run/y.sock", Net: "unix"}, false},
		{"unix:@x", &net.UnixAddr{Name: "@x", Net: "unix"}, true},
		{"unix:/run/x.sock", tcp("127.0.0.1:80"), false},
		{"127.0.0.1:80", &net.UnixAddr{Name: "/run/x.sock", Net: "unix"}, false},
	} {
		if got := matches(tc.entry, tc.got); got != tc.want {
			t.Errorf("matches(%q, %v) = %v, want %v", tc.entry, tc.got, got, tc.want)
		}
	}
}

// TestPortZeroPerEntry: two listen entries on port 0 (the kernel picks), in two services or in
// one, get a listener each, kept across a reload. They used to share one listener, keyed by the
// address as written, and one service listened nowhere.
func TestPortZeroPerEntry(t *testing.T) {
	h := newRecorder()
	s := startLogged(t, "acls:\n  lo: {default: deny, allow: [127.0.0.1]}\nservices:\n"+
		"  - name: a\n    listen: [\"127.0.0.1:0\", \"127.0.0.1:0\"]\n    acl: lo\n    exec: [/bin/echo, a]\n"+
		"  - name: b\n    listen: [\"127.0.0.1:0\"]\n    acl: lo\n    exec: [/bin/echo, b]\n", h)
	for round := range 2 {
		addrs := s.Addrs()
		if len(addrs["a"]) != 2 || len(addrs["b"]) != 1 {
			t.Fatalf("round %d: listeners %v; want 2 for a, 1 for b", round, addrs)
		}
		for name, as := range addrs {
			for _, a := range as {
				c, err := dialFrom("127.0.0.1", a.String())
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(c)
				c.Close()
				if string(b) != name+"\n" {
					t.Errorf("round %d: %s of %s answered %q", round, a, name, b)
				}
			}
		}
		if err := s.Reload(); err != nil {
			t.Fatal(err)
		}
	}
}
