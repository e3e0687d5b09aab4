//go:build linux

package kfilter_test

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/peergate/peergate/acl"
	"github.com/peergate/peergate/gate"
	"github.com/peergate/peergate/gate/kfilter"
	"golang.org/x/sys/unix"
)

// serverEnv, when set, makes the test binary the server of BenchmarkShed (see shedServer).
const serverEnv = "KFILTER_SHED_SERVER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(serverEnv); mode != "" {
		shedServer(mode)
		return
	}
	os.Exit(m.Run())
}

// BenchmarkShed measures how fast, and at what CPU cost, a server turns away connection attempts
// from a denied peer (127.0.0.2), two ways in the same run:
//
//   - filter=kernel: the listener carries the ACL's socket filter, so the kernel drops each SYN;
//     the client makes a non-blocking connect and closes the socket at once (the SYN was sent
//     and dropped; waiting would only see it retransmitted);
//   - filter=ebpf1M: the same with the eBPF filter, its maps holding 127.0.0.2 among a million
//     scattered /32s;
//   - filter=rawshed: no filter, and no gate.Listener either: a raw accept4 loop on the
//     listener's descriptor judges the address accept4 returns and closes denied peers without
//     making a net.Conn (2 system calls a denied peer instead of about 7): what a userspace shed
//     path could save;
//   - filter=userspace: no filter; the handshake completes, gate.Listener accepts, judges and
//     closes (FIN); the client waits for EOF and resets.
//
// The server is a child process (this test binary), so its CPU is measured apart from the
// client's with getrusage(2). Reported per attempt: srv-cpu-ns (the server process: accept,
// getpeername, close, and the softirq work that lands in its context), cli-cpu-ns (this process:
// the connects, and the loopback receive path, which runs mostly in the sender's context) and
// gate-denied (attempts that reached the gate: 0 with the kernel filter, 1 without). ns/op gives
// the shed rate. Loopback only; the count is b.N (bench/kfilter.sh passes -benchtime Nx).
//
// gate-denied 0 shows the filter at work: on loopback the handshake completes within the client's
// non-blocking connect, so without a filter the same connect-and-close client would still have
// every attempt accepted (checked when this benchmark was written: 1000 of 1000).
func BenchmarkShed(b *testing.B) {
	for _, mode := range []string{"kernel", "ebpf1M", "userspace", "rawshed"} {
		if m := os.Getenv("SHED_MODES"); m != "" && !strings.Contains(m, mode) {
			continue
		}
		b.Run("filter="+mode, func(b *testing.B) {
			srv := startServer(b, mode)
			cpu0, denied0, _ := srv.stats(b)
			self0 := selfCPU()
			b.SetParallelism(4)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := attempt(srv.addr, mode == "kernel" || mode == "ebpf1M"); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			self1 := selfCPU()
			cpu1, denied1, allowed1 := srv.stats(b)
			n := float64(b.N)
			b.ReportMetric(float64(cpu1-cpu0)/n, "srv-cpu-ns/op")
			b.ReportMetric(float64(self1-self0)/n, "cli-cpu-ns/op")
			b.ReportMetric(float64(denied1-denied0)/n, "gate-denied/op")
			if allowed1 != 0 {
				b.Fatalf("the gate allowed %d connections", allowed1)
			}
		})
	}
}

// attempt makes one connection attempt from 127.0.0.2 to addr. With drop, the SYN is expected to
// be dropped: connect must be in progress (a refusal or a completed handshake is an error), and the
// socket is closed at once. Without, the gate is expected to close the connection: read to EOF,
// then reset, so that no TIME_WAIT piles up.
func attempt(addr unix.Sockaddr, drop bool) error {
	typ := unix.SOCK_STREAM | unix.SOCK_CLOEXEC
	if drop {
		typ |= unix.SOCK_NONBLOCK
	}
	fd, err := unix.Socket(unix.AF_INET, typ, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 2}}); err != nil {
		return fmt.Errorf("bind: %w", err)
	}
	err = unix.Connect(fd, addr)
	if drop {
		if err != unix.EINPROGRESS {
			return fmt.Errorf("non-blocking connect: %v, want EINPROGRESS", err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	var buf [1]byte
	if n, err := unix.Read(fd, buf[:]); n != 0 || err != nil && err != unix.ECONNRESET {
		return fmt.Errorf("read: %d, %v; want EOF", n, err)
	}
	return unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
}

func selfCPU() int64 {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

type server struct {
	addr unix.Sockaddr
	in   *os.File
	out  *bufio.Scanner
}

// startServer runs this binary as the server of the given mode and returns once it listens.
func startServer(b *testing.B, mode string) *server {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), serverEnv+"="+mode)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stdin.Close() // the server exits at EOF
		cmd.Wait()
	})
	out := bufio.NewScanner(stdout)
	if !out.Scan() {
		b.Fatalf("server: %v", out.Err())
	}
	line := out.Text()
	if msg, ok := strings.CutPrefix(line, "skip "); ok {
		b.Skip(msg)
	}
	ap, err := netip.ParseAddrPort(line)
	if err != nil {
		b.Fatalf("server said %q", line)
	}
	return &server{
		addr: &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())},
		in:   stdin.(*os.File),
		out:  out,
	}
}

