package gate

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"
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

// The methods below pass through to the accepted connection (a *net.TCPConn, say), so that the
// type assertions programs make on a connection (io.ReaderFrom for sendfile, syscall.Conn, keep-
// alive and Nagle setters) work on a *Conn as on the connection beneath. Where the accepted
// connection has no such method they fail with an error wrapping errors.ErrUnsupported.

// ReadFrom writes what r holds to the connection, with the accepted connection's ReadFrom where it
// has one: http.ServeFile's body then goes out by sendfile(2), and io.Copy from a TCP connection
// by splice(2).
func (c *Conn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(writerOnly{c.Conn}, r)
}

// writerOnly hides every method of a writer but Write, so that io.Copy does not come back to
// ReadFrom.
type writerOnly struct{ io.Writer }

// SyscallConn returns the raw connection of the accepted connection. Reading from its descriptor
// skips the bytes that followed the PROXY header (see Detach).
func (c *Conn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, unsupported(c.Conn, "SyscallConn")
}

// CloseRead shuts down the reading side, when the accepted connection can.
func (c *Conn) CloseRead() error {
	if cr, ok := c.Conn.(interface{ CloseRead() error }); ok {
		return cr.CloseRead()
	}
	return unsupported(c.Conn, "CloseRead")
}

// SetKeepAlive turns TCP keep-alive on or off, as net.TCPConn.SetKeepAlive.
func (c *Conn) SetKeepAlive(on bool) error {
	if k, ok := c.Conn.(interface{ SetKeepAlive(bool) error }); ok {
		return k.SetKeepAlive(on)
	}
	return unsupported(c.Conn, "SetKeepAlive")
}

// SetKeepAlivePeriod sets the keep-alive idle time and interval, as
// net.TCPConn.SetKeepAlivePeriod.
func (c *Conn) SetKeepAlivePeriod(d time.Duration) error {
	if k, ok := c.Conn.(interface{ SetKeepAlivePeriod(time.Duration) error }); ok {
		return k.SetKeepAlivePeriod(d)
	}
	return unsupported(c.Conn, "SetKeepAlivePeriod")
}

// SetKeepAliveConfig configures keep-alive, as net.TCPConn.SetKeepAliveConfig.
func (c *Conn) SetKeepAliveConfig(cfg net.KeepAliveConfig) error {
	if k, ok := c.Conn.(interface {
		SetKeepAliveConfig(net.KeepAliveConfig) error
	}); ok {
		return k.SetKeepAliveConfig(cfg)
	}
	return unsupported(c.Conn, "SetKeepAliveConfig")
}

// SetNoDelay turns Nagle's algorithm off (true) or on, as net.TCPConn.SetNoDelay.
func (c *Conn) SetNoDelay(noDelay bool) error {
	if n, ok := c.Conn.(interface{ SetNoDelay(bool) error }); ok {
		return n.SetNoDelay(noDelay)
	}
	return unsupported(c.Conn, "SetNoDelay")
}

// SetLinger sets SO_LINGER, as net.TCPConn.SetLinger (0: Close resets the connection).
func (c *Conn) SetLinger(sec int) error {
	if l, ok := c.Conn.(interface{ SetLinger(int) error }); ok {
		return l.SetLinger(sec)
	}
	return unsupported(c.Conn, "SetLinger")
}

func unsupported(c net.Conn, method string) error {
	return fmt.Errorf("gate.Conn.%s: %w by %T", method, errors.ErrUnsupported, c)
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
