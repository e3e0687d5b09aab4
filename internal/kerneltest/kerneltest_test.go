//go:build linux

package kerneltest

import (
	"net"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

// TestSynAndDropped: a listening port answers a SYN (SynFrom's connect completes, Dropped is
// false), and CPUTime and SlabKB read something.
func TestSynAndDropped(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()
	if Dropped("127.0.0.1", addr) {
		t.Errorf("Dropped(%s): true for a port that answers", addr)
	}
	fd, err := SynFrom(netip.MustParseAddr("127.0.0.1"), netip.MustParseAddrPort(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	c, err := ln.Accept() // the SYN was answered: the handshake completed
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if CPUTime() <= 0 || SlabKB() <= 0 {
		t.Errorf("CPUTime %v, SlabKB %d: want both positive", CPUTime(), SlabKB())
	}
}
