package main

import (
	"fmt"
	"io"

	"github.com/peergate/peergate/acl"
	"github.com/peergate/peergate/internal/config"
)

// cmdLint reports load errors (exit 2) and then suspicious rules (exit 1), like tcpdchk. Without
// -acl it lints every ACL of the file.
func cmdLint(args []string, stdout, stderr io.Writer) int {
	f := newFlags("lint", stderr).withACL()
	if !f.parse(args) {
		return f.exit
	}
	file, err := config.Load(f.config)
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
	if n > 0 {
		fmt.Fprintf(stderr, "peergate lint: %d warning(s)\n", n)
		return exitDenied
	}
	return exitOK
}
