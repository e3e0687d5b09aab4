//go:build linux

package serve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"

	"github.com/peergate/peergate/acl"
	"github.com/peergate/peergate/gate"
	"github.com/peergate/peergate/gate/kfilter"
	"github.com/peergate/peergate/internal/config"
	"github.com/peergate/peergate/internal/kerneltest"
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
	g, err := newGate(ln, svc(), slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if st := g.filterState(); st.Backend != "ebpf" {
		t.Fatalf("backend %q, want ebpf", st.Backend)
	}
	gl := g.(*gateListener)
	before := gl.sf
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
	if gl.sf != before {
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
	if v4, _, _ := gl.sf.f.Dropped(); v4 == 0 {
		t.Error("no drop counted")
	}
}

// sharedOf returns the eBPF filter each listener of service name has (nil: none), by address.
func sharedOf(s *Server, name string) map[string]*sharedEBPF {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]*sharedEBPF{}
	for _, p := range s.ports {
		if p.svc.Load().Name == name {
			g := p.ln.(*gateListener)
			g.mu.Lock()
			out[g.Addr().String()] = g.sf
			g.mu.Unlock()
		}
	}
	return out
}

// kernelDroppedOf returns peergate_kernel_dropped_total{service,family} as /metrics shows it.
func kernelDroppedOf(t *testing.T, s *Server, service, family string) float64 {
	t.Helper()
	mfs, err := s.m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "peergate_kernel_dropped_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["service"] == service && labels["family"] == family {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no peergate_kernel_dropped_total{service=%q,family=%q}", service, family)
	return 0
}

const sharedConfig = `services:
  - {name: p, listen: [%s], acl: lo, upstream: %s, kernel_filter: %s}
acls:
  lo: {default: allow, deny: [%s]}
`

