package serve

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/peergate/peergate/internal/config"
	"github.com/peergate/peergate/internal/sockenv"
)

// spawn starts prog with the connection as its standard input and output, like inetd's "nowait"
// services, and the UCSPI variables describing the connection in its environment (PROTO,
// TCPREMOTEIP, TCPREMOTEPORT, TCPLOCALIP, TCPLOCALPORT). Its standard error is peergate's. The
// caller still owns c and should close it once spawn returns: the child has its own copy of the fd.
//
// With svc's user or group set, the child runs as that uid and gid with no supplementary groups.
func spawn(c net.Conn, svc *config.Service) (*exec.Cmd, error) {
	argv := svc.Exec
	sc, ok := c.(interface{ File() (*os.File, error) })
	if !ok {
		return nil, fmt.Errorf("spawn: %T has no file descriptor", c)
	}
	f, err := sc.File() // a dup in blocking mode, which is what a child expects
	if err != nil {
		return nil, fmt.Errorf("spawn: %w", err)
	}
	defer f.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = f, f, os.Stderr
	cmd.Env = append(os.Environ(), ucspi(c)...)
	// A process group of its own: signals to peergate's group spare the child, and the drain can
	// signal the child together with whatever it started.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if svc.UID >= 0 || svc.GID >= 0 {
		uid, gid := svc.UID, svc.GID
		if uid < 0 {
			uid = os.Getuid()
		}
		if gid < 0 {
			gid = os.Getgid()
		}
		// Groups empty, NoSetGroups false: setgroups(0) drops root's supplementary groups.
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
	}
	if err := kids.start(cmd); err != nil {
		return nil, fmt.Errorf("spawn %s: %w", argv[0], err)
	}
	return cmd, nil
}

// children are the children that spawn started, which their exec.Cmd waits for. ReapOrphans
// reaps every other child, and must never take one of these from its exec.Cmd.
type children struct {
	starting sync.RWMutex // read-held from a child's start until it is in own; write-held to reap
	mu       sync.Mutex
	own      map[int]struct{}
}

var kids = children{own: map[int]struct{}{}}

// start starts cmd and records its pid as one of ours, before an orphan reaper can look.
func (k *children) start(cmd *exec.Cmd) error {
	k.starting.RLock()
	defer k.starting.RUnlock()
	if err := cmd.Start(); err != nil {
		return err
	}
	k.mu.Lock()
	k.own[cmd.Process.Pid] = struct{}{}
	k.mu.Unlock()
	return nil
}

// wait waits for cmd, started by start, and forgets it.
func (k *children) wait(cmd *exec.Cmd) error {
	err := cmd.Wait()
	k.mu.Lock()
	delete(k.own, cmd.Process.Pid)
	k.mu.Unlock()
	return err
}

func (k *children) ours(pid int) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	_, ok := k.own[pid]
	return ok
}

// ReapOrphans makes the process a child subreaper (PR_SET_CHILD_SUBREAPER), so that what its
// handlers leave running is re-parented to it rather than to init, and from then on reaps every
// child that is not a handler spawn is waiting for, as it exits. A process running as PID 1 (a
// container's init) inherits orphans anyway, and must reap them or they stay zombies. Call it
// once, from the program's main: it takes every child that no exec.Cmd of this package started.
func ReapOrphans() error {
	err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	if err != nil && os.Getpid() != 1 {
		return fmt.Errorf("PR_SET_CHILD_SUBREAPER: %w", err)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGCHLD)
	go func() {
		retry := time.NewTimer(0)
		for {
			select {
			case <-sigs:
			case <-retry.C:
			}
			if kids.reap() {
				// A handler's zombie came first, and orphans may wait behind it: look again
				// once its exec.Cmd has reaped it.
				retry.Reset(50 * time.Millisecond)
			}
		}
	}()
	return nil
}

// reap reaps the exited children that are not ours. It reports whether it stopped at one of
// ours, which its exec.Cmd is about to reap and which may hide orphans.
func (k *children) reap() (blocked bool) {
	k.starting.Lock() // no child is between its start and its entry in own
	defer k.starting.Unlock()
	for {
		// Peek (WNOWAIT) at an exited child without reaping it; reap it only if it is not ours.
		var info unix.Siginfo
		if err := unix.Waitid(unix.P_ALL, 0, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil); err != nil {
			return false // ECHILD: no children at all
		}
		pid := siginfoPid(&info)
		if pid == 0 {
			return false // none has exited
		}
		if k.ours(pid) {
			return true
		}
		var ws unix.WaitStatus
		if _, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil); err != nil {
			return false
		}
	}
}

// siginfoPid returns si_pid of a waitid result: the first field of the union that follows
// si_signo, si_errno and si_code, aligned for a pointer.
func siginfoPid(info *unix.Siginfo) int {
	const word = unsafe.Sizeof(uintptr(0))
	off := (3*unsafe.Sizeof(int32(0)) + word - 1) &^ (word - 1)
	return int(*(*int32)(unsafe.Add(unsafe.Pointer(info), off)))
}

// ucspi returns the UCSPI-TCP environment for c (see tcpserver(1)).
func ucspi(c net.Conn) []string {
	remote, rok := addrPort(c.RemoteAddr())
	local, lok := addrPort(c.LocalAddr())
	if !rok || !lok {
		return []string{"PROTO=UNIX"}
	}
	return sockenv.UCSPI(remote, local)
}

func addrPort(a net.Addr) (netip.AddrPort, bool) {
	t, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}, false
	}
	ap := t.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port()), true
}
