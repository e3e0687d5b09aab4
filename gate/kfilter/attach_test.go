//go:build linux

package kfilter_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/peergate/peergate/acl"
	"github.com/peergate/peergate/gate/kfilter"
	"github.com/peergate/peergate/internal/acltest"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// A SYN the filter drops gets no answer, so a dial from a denied source must time out; 300 ms is
// well beyond a loopback handshake and well before the first SYN retransmission (1 s).
const dropTimeout = 300 * time.Millisecond

// listen opens a plain TCP listener: not MPTCP, which takes no socket filter.
func listen(t *testing.T, addr string) net.Listener {
	t.Helper()
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		t.Skipf("cannot listen on %s: %v", addr, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func rawConn(t *testing.T, ln net.Listener) syscall.RawConn {
	t.Helper()
	rc, err := ln.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	return rc
}

// refused reports whether err is the kernel (or a sandbox) refusing socket filters as such.
func refused(err error) bool {
	return errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) || errors.Is(err, unix.ENOPROTOOPT) ||
		errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, kfilter.ErrMPTCP)
}

// apply compiles rules and attaches them to ln, skipping the test if the kernel refuses.
func apply(t *testing.T, ln net.Listener, rules ...string) *acl.ACL {
	t.Helper()
	a := mustACL(t, rules...)
	if err := kfilter.Apply(rawConn(t, ln), a); refused(err) {
		t.Skipf("SO_ATTACH_FILTER refused on this system: %v", err)
	} else if err != nil {
		t.Fatal(err)
	}
	return a
}

// mustACL builds an allow-by-default ACL from rules such as "deny 127.0.0.2".
func mustACL(t testing.TB, rules ...string) *acl.ACL {
	t.Helper()
	return acl.MustNew(acl.Spec{Default: acl.Allow, Rules: acltest.RulesOf(rules...)})
}

// acceptor accepts on ln until it is closed and sends the peer of each connection, which it
// closes; the channel is closed when Accept fails.
func acceptor(ln net.Listener) <-chan netip.Addr {
	ch := make(chan netip.Addr, 16)
	go func() {
		defer close(ch)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			ch <- c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
			c.Close()
		}
	}()
	return ch
}

// dial connects from src (an address, or "" for any) to addr with a short timeout.
func dial(src, addr string) error {
	d := net.Dialer{Timeout: dropTimeout}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	c, err := d.Dial("tcp", addr)
	if err == nil {
		c.Close()
	}
	return err
}

func mustConnect(t *testing.T, src, addr string) {
	t.Helper()
	if err := dial(src, addr); err != nil {
		t.Fatalf("from %q to %s: %v, want a connection", src, addr, err)
	}
}

func mustTimeOut(t *testing.T, src, addr string) {
	t.Helper()
	err := dial(src, addr)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("from %q to %s: %v, want a timeout (SYN dropped)", src, addr, err)
	}
}

// expectAccepted closes ln once the peers in want have been accepted, in that order, and checks
// that Accept returned nothing else. Every dial has finished before, and the accept queue is
// first in, first out: a denied peer that got through would have been accepted before the allowed
// peers that dialled after it, or would be left in the queue.
func expectAccepted(t *testing.T, ln net.Listener, ch <-chan netip.Addr, want ...string) {
	t.Helper()
	var got []string
	deadline := time.After(10 * time.Second) // a failure guard, not synchronisation
	for len(got) < len(want) {
		select {
		case a := <-ch:
			got = append(got, a.String())
		case <-deadline:
			t.Fatalf("accepted %v, still waiting for %v", got, want[len(got):])
		}
	}
	ln.Close()
	for a := range ch {
		got = append(got, a.String())
	}
	if !slices.Equal(got, want) {
		t.Fatalf("Accept returned %v, want %v", got, want)
	}
}

func port(ln net.Listener) string {
	_, p, _ := net.SplitHostPort(ln.Addr().String())
	return p
}

func TestDropsDeniedIPv4(t *testing.T) {
	ln := listen(t, "127.0.0.1:0")
	apply(t, ln, "deny 127.0.0.2")
	ch := acceptor(ln)
	addr := ln.Addr().String()
	mustTimeOut(t, "127.0.0.2", addr)
	mustConnect(t, "127.0.0.1", addr)
	mustConnect(t, "127.0.0.3", addr)
	mustTimeOut(t, "127.0.0.2", addr)
	mustConnect(t, "127.0.0.1", addr)
	expectAccepted(t, ln, ch, "127.0.0.1", "127.0.0.3", "127.0.0.1")
}

