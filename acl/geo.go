package acl

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/peergate/peergate/internal/strictyaml"
	"gopkg.in/yaml.v3"
)

// ErrGeoIP marks a country or ASN rule that cannot be compiled: no geoip database named, no
// GeoCompiler given to the Loader, or a database that does not read.
var ErrGeoIP = errors.New("geoip rule")

// GeoQuery asks a GeoCompiler for the networks of some countries or autonomous systems:
//
//	geoip: {database: GeoLite2-Country.mmdb}   # relative to this file
//	include:
//	  - {country: [CN, RU], action: deny}
//	  - {asn: [AS64496, 64497], action: allow}  # needs an ASN database (geoip: {database: GeoLite2-ASN.mmdb})
type GeoQuery struct {
	Database  string   // path of the database file
	Countries []string // ISO 3166-1 alpha-2 codes, upper case
	ASNs      []uint32
	Action    Action
	File      string // the file that holds the rule
	Line      int    // its line there
}

// A GeoCompiler compiles a GeoQuery against a MaxMind-format database, given as the bytes the
// Loader read (through its reader, so that the database is among Sources and watched like any
// include), into rules: one per network, with Origins naming the database and the country or ASN
// (for example "GeoLite2-Country.mmdb country=CN"). An error fails the load.
type GeoCompiler interface {
	GeoRules(ctx context.Context, data []byte, q GeoQuery) ([]Rule, error)
}

// geoDB is the "geoip" key of one ACL file, read on the first rule that needs it.
type geoDB struct {
	path string // "": none named
	line int
	data []byte
	err  error
	read bool
}

// geoKey reads "geoip: {database: PATH}" from the mapping n, wherever it is written.
func geoKey(name string, n *yaml.Node, errs *strictyaml.Errors) *geoDB {
	g := &geoDB{}
	if n.Kind != yaml.MappingNode {
		return g
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value != "geoip" {
			continue
		}
		strictyaml.Mapping(name, n.Content[i+1], errs, func(key string, k, v *yaml.Node) {
			if key != "database" {
				strictyaml.Unknown(errs, name, k, "database in geoip")
				return
			}
			if s, ok := strictyaml.Scalar(name, v, errs); ok {
				if !filepath.IsAbs(s) {
					s = filepath.Join(filepath.Dir(name), s)
				}
				g.path, g.line = s, v.Line
			}
		})
	}
	return g
}

// geo reads one {country|asn, action} include.
func (l *Loader) geo(ctx context.Context, name string, n *yaml.Node, db *geoDB, errs *strictyaml.Errors) []Rule {
	q := GeoQuery{File: name, Line: n.Line}
	haveAct := false
	ok := strictyaml.Mapping(name, n, errs, func(key string, k, v *yaml.Node) {
		switch key {
		case "action":
			q.Action, haveAct = scalarAction(name, v, errs), true
		case "country":
			for _, item := range strictyaml.Sequence(name, v, errs) {
				if s, ok := strictyaml.Scalar(name, item, errs); ok {
					c := strings.ToUpper(s)
					if len(c) != 2 || strings.Trim(c, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != "" {
						errs.At(name, item.Line, s, fmt.Errorf("%w: a country is a two-letter ISO 3166 code such as CN", ErrSyntax))
						continue
					}
					q.Countries = append(q.Countries, c)
				}
			}
		case "asn":
			for _, item := range strictyaml.Sequence(name, v, errs) {
				if s, ok := strictyaml.Scalar(name, item, errs); ok {
					d := strings.TrimPrefix(strings.ToUpper(s), "AS")
					asn, err := strconv.ParseUint(d, 10, 32)
					if err != nil {
						errs.At(name, item.Line, s, fmt.Errorf("%w: an ASN is a number such as AS64496", ErrSyntax))
						continue
					}
					q.ASNs = append(q.ASNs, uint32(asn))
				}
			}
		default:
			strictyaml.Unknown(errs, name, k, "country or asn, and action, in a geoip rule")
		}
	})
	if !ok {
		return nil
	}
	if !haveAct || len(q.Countries)+len(q.ASNs) == 0 {
		errs.At(name, n.Line, "", fmt.Errorf("%w: a geoip rule needs action and a non-empty country or asn list", ErrSyntax))
		return nil
	}
	if db.path == "" {
		errs.At(name, n.Line, "", fmt.Errorf("%w: name the database first: geoip: {database: PATH}", ErrGeoIP))
		return nil
	}
	if l.GeoIP == nil {
		errs.At(name, n.Line, "", fmt.Errorf("%w: country and asn rules are compiled only by peergate serve, check, lint and diff; this loader has no GeoCompiler", ErrGeoIP))
		return nil
	}
	if !db.read {
		db.read = true
		db.data, db.err = l.ReadFile(ctx, db.path)
		if db.err != nil {
			errs.At(name, db.line, db.path, fmt.Errorf("%w: %w", ErrInclude, db.err))
		}
	}
	if db.err != nil {
		return nil
	}
	q.Database = db.path
	slices.Sort(q.Countries)
	q.Countries = slices.Compact(q.Countries)
	rules, err := l.GeoIP.GeoRules(ctx, db.data, q)
	if err != nil {
		errs.At(name, n.Line, db.path, fmt.Errorf("%w: %w", ErrGeoIP, err))
		return nil
	}
	return rules
}
