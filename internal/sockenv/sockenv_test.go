package sockenv

import (
	"errors"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"testing"
)

// TestListenFDs: the socket activation variables, for this process or another.
func TestListenFDs(t *testing.T) {
	me := strconv.Itoa(os.Getpid())
	for _, tc := range []struct {
		pid, fds, names string
		want            []int
		wantNames       []string
		err             bool
	}{
		{"1", "2", "", nil, nil, false}, // another process's
		{me, "2", "-", []int{3, 4}, []string{"", ""}, false},
		{me, "2", "a:b", []int{3, 4}, []string{"a", "b"}, false},
		{me, "2", "a", nil, nil, true},
		{me, "two", "-", nil, nil, true},
		{me, "-1", "-", nil, nil, true},
	} {
		t.Setenv("LISTEN_PID", tc.pid)
		t.Setenv("LISTEN_FDS", tc.fds)
		t.Setenv("LISTEN_FDNAMES", tc.names)
		if tc.names == "-" {
			os.Unsetenv("LISTEN_FDNAMES")
		}
		fds, names, err := ListenFDs()
		if (err != nil) != tc.err || err != nil && !errors.Is(err, ErrListenFDs) {
			t.Errorf("%+v: err %v", tc, err)
			continue
		}
		if len(fds) != len(tc.want) || len(names) != len(tc.wantNames) {
			t.Errorf("%+v: %v %q", tc, fds, names)
			continue
		}
		for i := range fds {
			if fds[i] != tc.want[i] || names[i] != tc.wantNames[i] {
				t.Errorf("%+v: %v %q", tc, fds, names)
			}
		}
	}
}

// TestUCSPI: the variables of tcpserver(1), addresses without brackets, ports in decimal.
func TestUCSPI(t *testing.T) {
	for _, tc := range []struct {
		remote, local string
		want          []string
	}{
		{"192.0.2.7:40000", "127.0.0.1:22", []string{"PROTO=TCP", "TCPREMOTEIP=192.0.2.7",
			"TCPREMOTEPORT=40000", "TCPLOCALIP=127.0.0.1", "TCPLOCALPORT=22"}},
		{"[2001:db8::1]:1", "[::1]:65535", []string{"PROTO=TCP", "TCPREMOTEIP=2001:db8::1",
			"TCPREMOTEPORT=1", "TCPLOCALIP=::1", "TCPLOCALPORT=65535"}},
	} {
		got := UCSPI(netip.MustParseAddrPort(tc.remote), netip.MustParseAddrPort(tc.local))
		if !slices.Equal(got, tc.want) {
			t.Errorf("UCSPI(%s, %s) = %q, want %q", tc.remote, tc.local, got, tc.want)
		}
	}
}
