package sources

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
	"github.com/peergate/peergate/acl"
)

type geoNet struct {
	cidr    string
	country string
	asn     uint32
}

// writeDB builds a MaxMind-format database of nets with the MaxMind writer library.
func writeDB(t testing.TB, path string, nets []geoNet) {
	t.Helper()
	tree, err := mmdbwriter.New(mmdbwriter.Options{DatabaseType: "Test-Country-ASN", IncludeReservedNetworks: true, RecordSize: 28})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nets {
		_, ipnet, err := net.ParseCIDR(n.cidr)
		if err != nil {
			t.Fatal(err)
		}
		rec := mmdbtype.Map{}
		if n.country != "" {
			rec["country"] = mmdbtype.Map{"iso_code": mmdbtype.String(n.country)}
		}
		if n.asn != 0 {
			rec["autonomous_system_number"] = mmdbtype.Uint32(n.asn)
		}
		if err := tree.Insert(ipnet, rec); err != nil {
			t.Fatal(err)
		}
	}
	var b bytes.Buffer
	if _, err := tree.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

var testNets = []geoNet{
	{"127.0.0.0/24", "US", 0},
	{"127.0.0.2/32", "CN", 0},
	{"192.0.2.0/24", "RU", 0},
	{"198.51.100.0/24", "", 64496},
	{"2001:db8::/32", "CN", 64497},
}

func TestGeoRules(t *testing.T) {
	dir := t.TempDir()
	writeDB(t, filepath.Join(dir, "geo.mmdb"), testNets)
	l := &acl.Loader{GeoIP: GeoIP{}}
	text := "default: allow\ninclude:\n  - {country: [cn, RU], action: deny}\n  - {asn: [AS64496], action: deny}\n  - {asn: [64497], action: allow}\ngeoip: {database: geo.mmdb}\n"
	spec, err := l.ParseSpec(context.Background(), filepath.Join(dir, "acl.yaml"), []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	a := acl.MustNew(spec)
	for _, tc := range []struct {
		addr, action, origin string
	}{
		{"127.0.0.2", "deny", "geo.mmdb country=CN"},
		{"127.0.0.1", "allow", "-"},
		{"192.0.2.77", "deny", "geo.mmdb country=RU"},
		{"198.51.100.1", "deny", "geo.mmdb asn=AS64496"},
		{"2001:db8::1", "deny", "geo.mmdb country=CN"}, // same prefix denied and allowed: deny wins
		{"::ffff:127.0.0.2", "deny", "geo.mmdb country=CN"},
		{"203.0.113.1", "allow", "-"},
	} {
		d := a.Decide(netip.MustParseAddr(tc.addr))
		origin := "-"
		if d.Rule != nil {
			origin = d.Rule.Origin.String()
		}
		if d.Action.String() != tc.action || origin != tc.origin {
			t.Errorf("%s: %v from %s, want %s from %s", tc.addr, d.Action, origin, tc.action, tc.origin)
		}
	}
	// The database is read through the loader: it is among the files a reload watches.
	found := false
	for _, s := range l.Sources() {
		found = found || filepath.Base(s.Path) == "geo.mmdb"
	}
	if !found {
		t.Errorf("geo.mmdb not among the loader's sources: %v", l.Sources())
	}
}

func TestGeoErrors(t *testing.T) {
	dir := t.TempDir()
	writeDB(t, filepath.Join(dir, "geo.mmdb"), testNets)
	os.WriteFile(filepath.Join(dir, "junk.mmdb"), []byte("not a database"), 0o644)
	for _, tc := range []struct {
		name, text string
		geo        acl.GeoCompiler
		want       error
		line       int
	}{
		{"no database", "default: allow\ninclude:\n  - {country: [CN], action: deny}\n", GeoIP{}, acl.ErrGeoIP, 3},
		{"no compiler", "default: allow\ngeoip: {database: geo.mmdb}\ninclude:\n  - {country: [CN], action: deny}\n", nil, acl.ErrGeoIP, 4},
		{"missing file", "default: allow\ngeoip: {database: nope.mmdb}\ninclude:\n  - {country: [CN], action: deny}\n", GeoIP{}, acl.ErrInclude, 2},
		{"junk file", "default: allow\ngeoip: {database: junk.mmdb}\ninclude:\n  - {country: [CN], action: deny}\n", GeoIP{}, acl.ErrGeoIP, 4},
		{"bad country", "default: allow\ngeoip: {database: geo.mmdb}\ninclude:\n  - {country: [China], action: deny}\n", GeoIP{}, acl.ErrSyntax, 4},
		{"bad asn", "default: allow\ngeoip: {database: geo.mmdb}\ninclude:\n  - {asn: [ASx], action: deny}\n", GeoIP{}, acl.ErrSyntax, 4},
		{"no action", "default: allow\ngeoip: {database: geo.mmdb}\ninclude:\n  - {asn: [1]}\n", GeoIP{}, acl.ErrSyntax, 4},
		{"geoip unknown key", "default: allow\ngeoip: {file: geo.mmdb}\n", GeoIP{}, acl.ErrUnknownKey, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := &acl.Loader{GeoIP: tc.geo}
			_, err := l.ParseSpec(context.Background(), filepath.Join(dir, "acl.yaml"), []byte(tc.text))
			var pe *acl.PosError
			if !errors.Is(err, tc.want) || !errors.As(err, &pe) || pe.Line != tc.line {
				t.Fatalf("err %v, want %v at line %d", err, tc.want, tc.line)
			}
		})
	}
}

// BenchmarkGeoCompile: a database of 500 k networks compiled for two countries.
func BenchmarkGeoCompile(b *testing.B) {
	path := filepath.Join(b.TempDir(), "big.mmdb")
	countries := []string{"CN", "RU", "US", "DE", "FR", "BR", "IN", "JP"}
	nets := make([]geoNet, 0, 500_000)
	for i := range 500_000 {
		ip := netip.AddrFrom4([4]byte{byte(1 + i>>16), byte(i >> 8), byte(i), 0})
		nets = append(nets, geoNet{netip.PrefixFrom(ip, 24).String(), countries[i%len(countries)], uint32(i % 5000)})
	}
	writeDB(b, path, nets)
	data, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	q := acl.GeoQuery{Database: path, Countries: []string{"CN", "RU"}, Action: acl.Deny}
	b.ResetTimer()
	for b.Loop() {
		rules, err := GeoIP{}.GeoRules(context.Background(), data, q)
		if err != nil || len(rules) == 0 {
			b.Fatal(len(rules), err)
		}
	}
}
