package gate

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"
)

// FuzzProxyHeader feeds arbitrary bytes, as a trusted proxy would send them, to the gate's PROXY
// header reading: it must never panic; it either fails with ErrProxyHeader (the gate denies) or
// yields a judgeable peer and hands on exactly the bytes after the header, none lost or repeated.
func FuzzProxyHeader(f *testing.F) {
	for _, seed := range [][]byte{
		[]byte("PROXY TCP4 10.0.0.1 127.0.0.1 4000 80\r\nhello"),
		[]byte("PROXY TCP6 2001:db8::1 ::1 4000 80\r\n"),
		[]byte("PROXY UNKNOWN\r\nping"),
		[]byte("PROXY TCP4 10.0.0.1 nonsense\r\n"),
		proxyHeader(f, 2, "10.0.0.1:4000", "127.0.0.1:80"),
		append(proxyHeader(f, 2, "[2001:db8::1]:4000", "[::1]:80"), "data"...),
		[]byte("\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00rest"),
		[]byte("\r\n\r\n\x00\r\nQUIT\n\x21\x31\x00\x04abcd"), // AF_UNIX, short
		[]byte("GET / HTTP/1.0\r\n\r\n"),
		{},
	} {
		f.Add(seed)
	}
	trusted := Peer{AddrPort: netip.MustParseAddrPort("127.0.0.5:1234")}
	opts := &ProxyOptions{Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.5/32")}, Timeout: time.Second}
	f.Fuzz(func(t *testing.T, data []byte) {
		server, client := net.Pipe()
		defer server.Close()
		go func() {
			client.Write(data)
			client.Close()
		}()
		ev := Event{Peer: trusted, Direct: trusted}
		w, err := opts.read(server, &ev)
		if err != nil {
			if !errors.Is(err, ErrProxyHeader) {
				t.Fatalf("error %v does not wrap ErrProxyHeader", err)
			}
			return
		}
		if ev.Proxied && !ev.Peer.Unix && !ev.Peer.AddrPort.Addr().IsValid() {
			t.Fatalf("proxied peer without an address: %+v", ev.Peer)
		}
		if !ev.Proxied && ev.Peer != trusted {
			t.Fatalf("no client named, but the judged peer changed to %v", ev.Peer)
		}
		if ev.Peer.AddrPort.Addr().Is4In6() {
			t.Fatalf("mapped address %v reaches the ACL", ev.Peer)
		}
		server.SetReadDeadline(time.Now().Add(5 * time.Second))
		rest, err := io.ReadAll(w)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasSuffix(data, rest) || len(rest) == len(data) {
			t.Fatalf("after the header: %q, not a proper suffix of %q", rest, data)
		}
	})
}