// TestKernelFilterSharedByListeners: the two listeners of a service share one eBPF filter (one
// set of maps, one program): a denied peer is dropped on both and counted once per SYN; a reload
// that changes the ACL updates the maps once, in place, and both listeners drop the newly denied
// peer; a reload closing one listener leaves the other filtered by the same filter; kernel_filter
// off frees it.
func TestKernelFilterSharedByListeners(t *testing.T) {
	if err := kfilter.EBPFAvailable(); err != nil {
		t.Skipf("eBPF socket filter unavailable here: %v", err)
	}
	two := `"127.0.0.1:0", "127.0.0.1:0"`
	up := upstream(t, "echo")
	files := map[string]string{"serve.yaml": fmt.Sprintf(sharedConfig, two, "%s", "ebpf", "127.0.0.2")}
	s, _, dir := startFiles(t, files, false, nil)
	reload := func(listen, mode, deny string) {
		t.Helper()
		replace(t, dir, "serve.yaml", fmt.Sprintf(sharedConfig, listen, up, mode, deny))
		if err := s.Reload(); err != nil {
			t.Fatal(err)
		}
	}
	// The upstream of the first load is another echo: point the file at up from now on.
	reload(two, "ebpf", "127.0.0.2")
	var addrs []string // in the order of the listen entries
	s.mu.Lock()
	for i := range 2 {
		if p := s.ports[portKey("p", "127.0.0.1:0", i)]; p != nil {
			addrs = append(addrs, p.ln.Addr().String())
		}
	}
	s.mu.Unlock()
	if len(addrs) != 2 {
		t.Fatalf("listening on %v, want two addresses", addrs)
	}
	sfs := sharedOf(s, "p")
	sf := sfs[addrs[0]]
	if sf == nil || sfs[addrs[1]] != sf {
		t.Fatalf("the two listeners' eBPF filters: %v, want one shared", sfs)
	}
	s.kf.mu.Lock()
	users, filters := len(sf.users), len(s.kf.by)
	s.kf.mu.Unlock()
	if users != 2 || filters != 1 {
		t.Fatalf("%d listeners on the filter, %d filters; want 2 and 1", users, filters)
	}
	for _, a := range addrs {
		if !kerneltest.Dropped("127.0.0.2", a) {
			t.Errorf("127.0.0.2 to %s: the handshake completed; the shared filter should drop its SYN", a)
		}
		if !admits(t, "127.0.0.1", a) {
			t.Errorf("127.0.0.1 not served on %s", a)
		}
	}
	if n := kernelDroppedOf(t, s, "p", "ipv4"); n != 2 {
		t.Errorf("peergate_kernel_dropped_total{service=p,family=ipv4} = %v, want 2 (one SYN on each listener, counted once)", n)
	}
	s.mu.Lock()
	fs := s.kernelFilters()["p"]
	s.mu.Unlock()
	for _, f := range fs {
		if f.Backend != "ebpf" || f.Shared != 2 || f.ACL4 != 2 || f.MapBytes == 0 || f.Dropped != 2 {
			t.Errorf("/config: %+v, want backend ebpf, maps shared by 2, 2 IPv4 prefixes, map bytes, 2 dropped", f)
		}
	}

	// A reload changing the ACL: one Load for the service, both listeners drop the new denial.
	s.kf.mu.Lock()
	loads := s.kf.loads
	s.kf.mu.Unlock()
	reload(two, "ebpf", "127.0.0.3")
	s.kf.mu.Lock()
	loads = s.kf.loads - loads
	s.kf.mu.Unlock()
	if loads != 1 {
		t.Errorf("the reload loaded the maps %d times, want once for the service", loads)
	}
	if sfs := sharedOf(s, "p"); sfs[addrs[0]] != sf || sfs[addrs[1]] != sf {
		t.Fatal("the reload replaced the shared filter instead of updating its maps")
	}
	for _, a := range addrs {
		if !kerneltest.Dropped("127.0.0.3", a) {
			t.Errorf("127.0.0.3 to %s after the reload: the handshake completed", a)
		}
		if !admits(t, "127.0.0.2", a) {
			t.Errorf("127.0.0.2 not served on %s after the reload allowed it", a)
		}
	}

	// A reload closing the second listener: the first keeps the filter.
	reload(`"127.0.0.1:0"`, "ebpf", "127.0.0.3")
	if got := s.Addrs()["p"]; len(got) != 1 || got[0].String() != addrs[0] {
		t.Fatalf("listening on %v, want %s alone", got, addrs[0])
	}
	if sfs := sharedOf(s, "p"); sfs[addrs[0]] != sf {
		t.Fatal("closing one listener replaced the other's filter")
	}
	s.kf.mu.Lock()
	users, dead := len(sf.users), sf.dead
	s.kf.mu.Unlock()
	if users != 1 || dead {
		t.Fatalf("after closing one listener: %d on the filter, freed %v; want 1, false", users, dead)
	}
	if !kerneltest.Dropped("127.0.0.3", addrs[0]) {
		t.Errorf("127.0.0.3 to %s after the other listener closed: the handshake completed", addrs[0])
	}
	if c, err := dialFrom("127.0.0.1", addrs[1]); err == nil {
		c.Close()
		t.Errorf("%s still accepts after the reload closed it", addrs[1])
	}
	if n := kernelDroppedOf(t, s, "p", "ipv4"); n != 5 {
		t.Errorf("peergate_kernel_dropped_total{service=p,family=ipv4} = %v, want 5", n)
	}

	// kernel_filter off: the last listener lets the filter go, and it is freed.
	reload(`"127.0.0.1:0"`, "off", "127.0.0.3")
	s.kf.mu.Lock()
	filters, dead = len(s.kf.by), sf.dead
	s.kf.mu.Unlock()
	if filters != 0 || !dead {
		t.Errorf("with kernel_filter off: %d filters held, the service's freed %v; want 0, true", filters, dead)
	}
	if kerneltest.Dropped("127.0.0.3", addrs[0]) || admits(t, "127.0.0.3", addrs[0]) {
		t.Error("with kernel_filter off, 127.0.0.3 is not refused by the gate")
	}
	if n := kernelDroppedOf(t, s, "p", "ipv4"); n != 5 {
		t.Errorf("peergate_kernel_dropped_total{service=p,family=ipv4} = %v after the filter was freed, want 5 still", n)
	}
}

