package acl

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/peergate/peergate/internal/safefile"
	"github.com/peergate/peergate/internal/strictyaml"
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
//	# or, judged by the credentials of the peer's process (SO_PEERCRED):
//	# unix: {allow_uids: [postgres, 1000], allow_gids: [adm], deny_uids: [nobody], default: deny}
//
// The format is strict: unknown and duplicate keys are errors. Every error names the file, the line
// and the offending value, and wraps one of the package's sentinel errors.
//
// Files are read as a default Loader reads them: see Loader for the bounds.
func LoadSpec(path string) (Spec, error) {
	return new(Loader).LoadSpec(context.Background(), path)
}

// ParseSpec parses data as the YAML ACL file name (see LoadSpec). Includes are read from the
// directory of name.
func ParseSpec(name string, data []byte) (Spec, error) {
	return new(Loader).ParseSpec(context.Background(), name, data)
}

// ParseSpecAt parses data as the YAML file name and reads the ACL found under the mapping keys
// keys, from the top: ParseSpecAt("serve.yaml", data, "acls", "office") reads the ACL office of
// a file holding
//
//	acls:
//	  office: {default: deny, allow: [10.0.0.0/8]}
//
// It is for programs whose own files embed an ACL, and reports errors at their lines in the whole
// file, as LoadSpec does; keys that lead nowhere are an error wrapping ErrNoKey. With no keys it is
// ParseSpec. Includes are read from the directory of name.
func ParseSpecAt(name string, data []byte, keys ...string) (Spec, error) {
	return new(Loader).ParseSpecAt(context.Background(), name, data, keys...)
}

// SpecFromNode reads an ACL from a YAML mapping node of file name, as LoadSpec does.
//
// Deprecated: it ties the package's API to gopkg.in/yaml.v3; use ParseSpecAt, which reads the
// ACL from the file's bytes under the keys that lead to it.
func SpecFromNode(name string, n *yaml.Node) (Spec, error) {
	return new(Loader).specFromNode(context.Background(), name, n)
}

// DefaultMaxFileSize is the bound on one file's size of a Loader that sets none: 1 GiB.
const DefaultMaxFileSize = safefile.DefaultMaxFileSize

// Source is what a Loader saw of one file it read or tried to read (see Loader.Sources): the path
// as the load named it, and the file's type, identity, size and times from the stat taken when it
// was read. Exists is false when the file could not be stat'ed (it was missing, say): a file that
// appears later differs from that record.
type Source struct {
	Path         string
	Exists       bool
	Mode         fs.FileMode // type bits only
	Dev, Ino     uint64      // device and inode; 0 where the system does not say
	Size         int64
	Mtime, Ctime int64 // modification and change times, nanoseconds since the epoch (Ctime 0 where unknown)
}

// Changed reports whether the file at s.Path is no longer the one s records: replaced, written,
// created or removed since.
func (s Source) Changed() bool { return safefile.Source(s).Changed() }

// A Loader reads ACL files and the list files they include; the package-level loaders use a zero
// Loader. Every file goes through one reader that fails closed:
//   - only regular files are read: a FIFO, a device (/dev/zero, /dev/urandom) or a directory is
//     refused before it is opened (ErrNotRegular), so a load can neither hang nor read forever;
//   - a file over MaxFileSize bytes is refused (ErrTooBig);
//   - a file that changes while it is read (a list rewritten in place), or that was written
//     moments before, is read again once it is left alone; one that keeps changing fails the
//     load (ErrUnsettled) rather than yield half-written rules;
//   - the context passed to each method, checked between chunks of a file, cancels a load.
//
// A Loader records every file it read or tried to read (see Sources), so that a caller can watch
// them all for changes. Its methods may be called from several goroutines.
type Loader struct {
	MaxFileSize int64 // the most bytes one file may hold; 0: DefaultMaxFileSize

	// Resolver supplies the rules of url includes (see Remote); nil: a url include is an error
	// (ErrRemote) naming its file and line.
	Resolver Resolver

	// GeoIP compiles country and asn rules against the file's geoip database; nil: such a rule
	// is an error (ErrGeoIP) naming its file and line.
	GeoIP GeoCompiler

	mu      sync.Mutex
	sources []Source
}

