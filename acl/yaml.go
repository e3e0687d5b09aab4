package acl

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/peergate/peergate/internal/conf"
	"gopkg.in/yaml.v3"
)

// Load reads the ACL file at path (see LoadSpec) and compiles it.
func Load(path string) (*ACL, error) {
	spec, err := LoadSpec(path)
	if err != nil {
		return nil, err
	}
	a, err := New(spec)
	if err != nil {
		return nil, &PosError{File: path, Err: err} // a loaded spec is valid but may be too big
	}
	return a, nil
}

// LoadSpec reads the YAML ACL file at path:
//
//	default: deny                          # required: allow | deny
//	allow: [10.0.0.0/8, "2001:db8::/32"]   # addresses or prefixes
//	deny:  [10.66.0.0/16]
//	include:                               # list files, relative to this file
//	  - {path: drop.txt, action: deny}
//	unix: deny                             # Unix-domain peers; default deny
//
// The format is strict: unknown and duplicate keys are errors. Every error names the file, the line
// and the offending value, and wraps one of the package's sentinel errors.
func LoadSpec(path string) (Spec, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Spec{}, err
	}
	return ParseSpec(path, data)
}

// ParseSpec parses data as the YAML ACL file name (see LoadSpec). Includes are read from the
// directory of name.
func ParseSpec(name string, data []byte) (Spec, error) {
	root, err := conf.Parse(name, data)
	if err != nil {
		return Spec{}, err
	}
	return SpecFromNode(name, root)
}

// SpecFromNode reads an ACL from a YAML mapping node of file name, as LoadSpec does. It is
// exported for loaders of larger files that embed ACLs, such as peergate's serve config.
func SpecFromNode(name string, n *yaml.Node) (Spec, error) {
	var errs conf.Errors
	var spec Spec
	haveDefault := false
	isMap := conf.Mapping(name, n, &errs, func(key string, k, v *yaml.Node) {
		switch key {
		case "default":
			spec.Default, haveDefault = scalarAction(name, v, &errs), true
		case "unix":
			spec.Unix = scalarAction(name, v, &errs)
		case "allow", "deny":
			act, _ := ParseAction(key)
			for _, item := range conf.Sequence(name, v, &errs) {
				if s, ok := conf.Scalar(name, item, &errs); ok {
					p, err := ParsePrefix(s)
					if err != nil {
						errs.At(name, item.Line, s, err)
						continue
					}
					spec.Rules = append(spec.Rules, Rule{p, act, Origin{name, item.Line}})
				}
			}
		case "include":
			for _, item := range conf.Sequence(name, v, &errs) {
				if rules := include(name, item, &errs); len(spec.Rules) == 0 {
					spec.Rules = rules // a big list: no copy
				} else {
					spec.Rules = append(spec.Rules, rules...)
				}
			}
		default:
			conf.Unknown(&errs, name, k, "default, allow, deny, include or unix")
		}
	})
	if !haveDefault && isMap {
		errs.At(name, n.Line, "", fmt.Errorf("%w: say \"default: deny\" or \"default: allow\"", ErrMissingDefault))
	}
	if err := errs.Err(); err != nil {
		return Spec{}, err
	}
	return spec, nil
}

// include reads one {path, action} entry and the list file it names.
func include(name string, n *yaml.Node, errs *conf.Errors) []Rule {
	var path string
	var pathLine int
	var act Action
	haveAct := false
	ok := conf.Mapping(name, n, errs, func(key string, k, v *yaml.Node) {
		switch key {
		case "path":
			path, _ = conf.Scalar(name, v, errs)
			pathLine = v.Line
		case "action":
			act, haveAct = scalarAction(name, v, errs), true
		default:
			conf.Unknown(errs, name, k, "path and action in an include")
		}
	})
	if !ok {
		return nil
	}
	if path == "" || !haveAct {
		errs.At(name, n.Line, "", fmt.Errorf("%w: an include needs both path and action", ErrSyntax))
		return nil
	}
	if !filepath.IsAbs(path) {
		path = filepath.Join(filepath.Dir(name), path)
	}
	rules, err := LoadList(path, act)
	if err != nil {
		var pe *PosError
		if !errors.As(err, &pe) { // the file itself could not be read
			err = &PosError{File: name, Line: pathLine, Value: path, Err: fmt.Errorf("%w: %w", ErrInclude, err)}
		}
		errs.Add(err)
	}
	return rules
}

func scalarAction(name string, n *yaml.Node, errs *conf.Errors) Action {
	s, ok := conf.Scalar(name, n, errs)
	if !ok {
		return Deny
	}
	a, err := ParseAction(s)
	if err != nil {
		errs.At(name, n.Line, s, err)
	}
	return a
}
