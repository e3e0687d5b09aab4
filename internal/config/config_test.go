package config

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/peergate/peergate/acl"
	"github.com/peergate/peergate/gate"
)

func write(t *testing.T, dir, name, text string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(text), mode); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestServeFile(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "handler.sh", "#!/bin/sh\necho hi\n", 0o755)
	write(t, dir, "lan.yaml", "default: deny\nallow: [192.168.0.0/16]\n", 0o644)
	path := write(t, dir, "serve.yaml", `
drain_timeout: 3s
services:             # services before acls: order in the file does not matter
  - name: ssh
    listen: ["127.0.0.1:2222", "[::1]:2222"]
    acl: office
    upstream: 127.0.0.1:22
    on_deny: reset
    connect_timeout: 2s
    idle_timeout: 0s
    max_conns: 10
  - name: hello
    listen: ":7000"
    acl: lan
    exec: [./handler.sh, -v]
    dry_run: true
acls:
  office: {default: deny, allow: [10.0.0.0/8]}
  lan: lan.yaml
`, 0o644)
	f, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if f.DrainTimeout != 3*time.Second || len(f.ACLs) != 2 || len(f.Services) != 2 {
		t.Fatalf("got %+v", f)
	}
	ssh, hello := f.Services[0], f.Services[1]
	if ssh.Name != "ssh" || ssh.ACL.Name != "office" || ssh.Upstream != "127.0.0.1:22" || ssh.OnDeny != gate.DenyReset ||
		ssh.ConnectTimeout != 2*time.Second || ssh.IdleTimeout != 0 || ssh.MaxConns != 10 || len(ssh.Listen) != 2 || ssh.DryRun {
		t.Errorf("ssh = %+v", ssh)
	}
	if hello.ACL.Name != "lan" || hello.Exec[0] != filepath.Join(dir, "handler.sh") || hello.Exec[1] != "-v" ||
		!hello.DryRun || hello.OnDeny != gate.DenyClose || hello.MaxConns != DefaultMaxConns || hello.IdleTimeout != DefaultIdleTimeout {
		t.Errorf("hello = %+v", hello)
	}
	if !hello.ACL.ACL.Decide(netip.MustParseAddr("192.168.1.1")).Allowed() {
		t.Error("lan ACL from file not applied")
	}
	if _, err := f.Pick(""); !errors.Is(err, ErrNoACL) {
		t.Errorf("Pick(\"\") with two ACLs = %v", err)
	}
	if a, err := f.Pick("office"); err != nil || a.Name != "office" {
		t.Errorf("Pick(office) = %v, %v", a, err)
	}
	if _, err := f.Pick("nope"); !errors.Is(err, ErrNoACL) || !strings.Contains(err.Error(), "office, lan") {
		t.Errorf("Pick(nope) = %v", err)
	}
}

func TestBareACLFile(t *testing.T) {
	path := write(t, t.TempDir(), "office.yaml", "default: deny\nallow: [10.0.0.0/8]\n", 0o644)
	f, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	a, err := f.Pick("")
	if err != nil || a.Name != "office" || len(f.Services) != 0 {
		t.Fatalf("Pick = %v, %v", a, err)
	}
}

func TestAdmin(t *testing.T) {
	const base = "acls:\n  ops: {default: deny, allow: [10.0.0.0/8]}\nservices:\n  - {name: s, listen: [\":1\"], acl: ops, upstream: \"x:1\"}\n"
	for _, tc := range []struct {
		name, yaml, listen string
		acl                *ACL
	}{
		{"none", base, "", nil},
		{"loopback by default", base + "admin: {listen: \"127.0.0.1:9180\"}\n", "127.0.0.1:9180", LoopbackACL},
		{"named ACL", base + "admin: {listen: \"[::1]:9180\", acl: ops}\n", "[::1]:9180", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Load(write(t, t.TempDir(), "c.yaml", tc.yaml, 0o644))
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case tc.listen == "":
				if f.Admin != nil {
					t.Errorf("Admin = %+v, want none", f.Admin)
				}
			case f.Admin == nil || f.Admin.Listen != tc.listen:
				t.Errorf("Admin = %+v, want listen %s", f.Admin, tc.listen)
			case tc.acl != nil && f.Admin.ACL != tc.acl, tc.acl == nil && f.Admin.ACL != f.ACLs[0]:
				t.Errorf("admin ACL = %s", f.Admin.ACL.Name)
			}
		})
	}
	lo := LoopbackACL.ACL
	for addr, want := range map[string]acl.Action{"127.0.0.1": acl.Allow, "127.9.9.9": acl.Allow, "::1": acl.Allow,
		"::ffff:127.0.0.2": acl.Allow, "10.0.0.1": acl.Deny, "::2": acl.Deny} {
		if got := lo.Decide(netip.MustParseAddr(addr)).Action; got != want {
			t.Errorf("loopback ACL: %s is %v, want %v", addr, got, want)
		}
	}
}

