package sources

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/oschwald/maxminddb-golang/v2"
	"github.com/peergate/peergate/acl"
)

// GeoIP compiles country and asn rules (acl.GeoQuery) against a MaxMind-format database: it
// walks every network of the database once and keeps those whose record names one of the
// countries (country.iso_code, as in GeoLite2-Country and -City) or ASNs
// (autonomous_system_number, as in GeoLite2-ASN). The result is plain prefixes, so the hot path
// stays one table lookup. It is the acl.GeoCompiler of peergate's loads.
type GeoIP struct{}

// geoRecord is what a network's record is read for.
type geoRecord struct {
	Country struct {
		ISOCode string `maxminddb:"iso_code"`
	} `maxminddb:"country"`
	ASN uint32 `maxminddb:"autonomous_system_number"`
}

// GeoRules implements acl.GeoCompiler.
func (GeoIP) GeoRules(ctx context.Context, data []byte, q acl.GeoQuery) ([]acl.Rule, error) {
	db, err := maxminddb.OpenBytes(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", q.Database, err)
	}
	defer db.Close()
	base := filepath.Base(q.Database)
	origins := map[string]acl.Origin{}
	origin := func(kind, v string) acl.Origin {
		k := kind + "=" + v
		o, ok := origins[k]
		if !ok {
			o = acl.Origin{File: base + " " + k}
			origins[k] = o
		}
		return o
	}
	// Many networks share one record: judge each record once, by its offset.
	type verdict struct {
		match bool
		o     acl.Origin
	}
	seen := map[uintptr]verdict{}
	var rules []acl.Rule
	n := 0
	for res := range db.Networks() {
		if n++; n%65536 == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if err := res.Err(); err != nil {
			return nil, fmt.Errorf("%s: %w", q.Database, err)
		}
		v, ok := seen[res.Offset()]
		if !ok {
			var rec geoRecord
			if err := res.Decode(&rec); err != nil {
				return nil, fmt.Errorf("%s: network %s: %w", q.Database, res.Prefix(), err)
			}
			switch {
			case rec.Country.ISOCode != "" && slices.Contains(q.Countries, rec.Country.ISOCode):
				v = verdict{true, origin("country", rec.Country.ISOCode)}
			case rec.ASN != 0 && slices.Contains(q.ASNs, rec.ASN):
				v = verdict{true, origin("asn", "AS"+strconv.FormatUint(uint64(rec.ASN), 10))}
			}
			seen[res.Offset()] = v
		}
		if v.match {
			rules = append(rules, acl.Rule{Prefix: res.Prefix(), Action: q.Action, Origin: v.o})
		}
	}
	return rules, nil
}
