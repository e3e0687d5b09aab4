package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"log/syslog"
	"net/netip"
	"os"
	"os/exec"
	"sync"
	"syscall"

	"github.com/peergate/peergate/gate"
	"github.com/peergate/peergate/internal/config"
	"github.com/peergate/peergate/internal/sockenv"
	"golang.org/x/sys/unix"
)

// cmdWrap does tcpd's job. Started by inetd or xinetd with the accepted connection on fd 0, or by
// systemd (Accept=yes) with it on fd 3, it reads the peer with getpeername on that descriptor,
// judges it, and either execs PROGRAM with the connection as stdin and stdout and the UCSPI
// variables set, or closes the connection and exits 1.
func cmdWrap(args []string, stdout, stderr io.Writer) int {
	f := newFlags("wrap", stderr).withACL().withLog()
	f.programArgs = true
	logTo := f.String("log", "auto", "where to log: stderr, syslog, or auto (syslog when stderr is a socket, as under inetd; stderr otherwise)")
	var onDeny gate.DenyAction
	f.TextVar(&onDeny, "on-deny", gate.DenyClose, "what to do with a denied connection: close (FIN) or reset (RST)")
	reset := f.Bool("reset", false, "deny with an RST instead of a FIN (-on-deny reset)")
	if !f.parse(args) {
		return f.exit
	}
	log, err := wrapLogger(f, *logTo, stderr, dialSyslog(syslog.LOG_AUTH))
	if err != nil {
		return fail(stderr, "wrap", err)
	}
	if f.NArg() == 0 {
		log.Error("wrap: no program to run; usage: peergate wrap -config FILE -- PROGRAM [ARGS...]")
		return exitError
	}
	fd, err := inheritedFD()
	if err != nil {
		log.Error("wrap: " + err.Error())
		return exitError
	}
	file, err := config.Load(f.config)
	var a *config.ACL
	if err == nil {
		a, err = file.Pick(f.acl)
	}
	if err != nil {
		log.Error("wrap: config not loaded; connection closed", "err", err)
		unix.Close(fd)
		return exitError
	}
	peer, err := gate.PeerFromFD(fd)
	if errors.Is(err, gate.ErrNotSocket) {
		log.Error(fmt.Sprintf("wrap: fd %d is not a socket: run peergate wrap from inetd, xinetd or systemd (Accept=yes), which pass the connection as fd 0 or 3", fd))
		return exitError
	}
	if err != nil {
		log.Warn("wrap: peer not judged; connection closed", "err", err)
		unix.Close(fd)
		return exitDenied
	}
	d := peer.Decide(a.ACL)
	rule, origin := d.By()
	if !d.Allowed() {
		log.Warn("peer denied", "peer", peer.String(), "rule", rule, "origin", origin, "program", f.Arg(0))
		if *reset {
			onDeny = gate.DenyReset
		}
		onDeny.DenyFD(fd)
		return exitDenied
	}
	log.Info("peer allowed", "peer", peer.String(), "rule", rule, "origin", origin, "program", f.Arg(0))
	prog, err := exec.LookPath(f.Arg(0))
	if err == nil {
		err = execWith(fd, peer, prog, f.Args())
	}
	log.Error("wrap: cannot run program; connection closed", "program", f.Arg(0), "err", err)
	unix.Close(fd)
	return exitError
}

// inheritedFD returns the descriptor of the connection: systemd's fd 3 when LISTEN_FDS and
// LISTEN_PID say it is for this process, fd 0 otherwise.
func inheritedFD() (int, error) {
	fds, _, err := sockenv.ListenFDs()
	switch {
	case err != nil:
		return 0, err
	case fds == nil:
		return 0, nil
	case len(fds) == 1:
		return fds[0], nil
	default:
		return 0, fmt.Errorf("LISTEN_FDS=%d: wrap takes exactly one connection (use Accept=yes)", len(fds))
	}
}

