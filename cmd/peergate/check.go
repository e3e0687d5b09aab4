package main

import (
	"fmt"
	"io"
	"net/netip"
	"strings"
	"text/tabwriter"

	"github.com/peergate/peergate/acl"
	"github.com/peergate/peergate/internal/config"
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
	var decisions []acl.Decision
	for _, s := range f.Args() {
		if s == "unix" {
			decisions = append(decisions, a.ACL.Unix())
			continue
		}
		addr, err := netip.ParseAddr(strings.Trim(s, "[]"))
		if err != nil {
			return fail(stderr, "check", fmt.Errorf("%q is not an IP address", s))
		}
		decisions = append(decisions, a.ACL.Decide(addr))
	}
	status := exitOK
	w := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	for i, d := range decisions {
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