// TestKernelFilterAbandonedReloadUndone: a listener opened by a reload that then fails (another
// address in use) has brought the service's shared maps to the new ACL; closing it brings them back
// to the ACL the remaining listeners' gates still have.
func TestKernelFilterAbandonedReloadUndone(t *testing.T) {
	if err := kfilter.EBPFAvailable(); err != nil {
		t.Skipf("eBPF socket filter unavailable here: %v", err)
	}
	m := newMetrics()
	svc := func(deny string) *service {
		a := acl.MustNew(acl.Spec{Default: acl.Allow, Rules: []acl.Rule{{Prefix: netip.MustParsePrefix(deny), Action: acl.Deny}}})
		return &service{Service: &config.Service{Name: "s", ACL: &config.ACL{Name: "a", ACL: a}, KernelFilter: config.FilterEBPF},
			log: slog.New(slog.DiscardHandler), m: m.service("s")}
	}
	var kf kernelFilters
	open := func(svc *service) (gated, string) {
		g := openGate(t, svc, &kf)
		return g, g.Addr().String()
	}
	old := svc("127.0.0.2/32")
	a, addrA := open(old)
	defer a.Close()
	b, _ := open(old)
	defer b.Close()
	c, _ := open(svc("127.0.0.3/32")) // the new listener of the abandoned reload
	if !kerneltest.Dropped("127.0.0.3", addrA) {
		t.Fatal("the new listener's ACL is not in the shared maps")
	}
	c.Close()
	if kerneltest.Dropped("127.0.0.3", addrA) || !kerneltest.Dropped("127.0.0.2", addrA) {
		t.Error("closing the abandoned listener did not bring the maps back to the running ACL")
	}
	b.Close()
	a.Close()
	kf.mu.Lock()
	defer kf.mu.Unlock()
	if len(kf.by) != 0 {
		t.Errorf("%d filters held after the last listener closed, want 0", len(kf.by))
	}
}

// BenchmarkKernelFilterTwoListeners builds the eBPF kernel filter of a service listening on two
// addresses with a 200 000-prefix blocklist (scattered IPv4 /32s) both ways, side by side in each
// iteration: one filter shared by the two listeners (shared-), then, while it is still held, a
// filter of its own on each listener (own-, as before issue 17's leftover). It reports the kernel
// memory each took (slab-MB: growth of SUnreclaim, machine-wide, so other processes move it too,
// and objects freed by an earlier iteration may be reused: -benchtime 1x in a fresh process gives
// the clean figure), what the maps' memlock says (memlock-MB), the CPU time of building and
// attaching (build-cpu-s) and of a reload changing 1 % of the prefixes (reload-cpu-s: a Configure
// of both listeners, as a reload does).
func BenchmarkKernelFilterTwoListeners(b *testing.B) {
	if err := kfilter.EBPFAvailable(); err != nil {
		b.Skipf("eBPF socket filter unavailable here: %v", err)
	}
	const n = 200_000
	rules := make([]acl.Rule, n+n/100)
	for i := range rules {
		x := uint32(i)*2654435761 | 1<<24 // scattered, never 0.x.x.x
		rules[i] = acl.Rule{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(x >> 24), byte(x >> 16), byte(x >> 8), byte(x)}), 32), Action: acl.Deny}
	}
	m := newMetrics()
	mk := func(rules []acl.Rule) *service {
		a := acl.MustNew(acl.Spec{Default: acl.Allow, Rules: rules})
		return &service{Service: &config.Service{Name: "s", ACL: &config.ACL{Name: "a", ACL: a}, KernelFilter: config.FilterEBPF},
			log: slog.New(slog.DiscardHandler), m: m.service("s")}
	}
	svc, svc2 := mk(rules[:n]), mk(rules[n/100:]) // 1 % out, 1 % in
	type figures struct {
		slab      int64
		cpu, recp time.Duration
		memlock   uint64
	}
	var got [2]figures // shared, own
	for range b.N {
		runtime.GC()
		var gs []gated
		for i, shared := range []bool{true, false} {
			var kf *kernelFilters
			if shared {
				kf = &kernelFilters{}
			}
			slab0, cpu0 := kerneltest.SlabKB(), kerneltest.CPUTime()
			var two []*gateListener
			for range 2 {
				g := openGate(b, svc, kf)
				gs = append(gs, g)
				two = append(two, g.(*gateListener))
			}
			got[i].cpu += kerneltest.CPUTime() - cpu0
			got[i].slab += kerneltest.SlabKB() - slab0
			got[i].memlock = 0
			for j, g := range two {
				if j == 0 || g.sf != two[0].sf {
					st, _, _ := g.kf.stats(g.sf)
					got[i].memlock += st.MapBytes
				}
			}
			cpu0 = kerneltest.CPUTime()
			for _, g := range two {
				if err := g.Configure(svc2); err != nil {
					b.Fatal(err)
				}
			}
			got[i].recp += kerneltest.CPUTime() - cpu0
		}
		for _, g := range gs {
			g.Close()
		}
	}
	for i, name := range []string{"shared-", "own-"} {
		b.ReportMetric(float64(got[i].slab)/1e3/float64(b.N), name+"slab-MB")
		b.ReportMetric(float64(got[i].memlock)/1e6, name+"memlock-MB")
		b.ReportMetric(got[i].cpu.Seconds()/float64(b.N), name+"build-cpu-s")
		b.ReportMetric(got[i].recp.Seconds()/float64(b.N), name+"reload-cpu-s")
	}
}

