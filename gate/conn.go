package gate

import (
	"bufio"
	"io"
	"net"
	"net/netip"
	"sync"
)

// Conn is what Accept returns when the accepted connection alone cannot carry everything: the
// client address a trusted proxy's PROXY header named, bytes read past that header, or a
// per-source slot (Options.Limiter) to give back when the connection closes. It reads first what
// was read past the header, then from the accepted connection.
//
// A program that copies between sockets can keep splice(2): call Detach, write out the bytes it
// returns, and copy from the raw connection; Close on the Conn still gives back the slot.
type Conn struct {
	net.Conn               // the accepted connection
	early    *bufio.Reader // bytes read past the PROXY header, or nil
	client   Peer          // from the PROXY header, when proxied
	proxied  bool
	release  func() // gives back the per-source slot, or nil
	once     sync.Once
}

// Read reads the bytes that followed the PROXY header first, then the connection.
func (c *Conn) Read(b []byte) (int, error) {
	if c.early != nil {
		if c.early.Buffered() > 0 {
			return c.early.Read(b)
		}
		c.early = nil
	}
	return c.Conn.Read(b)
}

// WriteTo writes what Read would return to w until EOF; between TCP sockets the bulk of it is
// spliced, as io.Copy from the raw connection would.
func (c *Conn) WriteTo(w io.Writer) (int64, error) {
	early, raw := c.Detach()
	n, err := w.Write(early)
	if err != nil {
		return int64(n), err
	}
	m, err := io.Copy(w, raw)
	return int64(n) + m, err
}

// Detach returns the bytes that followed the PROXY header and that Read has not yet returned,
// and the accepted connection beneath. From then on the caller reads from raw; the Conn's
// RemoteAddr and Close still work.
func (c *Conn) Detach() (early []byte, raw net.Conn) {
	if c.early != nil && c.early.Buffered() > 0 {
		early = make([]byte, c.early.Buffered())
		io.ReadFull(c.early, early)
	}
	c.early = nil
	return early, c.Conn
}

// Close closes the connection and gives back its per-source slot.
func (c *Conn) Close() error {
	if c.release != nil {
		c.once.Do(c.release)
	}
	return c.Conn.Close()
}

// CloseWrite shuts down the writing side, when the accepted connection can.
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// NetConn returns the accepted connection, as tls.Conn does; PeerOf judges it by that.
func (c *Conn) NetConn() net.Conn { return c.Conn }

// RemoteAddr returns the client a trusted proxy named (a *net.TCPAddr), or the direct peer.
func (c *Conn) RemoteAddr() net.Addr {
	if c.proxied && !c.client.Unix {
		return net.TCPAddrFromAddrPort(c.client.AddrPort)
	}
	return c.Conn.RemoteAddr()
}

// Client returns the client named by the PROXY header and true, or false when there was none.
func (c *Conn) Client() (Peer, bool) { return c.client, c.proxied }

// ClientAddrPort returns the address RemoteAddr reports, as a netip.AddrPort.
func (c *Conn) ClientAddrPort() netip.AddrPort {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort()
	}
	return netip.AddrPort{}
}