// Sources returns what the Loader saw of every file it read or tried to read so far, in the
// order read: identity, size and times at the moment it read each one, or Exists false for a
// file it could not find. A file whose stat no longer matches (Source.Changed) would load
// differently now.
func (l *Loader) Sources() []Source {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Source(nil), l.sources...)
}

// ReadFile reads the file at path under the Loader's bounds and records it among Sources. It is
// exported for loaders of larger files that embed ACLs, which read those files with it.
func (l *Loader) ReadFile(ctx context.Context, path string) ([]byte, error) {
	data, src, err := safefile.ReadFile(ctx, path, l.MaxFileSize)
	l.mu.Lock()
	l.sources = append(l.sources, Source(src))
	l.mu.Unlock()
	return data, err
}

// LoadSpec is the package's LoadSpec, with the Loader's bounds and ctx.
func (l *Loader) LoadSpec(ctx context.Context, path string) (Spec, error) {
	data, err := l.ReadFile(ctx, path)
	if err != nil {
		return Spec{}, err
	}
	return l.ParseSpec(ctx, path, data)
}

// ParseSpec is the package's ParseSpec, with the Loader's bounds and ctx.
func (l *Loader) ParseSpec(ctx context.Context, name string, data []byte) (Spec, error) {
	root, err := strictyaml.Parse(name, data)
	if err != nil {
		return Spec{}, err
	}
	return l.specFromNode(ctx, name, root)
}

// ParseSpecAt is the package's ParseSpecAt, with the Loader's bounds and ctx.
func (l *Loader) ParseSpecAt(ctx context.Context, name string, data []byte, keys ...string) (Spec, error) {
	n, err := strictyaml.Parse(name, data)
	if err != nil {
		return Spec{}, err
	}
	at := n.Line // the line of the key that led to n
	for i, key := range keys {
		var next *yaml.Node
		var errs strictyaml.Errors
		if !strictyaml.Mapping(name, n, &errs, func(k string, kn, v *yaml.Node) {
			if k == key {
				next, at = v, kn.Line
			}
		}) || errs.Err() != nil {
			return Spec{}, errs.Err()
		}
		if next == nil {
			return Spec{}, &PosError{File: name, Line: at, Value: strings.Join(keys[:i+1], "."), Err: ErrNoKey}
		}
		n = next
	}
	return l.specFromNode(ctx, name, n)
}

// SpecFromNode is the package's SpecFromNode, with the Loader's bounds and ctx.
//
// Deprecated: it ties the package's API to gopkg.in/yaml.v3; use Loader.ParseSpecAt.
func (l *Loader) SpecFromNode(ctx context.Context, name string, n *yaml.Node) (Spec, error) {
	return l.specFromNode(ctx, name, n)
}

