package serve

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/peergate/peergate/internal/config"
	"github.com/peergate/peergate/internal/sockenv"
	"golang.org/x/sys/unix"
)

// activation holds the listening sockets systemd passed serve. Each stays open for the life of
// the process, so that a reload which drops its address and a later one which brings it back
// find it again; a listener is a dup of it.
type activation struct {
	socks []*inherited
}

type inherited struct {
	f      *os.File
	name   string // LISTEN_FDNAMES' entry
	addr   net.Addr
	inUse  bool // a listener made from it is open
	closed bool // never matched at start: closed
}

// inheritSockets takes the sockets of socket activation, marks them close-on-exec (systemd
// passes them without, and spawned handlers must not hold them), and unsets the variables so
// that children do not see them.
func inheritSockets(log *slog.Logger) (*activation, error) {
	fds, names, err := sockenv.ListenFDs()
	for _, k := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		os.Unsetenv(k)
	}
	if err != nil || len(fds) == 0 {
		return nil, err
	}
	a := &activation{}
	for i, fd := range fds {
		unix.CloseOnExec(fd)
		s := &inherited{f: os.NewFile(uintptr(fd), "LISTEN_FD_"+strconv.Itoa(fd)), name: names[i]}
		if sa, err := unix.Getsockname(fd); err == nil {
			s.addr = sockaddrAddr(sa)
		}
		if v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || v == 0 || s.addr == nil {
			log.Warn("inherited descriptor is not a listening TCP or Unix stream socket; closed", "fd", fd, "name", s.name)
			s.f.Close()
			s.closed = true
		}
		a.socks = append(a.socks, s)
	}
	return a, nil
}

func sockaddrAddr(sa unix.Sockaddr) net.Addr {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port)))
	case *unix.SockaddrInet6:
		return net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port)))
	case *unix.SockaddrUnix:
		return &net.UnixAddr{Name: sa.Name, Net: "unix"}
	}
	return nil
}

// take returns a listener on the inherited socket that matches the listen entry addr (by its
// LISTEN_FDNAMES name, or by its address), or false when none does.
func (a *activation) take(addr string, log *slog.Logger) (net.Listener, bool, error) {
	if a == nil {
		return nil, false, nil
	}
	for _, s := range a.socks {
		if s.closed || s.inUse || !(s.name == addr || matches(addr, s.addr)) {
			continue
		}
		ln, err := net.FileListener(s.f) // a dup: closing it leaves s.f open for a later reload
		if err != nil {
			return nil, false, fmt.Errorf("inherited socket %s: %w", s.f.Name(), err)
		}
		s.inUse = true
		log.Info("adopted socket from systemd", "listen", addr, "fd", s.f.Fd(), "name", s.name)
		return &adopted{Listener: ln, s: s}, true, nil
	}
	return nil, false, nil
}

// closeUnused closes the inherited sockets that no listen entry took: it runs once, after the
// first config is applied.
func (a *activation) closeUnused(log *slog.Logger) {
	if a == nil {
		return
	}
	for _, s := range a.socks {
		if !s.closed && !s.inUse {
			log.Warn("inherited socket matches no listen entry; closed", "fd", s.f.Fd(), "addr", s.addr.String(), "name", s.name)
			s.f.Close()
			s.closed = true
		}
	}
}

// matches reports whether the listen entry addr names the socket address got.
func matches(addr string, got net.Addr) bool {
	if path, ok := config.UnixPath(addr); ok {
		u, ok := got.(*net.UnixAddr)
		if !ok {
			return false
		}
		if u.Name == path {
			return true
		}
		abs, err := filepath.Abs(path)
		return err == nil && path[0] != '@' && abs == u.Name
	}
	t, ok := got.(*net.TCPAddr)
	if !ok {
		return false
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "0" || port != strconv.Itoa(t.Port) {
		return false
	}
	ip := t.AddrPort().Addr()
	if host == "" {
		return ip.IsUnspecified()
	}
	want, err := netip.ParseAddr(host)
	return err == nil && want.Unmap() == ip.Unmap()
}

// adopted is a listener on an inherited socket; closing it makes the socket free to take again.
type adopted struct {
	net.Listener
	s    *inherited
	once sync.Once
}

func (l *adopted) Close() error {
	err := l.Listener.Close()
	l.once.Do(func() { l.s.inUse = false }) // under Server.mu, as take is
	return err
}

// notifySocket is where Notify writes: NOTIFY_SOCKET, read once and unset so that children do not
// see it.
var notifySocket = sync.OnceValue(func() string {
	v := os.Getenv("NOTIFY_SOCKET")
	os.Unsetenv("NOTIFY_SOCKET")
	return v
})

// Notify sends state to systemd (sd_notify: "READY=1", "RELOADING=1", "STOPPING=1", …) when
// NOTIFY_SOCKET is set, and does nothing otherwise: one datagram on a Unix socket (a name
// starting with @ is an abstract one, which net handles).
func Notify(state string) error {
	path := notifySocket()
	if path == "" {
		return nil
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	return nil
}

// reloading is the sd_notify state at the start of a reload: RELOADING=1 with the monotonic
// clock, which Type=notify-reload units require.
func reloading() string {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return "RELOADING=1\nMONOTONIC_USEC=" + strconv.FormatInt(ts.Nano()/1000, 10)
}
