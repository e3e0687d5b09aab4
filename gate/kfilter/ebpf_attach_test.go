//go:build linux

package kfilter_test

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/peergate/peergate/acl"
	"github.com/peergate/peergate/gate/kfilter"
	"github.com/peergate/peergate/internal/kerneltest"
)

// attachEBPF loads a into a new eBPF filter and attaches it to ln, skipping the test where eBPF is
// unavailable.
func attachEBPF(t *testing.T, ln net.Listener, a *acl.ACL) *kfilter.EBPF {
	t.Helper()
	if err := kfilter.EBPFAvailable(); err != nil {
		t.Skipf("eBPF socket filter unavailable here: %v", err)
	}
	f, err := kfilter.NewEBPF()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if err := f.Load(a); err != nil {
		t.Fatal(err)
	}
	if err := f.Attach(rawConn(t, ln)); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestEBPFDropsDenied(t *testing.T) {
	for _, tc := range []struct {
		name, listen string
		rules        []string
		timeOut      []string // source, destination host
		connect      []string
		accepted     []string
	}{
		{"IPv4", "127.0.0.1:0", []string{"deny 127.0.0.2"},
			[]string{"127.0.0.2", "127.0.0.1"}, []string{"127.0.0.1", "127.0.0.1", "127.0.0.3", "127.0.0.1"},
			[]string{"127.0.0.1", "127.0.0.3"}},
		{"dual-stack", "[::]:0", []string{"deny ::ffff:127.0.0.2", "deny ::1"},
			[]string{"127.0.0.2", "127.0.0.1", "::ffff:127.0.0.2", "::ffff:127.0.0.1", "::1", "::1"},
			[]string{"127.0.0.1", "127.0.0.1", "127.0.0.3", "127.0.0.1"},
			[]string{"127.0.0.1", "127.0.0.3"}},
		{"IPv6 only", "[::1]:0", []string{"deny 127.0.0.0/8"}, nil,
			[]string{"::1", "::1"}, []string{"::1"}},
		{"IPv6 denied", "[::1]:0", []string{"deny ::1"}, []string{"::1", "::1"}, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln := listen(t, tc.listen)
			attachEBPF(t, ln, mustACL(t, tc.rules...))
			ch := acceptor(ln)
			for i := 0; i < len(tc.timeOut); i += 2 {
				mustTimeOut(t, tc.timeOut[i], net.JoinHostPort(tc.timeOut[i+1], port(ln)))
			}
			for i := 0; i < len(tc.connect); i += 2 {
				mustConnect(t, tc.connect[i], net.JoinHostPort(tc.connect[i+1], port(ln)))
			}
			expectAccepted(t, ln, ch, tc.accepted...)
		})
	}
}

// TestEBPFLiveUpdate: a Load or a ban changes what an attached filter drops, with no new attach,
// and the counters count the drops.
func TestEBPFLiveUpdate(t *testing.T) {
	ln := listen(t, "127.0.0.1:0")
	f := attachEBPF(t, ln, mustACL(t, "deny 127.0.0.2"))
	ch := acceptor(ln)
	addr := ln.Addr().String()
	mustTimeOut(t, "127.0.0.2", addr)
	mustConnect(t, "127.0.0.3", addr)
	if err := f.Load(mustACL(t, "deny 127.0.0.3")); err != nil {
		t.Fatal(err)
	}
	mustConnect(t, "127.0.0.2", addr)
	mustTimeOut(t, "127.0.0.3", addr)
	if err := f.UpdateBans([]netip.Prefix{netip.MustParsePrefix("127.0.0.4/32")}, nil); err != nil {
		t.Fatal(err)
	}
	mustTimeOut(t, "127.0.0.4", addr)
	if err := f.UpdateBans(nil, []netip.Prefix{netip.MustParsePrefix("127.0.0.4/32")}); err != nil {
		t.Fatal(err)
	}
	mustConnect(t, "127.0.0.4", addr)
	if err := kfilter.Detach(rawConn(t, ln)); err != nil {
		t.Fatal(err)
	}
	mustConnect(t, "127.0.0.3", addr)
	expectAccepted(t, ln, ch, "127.0.0.3", "127.0.0.2", "127.0.0.4", "127.0.0.3")
	v4, v6, err := f.Dropped()
	if err != nil {
		t.Fatal(err)
	}
	// Each timed-out dial sent one SYN within dropTimeout (the first retransmission is at 1 s).
	if v4 < 3 || v6 != 0 {
		t.Errorf("Dropped() = %d, %d; want at least 3 IPv4, no IPv6", v4, v6)
	}
}

