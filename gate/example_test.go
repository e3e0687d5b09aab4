package gate_test

import (
	"fmt"
	"io"
	"net"
	"net/netip"

	"github.com/peergate/peergate/acl"
	"github.com/peergate/peergate/gate"
)

// A server wraps its listener; its Accept loop only ever sees allowed peers. Here 127.0.0.2
// connects first and is turned away before the server's Accept returns.
func ExampleNewListener() {
	rules := acl.MustNew(acl.Spec{
		Default: acl.Deny,
		Rules:   []acl.Rule{{Prefix: netip.MustParsePrefix("127.0.0.1/32"), Action: acl.Allow}},
	})
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	ln := gate.NewListener(inner, rules, gate.Options{})
	defer ln.Close()

	for _, src := range []string{"127.0.0.2", "127.0.0.1"} {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := d.Dial("tcp", inner.Addr().String())
		if err != nil {
			panic(err)
		}
		defer c.Close()
	}
	c, err := ln.Accept() // skips 127.0.0.2
	if err != nil {
		panic(err)
	}
	defer c.Close()
	fmt.Println("handler sees", c.RemoteAddr().(*net.TCPAddr).IP)
	fmt.Printf("%+v\n", ln.Stats())
	// Output:
	// handler sees 127.0.0.1
	// {Allowed:1 Denied:1 Errors:0 Limited:0 Banned:0}
}

// PeerOf reads the peer of any connection from its socket; Decide judges it, as the Listener does.
func ExamplePeerOf() {
	inner, _ := net.Listen("tcp", "127.0.0.1:0")
	defer inner.Close()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.9")}}
	client, _ := d.Dial("tcp", inner.Addr().String())
	defer client.Close()
	c, _ := inner.Accept()
	defer c.Close()

	peer, err := gate.PeerOf(c)
	if err != nil {
		panic(err)
	}
	rules := acl.MustNew(acl.Spec{Default: acl.Deny})
	fmt.Println(peer.AddrPort.Addr(), peer.Decide(rules))
	io.WriteString(c, "bye")
	// Output: 127.0.0.9 deny by default
}
