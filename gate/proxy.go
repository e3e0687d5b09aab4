package gate

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/pires/go-proxyproto"
)

// Errors about the PROXY protocol. Whatever the error, the gate denies the connection.
var (
	// ErrProxyHeader: a trusted proxy sent no PROXY header, a malformed or oversized one, or not
	// all of it within ProxyOptions.Timeout.
	ErrProxyHeader = errors.New("bad PROXY protocol header")
	// ErrProxyRequired: ProxyOptions.Required is set and the direct peer is not a trusted proxy.
	ErrProxyRequired = errors.New("peer is not a trusted proxy and PROXY protocol is required")
	// ErrProxyBusy: the Listener was already reading MaxHeaderReadsPerProxy headers from this
	// proxy, or MaxHeaderReads in all, so the connection was denied without reading its header.
	// It wraps ErrProxyHeader.
	ErrProxyBusy = fmt.Errorf("%w: not read, too many being read", ErrProxyHeader)
	// errProxyDistrusted: the header was read from a proxy that the policy set while it was read
	// no longer trusts.
	errProxyDistrusted = fmt.Errorf("%w: read from a proxy no longer trusted", ErrProxyHeader)
)

// DefaultProxyTimeout is how long a trusted proxy has to send its PROXY header when
// ProxyOptions.Timeout is 0.
const DefaultProxyTimeout = 5 * time.Second

// headerBuffer is the read buffer for a PROXY header: a v2 header with TLVs is at most 4096
// bytes long in go-proxyproto (MaxV2HeaderSize), and a longer one is refused.
const headerBuffer = 4096 + 16

// ProxyOptions make a Listener read the PROXY protocol header (HAProxy's, versions 1 and 2) from
// trusted proxies, and judge the client address it carries.
//
// When the direct peer (from getpeername) is inside Trusted, the header is read, within Timeout,
// before the ACL is asked; it must be there, well formed and complete, or the connection is
// denied (ErrProxyHeader). A header with the LOCAL command or an UNKNOWN/UNSPEC address family
// (a proxy's own health check) leaves the direct peer to be judged. When the direct peer is not
// trusted, nothing is read: it is judged itself, and the bytes it sends reach the handler as they
// are, a forged header included. With Required, such a peer is denied instead (ErrProxyRequired).
//
// Headers are read in goroutines, not in Accept: a slow proxy holds up only its own connection,
// for at most Timeout. First bytes that cannot start a header (anything but a prefix of "PROXY "
// or of the v2 signature) are refused as soon as they arrive. At most MaxHeaderReadsPerProxy
// headers from one proxy address, and MaxHeaderReads in all, are read at a time; a connection
// beyond either is denied at once (ErrProxyBusy), so that connections stalled by a proxy never
// keep other peers waiting. A header whose read began under a policy that trusted its proxy, and
// that ended under one (SetPolicy, SetOptions) that does not, is refused (ErrProxyHeader). At
// most MaxPending connections are accepted and not yet returned by Accept at a time; beyond that
// the Listener stops accepting until Accept catches up. One judged allowed that waited for Accept
// is judged again as Accept takes it when a ban (Options.Bans) now covers it or the policy changed
// meanwhile, and denied (and reported again) if it no longer passes.
type ProxyOptions struct {
	// Trusted are the prefixes of the proxies whose PROXY headers are believed.
	Trusted []netip.Prefix
	// Required denies peers that are not trusted proxies.
	Required bool
	// Timeout bounds the time to read a header; 0 means DefaultProxyTimeout.
	Timeout time.Duration
}

// MaxPending bounds the connections a Listener with ProxyOptions has accepted but Accept has not
// yet returned (their headers being read, or waiting for Accept).
const MaxPending = 128

// Bounds on the PROXY headers a Listener reads at once: from one trusted proxy address, and in
// all. Reads in progress take at most half of MaxPending, so a peer that needs no header never
// waits behind them. A proxy sends its header with the connection's first bytes, so its reads
// take microseconds and only connections it stalls fill these bounds.
const (
	MaxHeaderReads         = MaxPending / 2
	MaxHeaderReadsPerProxy = MaxHeaderReads / 2
)

