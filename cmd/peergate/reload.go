package main

import (
	"fmt"
	"io"
	"net/http"
)

// cmdReload asks a running serve to reload its config through the admin API. The reload is
// refused (exit 1) when it would deny a guard.keep_allowed address, or this command's own address
// where the running config lets it in (the admin listener's ACL, or a service that allows it now):
// -force overrides both.
func cmdReload(args []string, stdout, stderr io.Writer) int {
	f := newAdminFlags("reload", stderr)
	force := f.Bool("force", false, "reload even if the new config would lock out a guarded address or this client")
	if !f.parse(args) {
		return f.exit
	}
	if f.NArg() > 0 {
		return fail(stderr, "reload", fmt.Errorf("unexpected arguments: %q", f.Args()))
	}
	base, token, err := f.client()
	if err != nil {
		return fail(stderr, "reload", err)
	}
	u := base + "/reload"
	if *force {
		u += "?force=true"
	}
	code, body, err := call("POST", u, token, nil)
	if err != nil {
		return fail(stderr, "reload", err)
	}
	if code != http.StatusOK {
		fmt.Fprintf(stderr, "peergate reload: %s\n", apiError(body))
		if code == http.StatusConflict {
			return exitDenied
		}
		return exitError
	}
	fmt.Fprintln(stdout, "reloaded")
	return exitOK
}
