package main

import (
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"

	"github.com/peergate/peergate/acl"
	"github.com/peergate/peergate/internal/config"
)

// cmdLint reports load errors (exit 2) and then suspicious rules (exit 1), like tcpdchk. Without
// -acl it lints every ACL of the file; it also warns about the services guarded by the ACLs it
// lints.
func cmdLint(args []string, stdout, stderr io.Writer) int {
	f := newFlags("lint", stderr).withACL()
	if !f.parse(args) {
		return f.exit
	}
	file, err := loadSpecs(f.config, stderr)
	if err != nil {
		return fail(stderr, "lint", err)
	}
	acls := file.ACLs
	if f.acl != "" {
		a, err := file.Pick(f.acl)
		if err != nil {
			return fail(stderr, "lint", err)
		}
		acls = []*config.ACL{a}
	}
	n := 0
	for _, a := range acls {
		findings, err := acl.Lint(a.Spec)
		if err != nil {
			return fail(stderr, "lint", err)
		}
		for _, fd := range findings {
			if fd.Rule == nil { // about the whole ACL: say which one
				fmt.Fprintf(stdout, "%s: acl %s: %s: %s\n", f.config, a.Name, fd.Kind, fd.Msg)
			} else {
				fmt.Fprintln(stdout, fd)
			}
		}
		n += len(findings)
	}
	for _, s := range file.Services {
		if !slices.Contains(acls, s.ACL) {
			continue
		}
		if fams := coveredFamilies(s.TrustedProxies); fams != "" {
			fmt.Fprintf(stdout, "%s:%d: service %s: trusts-all: trusted_proxies covers all of %s: any client there "+
				"can send a PROXY header and be judged as whatever address it writes in it; list only your proxies\n",
				f.config, s.ProxiesLine, s.Name, fams)
			n++
		}
	}
	if n > 0 {
		fmt.Fprintf(stderr, "peergate lint: %d warning(s)\n", n)
		return exitDenied
	}
	return exitOK
}

// coveredFamilies returns which address families ps covers whole ("IPv4", "IPv6" or "IPv4 and
// IPv6"), or "".
func coveredFamilies(ps []netip.Prefix) string {
	if len(ps) == 0 {
		return ""
	}
	rules := make([]acl.Rule, len(ps))
	for i, p := range ps {
		rules[i] = acl.Rule{Prefix: p, Action: acl.Allow}
	}
	a, err := acl.New(acl.Spec{Default: acl.Deny, Rules: rules})
	if err != nil {
		return "" // the loader checked every prefix
	}
	all4, all6 := true, true
	for r := range a.Ranges() {
		if !r.Decision.Allowed() {
			all4, all6 = all4 && !r.First.Is4(), all6 && r.First.Is4()
		}
	}
	var fams []string
	if all4 {
		fams = append(fams, "IPv4")
	}
	if all6 {
		fams = append(fams, "IPv6")
	}
	return strings.Join(fams, " and ")
}
