package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
)

// proxyProtoConfig: 127.0.0.5 is a trusted proxy; the ACL allows the clients 10.0.0.1 and
// 127.0.0.1 and the untrusted direct peer 127.0.0.6, and denies the rest (10.9.9.9, and the proxy
// itself). %s: the upstream, then extra service keys.
const proxyProtoConfig = `
acls:
  lo: {default: deny, allow: [10.0.0.1, 127.0.0.1, 127.0.0.6]}
services:
  - name: echo
    listen: ["127.0.0.1:0"]
    acl: lo
    upstream: %s
    trusted_proxies: [127.0.0.5]
    proxy_header_timeout: 300ms
%s`

func header(t *testing.T, v byte, client string) []byte {
	t.Helper()
	h := proxyproto.HeaderProxyFromAddrs(v, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(client)),
		&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 80})
	b, err := h.Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// exchange connects from src, sends data, half-closes and returns all it reads back.
func exchange(t *testing.T, src, addr string, data []byte) string {
	t.Helper()
	c := dial(t, src, addr)
	defer c.Close()
	c.Write(data)
	c.(*net.TCPConn).CloseWrite()
	b, _ := io.ReadAll(c)
	return string(b)
}

func TestServeProxyProtocol(t *testing.T) {
	up, upCount := echoUpstream(t)
	for _, required := range []bool{false, true} {
		t.Run(fmt.Sprintf("required=%v", required), func(t *testing.T) {
			extra := ""
			if required {
				extra = "    proxy_protocol: required\n"
			}
			cfg := writeFile(t, t.TempDir(), "serve.yaml", fmt.Sprintf(proxyProtoConfig, up, extra))
			p := startServe(t, cfg)
			addr := p.addr("echo")
			n0 := upCount()
			for _, v := range []byte{1, 2} {
				// Through the trusted proxy, the client in the header is judged and its bytes go on.
				if got := exchange(t, "127.0.0.5", addr, append(header(t, v, "10.0.0.1:4000"), "hello"...)); got != "hello" {
					t.Errorf("v%d allowed client: echoed %q, want hello", v, got)
				}
				if got := exchange(t, "127.0.0.5", addr, append(header(t, v, "10.9.9.9:4000"), "hello"...)); got != "" {
					t.Errorf("v%d denied client: echoed %q", v, got)
				}
				p.waitLog(`msg="peer denied" service=echo .*peer=10\.9\.9\.9:4000 rule=default proxy=127\.0\.0\.5:\d+`)
				// From an untrusted peer a forged header is not read: it is data (or denied if required).
				forged := append(header(t, v, "10.0.0.1:4000"), "x"...)
				got := exchange(t, "127.0.0.6", addr, forged)
				if required {
					if got != "" {
						t.Errorf("v%d forged header, required: echoed %q", v, got)
					}
					p.waitLog(`msg="peer not judged; connection closed" service=echo .*PROXY protocol is required.* direct=127\.0\.0\.6`)
				} else if got != string(forged) {
					t.Errorf("v%d forged header from an untrusted peer: echoed %q, want the header as data", v, got)
				}
			}
			// A malformed header, and a proxy that sends nothing, are denied with a reason.
			if got := exchange(t, "127.0.0.5", addr, []byte("PROXY TCP4 10.0.0.1 bogus\r\nhello")); got != "" {
				t.Errorf("malformed header: echoed %q", got)
			}
			p.waitLog(`msg="peer not judged; connection closed" service=echo .*err="bad PROXY protocol header: .* direct=127\.0\.0\.5`)
			slow := dial(t, "127.0.0.5", addr)
			t0 := time.Now()
			if b, _ := io.ReadAll(slow); len(b) != 0 {
				t.Errorf("slow proxy read %q", b)
			}
			slow.Close()
			if d := time.Since(t0); d < 250*time.Millisecond {
				t.Errorf("slow proxy closed after %v, before proxy_header_timeout", d)
			}
			p.waitLog(`msg="peer not judged; connection closed" service=echo .*not complete within 300ms`)
			want := 2 // the allowed clients through the proxy
			if !required {
				want += 2 // the untrusted peer's forged headers, as data
			}
			if n := upCount() - n0; n != want {
				t.Errorf("upstream saw %d connections, want %d", n, want)
			}
		})
	}
}

// captureUpstream accepts connections and sends, for each, the PROXY header it read and the data
// after it.
func captureUpstream(t *testing.T) (string, <-chan captured) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ch := make(chan captured, 8)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				br := bufio.NewReader(c)
				h, err := proxyproto.Read(br)
				var cp captured
				if err != nil {
					cp.err = err
				} else {
					cp.version, cp.src = h.Version, h.SourceAddr.String()
				}
				b, _ := io.ReadAll(br)
				cp.data = string(b)
				ch <- cp
			}()
		}
	}()
	return ln.Addr().String(), ch
}

type captured struct {
	version byte
	src     string
	data    string
	err     error
}

func TestServeSendProxy(t *testing.T) {
	for _, v := range []string{"v1", "v2"} {
		t.Run(v, func(t *testing.T) {
			up, got := captureUpstream(t)
			cfg := writeFile(t, t.TempDir(), "serve.yaml", fmt.Sprintf(proxyProtoConfig, up, "    send_proxy: "+v+"\n"))
			p := startServe(t, cfg)
			addr := p.addr("echo")
			for _, tc := range []struct {
				src, client string
				data        []byte
			}{
				{"127.0.0.1", "127.0.0.1", []byte("direct")},
				{"127.0.0.5", "10.0.0.1:4000", append(header(t, 2, "10.0.0.1:4000"), "proxied"...)},
			} {
				c := dial(t, tc.src, addr)
				c.Write(tc.data)
				c.(*net.TCPConn).CloseWrite()
				var cp captured
				select {
				case cp = <-got:
				case <-time.After(10 * time.Second):
					t.Fatal("upstream got nothing")
				}
				c.Close()
				wantData := strings.TrimPrefix(string(tc.data), string(header(t, 2, "10.0.0.1:4000")))
				wantSrc := tc.client
				if tc.src == tc.client { // a direct client: its own address and port
					wantSrc = c.LocalAddr().String()
				}
				if cp.err != nil || fmt.Sprint("v", cp.version) != v || cp.src != wantSrc || cp.data != wantData {
					t.Errorf("from %s: upstream got %+v; want a %s header from %s, then %q", tc.src, cp, v, wantSrc, wantData)
				}
			}
		})
	}
}
