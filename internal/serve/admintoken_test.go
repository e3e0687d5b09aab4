package serve

import (
	"fmt"
	"net/http"
	"testing"
)

// TestAdminTokenKeptAcrossReload: the running admin listener keeps asking for the token of the
// config it was opened (or last reconfigured) with when a reload removes or moves the admin
// section, which needs a restart; a reload that keeps its address applies a rotated token.
// The token used to be read from the running config at each request: a reload without the admin
// section left the listener up with no token, and anyone its ACL let in could ban and unban.
func TestAdminTokenKeptAcrossReload(t *testing.T) {
	const base = "acls: {lo: {default: allow}}\nservices:\n  - {name: p, listen: [\"127.0.0.1:0\"], acl: lo, upstream: %s}\n"
	const admin = "admin: {listen: \"127.0.0.1:0\", token_file: token}\n"
	s, _, dir := startFiles(t, map[string]string{"serve.yaml": base + admin, "token": "one\n"}, false, nil)
	url := "http://" + s.AdminAddr().String() + "/bans"
	status := func(token string) int {
		t.Helper()
		req, _ := http.NewRequest("GET", url, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tc := range []struct {
		name, config, token string
		want                map[string]int // status by token sent
	}{
		{"start", base + admin, "one\n", map[string]int{"": 401, "one": 200}},
		{"rotated", base + admin, "two\n", map[string]int{"": 401, "one": 401, "two": 200}},
		{"admin removed", base, "two\n", map[string]int{"": 401, "two": 200}},
		{"admin moved", base + "admin: {listen: \"127.0.0.2:0\"}\n", "two\n", map[string]int{"": 401, "two": 200}},
		{"moved, other token", base + "admin: {listen: \"127.0.0.2:0\", token_file: token}\n", "three\n", map[string]int{"": 401, "three": 401, "two": 200}},
	} {
		up := upstream(t, "echo")
		replace(t, dir, "token", tc.token)
		replace(t, dir, "serve.yaml", fmt.Sprintf(tc.config, up))
		if err := s.Reload(); err != nil {
			t.Fatalf("%s: reload: %v", tc.name, err)
		}
		for token, want := range tc.want {
			if got := status(token); got != want {
				t.Errorf("%s: GET /bans with token %q: %d, want %d", tc.name, token, got, want)
			}
		}
	}
}
