package version

import (
	"runtime"
	"strings"
	"testing"
)

func TestString(t *testing.T) {
	for _, tc := range []struct {
		in   Info
		want string
	}{
		{Info{Version: "(devel)", Go: "go1.26.8"}, "peergate (devel) go1.26.8"},
		{Info{Version: "v1.2.3", Revision: "abc", Time: "2026-12-02T10:00:00Z", Go: "go1.26.8"},
			"peergate v1.2.3 (revision abc, 2026-12-02T10:00:00Z) go1.26.8"},
		{Info{Version: "(devel)", Revision: "abc", Modified: true, Go: "go1.26.8"},
			"peergate (devel) (revision abc, modified) go1.26.8"},
	} {
		if got := tc.in.String(); got != tc.want {
			t.Errorf("%+v: got %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestGet(t *testing.T) {
	in := Get()
	if in.Version == "" || !strings.HasPrefix(in.Go, "go") {
		t.Fatalf("Get() = %+v: want a version and the Go version", in)
	}
	if in.Go != runtime.Version() {
		t.Errorf("Go = %q, want the running %q", in.Go, runtime.Version())
	}
}