// stats asks the server for its CPU time (ns) and its gate's counters.
func (s *server) stats(b *testing.B) (cpu int64, denied, allowed uint64) {
	if _, err := s.in.WriteString("stats\n"); err != nil {
		b.Fatal(err)
	}
	if !s.out.Scan() {
		b.Fatalf("server: %v", s.out.Err())
	}
	if _, err := fmt.Sscan(s.out.Text(), &cpu, &denied, &allowed); err != nil {
		b.Fatalf("server said %q: %v", s.out.Text(), err)
	}
	return cpu, denied, allowed
}

// shedServer listens on 127.0.0.1 behind a gate.Listener that denies 127.0.0.2, with the ACL's
// socket filter too if mode is "kernel". It prints its address, then answers each line on stdin
// with "cpu-ns denied allowed", and exits at EOF.
func shedServer(mode string) {
	rules := acl.MustNew(acl.Spec{Default: acl.Allow, Rules: []acl.Rule{
		{Prefix: netip.MustParsePrefix("127.0.0.2/32"), Action: acl.Deny},
	}})
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	inner, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println("skip listen:", err)
		return
	}
	rc, _ := inner.(*net.TCPListener).SyscallConn()
	switch mode {
	case "kernel":
		if err := kfilter.Apply(rc, rules); err != nil {
			fmt.Println("skip SO_ATTACH_FILTER refused:", err)
			return
		}
	case "ebpf1M": // the eBPF filter holding 127.0.0.2 among a million scattered /32s
		f, err := kfilter.NewEBPF()
		if err != nil {
			fmt.Println("skip", err)
			return
		}
		defer f.Close()
		big := acl.MustNew(acl.Spec{Default: acl.Allow, Rules: append(scattered32(1_000_000),
			acl.Rule{Prefix: netip.MustParsePrefix("127.0.0.2/32"), Action: acl.Deny})})
		if err := f.Load(big); err != nil {
			fmt.Println("skip", err)
			return
		}
		if err := f.Attach(rc); err != nil {
			fmt.Println("skip", err)
			return
		}
		big = nil
		debug.FreeOSMemory() // no scavenging of the build's garbage during the measurement
	}
	ln := gate.NewListener(inner, rules, gate.Options{})
	var rawDenied atomic.Uint64
	if mode == "rawshed" {
		go rawShed(inner.(*net.TCPListener), rules, &rawDenied)
	} else {
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
	}
	fmt.Println(inner.Addr())
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		st := ln.Stats()
		st.Denied += rawDenied.Load()
		var ru unix.Rusage
		unix.Getrusage(unix.RUSAGE_SELF, &ru)
		fmt.Println(ru.Utime.Nano()+ru.Stime.Nano(), st.Denied, st.Allowed)
	}
	ln.Close()
}

// scattered32 returns n distinct deny rules for random IPv4 /32s outside 127.0.0.0/8.
func scattered32(n int) []acl.Rule {
	r := rand.New(rand.NewPCG(42, 32))
	seen := make(map[uint32]bool, n)
	rules := make([]acl.Rule, 0, n+1)
	for len(rules) < n {
		v := r.Uint32()
		if v>>24 == 127 || seen[v] {
			continue
		}
		seen[v] = true
		a := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
		rules = append(rules, acl.Rule{Prefix: netip.PrefixFrom(a, 32), Action: acl.Deny})
	}
	return rules
}

// rawShed accepts on a blocking duplicate of the listener's descriptor with accept4(2) directly
// (a thread of its own blocks in it), judges the peer address accept4 returns, and closes denied
// peers: no net.Conn, no getpeername, no registration with the poller. (Go's RawConn.Read does not
// wait for readiness on a listening socket: EINVAL.)
func rawShed(ln *net.TCPListener, rules *acl.ACL, denied *atomic.Uint64) {
	f, err := ln.File() // a duplicate, in blocking mode
	if err != nil {
		return
	}
	defer f.Close()
	fd := int(f.Fd())
	for {
		nfd, sa, err := unix.Accept4(fd, unix.SOCK_CLOEXEC)
		if err == unix.EINTR || err == unix.ECONNABORTED {
			continue
		}
		if err != nil {
			return
		}
		var a netip.Addr
		switch sa := sa.(type) {
		case *unix.SockaddrInet4:
			a = netip.AddrFrom4(sa.Addr)
		case *unix.SockaddrInet6:
			a = netip.AddrFrom16(sa.Addr)
		}
		if !rules.Decide(a).Allowed() {
			denied.Add(1)
		}
		unix.Close(nfd)
	}
}
