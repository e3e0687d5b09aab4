package serve

import (
	"errors"
	"os/exec"
	"syscall"
	"testing"
)

// TestSignalGroupsSpareReusedPgid: the drain signals the process groups that exited handlers left
// behind, remembered by number; once such a group is gone its number may be given to another
// process, which signalGroups must spare. A process of another session numbered like a
// remembered group stands for such a reused number (its own group leader, as a login shell or a
// service is); one of this session, for a handler's group, which is signalled. Before, the drain
// sent SIGTERM and then SIGKILL to whatever group had the number by then.
func TestSignalGroupsSpareReusedPgid(t *testing.T) {
	for _, tc := range []struct {
		name   string
		attr   *syscall.SysProcAttr
		signal bool
	}{
		{"another session: a reused number", &syscall.SysProcAttr{Setsid: true}, false},
		{"this session: a handler's group", &syscall.SysProcAttr{Setpgid: true}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command("sleep", "60")
			cmd.SysProcAttr = tc.attr
			if err := cmd.Start(); err != nil {
				t.Skip(err)
			}
			pid := cmd.Process.Pid
			s := &Server{groups: map[int]struct{}{pid: {}}}
			s.signalGroups(syscall.SIGTERM)
			// A fatal signal's verdict is taken when it is sent: the SIGKILL sent now ends a
			// sleep that the SIGTERM reached with SIGTERM still, and any other with SIGKILL.
			cmd.Process.Kill()
			err := cmd.Wait()
			var ee *exec.ExitError
			if !errors.As(err, &ee) {
				t.Fatalf("sleep: %v", err)
			}
			want := map[bool]syscall.Signal{true: syscall.SIGTERM, false: syscall.SIGKILL}[tc.signal]
			if got := ee.Sys().(syscall.WaitStatus).Signal(); got != want {
				t.Errorf("sleep (group %d) ended by %v, want %v", pid, got, want)
			}
			if _, kept := s.groups[pid]; kept == !tc.signal {
				t.Errorf("group %d kept: %v", pid, kept)
			}
		})
	}
}
