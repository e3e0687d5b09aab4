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
# HELP peergate_gate_connections_total Connections judged by a gate.Listener, by verdict (allow: handed on; deny: closed) and reason (acl: the ACL decided; dry_run: the ACL or a ban denied, DryRun handed it on; ban: a ban of Options.Bans denied; limit: a per-source limit denied; proxy: no valid PROXY header from a trusted proxy, or an untrusted peer where one is required; peer_error: the peer could not be found or judged).
# TYPE peergate_gate_connections_total counter
peergate_gate_connections_total{listener="test",reason="acl",verdict="allow"} 1
peergate_gate_connections_total{listener="test",reason="acl",verdict="deny"} 2
peergate_gate_connections_total{listener="test",reason="ban",verdict="deny"} 0
peergate_gate_connections_total{listener="test",reason="dry_run",verdict="allow"} 0
peergate_gate_connections_total{listener="test",reason="limit",verdict="deny"} 0
peergate_gate_connections_total{listener="test",reason="peer_error",verdict="deny"} 0
peergate_gate_connections_total{listener="test",reason="proxy",verdict="deny"} 0
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
		l := m.GetLabel() // sorted: listener, reason, verdict
		fmt.Println(l[2].GetValue(), l[1].GetValue(), m.GetCounter().GetValue())
	}
	// Output:
	// allow acl 1
	// deny acl 1
	// deny ban 0
	// allow dry_run 0
	// deny limit 0
	// deny peer_error 0
	// deny proxy 0
}