// trusts reports whether addr is one of the trusted proxies (none when o is nil).
func (o *ProxyOptions) trusts(addr netip.Addr) bool {
	if o == nil {
		return false
	}
	for _, p := range o.Trusted {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// read applies o to c, whose direct peer is in ev.Peer. For a trusted proxy it reads the header,
// sets ev.Peer to the client and ev.Proxied, and returns the *Conn that holds what was read past
// the header.
func (o *ProxyOptions) read(c net.Conn, ev *Event) (*Conn, error) {
	if ev.Peer.Unix || !o.trusts(ev.Peer.AddrPort.Addr()) {
		if o.Required {
			return nil, ErrProxyRequired
		}
		return nil, nil
	}
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = DefaultProxyTimeout
	}
	client, proxied, br, err := ReadProxyHeader(c, timeout)
	if err != nil {
		return nil, err
	}
	if proxied {
		ev.Peer, ev.Proxied = client, true
	}
	w := &Conn{Conn: c, proxied: proxied, client: client}
	if br.Buffered() > 0 {
		w.early = br
	}
	return w, nil
}

// ReadProxyHeader reads a PROXY protocol header (v1 or v2) from the start of c, within timeout,
// and returns the client it names. proxied is false when the header names no client (the LOCAL
// command, or an UNKNOWN/UNSPEC family): the connection is then the proxy's own. The returned
// reader holds any bytes read past the header; they belong to the connection's data. Any failure
// (no header, a malformed or oversized one, a timeout) wraps ErrProxyHeader. c's read deadline
// is cleared afterwards.
func ReadProxyHeader(c net.Conn, timeout time.Duration) (client Peer, proxied bool, br *bufio.Reader, err error) {
	if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return Peer{}, false, nil, fmt.Errorf("%w: %w", ErrProxyHeader, err)
	}
	defer c.SetReadDeadline(time.Time{})
	br = bufio.NewReaderSize(c, headerBuffer)
	err = signature(br)
	var h *proxyproto.Header
	if err == nil {
		h, err = proxyproto.Read(br)
	}
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return Peer{}, false, nil, fmt.Errorf("%w: not complete within %v", ErrProxyHeader, timeout)
	case err != nil:
		return Peer{}, false, nil, fmt.Errorf("%w: %w", ErrProxyHeader, err)
	}
	client, proxied, err = headerPeer(h)
	if err != nil {
		return Peer{}, false, nil, fmt.Errorf("%w: %w", ErrProxyHeader, err)
	}
	return client, proxied, br, nil
}

// The signatures a PROXY header starts with: v1's "PROXY" with the space after it, and v2's.
var (
	sigV1 = []byte("PROXY ")
	sigV2 = proxyproto.SIGV2
)

// errNoSignature: the first bytes cannot start a PROXY header.
var errNoSignature = errors.New("not a PROXY header signature")

// signature waits until br's first bytes hold a whole v1 or v2 signature, and fails as soon as
// they cannot start one: go-proxyproto would wait for 5 or 12 bytes, up to the timeout, before
// telling "PX" or "PROXZ" from a header.
func signature(br *bufio.Reader) error {
	for {
		b, err := br.Peek(br.Buffered() + 1) // at least one byte more than already judged
		if err != nil && len(b) == 0 {
			return err
		}
		b, _ = br.Peek(br.Buffered())
		v1, v2 := startsLike(b, sigV1), startsLike(b, sigV2)
		switch {
		case len(b) >= len(sigV1) && v1, len(b) >= len(sigV2) && v2:
			return nil
		case !v1 && !v2:
			return fmt.Errorf("%w: first bytes %q", errNoSignature, b[:min(len(b), len(sigV2))])
		case err != nil:
			return err
		}
	}
}

// startsLike reports whether b and sig agree on their common length.
func startsLike(b, sig []byte) bool {
	n := min(len(b), len(sig))
	return bytes.Equal(b[:n], sig[:n])
}

// headerPeer returns the client a parsed header names.
func headerPeer(h *proxyproto.Header) (Peer, bool, error) {
	if h.Command.IsLocal() || h.TransportProtocol.IsUnspec() {
		return Peer{}, false, nil
	}
	var ip net.IP
	var port int
	switch a := h.SourceAddr.(type) {
	case *net.TCPAddr:
		ip, port = a.IP, a.Port
	case *net.UDPAddr:
		ip, port = a.IP, a.Port
	case *net.UnixAddr:
		return Peer{Unix: true}, true, nil
	default:
		return Peer{}, false, fmt.Errorf("no source address (%T)", h.SourceAddr)
	}
	addr, ok := netip.AddrFromSlice(ip)
	if !ok {
		return Peer{}, false, fmt.Errorf("bad source address %v", ip)
	}
	return Peer{AddrPort: netip.AddrPortFrom(addr.Unmap(), uint16(port))}, true, nil
}