// specFromNode reads an ACL from the YAML mapping node n of file name.
func (l *Loader) specFromNode(ctx context.Context, name string, n *yaml.Node) (Spec, error) {
	var errs strictyaml.Errors
	var spec Spec
	haveDefault := false
	geo := geoKey(name, n, &errs)
	isMap := strictyaml.Mapping(name, n, &errs, func(key string, k, v *yaml.Node) {
		switch key {
		case "geoip": // read by geoKey
		case "default":
			spec.Default, haveDefault = scalarAction(name, v, &errs), true
		case "unix":
			if v.Kind == yaml.MappingNode {
				unixPolicyNode(name, v, &spec, &errs)
			} else {
				spec.Unix = scalarAction(name, v, &errs)
			}
		case "allow", "deny":
			act, _ := ParseAction(key)
			for _, item := range strictyaml.Sequence(name, v, &errs) {
				if s, ok := strictyaml.Scalar(name, item, &errs); ok {
					p, err := ParsePrefix(s)
					if err != nil {
						errs.At(name, item.Line, s, err)
						continue
					}
					spec.Rules = append(spec.Rules, Rule{p, act, Origin{name, item.Line}})
				}
			}
		case "include":
			for _, item := range strictyaml.Sequence(name, v, &errs) {
				if rules := l.include(ctx, name, item, geo, &errs); len(spec.Rules) == 0 {
					spec.Rules = rules // a big list: no copy
				} else {
					spec.Rules = append(spec.Rules, rules...)
				}
			}
		default:
			strictyaml.Unknown(&errs, name, k, "default, allow, deny, include, geoip or unix")
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
func (l *Loader) include(ctx context.Context, name string, n *yaml.Node, geo *geoDB, errs *strictyaml.Errors) []Rule {
	if n.Kind == yaml.MappingNode && hasKey(n, "url") {
		return l.remote(ctx, name, n, errs)
	}
	if n.Kind == yaml.MappingNode && (hasKey(n, "country") || hasKey(n, "asn")) {
		return l.geo(ctx, name, n, geo, errs)
	}
	var path string
	var pathLine int
	var act Action
	haveAct := false
	ok := strictyaml.Mapping(name, n, errs, func(key string, k, v *yaml.Node) {
		switch key {
		case "path":
			path, _ = strictyaml.Scalar(name, v, errs)
			pathLine = v.Line
		case "action":
			act, haveAct = scalarAction(name, v, errs), true
		default:
			strictyaml.Unknown(errs, name, k, "path (or url) and action in an include")
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
	rules, err := l.LoadList(ctx, path, act)
	if err != nil {
		var pe *PosError
		if !errors.As(err, &pe) { // the file itself could not be read
			err = &PosError{File: name, Line: pathLine, Value: path, Err: fmt.Errorf("%w: %w", ErrInclude, err)}
		}
		errs.Add(err)
	}
	return rules
}

func scalarAction(name string, n *yaml.Node, errs *strictyaml.Errors) Action {
	s, ok := strictyaml.Scalar(name, n, errs)
	if !ok {
		return Deny
	}
	a, err := ParseAction(s)
	if err != nil {
		errs.At(name, n.Line, s, err)
	}
	return a
}

// unixPolicyNode reads the mapping form of "unix": lists of users and groups to allow or deny,
// and the default for the rest (deny when not given). Names are resolved to ids now, with
// os/user; an unknown name is an error at its line.
func unixPolicyNode(name string, n *yaml.Node, spec *Spec, errs *strictyaml.Errors) {
	spec.Unix = Deny
	strictyaml.Mapping(name, n, errs, func(key string, k, v *yaml.Node) {
		var kind UnixKind
		var act Action
		switch key {
		case "default":
			spec.Unix = scalarAction(name, v, errs)
			return
		case "allow_uids":
			kind, act = UID, Allow
		case "allow_gids":
			kind, act = GID, Allow
		case "deny_uids":
			kind, act = UID, Deny
		case "deny_gids":
			kind, act = GID, Deny
		default:
			strictyaml.Unknown(errs, name, k, "allow_uids, allow_gids, deny_uids, deny_gids or default in unix")
			return
		}
		for _, item := range strictyaml.Sequence(name, v, errs) {
			s, ok := strictyaml.Scalar(name, item, errs)
			if !ok {
				continue
			}
			id, err := ResolveUnixID(kind, s)
			if err != nil {
				errs.At(name, item.Line, s, err)
				continue
			}
			r := UnixRule{Kind: kind, ID: id, Action: act, Origin: Origin{name, item.Line}}
			if !isNumber(s) {
				r.Name = s
			}
			spec.UnixRules = append(spec.UnixRules, r)
		}
	})
}

// ResolveUnixID returns the id of a user (kind UID) or group (GID) given as a decimal number or
// a name, looked up with os/user. An unknown name, or a number out of range, is an error
// wrapping ErrUnixID.
func ResolveUnixID(kind UnixKind, s string) (uint32, error) {
	if isNumber(s) {
		v, err := strconv.ParseUint(s, 10, 32)
		if err != nil || v == math.MaxUint32 { // -1 as uint32 means "no id" to the kernel
			return 0, fmt.Errorf("%w: %s %s out of range", ErrUnixID, kind, s)
		}
		return uint32(v), nil
	}
	var id string
	if kind == GID {
		g, err := user.LookupGroup(s)
		if err != nil {
			return 0, fmt.Errorf("%w: group %q: %w", ErrUnixID, s, err)
		}
		id = g.Gid
	} else {
		u, err := user.Lookup(s)
		if err != nil {
			return 0, fmt.Errorf("%w: user %q: %w", ErrUnixID, s, err)
		}
		id = u.Uid
	}
	v, err := strconv.ParseUint(id, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%w: %s %q has id %q, not a number", ErrUnixID, kind, s, id)
	}
	return uint32(v), nil
}

func isNumber(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

func hasKey(n *yaml.Node, key string) bool {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return true
		}
	}
	return false
}
