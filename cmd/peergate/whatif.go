package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/peergate/peergate/internal/serve"
)

// cmdWhatIf sends a candidate serve or ACL file to a running serve (POST /whatif) and prints which
// of each service's recent peers it would decide the other way. Nothing is applied. It exits 0
// when no recent peer changes verdict and 1 when some do.
func cmdWhatIf(args []string, stdout, stderr io.Writer) int {
	f := newAdminFlags("whatif", stderr)
	if !f.parse(args) {
		return f.exit
	}
	if f.NArg() != 1 {
		return fail(stderr, "whatif", fmt.Errorf("give one candidate file (serve or ACL file), got %d arguments", f.NArg()))
	}
	data, err := os.ReadFile(f.Arg(0))
	if err != nil {
		return fail(stderr, "whatif", err)
	}
	base, token, err := f.client()
	if err != nil {
		return fail(stderr, "whatif", err)
	}
	code, out, err := call("POST", base+"/whatif?"+url.Values{"name": {filepath.Base(f.Arg(0))}}.Encode(), token, data)
	if err != nil {
		return fail(stderr, "whatif", err)
	}
	if code != http.StatusOK {
		fmt.Fprintf(stderr, "peergate whatif: %s\n", apiError(out))
		return exitError
	}
	var res serve.WhatIf
	if err := json.Unmarshal(out, &res); err != nil {
		return fail(stderr, "whatif", err)
	}
	for _, s := range res.Services {
		if s.Skipped != "" {
			fmt.Fprintf(stdout, "service %s: skipped: %s\n", s.Service, s.Skipped)
			continue
		}
		fmt.Fprintf(stdout, "service %s (acl %s -> %s): %d of %d recent peers change verdict: %d now denied, %d now allowed\n",
			s.Service, s.OldACL, s.NewACL, len(s.Changes), s.Peers, s.NowDenied, s.NowAllowed)
		if len(s.Changes) == 0 {
			continue
		}
		w := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(w, "  PEER\tVERDICT\tOLD RULE\tNEW RULE\tLAST SEEN")
		for _, c := range s.Changes {
			fmt.Fprintf(w, "  %s\t%s -> %s\t%s %s\t%s %s\t%s\n", c.Peer, c.Old.Action, c.New.Action, c.Old.Rule, c.Old.Origin,
				c.New.Rule, c.New.Origin, c.LastSeen.Format(time.RFC3339))
		}
		w.Flush()
	}
	fmt.Fprintf(stdout, "(recent peers: up to %d distinct a service; %d bytes held now)\n", res.Capacity, res.MemoryBytes)
	if res.Changed > 0 {
		return exitDenied
	}
	return exitOK
}