// TestEBPFSharedBySockets: one filter attached to an IPv4 and a dual-stack listener (as a service
// with two listen addresses has it) drops a denied peer on both; a Load and a ban change both at
// once; closing one socket leaves the other filtered; and closing the filter's descriptors leaves
// the program and maps alive as long as a socket holds them.
func TestEBPFSharedBySockets(t *testing.T) {
	ln4 := listen(t, "127.0.0.1:0")
	ln6 := listen(t, "[::]:0")
	f := attachEBPF(t, ln4, mustACL(t, "deny 127.0.0.2"))
	if err := f.Attach(rawConn(t, ln6)); err != nil {
		t.Fatal(err)
	}
	ch4, ch6 := acceptor(ln4), acceptor(ln6)
	addr4, addr6 := ln4.Addr().String(), net.JoinHostPort("127.0.0.1", port(ln6))
	for _, a := range []string{addr4, addr6} {
		mustTimeOut(t, "127.0.0.2", a)
		mustConnect(t, "127.0.0.3", a)
	}
	if err := f.Load(mustACL(t, "deny 127.0.0.3")); err != nil {
		t.Fatal(err)
	}
	if err := f.UpdateBans([]netip.Prefix{netip.MustParsePrefix("127.0.0.4/32")}, nil); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{addr4, addr6} {
		mustTimeOut(t, "127.0.0.3", a)
		mustTimeOut(t, "127.0.0.4", a)
		mustConnect(t, "127.0.0.2", a)
	}
	if v4, v6, err := f.Dropped(); err != nil || v4 < 6 || v6 != 0 {
		t.Errorf("Dropped() = %d, %d, %v; want at least 6 IPv4 (both sockets counted in one counter), no IPv6", v4, v6, err)
	}
	expectAccepted(t, ln4, ch4, "127.0.0.3", "127.0.0.2") // closes ln4
	f.Close()                                             // ln6 holds program and maps now
	mustTimeOut(t, "127.0.0.3", addr6)
	mustConnect(t, "127.0.0.1", addr6)
	expectAccepted(t, ln6, ch6, "127.0.0.3", "127.0.0.2", "127.0.0.1")
}

// TestEBPFReloadUnderFlood: denied SYNs sent throughout 100 reloads between ACLs that deny
// 127.0.0.2 in different ways (by a /32 in an allow-by-default ACL, by the default with 127.0.0.1
// and .3 allowed, by a /31 with .3 allowed, by a ban) never reach Accept, and allowed clients
// connect between reloads.
func TestEBPFReloadUnderFlood(t *testing.T) {
	ln := listen(t, "127.0.0.1:0")
	acls := []*acl.ACL{
		mustACL(t, "deny 127.0.0.2"),
		acl.MustNew(acl.Spec{Default: acl.Deny, Rules: []acl.Rule{
			{Prefix: netip.MustParsePrefix("127.0.0.1/32"), Action: acl.Allow},
			{Prefix: netip.MustParsePrefix("127.0.0.3/32"), Action: acl.Allow},
			{Prefix: netip.MustParsePrefix("::/0"), Action: acl.Allow}}}),
		mustACL(t, "deny 127.0.0.2/31", "allow 127.0.0.3", "deny 10.0.0.0/8", "allow 10.1.0.0/16"),
		mustACL(t, "allow 127.0.0.0/8", "deny 127.0.0.2"),
	}
	// Pad each ACL with 2000 random rules of its own, so that every reload changes about 4000 map
	// entries and takes long enough for many SYNs to meet it half-way.
	r := rand.New(rand.NewPCG(1, 2))
	for i, a := range acls {
		rules := a.Rules()
		for range 2000 {
			var b [4]byte
			binary.BigEndian.PutUint32(b[:], 0x0b000000+r.Uint32()%0xd0000000) // 11.0.0.0 and up
			rules = append(rules, acl.Rule{Prefix: netip.PrefixFrom(netip.AddrFrom4(b), 32), Action: acl.Action(r.IntN(2))})
		}
		acls[i] = acl.MustNew(acl.Spec{Default: a.Default(), Rules: rules})
	}
	f := attachEBPF(t, ln, acls[0])
	ch := acceptor(ln)
	dst := netip.MustParseAddrPort(ln.Addr().String())
	denied := netip.MustParseAddr("127.0.0.2")
	ban := []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}

	done := make(chan struct{})
	floodErr := make(chan int, 1)
	go func() { // the flood: bounded in count, stops when the reloads are done
		var fds []int
		defer func() {
			for _, fd := range fds {
				unix.Close(fd)
			}
			floodErr <- len(fds)
		}()
		for len(fds) < 4000 {
			select {
			case <-done:
				return
			default:
			}
			fd, err := kerneltest.SynFrom(denied, dst)
			if err != nil {
				t.Error(err)
				return
			}
			fds = append(fds, fd)
		}
	}()
	for i := range 100 {
		if err := f.Load(acls[i%len(acls)]); err != nil {
			t.Fatal(err)
		}
		// Every fourth round the ACL allows 127.0.0.2 for a moment, and a ban keeps it out.
		if i%5 == 4 {
			if err := f.UpdateBans(ban, nil); err != nil {
				t.Fatal(err)
			}
			if err := f.Load(mustACL(t)); err != nil {
				t.Fatal(err)
			}
			if err := f.Load(acls[0]); err != nil {
				t.Fatal(err)
			}
			if err := f.UpdateBans(nil, ban); err != nil {
				t.Fatal(err)
			}
		}
		if i%10 == 0 {
			mustConnect(t, "127.0.0.1", ln.Addr().String())
		}
	}
	close(done)
	sent := <-floodErr
	v4, _, _ := f.Dropped()
	t.Logf("%d denied SYNs sent during 100 reloads, %d packets dropped", sent, v4)
	mustConnect(t, "127.0.0.3", ln.Addr().String())
	want := make([]string, 0, 11)
	for range 10 {
		want = append(want, "127.0.0.1")
	}
	expectAccepted(t, ln, ch, append(want, "127.0.0.3")...)
	if v4 < uint64(sent) {
		t.Errorf("%d SYNs sent, %d dropped", sent, v4)
	}
}

