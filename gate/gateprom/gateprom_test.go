package gateprom_test

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/peergate/peergate/acl"
	"github.com/peergate/peergate/gate"
	"github.com/peergate/peergate/gate/gateprom"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// guarded returns a gate on loopback that allows 127.0.0.1 only, after one connect from each of
// srcs has been judged; the last of srcs must be 127.0.0.1.
func guarded(srcs ...string) (*gate.Listener, error) {
	rules := acl.MustNew(acl.Spec{Default: acl.Deny,
		Rules: []acl.Rule{{Prefix: netip.MustParsePrefix("127.0.0.1/32"), Action: acl.Allow}}})
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	ln := gate.NewListener(inner, rules, gate.Options{})
	for _, src := range srcs {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := d.Dial("tcp", inner.Addr().String())
		if err != nil {
			ln.Close()
			return nil, err
		}
		defer c.Close()
	}
	// Every client before the allowed last one is judged before Accept returns.
	c, err := ln.Accept()
	if err != nil {
		ln.Close()
		return nil, err
	}
	c.Close()
	return ln, nil
}

func TestCollector(t *testing.T) {
	ln, err := guarded("127.0.0.2", "127.0.0.3", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(gateprom.New(ln, prometheus.Labels{"listener": "test"}))
	want := `
# HELP peergate_gate_connections_total Connections judged by a gate.Listener, by result: allowed, denied (by the ACL; in dry-run mode, would have been), error (the peer could not be found or judged; closed), limited (allowed by the ACL, over a per-source limit; closed), banned (denied by a ban of the ban layer, Options.Bans).
# TYPE peergate_gate_connections_total counter
peergate_gate_connections_total{listener="test",result="allowed"} 1
peergate_gate_connections_total{listener="test",result="banned"} 0
peergate_gate_connections_total{listener="test",result="denied"} 2
peergate_gate_connections_total{listener="test",result="error"} 0
peergate_gate_connections_total{listener="test",result="limited"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}

// Register a gate's counters with the program's own registry.
func ExampleNew() {
	ln, err := guarded("127.0.0.2", "127.0.0.1")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	reg := prometheus.NewRegistry()
	reg.MustRegister(gateprom.New(ln, prometheus.Labels{"listener": "http"}))
	mfs, _ := reg.Gather()
	for _, m := range mfs[0].GetMetric() {
		fmt.Println(m.GetLabel()[1].GetValue(), m.GetCounter().GetValue())
	}
	// Output:
	// allowed 1
	// banned 0
	// denied 1
	// error 0
	// limited 0
}