func TestProxyAndLimitKeys(t *testing.T) {
	const text = `
acls:
  a: {default: deny}
services:
  - name: s
    listen: ["127.0.0.1:1"]
    acl: a
    upstream: 127.0.0.1:2
    trusted_proxies: [10.0.0.0/8, "::ffff:192.0.2.1", "2001:db8::/32"]
    proxy_protocol: required
    proxy_header_timeout: 2s
    send_proxy: v2
    per_source: 4
    per_source_prefix: {ipv4: 24, ipv6: 64}
    rate: 5/100ms
    burst: 20
    max_conns: 100
    max_sources: 1000
  - name: plain
    listen: ["127.0.0.1:3"]
    acl: a
    upstream: 127.0.0.1:2
`
	f, err := Parse("c.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	s := f.Services[0]
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.1/32"), netip.MustParsePrefix("2001:db8::/32")}
	if !slices.Equal(s.TrustedProxies, want) || !s.ProxyRequired || s.ProxyHeaderTimeout != 2*time.Second || s.SendProxy != "v2" {
		t.Errorf("proxy keys: %+v", s)
	}
	if s.PerSource != 4 || s.SourcePrefix4 != 24 || s.SourcePrefix6 != 64 || s.Rate != 50 || s.Burst != 20 || s.MaxSources != 1000 {
		t.Errorf("limit keys: %+v", s)
	}
	p := f.Services[1]
	if p.TrustedProxies != nil || p.ProxyRequired || p.ProxyHeaderTimeout != DefaultProxyHeaderTimeout || p.SendProxy != "" ||
		p.PerSource != 0 || p.Rate != 0 {
		t.Errorf("defaults: %+v", p)
	}
	for in, want := range map[string]float64{"10/s": 10, "600/m": 10, "1/h": 1.0 / 3600, "5/100ms": 50, "2.5/2s": 1.25} {
		if got, err := ParseRate(in); err != nil || got != want {
			t.Errorf("ParseRate(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"1/2562047h", "1e308/1ns", "0/s", "x/s", "10", "10/fortnight", "NaN/s"} {
		if got, err := ParseRate(in); !errors.Is(err, ErrRate) {
			t.Errorf("ParseRate(%q) = %v, %v; want ErrRate", in, got, err)
		}
	}
}

func TestErrors(t *testing.T) {
	const svc = "acls:\n  a: {default: deny}\nservices:\n  - name: s\n    listen: [\"127.0.0.1:1\"]\n    acl: a\n"
	for _, tc := range []struct {
		name, yaml string
		line       int
		value      string
		want       error
	}{
		{"bare ACL error", "default: deny\nallow: [10.0.0.1/8]\n", 2, "10.0.0.1/8", acl.ErrHostBits},
		{"second document", svc + "    upstream: x:1\n---\nacls: {b: {default: deny}}\n", 8, "", acl.ErrSecondDocument},
		{"bare ACL second document", "default: allow\n...\ndeny: [0.0.0.0/0]\n", 3, "", acl.ErrSecondDocument},
		{"unknown top key", "acls: {}\nservice: []\n", 2, "service", acl.ErrUnknownKey},
		{"inline ACL error", "acls:\n  a: {default: maybe}\n", 2, "maybe", acl.ErrAction},
		{"missing ACL file", "acls:\n  a: nope.yaml\n", 2, "nope.yaml", acl.ErrInclude},
		{"no upstream or exec", svc, 4, "s", ErrConfig},
		{"both upstream and exec", svc + "    upstream: 127.0.0.1:2\n    exec: [/bin/true]\n", 4, "s", ErrConfig},
		{"unknown ACL", "acls:\n  a: {default: deny}\nservices:\n  - name: s\n    listen: [\":1\"]\n    acl: b\n    upstream: x:1\n", 6, "b", ErrConfig},
		{"no acl", "services:\n  - name: s\n    listen: [\":1\"]\n    upstream: x:1\n", 2, "s", ErrConfig},
		{"bad listen", svc + "    upstream: x:1\n  - name: t\n    listen: [localhost:80]\n    acl: a\n    upstream: x:1\n", 9, "localhost:80", ErrConfig},
		{"abstract socket without a name", svc + "    upstream: x:1\n  - name: t\n    listen: [\"unix:@\"]\n    acl: a\n    upstream: x:1\n", 9, "unix:@", ErrConfig},
		{"bad port", svc + "    upstream: x:99999\n", 7, "x:99999", ErrConfig},
		{"bad on_deny", svc + "    upstream: x:1\n    on_deny: drop\n", 8, "drop", ErrConfig},
		{"bad duration", svc + "    upstream: x:1\n    idle_timeout: 5\n", 8, "5", ErrConfig},
		{"bad max_conns", svc + "    upstream: x:1\n    max_conns: -1\n", 8, "-1", ErrConfig},
		{"bad dry_run", svc + "    upstream: x:1\n    dry_run: yes\n", 8, "yes", ErrConfig},
		{"unknown service key", svc + "    upstream: x:1\n    timeout: 1s\n", 8, "timeout", acl.ErrUnknownKey},
		{"duplicate service key", svc + "    upstream: x:1\n    upstream: y:1\n", 8, "upstream", acl.ErrDuplicateKey},
		{"missing program", svc + "    exec: [./no-such-program]\n", 7, "./no-such-program", ErrConfig},
		{"proxy_header_timeout alone", svc + "    upstream: x:1\n    proxy_header_timeout: 2s\n", 8, "proxy_header_timeout", ErrConfig},
		{"zero proxy_header_timeout", svc + "    upstream: x:1\n    trusted_proxies: [10.0.0.1]\n    proxy_header_timeout: 0s\n", 9, "0s", ErrConfig},
		{"max_sources alone", svc + "    upstream: x:1\n    max_sources: 10\n", 8, "max_sources", ErrConfig},
		{"max_sources under max_conns", svc + "    upstream: x:1\n    per_source: 1\n    max_conns: 50\n    max_sources: 10\n", 10, "10", ErrConfig},
		{"max_sources under the default max_conns", svc + "    upstream: x:1\n    per_source: 1\n    max_sources: 1000\n", 9, "1000", ErrConfig},
		{"max_sources under max_conns and the gate's queue", svc + "    upstream: x:1\n    trusted_proxies: [10.0.0.1]\n    per_source: 1\n    max_conns: 50\n    max_sources: 100\n", 11, "100", ErrConfig},
		{"per_source_prefix alone", svc + "    upstream: x:1\n    per_source_prefix: {ipv4: 24}\n", 8, "per_source_prefix", ErrConfig},
		{"bad keepalive", svc + "    upstream: x:1\n    keepalive: often\n", 8, "often", ErrConfig},
		{"bad log_rate", svc + "    upstream: x:1\n    log_rate: fast\n", 8, "fast", ErrConfig},
		{"bad kernel_filter", svc + "    upstream: x:1\n    kernel_filter: on\n", 8, "on", ErrConfig},
		{"kernel_filter with dry_run", svc + "    upstream: x:1\n    dry_run: true\n    kernel_filter: auto\n", 9, "auto", ErrConfig},
		{"admin without listen", svc + "    upstream: x:1\nadmin: {acl: a}\n", 8, "admin", ErrConfig},
		{"admin unknown ACL", svc + "    upstream: x:1\nadmin: {listen: \"127.0.0.1:9\", acl: ops}\n", 8, "ops", ErrConfig},
		{"admin on a unix socket", svc + "    upstream: x:1\nadmin: {listen: \"unix:/tmp/a\"}\n", 8, "unix:/tmp/a", ErrConfig},
		{"admin unknown key", svc + "    upstream: x:1\nadmin: {listen: \"127.0.0.1:9\", port: 9}\n", 8, "port", acl.ErrUnknownKey},
		{"bad trusted proxy", svc + "    upstream: x:1\n    trusted_proxies: [10.0.0.1/8]\n", 8, "10.0.0.1/8", acl.ErrHostBits},
		{"bad proxy_protocol", svc + "    upstream: x:1\n    trusted_proxies: [10.0.0.1]\n    proxy_protocol: yes\n", 9, "yes", ErrConfig},
		{"proxy_protocol without trusted", svc + "    upstream: x:1\n    proxy_protocol: required\n", 8, "proxy_protocol", ErrConfig},
		{"zero proxy_header_timeout", svc + "    upstream: x:1\n    proxy_header_timeout: 0s\n", 8, "0s", ErrConfig},
		{"bad send_proxy", svc + "    upstream: x:1\n    send_proxy: v3\n", 8, "v3", ErrConfig},
		{"send_proxy with exec", svc + "    exec: [/bin/true]\n    send_proxy: v1\n", 8, "v1", ErrConfig},
		{"trusted_proxies with exec", svc + "    exec: [/bin/true]\n    trusted_proxies: 10.0.0.1\n", 4, "s", ErrConfig},
		{"kernel_filter with trusted_proxies", svc + "    upstream: x:1\n    trusted_proxies: 10.0.0.1\n    kernel_filter: auto\n", 9, "auto", ErrConfig},
		{"bad per_source", svc + "    upstream: x:1\n    per_source: many\n", 8, "many", ErrConfig},
		{"bad rate", svc + "    upstream: x:1\n    rate: 10\n", 8, "10", ErrRate},
		{"bad rate unit", svc + "    upstream: x:1\n    rate: 10/fortnight\n", 8, "10/fortnight", ErrRate},
		{"burst without rate", svc + "    upstream: x:1\n    burst: 5\n", 8, "5", ErrConfig},
		{"bad per_source_prefix", svc + "    upstream: x:1\n    per_source_prefix: {ipv4: 33}\n", 8, "33", ErrConfig},
		{"unknown per_source_prefix key", svc + "    upstream: x:1\n    per_source_prefix: {ip4: 24}\n", 8, "ip4", acl.ErrUnknownKey},
		{"bad never_ban", svc + "    upstream: x:1\nnever_ban: [10.0.0.1/8]\n", 8, "10.0.0.1/8", acl.ErrHostBits},
		{"bad service never_ban", svc + "    upstream: x:1\n    never_ban: [nope]\n", 8, "nope", acl.ErrPrefix},
		{"zero max_bans", svc + "    upstream: x:1\nmax_bans: 0\n", 8, "0", ErrConfig},
		{"ban_after without counts", svc + "    upstream: x:1\n    ban_after: {within: 1m, for: 1h}\n", 8, "ban_after", ErrConfig},
		{"ban_after without within", svc + "    upstream: x:1\n    ban_after: {denials: 5}\n", 8, "ban_after", ErrConfig},
		{"ban_after unknown key", svc + "    upstream: x:1\n    ban_after: {denials: 5, within: 1m, after: 1}\n", 8, "after", acl.ErrUnknownKey},
		{"ban_after limit_hits without limit", svc + "    upstream: x:1\n    ban_after: {limit_hits: 5, within: 1m}\n", 8, "limit_hits", ErrConfig},
		{"crowdsec without key", svc + "    upstream: x:1\ncrowdsec: {url: \"http://127.0.0.1:8080\"}\n", 8, "crowdsec", ErrConfig},
		{"crowdsec bad url", svc + "    upstream: x:1\ncrowdsec: {url: \"127.0.0.1:8080\", api_key_file: /dev/null}\n", 8, "127.0.0.1:8080", ErrConfig},
		{"crowdsec empty key file", svc + "    upstream: x:1\ncrowdsec: {url: \"http://127.0.0.1:8080\", api_key_file: /dev/null}\n", 8, "/dev/null", ErrConfig},
		{"admin token file missing", svc + "    upstream: x:1\nadmin: {listen: \"127.0.0.1:9\", token_file: /no/such/token}\n", 8, "/no/such/token", ErrConfig},
		{"bad max_file_size", "acls: {}\nmax_file_size: lots\n", 2, "lots", ErrSize},
		{"zero max_file_size", "acls: {}\nmax_file_size: 0\n", 2, "0", ErrSize},
		{"max_file_size in a bare ACL file", "default: deny\nmax_file_size: 1GiB\n", 2, "max_file_size", acl.ErrUnknownKey},
		{"device as ACL file", "acls:\n  a: /dev/zero\n", 2, "/dev/zero", acl.ErrNotRegular},
		{"directory as ACL file", "acls:\n  a: /\n", 2, "/", acl.ErrNotRegular},
		{"device as include", "acls:\n  a:\n    default: deny\n    include: [{path: /dev/urandom, action: deny}]\n", 4, "/dev/urandom", acl.ErrNotRegular},
		// The ACL file is the config itself, 38 bytes: over the bound, which is read first wherever it is written.
		{"admin token_file a directory", svc + "    upstream: x:1\nadmin: {listen: \"127.0.0.1:9\", token_file: /}\n", 8, "/", acl.ErrNotRegular},
		{"ACL file over max_file_size", "acls:\n  a: c.yaml\nmax_file_size: 30\n#\n", 2, "c.yaml", acl.ErrTooBig},
		{"mode on an abstract socket", svc + "    upstream: x:1\n  - name: t\n    listen: [{unix: \"@x\", mode: \"0660\"}]\n    acl: a\n    upstream: x:1\n", 9, "unix:@x", ErrConfig},
		{"bad socket mode", svc + "    upstream: x:1\n  - name: t\n    listen: [{unix: /run/x.sock, mode: \"rw\"}]\n    acl: a\n    upstream: x:1\n", 9, "rw", ErrConfig},
		{"unknown socket owner", svc + "    upstream: x:1\n  - name: t\n    listen: [{unix: /run/x.sock, owner: no-such-user-here}]\n    acl: a\n    upstream: x:1\n", 9, "no-such-user-here", ErrNoSuchUser},
		{"unknown listen key", svc + "    upstream: x:1\n  - name: t\n    listen: [{unix: /run/x.sock, perms: \"0660\"}]\n    acl: a\n    upstream: x:1\n", 9, "perms", acl.ErrUnknownKey},
		{"listen mapping without unix", svc + "    upstream: x:1\n  - name: t\n    listen: [{mode: \"0660\"}]\n    acl: a\n    upstream: x:1\n", 9, "listen", ErrConfig},
		{"bad log_allowed", svc + "    upstream: x:1\n    log_allowed: yes\n", 8, "yes", ErrConfig},
		{"unknown user", svc + "    exec: [/bin/true]\n    user: no-such-user-here\n", 8, "no-such-user-here", ErrNoSuchUser},
		{"unknown group", svc + "    exec: [/bin/true]\n    group: no-such-group-here\n", 8, "no-such-group-here", ErrNoSuchUser},
		{"user in proxy mode", svc + "    upstream: x:1\n    user: \"65534\"\n    group: \"65534\"\n", 8, "65534", ErrConfig},
		{"duplicate service name", svc + "    upstream: x:1\n  - name: s\n    listen: [\":2\"]\n    acl: a\n    upstream: x:1\n", 8, "s", ErrConfig},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := write(t, t.TempDir(), "c.yaml", tc.yaml, 0o644)
			f, err := Load(path)
			if f != nil || !errors.Is(err, tc.want) {
				t.Fatalf("Load = %v, %v; want %v", f, err, tc.want)
			}
			var pe *acl.PosError
			if !errors.As(err, &pe) || pe.Line != tc.line || pe.Value != tc.value || pe.File != path {
				t.Fatalf("error %q: want it at %s:%d about %q", err, path, tc.line, tc.value)
			}
		})
	}
}

// With per_source, max_sources covers every connection that can hold a slot: unset, it grows past
// its default to max_conns (and the gate's queue behind trusted proxies); set, it may equal that.
func TestMaxSourcesCoversMaxConns(t *testing.T) {
	const svc = "acls:\n  a: {default: deny}\nservices:\n  - name: s\n    listen: [\"127.0.0.1:1\", \"127.0.0.1:2\"]\n    acl: a\n    upstream: x:1\n"
	for _, tc := range []struct {
		name, yaml string
		want       int
	}{
		{"default", svc + "    per_source: 1\n", 0},
		{"unset, max_conns over the default", svc + "    per_source: 1\n    max_conns: 100000\n", 100000},
		{"unset, behind proxies", svc + "    per_source: 1\n    max_conns: 65500\n    trusted_proxies: [10.0.0.1]\n", 65500 + 2*128},
		{"equal to max_conns", svc + "    per_source: 1\n    max_conns: 50\n    max_sources: 50\n", 50},
		{"rate only: every source can be evicted", svc + "    rate: 1/s\n    max_conns: 50\n    max_sources: 10\n", 10},
		{"no cap on connections", svc + "    per_source: 1\n    max_conns: 0\n    max_sources: 10\n", 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Parse("c.yaml", []byte(tc.yaml))
			if err != nil {
				t.Fatal(err)
			}
			if got := f.Services[0].MaxSources; got != tc.want {
				t.Errorf("MaxSources = %d, want %d", got, tc.want)
			}
		})
	}
}