// netnsEnv, when set, tells TestEBPFNetns that it runs inside the network namespace it made.
const netnsEnv = "KFILTER_IN_NETNS"

// TestEBPFNetns runs the eBPF filter on real sockets with addresses other than loopback ones: the
// test binary runs itself again in a new network namespace (unshare -n), where it puts IPv4 and
// IPv6 documentation addresses on lo and connects from each to IPv4, IPv6 and dual-stack
// listeners.
func TestEBPFNetns(t *testing.T) {
	if os.Getenv(netnsEnv) == "" {
		if err := kfilter.EBPFAvailable(); err != nil {
			t.Skipf("eBPF socket filter unavailable here: %v", err)
		}
		unshare, err := exec.LookPath("unshare")
		if err != nil {
			t.Skip("no unshare(1) to make a network namespace")
		}
		if _, err := exec.LookPath("ip"); err != nil {
			t.Skip("no ip(8) to set addresses up in a network namespace")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, unshare, "-n", os.Args[0], "-test.run=^TestEBPFNetns$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), netnsEnv+"=1")
		out, err := cmd.CombinedOutput()
		switch {
		case err != nil && strings.Contains(string(out), "unshare failed"):
			t.Skipf("cannot make a network namespace: %s", out)
		case err != nil:
			t.Fatalf("in the namespace: %v\n%s", err, out)
		case !strings.Contains(string(out), "--- PASS: TestEBPFNetns"):
			t.Fatalf("in the namespace, the test did not pass:\n%s", out)
		}
		t.Logf("in a new network namespace:\n%s", out)
		return
	}
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"addr", "add", "192.0.2.1/32", "dev", "lo"},
		{"addr", "add", "192.0.2.2/32", "dev", "lo"},
		{"addr", "add", "192.0.2.3/32", "dev", "lo"},
		{"addr", "add", "198.51.100.7/32", "dev", "lo"},
		{"addr", "add", "198.51.100.8/32", "dev", "lo"},
		{"-6", "addr", "add", "2001:db8::1/128", "dev", "lo", "nodad"},
		{"-6", "addr", "add", "2001:db8::2/128", "dev", "lo", "nodad"},
		{"-6", "addr", "add", "2001:db8::3/128", "dev", "lo", "nodad"},
		{"-6", "addr", "add", "2001:db8:bad::5/128", "dev", "lo", "nodad"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	a := mustACL(t, "deny 192.0.2.2", "deny 198.51.100.0/24", "allow 198.51.100.7",
		"deny 2001:db8::2", "deny 2001:db8:bad::/48")
	for _, tc := range []struct {
		listen   string
		dst4     string // IPv4 destination, "" for an IPv6-only listener
		dst6     string
		denied   []string
		allowed  []string
		accepted []string
	}{
		{"192.0.2.1:0", "192.0.2.1", "", []string{"192.0.2.2", "198.51.100.8"}, []string{"192.0.2.3", "198.51.100.7"},
			[]string{"192.0.2.3", "198.51.100.7"}},
		{"[2001:db8::1]:0", "", "2001:db8::1", []string{"2001:db8::2", "2001:db8:bad::5"}, []string{"2001:db8::3"},
			[]string{"2001:db8::3"}},
		{"[::]:0", "192.0.2.1", "2001:db8::1", []string{"192.0.2.2", "198.51.100.8", "2001:db8::2", "2001:db8:bad::5"},
			[]string{"192.0.2.3", "198.51.100.7", "2001:db8::3"}, []string{"192.0.2.3", "198.51.100.7", "2001:db8::3"}},
	} {
		t.Run(tc.listen, func(t *testing.T) {
			ln := listen(t, tc.listen)
			attachEBPF(t, ln, a)
			ch := acceptor(ln)
			to := func(src string) string {
				if netip.MustParseAddr(src).Is4() {
					return net.JoinHostPort(tc.dst4, port(ln))
				}
				return net.JoinHostPort(tc.dst6, port(ln))
			}
			for _, src := range tc.denied {
				mustTimeOut(t, src, to(src))
			}
			for _, src := range tc.allowed {
				mustConnect(t, src, to(src))
			}
			expectAccepted(t, ln, ch, tc.accepted...)
		})
	}
}
