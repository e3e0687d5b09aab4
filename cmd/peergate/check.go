package main

import (
	"fmt"
	"io"
	"net/netip"
	"strings"
	"text/tabwriter"

	"github.com/peergate/peergate/acl"
	"github.com/peergate/peergate/gate"
	"github.com/peergate/peergate/gate/bans"
	"github.com/peergate/peergate/internal/config"
	"github.com/peergate/peergate/internal/serve"
)

// cmdCheck prints, for each address, the decision and the rule that made it, like tcpdmatch. The word
// "unix" asks for the Unix-domain policy. It exits 0 when every address is allowed and 1 when any
// is denied.
func cmdCheck(args []string, stdout, stderr io.Writer) int {
	f := newFlags("check", stderr).withACL()
	if !f.parse(args) {
		return f.exit
	}
	if f.NArg() == 0 {
		fmt.Fprintln(stderr, "peergate check: give one or more addresses to check")
		return exitError
	}
	file, err := config.Load(f.config)
	if err != nil {
		return fail(stderr, "check", err)
	}
	a, err := file.Pick(f.acl)
	if err != nil {
		return fail(stderr, "check", err)
	}
	// A serve file with state_dir: the saved bans (api, auto) are the layer before the ACL.
	var layer *bans.Table
	if file.StateDir != "" {
		saved, err := serve.ReadBans(file.StateDir)
		if err != nil {
			return fail(stderr, "check", err)
		}
		layer = bans.New(bans.Config{Max: len(saved) + 1})
		layer.AddBatch(saved)
	}
	var decisions []acl.Decision
	banned := map[int]gate.Ban{}
	for _, s := range f.Args() {
		if s == "unix" {
			decisions = append(decisions, a.ACL.Unix())
			continue
		}
		addr, err := netip.ParseAddr(strings.Trim(s, "[]"))
		if err != nil {
			return fail(stderr, "check", fmt.Errorf("%q is not an IP address", s))
		}
		if layer != nil {
			if b, ok := layer.Lookup(addr); ok {
				banned[len(decisions)] = b
				decisions = append(decisions, acl.Decision{Action: acl.Deny})
				continue
			}
		}
		decisions = append(decisions, a.ACL.Decide(addr))
	}
	status := exitOK
	w := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	for i, d := range decisions {
		if b, ok := banned[i]; ok {
			fmt.Fprintf(w, "%s\tdeny\tban %s\torigin=%s reason=%q expires=%s (%s)\n", f.Arg(i), b.Prefix, b.Origin, b.Reason, b.ExpiresString(), file.StateDir)
			status = exitDenied
			continue
		}
		by := "default"
		if d.Rule != nil {
			by = d.Rule.Prefix.String() + "\t" + d.Rule.Origin.String()
		} else if f.Arg(i) == "unix" {
			by = "unix policy"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\n", f.Arg(i), d.Action, by)
		if !d.Allowed() {
			status = exitDenied
		}
	}
	w.Flush()
	return status
}
