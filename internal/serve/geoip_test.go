package serve

import (
	"bytes"
	"net"
	"net/netip"
	"testing"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
)

// mmdb returns a MaxMind-format database mapping each network to a country.
func mmdb(t *testing.T, countries map[string]string) string {
	t.Helper()
	tree, err := mmdbwriter.New(mmdbwriter.Options{DatabaseType: "Test-Country", IncludeReservedNetworks: true})
	if err != nil {
		t.Fatal(err)
	}
	for cidr, c := range countries {
		_, n, err := net.ParseCIDR(cidr)
		if err != nil {
			t.Fatal(err)
		}
		if err := tree.Insert(n, mmdbtype.Map{"country": mmdbtype.Map{"iso_code": mmdbtype.String(c)}}); err != nil {
			t.Fatal(err)
		}
	}
	var b bytes.Buffer
	if _, err := tree.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestGeoIPDatabaseWatched: a country rule compiled from the database; replacing the database
// (as geoipupdate does) reloads the service, and the deciding rule names the database and country.
func TestGeoIPDatabaseWatched(t *testing.T) {
	files := map[string]string{
		"geo.mmdb":   mmdb(t, map[string]string{"127.0.0.3/32": "CN"}),
		"serve.yaml": serveHead + "    lo:\n      default: allow\n      geoip: {database: geo.mmdb}\n      include: [{country: [CN], action: deny}]\n",
	}
	s, addr, dir := startFiles(t, files, true, nil)
	if !admits(t, "127.0.0.2", addr) {
		t.Fatal("127.0.0.2 refused before its country is denied")
	}
	replace(t, dir, "geo.mmdb", mmdb(t, map[string]string{"127.0.0.2/31": "CN"}))
	eventuallyDenied(t, addr, "the database changed")
	s.mu.Lock()
	d := s.cfg.ACLs[0].ACL.Decide(netip.MustParseAddr("127.0.0.2"))
	s.mu.Unlock()
	if got := d.Rule.Origin.String(); got != "geo.mmdb country=CN" {
		t.Errorf("deciding rule from %q", got)
	}
}