// TestDropsDeniedDualStack: on a [::] listener IPv4 clients arrive as IPv4 packets, and a rule
// written in the IPv4-mapped form judges them; IPv6 rules judge ::1.
func TestDropsDeniedDualStack(t *testing.T) {
	ln := listen(t, "[::]:0")
	apply(t, ln, "deny ::ffff:127.0.0.2", "deny ::1")
	ch := acceptor(ln)
	v4, v6 := net.JoinHostPort("127.0.0.1", port(ln)), net.JoinHostPort("::1", port(ln))
	mustTimeOut(t, "127.0.0.2", v4)
	mustTimeOut(t, "::ffff:127.0.0.2", "[::ffff:127.0.0.1]:"+port(ln))
	mustTimeOut(t, "", v6)
	mustConnect(t, "127.0.0.1", v4)
	mustConnect(t, "127.0.0.3", v4)
	expectAccepted(t, ln, ch, "127.0.0.1", "127.0.0.3")
}

func TestAllowsIPv6(t *testing.T) {
	ln := listen(t, "[::]:0")
	apply(t, ln, "deny 127.0.0.0/8", "allow ::1")
	ch := acceptor(ln)
	mustTimeOut(t, "127.0.0.1", net.JoinHostPort("127.0.0.1", port(ln)))
	mustConnect(t, "", net.JoinHostPort("::1", port(ln)))
	expectAccepted(t, ln, ch, "::1")
}

func TestIPv6Only(t *testing.T) {
	ln := listen(t, "[::1]:0")
	apply(t, ln, "deny ::1")
	ch := acceptor(ln)
	mustTimeOut(t, "", ln.Addr().String())
	apply(t, ln, "deny ::2")
	mustConnect(t, "", ln.Addr().String())
	expectAccepted(t, ln, ch, "::1")
}

// TestReattachReplaces: a second Apply replaces the first filter, and Detach removes it.
func TestReattachReplaces(t *testing.T) {
	ln := listen(t, "127.0.0.1:0")
	addr := ln.Addr().String()
	apply(t, ln, "deny 127.0.0.2")
	ch := acceptor(ln)
	mustTimeOut(t, "127.0.0.2", addr)
	mustConnect(t, "127.0.0.3", addr)

	apply(t, ln, "deny 127.0.0.3")
	mustConnect(t, "127.0.0.2", addr)
	mustTimeOut(t, "127.0.0.3", addr)

	rc := rawConn(t, ln)
	for range 2 { // the second finds no filter and is not an error
		if err := kfilter.Detach(rc); err != nil {
			t.Fatalf("Detach: %v", err)
		}
	}
	mustConnect(t, "127.0.0.3", addr)
	expectAccepted(t, ln, ch, "127.0.0.3", "127.0.0.2", "127.0.0.3")
}

// TestApplyTooLargeDetaches: when the new ACL does not fit, Apply removes the old filter rather
// than leave it judging by rules that are no longer in force.
func TestApplyTooLargeDetaches(t *testing.T) {
	ln := listen(t, "127.0.0.1:0")
	rc := rawConn(t, ln)
	apply(t, ln, "deny 127.0.0.2")
	if filterLen(t, rc) == 0 {
		t.Fatal("no filter attached")
	}
	spec := acl.Spec{Default: acl.Allow}
	for i := range uint32(5000) {
		v := (i + 1) * 2654435761
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), 32)
		spec.Rules = append(spec.Rules, acl.Rule{Prefix: p, Action: acl.Deny})
	}
	if err := kfilter.Apply(rc, acl.MustNew(spec)); !errors.Is(err, kfilter.ErrTooLarge) {
		t.Fatalf("Apply: %v, want ErrTooLarge", err)
	}
	if n := filterLen(t, rc); n != 0 {
		t.Fatalf("a %d-instruction filter is still attached", n)
	}
	ch := acceptor(ln)
	mustConnect(t, "127.0.0.2", ln.Addr().String())
	expectAccepted(t, ln, ch, "127.0.0.2")
}

// TestLargestPrograms: programs of nearly MaxInstructions attach (net.core.optmem_max allows
// them), replace one another, and still decide as the ACL does.
func TestLargestPrograms(t *testing.T) {
	for _, network := range []string{"127.0.0.1:0", "[::]:0"} {
		t.Run(network, func(t *testing.T) {
			ln := listen(t, network)
			family, err := kfilter.Family(rawConn(t, ln))
			if err != nil {
				t.Fatal(err)
			}
			for _, deny := range []string{"127.0.0.2", "127.0.0.3"} {
				a, n := largest(t, family, deny)
				if err := kfilter.Apply(rawConn(t, ln), a); refused(err) {
					t.Skipf("SO_ATTACH_FILTER refused on this system: %v", err)
				} else if err != nil {
					t.Fatalf("%d instructions: %v", n, err)
				}
				t.Logf("%d rules, %d instructions attached", a.Len(), n)
			}
			ch := acceptor(ln)
			addr := net.JoinHostPort("127.0.0.1", port(ln))
			mustTimeOut(t, "127.0.0.3", addr)
			mustConnect(t, "127.0.0.2", addr)
			expectAccepted(t, ln, ch, "127.0.0.2")
		})
	}
}

