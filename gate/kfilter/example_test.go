package kfilter_test

import (
	"context"
	"fmt"
	"log"
	"net"
	"net/netip"
	"syscall"

	"github.com/peergate/peergate/acl"
	"github.com/peergate/peergate/gate"
	"github.com/peergate/peergate/gate/kfilter"
	"golang.org/x/net/bpf"
)

// A listener drops the SYNs of denied peers in the kernel and still judges every accepted
// connection in userspace, which stays the authority (and covers a kernel that refuses filters).
func ExampleApply() {
	rules := acl.MustNew(acl.Spec{
		Default: acl.Allow,
		Rules:   []acl.Rule{{Prefix: netip.MustParsePrefix("192.0.2.0/24"), Action: acl.Deny}},
	})
	var lc net.ListenConfig
	lc.SetMultipathTCP(false) // the kernel takes no socket filter on an MPTCP socket
	inner, err := lc.Listen(context.Background(), "tcp", "[::]:0")
	if err != nil {
		log.Fatal(err)
	}
	rc, err := inner.(syscall.Conn).SyscallConn()
	if err != nil {
		log.Fatal(err)
	}
	if err := kfilter.Apply(rc, rules); err != nil {
		log.Print("denied peers will be turned away after accept only: ", err)
	}
	ln := gate.NewListener(inner, rules, gate.Options{})
	defer ln.Close()
	// On reload: ln.SetACL(newRules); kfilter.Apply(rc, newRules)
}

// The program for an IPv4 listener that denies one address: load the version from the IP header
// (at SKF_NET_OFF, -0x100000, printed unsigned), keep what is not IPv4, load the source address,
// compare it with 127.0.0.2, keep the packet or drop it.
func ExampleCompile() {
	rules := acl.MustNew(acl.Spec{
		Default: acl.Allow,
		Rules:   []acl.Rule{{Prefix: netip.MustParsePrefix("127.0.0.2/32"), Action: acl.Deny}},
	})
	raw, err := kfilter.Compile(rules, syscall.AF_INET)
	if err != nil {
		log.Fatal(err)
	}
	prog, _ := bpf.Disassemble(raw)
	for _, ins := range prog {
		fmt.Println(ins)
	}
	// Output:
	// ldb [4293918720]
	// rsh #4
	// jneq #4,2
	// ld [4293918732]
	// jeq #2130706434,1
	// ret #4294967295
	// ret #0
}