// TestKernelFilterSharedReloadUnderFlood: SYNs from a denied 127.0.0.2 sent to both listeners of a
// service throughout 100 reloads (each a Configure of both listeners, as a reload does, between
// ACLs that deny it in different ways and change 4000 other prefixes) never reach accept on
// either: the shared filter is never detached nor replaced, and each reload loads its maps once.
func TestKernelFilterSharedReloadUnderFlood(t *testing.T) {
	if err := kfilter.EBPFAvailable(); err != nil {
		t.Skipf("eBPF socket filter unavailable here: %v", err)
	}
	m := newMetrics()
	sm := m.service("s")
	r := rand.New(rand.NewPCG(1, 2))
	var svcs []*service
	for _, spec := range []acl.Spec{
		{Default: acl.Allow, Rules: []acl.Rule{{Prefix: netip.MustParsePrefix("127.0.0.2/32"), Action: acl.Deny}}},
		{Default: acl.Deny, Rules: []acl.Rule{{Prefix: netip.MustParsePrefix("127.0.0.1/32"), Action: acl.Allow},
			{Prefix: netip.MustParsePrefix("127.0.0.3/32"), Action: acl.Allow}}},
	} {
		for range 2000 { // 2000 random /32s of its own: each reload changes about 4000 entries
			b := [4]byte{byte(11 + r.IntN(200)), byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))}
			spec.Rules = append(spec.Rules, acl.Rule{Prefix: netip.PrefixFrom(netip.AddrFrom4(b), 32), Action: acl.Action(r.IntN(2))})
		}
		svcs = append(svcs, &service{Service: &config.Service{Name: "s", ACL: &config.ACL{Name: "a", ACL: acl.MustNew(spec)}, KernelFilter: config.FilterEBPF},
			log: slog.New(slog.DiscardHandler), m: sm})
	}
	var kf kernelFilters
	var gs []gated
	var dsts []netip.AddrPort
	accepted := make(chan netip.Addr, 64)
	for range 2 {
		g := openGate(t, svcs[0], &kf)
		defer g.Close()
		gs = append(gs, g)
		dsts = append(dsts, netip.MustParseAddrPort(g.Addr().String()))
		go func() {
			for {
				c, err := g.Accept()
				if err != nil {
					return
				}
				accepted <- c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr()
				c.Close()
			}
		}()
	}
	sf := gs[0].(*gateListener).sf
	denied := netip.MustParseAddr("127.0.0.2")
	done := make(chan struct{})
	flood := make(chan []int, 1)
	var round atomic.Int64 // the reload running: the flood sends up to 40 SYNs a reload, spread over all
	go func() {            // bounded in count, stops when the reloads are done
		var fds []int
		defer func() { flood <- fds }()
		for i := 0; len(fds) < 4000; i++ {
			select {
			case <-done:
				return
			default:
			}
			if int64(len(fds)) >= 40*(round.Load()+1) {
				runtime.Gosched()
				continue
			}
			fd, err := kerneltest.SynFrom(denied, dsts[i%2])
			if err != nil {
				t.Error(err)
				return
			}
			fds = append(fds, fd)
		}
	}()
	kf.mu.Lock()
	loads := kf.loads
	kf.mu.Unlock()
	t0 := time.Now()
	for i := range 100 {
		round.Store(int64(i))
		for _, g := range gs {
			if err := g.Configure(svcs[(i+1)%2]); err != nil {
				t.Fatal(err)
			}
		}
	}
	reloads := time.Since(t0)
	close(done)
	fds := <-flood
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	kf.mu.Lock()
	loads = kf.loads - loads
	kf.mu.Unlock()
	if loads != 100 {
		t.Errorf("100 reloads of two listeners loaded the maps %d times, want 100", loads)
	}
	for _, g := range gs {
		if g.(*gateListener).sf != sf {
			t.Fatal("a reload replaced the shared filter")
		}
	}
	// A connection from 127.0.0.3 on each listener comes after any flood SYN that got through.
	for _, d := range dsts {
		c, err := dialFrom("127.0.0.3", d.String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	for range 2 {
		select {
		case a := <-accepted:
			if a != netip.MustParseAddr("127.0.0.3") {
				t.Errorf("accepted %v, want 127.0.0.3", a)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("127.0.0.3 not accepted within 10s")
		}
	}
	if n, e := testutil.ToFloat64(sm.conns[gate.Outcome{Verdict: acl.Deny, Reason: gate.ReasonACL}]), testutil.ToFloat64(sm.conns[gate.Outcome{Verdict: acl.Deny, Reason: gate.ReasonPeerError}]); n != 0 || e != 0 {
		t.Errorf("%v denials and %v peer errors at accept: flood SYNs got through the kernel filter", n, e)
	}
	v4, _ := kf.dropped("s")
	t.Logf("%d denied SYNs sent to two listeners during 100 reloads (%v), %d dropped", len(fds), reloads, v4)
	if v4 < uint64(len(fds)) {
		t.Errorf("%d SYNs sent, %d dropped", len(fds), v4)
	}
}

// TestKernelFilterListenerChangesService: a listener that a reload gives to another service moves
// from the first service's shared filter to the second's, replaced atomically; the first service's
// other listener keeps its filter, and each service's ACL applies on its own listeners.
func TestKernelFilterListenerChangesService(t *testing.T) {
	if err := kfilter.EBPFAvailable(); err != nil {
		t.Skipf("eBPF socket filter unavailable here: %v", err)
	}
	m := newMetrics()
	svc := func(name, deny string) *service {
		a := acl.MustNew(acl.Spec{Default: acl.Allow, Rules: []acl.Rule{{Prefix: netip.MustParsePrefix(deny), Action: acl.Deny}}})
		return &service{Service: &config.Service{Name: name, ACL: &config.ACL{Name: "a", ACL: a}, KernelFilter: config.FilterEBPF},
			log: slog.New(slog.DiscardHandler), m: m.service(name)}
	}
	var kf kernelFilters
	var gs []*gateListener
	var addrs []string
	s1 := svc("s1", "127.0.0.2/32")
	for range 2 {
		g := openGate(t, s1, &kf)
		defer g.Close()
		gs = append(gs, g.(*gateListener))
		addrs = append(addrs, g.Addr().String())
	}
	first := gs[0].sf
	if err := gs[1].Configure(svc("s2", "127.0.0.3/32")); err != nil {
		t.Fatal(err)
	}
	if gs[0].sf != first || gs[1].sf == first || gs[1].sf == nil {
		t.Fatal("the moved listener did not get a filter of its own service, or the other lost its")
	}
	kf.mu.Lock()
	n1, n2, held := len(first.users), len(gs[1].sf.users), len(kf.by)
	kf.mu.Unlock()
	if n1 != 1 || n2 != 1 || held != 2 {
		t.Errorf("listeners on s1's filter %d, on s2's %d, filters %d; want 1, 1, 2", n1, n2, held)
	}
	if !kerneltest.Dropped("127.0.0.2", addrs[0]) || kerneltest.Dropped("127.0.0.3", addrs[0]) {
		t.Error("s1's listener is not filtered by s1's ACL")
	}
	if !kerneltest.Dropped("127.0.0.3", addrs[1]) || kerneltest.Dropped("127.0.0.2", addrs[1]) {
		t.Error("the moved listener is not filtered by s2's ACL")
	}
}

// openGate listens on a new 127.0.0.1 port, plain TCP (the kernel takes no filter on an MPTCP
// socket), and guards it for svc with the service filters kf (nil: a filter of its own).
func openGate(tb testing.TB, svc *service, kf *kernelFilters) gated {
	tb.Helper()
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	g, err := newGate(ln, svc, slog.New(slog.DiscardHandler), kf)
	if err != nil {
		ln.Close()
		tb.Fatal(err)
	}
	return g
}
