package serve

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestLockoutGuard: a reload whose ACL would deny a guard.keep_allowed address is refused and
// counted as a failed reload, the running rules stay; a reload that keeps the guarded addresses
// allowed goes through; ReloadForce overrides the guard.
func TestLockoutGuard(t *testing.T) {
	const tmpl = "acls:\n  lo: {default: deny, allow: [127.0.0.0/8], deny: [%s]}\nservices:\n  - name: p\n" +
		"    listen: [\"127.0.0.1:0\"]\n    acl: lo\n    upstream: %%s\n    guard: {keep_allowed: [127.0.0.1, \"::ffff:127.0.0.4/127\"]}\n"
	s, addr, dir := startFiles(t, map[string]string{"serve.yaml": fmt.Sprintf(tmpl, "127.0.0.9")}, false, nil)
	up := s.cfg.Services[0].Upstream
	for _, tc := range []struct {
		deny    string
		force   bool
		wantErr string // "" for a reload that goes through
		failed  float64
	}{
		{deny: "127.0.0.1", wantErr: "service p: " + dir + "/serve.yaml:8: guard.keep_allowed 127.0.0.1/32: 127.0.0.1 would be deny by 127.0.0.1/32 (" + dir + "/serve.yaml:2); reload refused", failed: 1},
		{deny: "127.0.0.0/30", wantErr: "127.0.0.1 would be deny by 127.0.0.0/30", failed: 2},
		{deny: "127.0.0.5", wantErr: "guard.keep_allowed 127.0.0.4/31: 127.0.0.5 would be deny", failed: 3},
		{deny: "127.0.0.2", failed: 3},
		{deny: "127.0.0.1", force: true, failed: 3},
	} {
		replace(t, dir, "serve.yaml", fmt.Sprintf(fmt.Sprintf(tmpl, tc.deny), up))
		var err error
		if tc.force {
			err = s.ReloadForce(context.Background())
		} else {
			err = s.Reload()
		}
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("deny %s: %v", tc.deny, err)
		case tc.wantErr != "" && (!errors.Is(err, ErrLockout) || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("deny %s: err %v, want ErrLockout with %q", tc.deny, err, tc.wantErr)
		}
		if got := testutil.ToFloat64(s.m.reloads.WithLabelValues("failure")); got != tc.failed {
			t.Errorf("deny %s: %v failed reloads, want %v", tc.deny, got, tc.failed)
		}
		// 127.0.0.1 stays served until the forced reload.
		c, err := dialFrom("127.0.0.1", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("x"))
		n, _ := c.Read(make([]byte, 1))
		c.Close()
		if (n == 1) == tc.force {
			t.Errorf("deny %s (force %v): 127.0.0.1 served = %v", tc.deny, tc.force, n == 1)
		}
	}
}
