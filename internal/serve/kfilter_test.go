//go:build linux

package serve

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/peergate/peergate/acl"
	"github.com/peergate/peergate/gate/kfilter"
	"github.com/peergate/peergate/internal/config"
)

// TestKernelFilterGateStaysAuthority: a connection whose SYN the eBPF filter let in, under an ACL
// that allowed it, and that waits in the accept queue while a reload denies its peer, is denied by
// the gate at accept; the peer's next SYN is dropped in the kernel; the filter was updated in place.
func TestKernelFilterGateStaysAuthority(t *testing.T) {
	if err := kfilter.EBPFAvailable(); err != nil {
		t.Skipf("eBPF socket filter unavailable here: %v", err)
	}
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := newMetrics()
	svc := func(rules ...acl.Rule) *service {
		a := acl.MustNew(acl.Spec{Default: acl.Allow, Rules: rules})
		return &service{Service: &config.Service{Name: "s", ACL: &config.ACL{Name: "a", ACL: a}, KernelFilter: config.FilterEBPF},
			log: slog.New(slog.DiscardHandler), m: m.service("s")}
	}
	g, err := newGate(ln, svc(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if st := g.filterState(); st.Backend != "ebpf" {
		t.Fatalf("backend %q, want ebpf", st.Backend)
	}
	gl := g.(*gateListener)
	before := gl.ebpf
	dial := func(src string) (net.Conn, error) {
		d := net.Dialer{Timeout: 300 * time.Millisecond, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		return d.Dial("tcp", ln.Addr().String())
	}
	queued, err := dial("127.0.0.3") // the kernel completes the handshake; nobody accepts yet
	if err != nil {
		t.Fatal(err)
	}
	defer queued.Close()
	if err := g.Configure(svc(acl.Rule{Prefix: netip.MustParsePrefix("127.0.0.3/32"), Action: acl.Deny})); err != nil {
		t.Fatal(err)
	}
	if gl.ebpf != before {
		t.Error("the reload replaced the eBPF filter instead of updating its maps")
	}
	var ne net.Error
	if c, err := dial("127.0.0.3"); err == nil {
		c.Close()
		t.Fatal("127.0.0.3 connected after the reload denied it")
	} else if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("127.0.0.3 after the reload: %v, want a timeout (SYN dropped)", err)
	}
	allowed, err := dial("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	defer allowed.Close()
	c, err := g.Accept() // the gate closes the queued 127.0.0.3 and returns 127.0.0.1
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if peer := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr(); peer != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("Accept returned %v, want 127.0.0.1 (the queued 127.0.0.3 is denied by the gate)", peer)
	}
	queued.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := queued.Read(make([]byte, 1)); n != 0 || err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Errorf("the queued connection from 127.0.0.3: read %d, %v; want it closed by the gate", n, err)
	}
	if v4, _, _ := gl.ebpf.Dropped(); v4 == 0 {
		t.Error("no drop counted")
	}
}
