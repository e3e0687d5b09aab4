package serve

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/peergate/peergate/internal/config"
)

// Errors of listening on a Unix socket path that something else holds.
var (
	// ErrSocketInUse: a server accepts on the socket already (connecting to it succeeded, or
	// failed otherwise than with ECONNREFUSED, so it may be live).
	ErrSocketInUse = errors.New("socket in use: another server may be listening on it")
	// ErrNotSocket: the path is something other than a socket (a file, a directory).
	ErrNotSocket = errors.New("not a socket; peergate replaces only a stale socket")
)

// staleProbe bounds the connect that tells a stale socket from a live one.
const staleProbe = time.Second

// listenUnix listens on the Unix socket path, or on the abstract socket "@name" (Linux). A path
// that exists is replaced only when it is a stale socket: one that refuses connections
// (ECONNREFUSED), left by a server that exited. The listener removes on Close only the socket it
// made, and only while the path still leads to it.
func listenUnix(path string) (net.Listener, error) {
	if path != "" && path[0] == '@' {
		if runtime.GOOS != "linux" {
			return nil, fmt.Errorf("%s: abstract Unix sockets (@name) exist only on Linux", path)
		}
		return net.Listen("unix", path) // no file: nothing to replace or remove
	}
	if fi, err := os.Lstat(path); err == nil {
		if err := stale(path, fi); err != nil {
			return nil, err
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("removing the stale socket: %w", err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	ln.SetUnlinkOnClose(false) // Go would unlink the path, whatever is there by then
	made, err := os.Lstat(path)
	if err != nil {
		ln.Close()
		return nil, err
	}
	return &unixListener{UnixListener: ln, path: path, made: made}, nil
}

// stale returns nil when fi, found at path, is a socket nobody listens on, and why not otherwise.
func stale(path string, fi fs.FileInfo) error {
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s: %w (it is a %s)", path, ErrNotSocket, kind(fi))
	}
	c, err := net.DialTimeout("unix", path, staleProbe)
	if err == nil {
		c.Close()
		return fmt.Errorf("%s: %w", path, ErrSocketInUse)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%s: %w: %w", path, ErrSocketInUse, err)
	}
	return nil
}

func kind(fi fs.FileInfo) string {
	switch t := fi.Mode().Type(); {
	case t == 0:
		return "regular file"
	case t&fs.ModeDir != 0:
		return "directory"
	case t&fs.ModeSymlink != 0:
		return "symbolic link"
	default:
		return "file of mode " + t.String()
	}
}

// unixListener is a listener on a socket file that it made; Close removes that file if the path
// still leads to it (not to what another process put there since).
type unixListener struct {
	*net.UnixListener
	path   string
	made   fs.FileInfo
	remove sync.Once
}

func (u *unixListener) Close() error {
	err := u.UnixListener.Close()
	u.remove.Do(func() {
		if fi, err := os.Lstat(u.path); err == nil && os.SameFile(fi, u.made) {
			os.Remove(u.path)
		}
	})
	return err
}

// applyPerm sets the mode and owner of the file of the Unix socket addr, right after it is bound.
func applyPerm(addr string, p config.UnixPerm) error {
	path, _ := config.UnixPath(addr)
	if p.UID >= 0 || p.GID >= 0 {
		if err := os.Lchown(path, p.UID, p.GID); err != nil {
			return fmt.Errorf("listen %s: %w", addr, err)
		}
	}
	if p.Mode != 0 {
		if err := os.Chmod(path, p.Mode); err != nil {
			return fmt.Errorf("listen %s: %w", addr, err)
		}
	}
	return nil
}
