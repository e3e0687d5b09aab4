package acl_test

import (
	"fmt"
	"net/netip"

	"github.com/peergate/peergate/acl"
)

// ExampleDiff shows what a change of policy does before it goes live: every range of addresses
// whose verdict changes, as prefixes, with the rule that decides it on each side.
func ExampleDiff() {
	rule := func(act acl.Action, p string, line int) acl.Rule {
		return acl.Rule{Prefix: netip.MustParsePrefix(p), Action: act, Origin: acl.Origin{File: "acl.yaml", Line: line}}
	}
	old := acl.MustNew(acl.Spec{Default: acl.Deny, Rules: []acl.Rule{rule(acl.Allow, "10.0.0.0/8", 2)}})
	new := acl.MustNew(acl.Spec{Default: acl.Deny, Rules: []acl.Rule{
		rule(acl.Allow, "10.0.0.0/8", 2),
		rule(acl.Deny, "10.66.0.0/15", 3),
		rule(acl.Allow, "10.67.0.0/16", 4),
	}})
	for _, c := range acl.Diff(old, new) {
		for _, p := range c.Prefixes() {
			fmt.Printf("%v (%v addresses): %v -> %v\n", p, c.Count(), c.Old, c.New)
		}
	}
	// Output:
	// 10.66.0.0/16 (65536 addresses): allow by 10.0.0.0/8 (acl.yaml:2) -> deny by 10.66.0.0/15 (acl.yaml:3)
}
