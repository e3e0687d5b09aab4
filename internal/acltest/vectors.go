package acltest

import (
	_ "embed"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/peergate/peergate/acl"
	"gopkg.in/yaml.v3"
)

// vectorsYAML are the conformance vectors: any implementation of the decision must pass them.
//
//go:embed vectors.yaml
var vectorsYAML []byte

// Vector is one conformance case: an ACL file and the list files it includes, then either the
// decisions it must give (Checks) or the error loading it must fail with (Error, at Line).
type Vector struct {
	Name   string
	Config string            // the ACL file, acl.yaml
	Files  map[string]string // list files beside it, by name
	Checks [][3]string       // address (or "unix"), action, deciding prefix or "default"
	Error  string            // the name of the acl sentinel error loading must wrap
	Line   int               // the line that error must point at
}

// Case is one check of a Vector, parsed.
type Case struct {
	Addr   netip.Addr   // the peer; invalid when Unix is set
	Unix   bool         // the check asks for the ACL's unix policy
	Action acl.Action   // what the decision must be
	Rule   netip.Prefix // the deciding prefix; invalid where the default decides
}

// String names the case in failures.
func (c Case) String() string {
	peer, by := c.Addr.String(), "default"
	if c.Unix {
		peer = "unix"
	}
	if c.Rule.IsValid() {
		by = c.Rule.String()
	}
	return fmt.Sprintf("%s: %v by %s", peer, c.Action, by)
}

// Vectors returns the conformance vectors (vectors.yaml in this package's directory).
func Vectors() ([]Vector, error) {
	var vs []Vector
	if err := yaml.Unmarshal(vectorsYAML, &vs); err != nil {
		return nil, fmt.Errorf("vectors.yaml: %w", err)
	}
	if len(vs) < 20 {
		return nil, fmt.Errorf("vectors.yaml: only %d vectors", len(vs))
	}
	return vs, nil
}

// Write writes the vector's ACL file (acl.yaml) and its list files into dir and returns the
// ACL file's path.
func (v Vector) Write(dir string) (string, error) {
	for name, text := range v.Files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			return "", err
		}
	}
	path := filepath.Join(dir, "acl.yaml")
	return path, os.WriteFile(path, []byte(v.Config), 0o644)
}

// Cases returns the vector's checks, parsed; an error names the vector and the check.
func (v Vector) Cases() ([]Case, error) {
	out := make([]Case, 0, len(v.Checks))
	for _, c := range v.Checks {
		var k Case
		var err error
		if c[0] == "unix" {
			k.Unix = true
		} else if k.Addr, err = netip.ParseAddr(c[0]); err != nil {
			return nil, fmt.Errorf("vector %q: check %q: %w", v.Name, c, err)
		}
		if k.Action, err = acl.ParseAction(c[1]); err != nil {
			return nil, fmt.Errorf("vector %q: check %q: %w", v.Name, c, err)
		}
		if c[2] != "default" {
			if k.Rule, err = netip.ParsePrefix(c[2]); err != nil {
				return nil, fmt.Errorf("vector %q: check %q: %w", v.Name, c, err)
			}
		}
		out = append(out, k)
	}
	return out, nil
}

// Run runs check, as a subtest named after the vector, on every vector that loads (those that
// must fail to load are acl_test's), with the ACL loaded and its cases parsed. An implementation
// that cannot express a case skips that case and says so in its own words.
func Run(t *testing.T, check func(t *testing.T, a *acl.ACL, cases []Case)) {
	t.Helper()
	vs, err := Vectors()
	if err != nil {
		t.Fatal(err)
	}
	// Write them all first: acl.Load waits for a file written moments before to settle, so then
	// only the first load waits.
	base, paths := t.TempDir(), make([]string, len(vs))
	for i, v := range vs {
		dir := filepath.Join(base, strconv.Itoa(i))
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if paths[i], err = v.Write(dir); err != nil {
			t.Fatal(err)
		}
	}
	for i, v := range vs {
		if v.Error != "" {
			continue
		}
		t.Run(v.Name, func(t *testing.T) {
			a, err := acl.Load(paths[i])
			if err != nil {
				t.Fatalf("load: %v", err)
			}
			cases, err := v.Cases()
			if err != nil {
				t.Fatal(err)
			}
			if len(cases) == 0 {
				t.Fatal("vector has no checks")
			}
			check(t, a, cases)
		})
	}
}