// TestExecPath: a program path with a slash is a path relative to the config's directory, never a
// name to look up in PATH, even when the config is named relative to the current directory (where
// filepath.Join(".", "./prog") is the bare name "prog").
func TestExecPath(t *testing.T) {
	dir := t.TempDir()
	decoys := t.TempDir() // on PATH: a same-named program that must never be picked for a path
	for _, name := range []string{"prog", "other"} {
		write(t, decoys, name, "#!/bin/sh\necho decoy\n", 0o755)
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, dir, "prog", "#!/bin/sh\necho real\n", 0o755)
	write(t, dir, "sub/prog", "#!/bin/sh\necho real\n", 0o755)
	t.Setenv("PATH", decoys)
	t.Chdir(dir)
	for _, tc := range []struct {
		name, config, prog string
		want               string // the resolved program; "" for an error
	}{
		{"dot slash, config in cwd", "c.yaml", "./prog", filepath.Join(dir, "prog")},
		{"dot slash, config as ./c.yaml", "./c.yaml", "./prog", filepath.Join(dir, "prog")},
		{"subdir, config in cwd", "c.yaml", "sub/prog", filepath.Join(dir, "sub/prog")},
		{"dot slash, config in a subdir", "sub/c.yaml", "./prog", filepath.Join(dir, "sub/prog")},
		{"parent, config in a subdir", "sub/c.yaml", "../prog", filepath.Join(dir, "prog")},
		{"absolute", "c.yaml", filepath.Join(dir, "prog"), filepath.Join(dir, "prog")},
		{"bare name: PATH", "c.yaml", "prog", filepath.Join(decoys, "prog")},
		{"dot slash, only in PATH", "c.yaml", "./other", ""},
		{"subdir, only in PATH", "sub/c.yaml", "./other", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			text := "acls:\n  a: {default: deny}\nservices:\n  - name: s\n    listen: [\"127.0.0.1:1\"]\n    acl: a\n    exec: [" + tc.prog + "]\n"
			if err := os.WriteFile(tc.config, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
			f, err := Load(tc.config)
			if tc.want == "" {
				var pe *acl.PosError
				if !errors.Is(err, ErrConfig) || !errors.As(err, &pe) || pe.Line != 7 || pe.Value != tc.prog {
					t.Fatalf("Load = %v, %v; want an error at line 7 about %q", f, err, tc.prog)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := f.Services[0].Exec[0]; got != tc.want {
				t.Errorf("exec %q resolved to %s; want %s", tc.prog, got, tc.want)
			}
		})
	}
}

// TestListenOverlap: two listen addresses that would take the same port or socket, in two services
// or in one, are an error at the later one, naming both services; port 0 never clashes.
func TestListenOverlap(t *testing.T) {
	for _, tc := range []struct {
		name   string
		a, b   string // listen addresses of services a and b
		same   string // a second address of service a, or ""
		clash  bool
		errSvc string // the earlier service named in the error
	}{
		{"same address", "127.0.0.1:7000", "127.0.0.1:7000", "", true, "a"},
		{"all vs one", ":7000", "127.0.0.1:7000", "", true, "a"},
		{"one vs all", "127.0.0.1:7000", ":7000", "", true, "a"},
		{"0.0.0.0 vs one", "0.0.0.0:7000", "127.0.0.2:7000", "", true, "a"},
		{"[::] vs IPv4", "[::]:7000", "127.0.0.1:7000", "", true, "a"},
		{"0.0.0.0 vs IPv6 (Go listens dual-stack)", "0.0.0.0:7000", "[::1]:7000", "", true, "a"},
		{"all vs [::]", ":7000", "[::]:7000", "", true, "a"},
		{"mapped vs IPv4", "[::ffff:127.0.0.1]:7000", "127.0.0.1:7000", "", true, "a"},
		{"port spelt with a zero", "127.0.0.1:7000", "127.0.0.1:07000", "", true, "a"},
		{"unix, cleaned", "unix:/tmp/x/s.sock", "unix:/tmp/x/../x//s.sock", "", true, "a"},
		{"abstract", "unix:@pg", "unix:@pg", "", true, "a"},
		{"twice in one service", "127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7000", true, ""},
		{"all and one in one service", ":7000", "127.0.0.1:7001", "[::1]:7000", true, ""},
		{"other port", "127.0.0.1:7000", "127.0.0.1:7001", "", false, ""},
		{"other address", "127.0.0.1:7000", "127.0.0.2:7000", "", false, ""},
		{"other family", "127.0.0.1:7000", "[::1]:7000", "", false, ""},
		{"port 0", ":0", "127.0.0.1:0", "127.0.0.1:0", false, ""},
		{"abstract vs path", "unix:@pg", "unix:pg", "", false, ""},
		{"other socket", "unix:/tmp/a.sock", "unix:/tmp/b.sock", "", false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			listenA := fmt.Sprintf("%q", tc.a)
			if tc.same != "" {
				listenA += fmt.Sprintf(", %q", tc.same)
			}
			text := "acls:\n  x: {default: deny}\nservices:\n" +
				"  - name: a\n    acl: x\n    upstream: y:1\n    listen: [" + listenA + "]\n" + // line 7
				"  - name: b\n    acl: x\n    upstream: y:1\n    listen: [" + fmt.Sprintf("%q", tc.b) + "]\n" // line 11
			path := write(t, t.TempDir(), "c.yaml", text, 0o644)
			f, err := Load(path)
			if !tc.clash {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var pe *acl.PosError
			if f != nil || !errors.Is(err, ErrListenOverlap) || !errors.Is(err, ErrConfig) || !errors.As(err, &pe) {
				t.Fatalf("Load = %v, %v; want ErrListenOverlap", f, err)
			}
			want, value := 11, tc.b
			if tc.same != "" {
				want, value = 7, tc.same
			}
			if pe.File != path || pe.Line != want || pe.Value != value {
				t.Fatalf("error %q: want it at %s:%d about %q", err, path, want, value)
			}
			msg := err.Error()
			if tc.errSvc != "" && (!strings.Contains(msg, "service b") || !strings.Contains(msg, "of service "+tc.errSvc)) {
				t.Errorf("error %q does not name both services", msg)
			}
			if tc.errSvc == "" && !strings.Contains(msg, "service a") {
				t.Errorf("error %q does not name the service", msg)
			}
		})
	}
}

func TestBanKeys(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "token", "s3cret\n", 0o600)
	write(t, dir, "key", " abc \n", 0o600)
	write(t, dir, "machine.yaml", "url: http://127.0.0.1:8080\nlogin: gate1\npassword: pw\n", 0o600)
	path := write(t, dir, "serve.yaml", `
acls: {a: {default: deny}}
never_ban: [10.0.0.1, "::ffff:10.9.0.0/112"]
max_bans: 1000
state_dir: state
crowdsec: {url: "http://127.0.0.1:8080/", api_key_file: key, interval: 2s, report: true, credentials_file: machine.yaml}
admin: {listen: "127.0.0.1:9180", token_file: token}
services:
  - name: s
    listen: ["127.0.0.1:1"]
    acl: a
    upstream: x:1
    rate: 10/s
    never_ban: 192.168.0.0/16
    ban_after: {denials: 20, limit_hits: 50, within: 1m, for: 1h}
`, 0o644)
	f, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(f.NeverBan, []netip.Prefix{netip.MustParsePrefix("10.0.0.1/32"), netip.MustParsePrefix("10.9.0.0/16")}) ||
		f.MaxBans != 1000 || f.StateDir != filepath.Join(dir, "state") {
		t.Errorf("top-level ban keys: %v %d %q", f.NeverBan, f.MaxBans, f.StateDir)
	}
	if c := f.CrowdSec; c == nil || c.URL != "http://127.0.0.1:8080" || c.APIKey != "abc" || c.Interval != 2*time.Second ||
		!c.Report || c.Login != "gate1" || c.Password != "pw" {
		t.Errorf("crowdsec %+v", f.CrowdSec)
	}
	if f.Admin.Token != "s3cret" {
		t.Errorf("admin token %q", f.Admin.Token)
	}
	s := f.Services[0]
	if b := s.BanAfter; b == nil || b.Denials != 20 || b.LimitHits != 50 || b.Within != time.Minute || b.For != time.Hour ||
		!slices.Equal(s.NeverBan, []netip.Prefix{netip.MustParsePrefix("192.168.0.0/16")}) {
		t.Errorf("service ban keys: %+v %v", s.BanAfter, s.NeverBan)
	}
}

// TestUserGroup: user and group resolve names at load and take numbers; user alone takes the
// user's primary group; a numeric user with no entry needs group. Any user loads such a file (check
// and lint run as the operator); serving it needs root (CheckPrivileges).
func TestUserGroup(t *testing.T) {
	const svc = "acls:\n  a: {default: deny}\nservices:\n  - name: s\n    listen: [\"127.0.0.1:1\"]\n    acl: a\n    exec: [/bin/true]\n"
	for _, tc := range []struct {
		name, keys string
		uid, gid   int
		err        string
	}{
		{"names", "    user: nobody\n    group: nogroup\n", 65534, 65534, ""},
		{"user alone", "    user: nobody\n", 65534, 65534, ""},
		{"numbers", "    user: \"4321\"\n    group: \"1234\"\n", 4321, 1234, ""},
		{"group alone", "    group: \"1234\"\n", -1, 1234, ""},
		{"numeric user with no entry", "    user: \"4321\"\n", 0, 0, "set group too"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := user.Lookup("nobody"); err != nil {
				t.Skipf("no user nobody here: %v", err)
			}
			if _, err := user.LookupGroup("nogroup"); err != nil {
				t.Skipf("no group nogroup here: %v", err)
			}
			path := write(t, t.TempDir(), "c.yaml", svc+tc.keys, 0o644)
			f, err := Load(path)
			if tc.err != "" {
				var pe *acl.PosError
				if !errors.As(err, &pe) || pe.Line != 8 || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Load: %v; want an error at line 8 saying %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s := f.Services[0]; s.UID != tc.uid || s.GID != tc.gid {
				t.Errorf("uid %d gid %d, want %d %d", s.UID, s.GID, tc.uid, tc.gid)
			}
			if err := f.CheckPrivileges(0); err != nil {
				t.Errorf("CheckPrivileges(0): %v", err)
			}
			err = f.CheckPrivileges(1000)
			var pe *acl.PosError
			if !errors.As(err, &pe) || pe.Line != 8 || pe.File != path || !errors.Is(err, ErrConfig) ||
				!strings.Contains(err.Error(), "need peergate to run as root (it runs as uid 1000)") {
				t.Errorf("CheckPrivileges(1000): %v; want an error at %s:8 saying it needs root", err, path)
			}
		})
	}
}