// largest returns the largest allow-by-default ACL that denies src and other scattered IPv4 (and,
// for AF_INET6, IPv6) addresses and still fits in one program, and the program's length.
func largest(t *testing.T, family int, src string) (*acl.ACL, int) {
	rules := []acl.Rule{{Prefix: netip.MustParsePrefix(src + "/32"), Action: acl.Deny}}
	for i := uint32(1); len(rules) < 4096; i++ {
		v := i * 2654435761 // scattered
		b := [4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
		if b[0] == 127 {
			continue
		}
		p := netip.PrefixFrom(netip.AddrFrom4(b), 32)
		if family == unix.AF_INET6 && i%2 == 0 {
			p = netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, byte(i), b[0], b[1], b[2], b[3]}), 128)
		}
		rules = append(rules, acl.Rule{Prefix: p, Action: acl.Deny})
	}
	compile := func(n int) (*acl.ACL, int, bool) {
		a := acl.MustNew(acl.Spec{Default: acl.Allow, Rules: rules[:n]})
		prog, err := kfilter.Compile(a, family)
		if err != nil && !errors.Is(err, kfilter.ErrTooLarge) {
			t.Fatal(err)
		}
		return a, len(prog), err == nil
	}
	lo, hi := 1, len(rules) // fits with lo rules, not with hi
	for hi-lo > 1 {
		if mid := (lo + hi) / 2; func() bool { _, _, ok := compile(mid); return ok }() {
			lo = mid
		} else {
			hi = mid
		}
	}
	a, n, _ := compile(lo)
	return a, n
}

// TestAcceptedInheritsFilter: the kernel copies the listener's filter to each accepted socket, as
// the package documentation says, and a later Apply on the listener leaves it alone.
func TestAcceptedInheritsFilter(t *testing.T) {
	ln := listen(t, "127.0.0.1:0")
	apply(t, ln, "deny 127.0.0.2")
	want := filterLen(t, rawConn(t, ln))
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rc, err := s.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	apply(t, ln, "deny 127.0.0.2", "deny 127.0.0.3", "deny 127.0.0.5")
	if got := filterLen(t, rc); got != want || want == 0 {
		t.Fatalf("accepted socket has a %d-instruction filter, listener had %d", got, want)
	}
	if filterLen(t, rawConn(t, ln)) == want {
		t.Fatal("the listener's filter was not replaced")
	}
}

// filterLen returns the length of the socket's filter, 0 if none (SO_GET_FILTER with no buffer).
func filterLen(t *testing.T, rc syscall.RawConn) int {
	t.Helper()
	var n uint32
	var errno syscall.Errno
	rc.Control(func(fd uintptr) {
		_, _, errno = unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_SOCKET, unix.SO_GET_FILTER, 0,
			uintptr(unsafe.Pointer(&n)), 0)
	})
	if errno != 0 {
		t.Fatalf("SO_GET_FILTER: %v", errno)
	}
	return int(n)
}

// TestMPTCP: Go's default listener is MPTCP where the kernel supports it, and the kernel takes no
// socket filter on it; Attach says so.
func TestMPTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	rc := rawConn(t, ln)
	var proto int
	rc.Control(func(fd uintptr) { proto, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PROTOCOL) })
	if proto != unix.IPPROTO_MPTCP {
		t.Skipf("net.Listen made a protocol %d socket, not MPTCP", proto)
	}
	err = kfilter.Apply(rc, mustACL(t, "deny 127.0.0.2"))
	if !errors.Is(err, kfilter.ErrMPTCP) || !errors.Is(err, unix.EOPNOTSUPP) {
		t.Fatalf("Apply on an MPTCP listener: %v, want ErrMPTCP wrapping EOPNOTSUPP", err)
	}
}

func TestAttachErrors(t *testing.T) {
	ln := listen(t, "127.0.0.1:0")
	rc := rawConn(t, ln)
	if err := kfilter.Attach(rc, nil); !errors.Is(err, kfilter.ErrEmpty) {
		t.Errorf("empty program: %v", err)
	}
	if err := kfilter.Attach(rc, make([]bpf.RawInstruction, kfilter.MaxInstructions+1)); !errors.Is(err, kfilter.ErrTooLarge) {
		t.Errorf("too long: %v", err)
	}
	// A program the kernel's checker rejects (no return at the end).
	bad := []bpf.RawInstruction{{Op: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS}}
	if err := kfilter.Attach(rc, bad); !errors.Is(err, unix.EINVAL) {
		t.Errorf("invalid program: %v, want EINVAL", err)
	}
	u, err := net.Listen("unix", t.TempDir()+"/s")
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if err := kfilter.Apply(rawConn(t, u), mustACL(t)); !errors.Is(err, kfilter.ErrFamily) {
		t.Errorf("unix socket: %v, want ErrFamily", err)
	}
}
