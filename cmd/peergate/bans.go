package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/peergate/peergate/internal/config"
)

// adminFlags are the flags of the commands that talk to a running serve's admin API.
type adminFlags struct {
	*flags
	admin, tokenFile string
}

func newAdminFlags(name string, stderr io.Writer) *adminFlags {
	f := &adminFlags{flags: bareFlags(name, stderr)}
	f.configOptional = true
	f.StringVar(&f.admin, "admin", "", "admin listener of the running peergate serve, IP:PORT (default: admin.listen of -config)")
	f.StringVar(&f.config, "config", "", "serve file whose admin.listen and admin.token_file to use")
	f.StringVar(&f.tokenFile, "token-file", "", "file holding the admin bearer token (default: admin.token_file of -config)")
	return f
}

// client returns the base URL and token to reach the admin API with.
func (f *adminFlags) client() (base, token string, err error) {
	addr := f.admin
	if f.config != "" {
		file, err := config.Load(f.config)
		if err != nil {
			return "", "", err
		}
		if file.Admin != nil {
			if addr == "" {
				addr = file.Admin.Listen
			}
			token = file.Admin.Token
		}
	}
	if addr == "" {
		return "", "", errors.New("-admin IP:PORT is required (or -config FILE with admin.listen)")
	}
	if f.tokenFile != "" {
		b, err := os.ReadFile(f.tokenFile)
		if err != nil {
			return "", "", err
		}
		token = strings.TrimSpace(string(b))
	}
	host := addr
	if strings.HasPrefix(host, ":") {
		host = "127.0.0.1" + host
	}
	return "http://" + host, token, nil
}

var adminHTTP = &http.Client{Timeout: 30 * time.Second}

// call sends one admin request and returns the status and body.
func call(method, u, token string, body []byte) (int, []byte, error) {
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := adminHTTP.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	return resp.StatusCode, b, err
}

// apiError returns the "error" of a JSON error body, or the body.
func apiError(b []byte) string {
	var e struct{ Error string }
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		return e.Error
	}
	return strings.TrimSpace(string(b))
}

// statusOf maps an admin API answer to an exit status: refused (409, 404) is 1, anything else
// unexpected is 2.
func statusOf(code int) int {
	switch code {
	case http.StatusConflict, http.StatusNotFound:
		return exitDenied
	}
	return exitError
}

// cmdBan bans each PREFIX through the admin API of a running serve.
func cmdBan(args []string, stdout, stderr io.Writer) int {
	f := newAdminFlags("ban", stderr)
	var dur time.Duration
	var reason string
	f.DurationVar(&dur, "for", 0, "how long the ban lasts (e.g. 1h); 0: until removed")
	f.StringVar(&reason, "reason", "", "why, shown in logs, metrics and GET /bans")
	if !f.parse(args) {
		return f.exit
	}
	if f.NArg() == 0 {
		fmt.Fprintln(stderr, "peergate ban: give one or more addresses or prefixes to ban")
		return exitError
	}
	base, token, err := f.client()
	if err != nil {
		return fail(stderr, "ban", err)
	}
	status := exitOK
	for _, p := range f.Args() {
		req := map[string]string{"prefix": p, "reason": reason}
		if dur > 0 {
			req["for"] = dur.String()
		}
		body, _ := json.Marshal(req)
		code, out, err := call("POST", base+"/bans", token, body)
		switch {
		case err != nil:
			return fail(stderr, "ban", err)
		case code == http.StatusCreated:
			var b struct {
				Prefix  string
				Expires *time.Time
			}
			json.Unmarshal(out, &b)
			exp := "never"
			if b.Expires != nil {
				exp = b.Expires.Format(time.RFC3339)
			}
			fmt.Fprintf(stdout, "banned %s until %s\n", b.Prefix, exp)
		default:
			fmt.Fprintf(stderr, "peergate ban: %s: %s\n", p, apiError(out))
			status = max(status, statusOf(code))
		}
	}
	return status
}

// cmdUnban removes the bans of each PREFIX through the admin API.
func cmdUnban(args []string, stdout, stderr io.Writer) int {
	f := newAdminFlags("unban", stderr)
	if !f.parse(args) {
		return f.exit
	}
	if f.NArg() == 0 {
		fmt.Fprintln(stderr, "peergate unban: give one or more addresses or prefixes to unban")
		return exitError
	}
	base, token, err := f.client()
	if err != nil {
		return fail(stderr, "unban", err)
	}
	status := exitOK
	for _, p := range f.Args() {
		code, out, err := call("DELETE", base+"/bans/"+url.PathEscape(p), token, nil)
		switch {
		case err != nil:
			return fail(stderr, "unban", err)
		case code == http.StatusNoContent:
			fmt.Fprintf(stdout, "unbanned %s\n", p)
		default:
			fmt.Fprintf(stderr, "peergate unban: %s: %s\n", p, apiError(out))
			status = max(status, statusOf(code))
		}
	}
	return status
}

// cmdBans lists the live bans of a running serve.
func cmdBans(args []string, stdout, stderr io.Writer) int {
	f := newAdminFlags("bans", stderr)
	if !f.parse(args) {
		return f.exit
	}
	if f.NArg() > 0 {
		return fail(stderr, "bans", fmt.Errorf("unexpected arguments: %q", f.Args()))
	}
	base, token, err := f.client()
	if err != nil {
		return fail(stderr, "bans", err)
	}
	code, out, err := call("GET", base+"/bans", token, nil)
	if err != nil {
		return fail(stderr, "bans", err)
	}
	if code != http.StatusOK {
		fmt.Fprintf(stderr, "peergate bans: %s\n", apiError(out))
		return exitError
	}
	var list []struct {
		Prefix, Origin, Reason string
		Created                time.Time
		Expires                *time.Time
	}
	if err := json.Unmarshal(out, &list); err != nil {
		return fail(stderr, "bans", err)
	}
	w := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "PREFIX\tORIGIN\tEXPIRES\tCREATED\tREASON")
	for _, b := range list {
		exp := "never"
		if b.Expires != nil {
			exp = b.Expires.Format(time.RFC3339)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", b.Prefix, b.Origin, exp, b.Created.Format(time.RFC3339), b.Reason)
	}
	w.Flush()
	return exitOK
}
