// Package acl_test is the black-box conformance suite of package acl: shared vectors that any
// implementation must pass, and a differential test against a naive reference.
package acl_test

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/peergate/peergate/acl"
	"gopkg.in/yaml.v3"
)

type vector struct {
	Name   string
	Config string
	Files  map[string]string
	Checks [][3]string
	Error  string
	Line   int
}

var sentinels = map[string]error{
	"ErrMissingDefault": acl.ErrMissingDefault, "ErrHostBits": acl.ErrHostBits, "ErrPrefix": acl.ErrPrefix,
	"ErrZone": acl.ErrZone, "ErrAction": acl.ErrAction, "ErrUnknownKey": acl.ErrUnknownKey,
	"ErrDuplicateKey": acl.ErrDuplicateKey, "ErrInclude": acl.ErrInclude, "ErrSyntax": acl.ErrSyntax,
}

func TestVectors(t *testing.T) {
	data, err := os.ReadFile("testdata/vectors.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var vectors []vector
	if err := yaml.Unmarshal(data, &vectors); err != nil {
		t.Fatal(err)
	}
	if len(vectors) < 20 {
		t.Fatalf("only %d vectors loaded", len(vectors))
	}
	for _, v := range vectors {
		t.Run(v.Name, func(t *testing.T) {
			dir := t.TempDir()
			for name, text := range v.Files {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			path := filepath.Join(dir, "acl.yaml")
			if err := os.WriteFile(path, []byte(v.Config), 0o644); err != nil {
				t.Fatal(err)
			}
			a, err := acl.Load(path)
			if v.Error != "" {
				want, ok := sentinels[v.Error]
				if !ok {
					t.Fatalf("vector names unknown error %s", v.Error)
				}
				var pe *acl.PosError
				if a != nil || !errors.Is(err, want) || !errors.As(err, &pe) || pe.Line != v.Line {
					t.Fatalf("Load = (ACL %v), %v; want %s at line %d", a != nil, err, v.Error, v.Line)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(v.Checks) == 0 {
				t.Fatal("vector has no checks")
			}
			for _, c := range v.Checks {
				var d acl.Decision
				if c[0] == "unix" {
					d = a.Unix()
				} else {
					d = a.Decide(netip.MustParseAddr(c[0]))
				}
				rule := "default"
				if d.Rule != nil {
					rule = d.Rule.Prefix.String()
					if d.Rule.Action != d.Action {
						t.Errorf("%s: action %v but rule %v", c[0], d.Action, d.Rule)
					}
				}
				if d.Action.String() != c[1] || rule != c[2] {
					t.Errorf("%s: got %s by %s, want %s by %s", c[0], d.Action, rule, c[1], c[2])
				}
			}
		})
	}
}
