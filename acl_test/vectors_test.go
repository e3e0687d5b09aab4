// Package acl_test is the black-box conformance suite of package acl: the shared vectors
// (internal/acltest/vectors.yaml) that every implementation of the decision must pass, and a
// differential test against the naive reference of internal/acltest.
package acl_test

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/peergate/peergate/acl"
	"github.com/peergate/peergate/internal/acltest"
)

var sentinels = map[string]error{
	"ErrMissingDefault": acl.ErrMissingDefault, "ErrHostBits": acl.ErrHostBits, "ErrPrefix": acl.ErrPrefix,
	"ErrZone": acl.ErrZone, "ErrAction": acl.ErrAction, "ErrUnknownKey": acl.ErrUnknownKey,
	"ErrDuplicateKey": acl.ErrDuplicateKey, "ErrInclude": acl.ErrInclude, "ErrSyntax": acl.ErrSyntax,
}

// TestVectors runs the vectors through acl.Load and ACL.Decide (and ACL.Unix): the decisions and
// their rules, and the errors of those that must fail to load.
func TestVectors(t *testing.T) {
	acltest.Run(t, func(t *testing.T, a *acl.ACL, cases []acltest.Case) {
		for _, c := range cases {
			var d acl.Decision
			if c.Unix {
				d = a.Unix()
			} else {
				d = a.Decide(c.Addr)
			}
			var rule acl.Rule
			if d.Rule != nil {
				rule = *d.Rule
				if rule.Action != d.Action {
					t.Errorf("%v: action %v but rule %v", c, d.Action, rule)
				}
			}
			if d.Action != c.Action || rule.Prefix != c.Rule {
				t.Errorf("%v: Decide says %v", c, d)
			}
		}
	})
}

// TestVectorErrors: the vectors that must fail to load fail with their sentinel error, at their
// line.
func TestVectorErrors(t *testing.T) {
	vs, err := acltest.Vectors()
	if err != nil {
		t.Fatal(err)
	}
	base, paths := t.TempDir(), map[int]string{}
	for i, v := range vs { // all written first: acl.Load waits for a file written moments before
		if v.Error != "" {
			dir := filepath.Join(base, strconv.Itoa(i))
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if paths[i], err = v.Write(dir); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(paths) < 5 {
		t.Fatalf("only %d error vectors", len(paths))
	}
	for i, v := range vs {
		if v.Error == "" {
			continue
		}
		t.Run(v.Name, func(t *testing.T) {
			want, ok := sentinels[v.Error]
			if !ok {
				t.Fatalf("vector names unknown error %s", v.Error)
			}
			a, err := acl.Load(paths[i])
			var pe *acl.PosError
			if a != nil || !errors.Is(err, want) || !errors.As(err, &pe) || pe.Line != v.Line {
				t.Fatalf("Load = (ACL %v), %v; want %s at line %d", a != nil, err, v.Error, v.Line)
			}
		})
	}
}