// execWith replaces this process with prog, the connection as its stdin and stdout, and the
// UCSPI variables in its environment. It returns only on failure.
func execWith(fd int, peer gate.Peer, prog string, argv []string) error {
	env := os.Environ()
	if fd != 0 {
		for _, k := range []string{"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"} {
			os.Unsetenv(k)
		}
		env = os.Environ()
		for _, target := range []int{0, 1} {
			if err := unix.Dup2(fd, target); err != nil {
				return err
			}
		}
		unix.Close(fd)
	}
	if sa, err := unix.Getsockname(0); err == nil && !peer.Unix {
		env = append(env, sockenv.UCSPI(peer.AddrPort, sockaddrPort(sa))...)
	}
	return syscall.Exec(prog, argv, env)
}

func sockaddrPort(sa unix.Sockaddr) netip.AddrPort {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), uint16(sa.Port))
	}
	return netip.AddrPort{}
}

// wrapLogger picks where wrap (and serve) logs. Under inetd, stderr is the client's socket: writing logs
// there would send them to the client, so "auto" uses syslog then, as tcpd does. Where syslog
// cannot be reached, wrap logs to stderr after a line that says so, unless stderr is the client's
// socket: then it stays silent.
func wrapLogger(f *flags, to string, stderr io.Writer, dial func() (*syslog.Writer, error)) (*slog.Logger, error) {
	var st unix.Stat_t
	stderrSocket := unix.Fstat(2, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFSOCK
	switch to {
	case "auto":
		to = "stderr"
		if stderrSocket {
			to = "syslog"
		}
	case "stderr", "syslog":
	default:
		return nil, fmt.Errorf("-log must be auto, stderr or syslog, not %q", to)
	}
	if to == "syslog" {
		w, err := dial()
		if err == nil {
			return syslogLogger(f, w), nil
		}
		if stderrSocket {
			return slog.New(slog.DiscardHandler), nil // no syslog: stay silent rather than talk to the client
		}
		fmt.Fprintf(stderr, "%s: syslog unavailable (%v); logging to stderr\n", f.Name(), err)
	}
	return f.logger(stderr), nil
}

// dialSyslog returns a function that connects to the local syslog daemon with facility (wrap:
// auth, as tcpd; serve: daemon).
func dialSyslog(facility syslog.Priority) func() (*syslog.Writer, error) {
	return func() (*syslog.Writer, error) { return syslog.New(syslog.LOG_INFO|facility, "peergate") }
}

// syslogLogger logs to w at the severities tcpd uses: refusals (and peers not judged) at warning,
// errors at err, the rest at info.
func syslogLogger(f *flags, w *syslog.Writer) *slog.Logger {
	sw := &severityWriter{w: w}
	return slog.New(severityHandler{f.logger(sw).Handler(), sw})
}

// severityWriter writes each line to syslog at the severity of the record being written.
type severityWriter struct {
	mu    sync.Mutex // held by severityHandler.Handle around the write
	w     *syslog.Writer
	level slog.Level
}

func (sw *severityWriter) Write(b []byte) (int, error) {
	var err error
	switch m := string(b); {
	case sw.level >= slog.LevelError:
		err = sw.w.Err(m)
	case sw.level >= slog.LevelWarn:
		err = sw.w.Warning(m)
	case sw.level >= slog.LevelInfo:
		err = sw.w.Info(m)
	default:
		err = sw.w.Debug(m)
	}
	return len(b), err
}

// severityHandler tells its severityWriter the level of each record it formats.
type severityHandler struct {
	slog.Handler
	sw *severityWriter
}

func (h severityHandler) Handle(ctx context.Context, r slog.Record) error {
	h.sw.mu.Lock()
	defer h.sw.mu.Unlock()
	h.sw.level = r.Level
	return h.Handler.Handle(ctx, r)
}

func (h severityHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return severityHandler{h.Handler.WithAttrs(as), h.sw}
}

func (h severityHandler) WithGroup(name string) slog.Handler {
	return severityHandler{h.Handler.WithGroup(name), h.sw}
}
