package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/peergate/peergate/gate"
	"github.com/peergate/peergate/gate/limit"
	"github.com/peergate/peergate/internal/strictyaml"
	"gopkg.in/yaml.v3"
)

// serviceKey is one key of a service, the one place its facts are written: how it is read (and
// so its type: the reader is durationKey, countKey, … or a function of its own), its default and
// doc as README's serve-file table gives them (a test holds the two together), and how /config
// shows it. The parser, the list of known keys in an unknown-key error and /config's view of a
// service are all made from serviceKeys.
type serviceKey struct {
	name string
	def  string // README's default cell, exactly
	doc  string // how README's description of it starts
	read func(p *serviceParse, key string, v *yaml.Node)
	show func(key string, s *Service, o ViewOptions) View // nil: /config does not show it
}

// serviceKeys are the keys of a service, in the order an unknown-key error lists them and /config
// shows them.
var serviceKeys = []serviceKey{
	{"name", "required", "unique name, used in logs",
		func(p *serviceParse, _ string, v *yaml.Node) { p.s.Name, _ = p.scalar(v) },
		shown(func(s *Service) any { return s.Name })},
	{"listen", "required", "`IP:PORT`, `[IPv6]:PORT`, `:PORT` (all addresses, dual-stack)", (*serviceParse).listen, showListen},
	{"acl", "required", "the name of an entry under `acls`",
		func(p *serviceParse, _ string, v *yaml.Node) { p.s.ACL = p.f.namedACL(v, p.errs) },
		shown(func(s *Service) any { return s.ACL.Name })},
	{"upstream", "one of upstream / exec", "proxy: `HOST:PORT` or `unix:/path`", (*serviceParse).upstream,
		shownSet(func(s *Service) any { return s.Upstream })},
	{"exec", "one of upstream / exec", "spawn: `[PROGRAM, ARGS…]`", (*serviceParse).exec, showExec},
	{"on_deny", "`close`", "`close` (FIN) or `reset` (RST",
		func(p *serviceParse, _ string, v *yaml.Node) {
			if w, ok := p.scalar(v); ok {
				if a, err := gate.ParseDenyAction(w); err != nil {
					p.at(v.Line, w, "on_deny must be close or reset")
				} else {
					p.s.OnDeny = a
				}
			}
		},
		shown(func(s *Service) any { return s.OnDeny.String() })},
	{"dry_run", "`false`", "`true`: judge, log and count, but hand on every connection the ACL denies",
		boolKey(func(s *Service) *bool { return &s.DryRun }), shownSet(func(s *Service) any { return s.DryRun })},
	{"connect_timeout", "`5s`", "proxy: time to connect to the upstream",
		durationKey(func(s *Service) *time.Duration { return &s.ConnectTimeout }),
		shown(func(s *Service) any { return s.ConnectTimeout.String() })},
	{"idle_timeout", "`1h`", "proxy: a connection quiet in both directions this long is closed",
		durationKey(func(s *Service) *time.Duration { return &s.IdleTimeout }),
		shown(func(s *Service) any { return s.IdleTimeout.String() })},
	{"max_conns", "`1024`", "open connections at most",
		countKey(func(s *Service) *int { return &s.MaxConns }), shown(func(s *Service) any { return s.MaxConns })},
	{"kernel_filter", "`off`", "`off`; `auto`: drop denied peers' SYNs in the kernel", (*serviceParse).kernelFilter,
		shown(func(s *Service) any { return s.KernelFilter })},
	{"trusted_proxies", "none: no header is read", "addresses or prefixes of proxies (load balancers) whose PROXY protocol header is read",
		func(p *serviceParse, _ string, v *yaml.Node) {
			p.s.TrustedProxies, p.s.ProxiesLine = prefixes(p.f.Path, v, p.errs), v.Line
		},
		behindProxies(func(s *Service) any { return prefixStrings(s.TrustedProxies) })},
	{"proxy_protocol", "`optional`", "`optional`: peers outside `trusted_proxies` are judged themselves",
		word(map[string]func(*Service){"optional": func(s *Service) { s.ProxyRequired = false }, "required": func(s *Service) { s.ProxyRequired = true }},
			"proxy_protocol must be optional or required"),
		behindProxies(func(s *Service) any { return map[bool]string{false: "optional", true: "required"}[s.ProxyRequired] })},
	{"proxy_header_timeout", "`5s`", "how long a trusted proxy has to send its whole header", (*serviceParse).proxyHeaderTimeout,
		behindProxies(func(s *Service) any { return s.ProxyHeaderTimeout.String() })},
	{"send_proxy", "none", "proxy: `v1` or `v2`: send the upstream a PROXY header",
		word(map[string]func(*Service){"v1": func(s *Service) { s.SendProxy = "v1" }, "v2": func(s *Service) { s.SendProxy = "v2" }},
			"send_proxy must be v1 or v2"),
		shownSet(func(s *Service) any { return s.SendProxy })},
	{"per_source", "`0` (no cap)", "open connections at most per source",
		countKey(func(s *Service) *int { return &s.PerSource }), limited(func(c limit.Config) any { return c.PerSource })},
	{"per_source_prefix", "`{ipv4: 32, ipv6: 64}`", "`{ipv4: N, ipv6: M}`: a source is the client address masked to this prefix",
		(*serviceParse).sourcePrefix, limited(func(c limit.Config) any { return []int{c.IPv4Prefix, c.IPv6Prefix} })},
	{"rate", "none", "new connections per source, `N/UNIT`", (*serviceParse).rate, showRate},
	{"burst", "`rate` per second, at least 1", "connections a source may make at once before `rate` applies",
		countKey(func(s *Service) *int { return &s.Burst }),
		limited(func(c limit.Config) any { return map[bool]int{false: 0, true: c.Burst}[c.Rate > 0] })},
	{"max_sources", "`65536`, or that minimum when larger", "sources the limits keep state for",
		countKey(func(s *Service) *int { return &s.MaxSources }), limited(func(c limit.Config) any { return c.MaxSources })},
	{"log_rate", "`100`", "log lines about single connections a second at most, per service",
		countKey(func(s *Service) *int { return &s.LogRate }), shown(func(s *Service) any { return s.LogRate })},
	{"log_allowed", "`false`", "`true`: log each allowed connection at `info`",
		boolKey(func(s *Service) *bool { return &s.LogAllowed }), shownSet(func(s *Service) any { return s.LogAllowed })},
	{"keepalive", "`0s`", "TCP keep-alive on the client and upstream sockets",
		durationKey(func(s *Service) *time.Duration { return &s.KeepAlive }),
		shown(func(s *Service) any { return s.KeepAlive.String() })},
	{"user", "peergate's own", "spawn: run each handler as this user and group",
		func(p *serviceParse, key string, v *yaml.Node) {
			p.s.User, p.s.UID = lookupID(p.f.Path, v, p.errs, key)
			p.s.UserLine = v.Line
		},
		showID(func(s *Service) (string, int) { return s.User, s.UID }, "uid")},
	{"group", "peergate's own", "spawn: run each handler as this user and group",
		func(p *serviceParse, key string, v *yaml.Node) {
			p.s.Group, p.s.GID = lookupID(p.f.Path, v, p.errs, key)
			if p.s.UserLine == 0 {
				p.s.UserLine = v.Line
			}
		},
		showID(func(s *Service) (string, int) { return s.Group, s.GID }, "gid")},
	{"never_ban", "none", "more guarded addresses",
		func(p *serviceParse, _ string, v *yaml.Node) { p.s.NeverBan = prefixes(p.f.Path, v, p.errs) },
		shownSet(func(s *Service) any { return prefixStrings(s.NeverBan) })},
	{"ban_after", "none", "`{denials: 20, limit_hits: 50, within: 1m, for: 1h}`: automatic bans",
		func(p *serviceParse, _ string, v *yaml.Node) { p.s.BanAfter = banAfter(p.f.Path, v, p.errs) }, showBanAfter},
	{"guard", "none", "`{keep_allowed: [10.0.0.0/24, \"2001:db8::1\"]}`: the **lockout guard**", (*serviceParse).guard, nil},
}

// serviceKeyIndex finds a row of serviceKeys by its name.
var serviceKeyIndex = func() map[string]*serviceKey {
	m := make(map[string]*serviceKey, len(serviceKeys))
	for i := range serviceKeys {
		m[serviceKeys[i].name] = &serviceKeys[i]
	}
	return m
}()

// serviceKeyList is the known keys of a service, as an unknown-key error lists them.
var serviceKeyList = orList(serviceKeys, func(k serviceKey) string { return k.name })

// orList writes the names of rows as "a, b or c".
func orList[R any](rows []R, name func(R) string) string {
	names := make([]string, len(rows))
	for i, r := range rows {
		names[i] = name(r)
	}
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

// DefaultProxyHeaderTimeout is proxy_header_timeout when the file does not set it.
const DefaultProxyHeaderTimeout = 5 * time.Second

// serviceParse is the reading of one service: the service so far, and where each key was written
// (for the checks between keys).
type serviceParse struct {
	f    *File
	s    *Service
	errs *strictyaml.Errors
	line map[string]int // by key: where it was written; absent: not written
}

func (p *serviceParse) scalar(v *yaml.Node) (string, bool) {
	return strictyaml.Scalar(p.f.Path, v, p.errs)
}

// at records an error at line about value.
func (p *serviceParse) at(line int, value string, format string, args ...any) {
	p.errs.At(p.f.Path, line, value, fmt.Errorf("%w: "+format, append([]any{ErrConfig}, args...)...))
}

// service reads one entry of "services", or returns nil when it is not a mapping.
func (f *File) service(n *yaml.Node, errs *strictyaml.Errors) *Service {
	p := &serviceParse{f: f, errs: errs, line: map[string]int{},
		s: &Service{Line: n.Line, ConnectTimeout: DefaultConnectTimeout, IdleTimeout: DefaultIdleTimeout, MaxConns: DefaultMaxConns,
			KernelFilter: FilterOff, ProxyHeaderTimeout: DefaultProxyHeaderTimeout, LogRate: DefaultLogRate, UID: -1, GID: -1}}
	ok := strictyaml.Mapping(f.Path, n, errs, func(key string, k, v *yaml.Node) {
		row := serviceKeyIndex[key]
		if row == nil {
			strictyaml.Unknown(errs, f.Path, k, serviceKeyList)
			return
		}
		p.line[key] = v.Line
		row.read(p, key, v)
	})
	if !ok {
		return nil
	}
	// Conflicts between keys, each reported on its own.
	p.checkProxies()
	p.checkLimits()
	p.checkUser()
	p.checkRequired()
	return p.s
}

// The readers of the keys of one type, into the field that field returns.

func durationKey(field func(*Service) *time.Duration) func(*serviceParse, string, *yaml.Node) {
	return func(p *serviceParse, _ string, v *yaml.Node) { *field(p.s) = duration(p.f.Path, v, p.errs) }
}

func countKey(field func(*Service) *int) func(*serviceParse, string, *yaml.Node) {
	return func(p *serviceParse, key string, v *yaml.Node) { *field(p.s) = count(p.f.Path, v, p.errs, key) }
}

func boolKey(field func(*Service) *bool) func(*serviceParse, string, *yaml.Node) {
	return func(p *serviceParse, key string, v *yaml.Node) { *field(p.s) = boolean(p.f.Path, v, p.errs, key) }
}

// word reads one of the words of set, which each say what they set; another is the error msg.
func word(set map[string]func(*Service), msg string) func(*serviceParse, string, *yaml.Node) {
	return func(p *serviceParse, _ string, v *yaml.Node) {
		w, _ := p.scalar(v)
		if fn := set[w]; fn != nil {
			fn(p.s)
			return
		}
		p.at(v.Line, w, "%s", msg)
	}
}

// The readers of the keys that are not one of a kind.

func (p *serviceParse) listen(_ string, v *yaml.Node) {
	s, path := p.s, p.f.Path
	for _, item := range strictyaml.Sequence(path, v, p.errs) {
		if item.Kind == yaml.MappingNode {
			if addr, perm, ok := unixListen(path, item, p.errs); ok {
				if s.UnixPerms == nil {
					s.UnixPerms = map[string]UnixPerm{}
				}
				s.UnixPerms[addr] = perm
				s.Listen = append(s.Listen, addr)
				s.ListenLines = append(s.ListenLines, item.Line)
			}
			continue
		}
		if addr, ok := strictyaml.Scalar(path, item, p.errs); ok {
			if err := checkListen(addr); err != nil {
				p.errs.At(path, item.Line, addr, err)
			}
			s.Listen = append(s.Listen, addr)
			s.ListenLines = append(s.ListenLines, item.Line)
		}
	}
}

func (p *serviceParse) upstream(_ string, v *yaml.Node) {
	if addr, ok := p.scalar(v); ok {
		if err := checkDial(addr); err != nil {
			p.errs.At(p.f.Path, v.Line, addr, err)
		}
		p.s.Upstream = addr
	}
}

func (p *serviceParse) exec(_ string, v *yaml.Node) {
	s := p.s
	for _, item := range strictyaml.Sequence(p.f.Path, v, p.errs) {
		if arg, ok := p.scalar(item); ok {
			s.Exec = append(s.Exec, arg)
		}
	}
	if len(s.Exec) > 0 {
		prog, err := findProgram(p.f.Path, s.Exec[0])
		if err != nil {
			p.at(v.Line, s.Exec[0], "%w", err)
		}
		s.Exec[0] = prog
	}
}

func (p *serviceParse) kernelFilter(_ string, v *yaml.Node) {
	switch w, _ := p.scalar(v); w {
	case FilterOff, FilterAuto, FilterEBPF, FilterCBPF, FilterRequired:
		p.s.KernelFilter, p.s.FilterLine = w, v.Line
	default:
		p.at(v.Line, w, "kernel_filter must be off, auto, ebpf, cbpf or required")
	}
}

func (p *serviceParse) proxyHeaderTimeout(_ string, v *yaml.Node) {
	p.s.ProxyHeaderTimeout = duration(p.f.Path, v, p.errs) // reports what is not a duration
	if d, err := time.ParseDuration(v.Value); err == nil && d == 0 {
		p.at(v.Line, v.Value, "proxy_header_timeout must be more than 0")
	}
}

func (p *serviceParse) rate(_ string, v *yaml.Node) {
	if w, ok := p.scalar(v); ok {
		r, err := ParseRate(w)
		if err != nil {
			p.errs.At(p.f.Path, v.Line, w, err)
		}
		p.s.Rate = r
	}
}

func (p *serviceParse) guard(_ string, v *yaml.Node) {
	p.s.GuardLine = v.Line
	strictyaml.Mapping(p.f.Path, v, p.errs, func(key string, k, v *yaml.Node) {
		switch key {
		case "keep_allowed":
			p.s.Guard = prefixes(p.f.Path, v, p.errs)
		default:
			strictyaml.Unknown(p.errs, p.f.Path, k, "keep_allowed in guard")
		}
	})
}

func (p *serviceParse) sourcePrefix(_ string, v *yaml.Node) {
	strictyaml.Mapping(p.f.Path, v, p.errs, func(key string, k, v *yaml.Node) {
		w, _ := p.scalar(v)
		bits, err := strconv.Atoi(w)
		switch {
		case key != "ipv4" && key != "ipv6":
			strictyaml.Unknown(p.errs, p.f.Path, k, "ipv4 or ipv6")
		case err != nil || bits < 1 || key == "ipv4" && bits > 32 || bits > 128:
			p.at(v.Line, w, "per_source_prefix.%s must be a prefix length (1-32 for ipv4, 1-128 for ipv6)", key)
		case key == "ipv4":
			p.s.SourcePrefix4 = bits
		default:
			p.s.SourcePrefix6 = bits
		}
	})
}

// The checks between keys.

// checkProxies checks the keys that go with trusted_proxies, and the modes they need.
func (p *serviceParse) checkProxies() {
	s := p.s
	trusted := len(s.TrustedProxies) > 0
	if line := p.line["proxy_protocol"]; line != 0 && !trusted {
		p.at(line, "proxy_protocol", "proxy_protocol needs trusted_proxies (the proxies whose headers to read)")
	}
	if trusted && len(s.Exec) > 0 {
		p.at(s.Line, s.Name, "trusted_proxies needs upstream (proxy mode): a spawned program cannot be given the bytes read past the header")
	}
	if line := p.line["send_proxy"]; line != 0 && len(s.Exec) > 0 {
		p.at(line, s.SendProxy, "send_proxy needs upstream (proxy mode)")
	}
	if trusted && s.KernelFilter != FilterOff {
		p.at(s.FilterLine, s.KernelFilter, "kernel_filter judges the direct peer, which behind trusted_proxies is the proxy, not the client; use off")
	}
	if s.DryRun && s.KernelFilter != FilterOff {
		p.at(s.FilterLine, s.KernelFilter, "kernel_filter drops denied peers, which dry_run must hand on; use off")
	}
	if line := p.line["proxy_header_timeout"]; line != 0 && !trusted {
		p.at(line, "proxy_header_timeout", "proxy_header_timeout needs trusted_proxies")
	}
}

// checkLimits checks the per-source limit keys, and grows max_sources to what max_conns needs.
func (p *serviceParse) checkLimits() {
	s := p.s
	rateLine, maxSourcesLine := p.line["rate"], p.line["max_sources"]
	for _, key := range []string{"max_sources", "per_source_prefix"} {
		if line := p.line[key]; line != 0 && s.PerSource == 0 && rateLine == 0 {
			p.at(line, key, "%s needs per_source or rate (a limit to apply)", key)
		}
	}
	if s.PerSource > 0 && s.MaxConns > 0 {
		// A source holding a connection cannot be evicted: the table must hold every connection
		// that can hold a slot, or a new source is refused while the service has room. Those are
		// the open ones, and with trusted_proxies up to gate.MaxPending a listener keeps judged
		// and waiting for the service.
		need, why := s.MaxConns, fmt.Sprintf("max_conns (%d)", s.MaxConns)
		if len(s.TrustedProxies) > 0 {
			need += gate.MaxPending * len(s.Listen)
			why += fmt.Sprintf(" plus %d for each listen address with trusted_proxies (connections waiting in the gate)", gate.MaxPending)
		}
		switch {
		case maxSourcesLine == 0 && need > limit.DefaultMaxSources:
			s.MaxSources = need
		case maxSourcesLine != 0 && s.MaxSources > 0 && s.MaxSources < need:
			p.at(maxSourcesLine, strconv.Itoa(s.MaxSources), "max_sources must be at least %d, %s: "+
				"when every source kept holds a connection, a new source is refused", need, why)
		}
	}
	if s.BanAfter != nil && s.BanAfter.LimitHits > 0 && s.PerSource == 0 && rateLine == 0 {
		p.at(s.BanAfter.Line, "limit_hits", "ban_after.limit_hits needs per_source or rate (a limit to hit)")
	}
}

// checkUser checks user and group, and takes the group from the user when only it is set (that
// they need root is checked when the file is served: see File.CheckPrivileges). It checks burst
// too, whose error came after theirs.
func (p *serviceParse) checkUser() {
	s := p.s
	if s.UserLine != 0 {
		who := userOf(s)
		if len(s.Exec) == 0 {
			p.at(s.UserLine, who, "user and group need exec (spawn mode): they set who the handler runs as")
		}
		if s.GID < 0 && s.UID >= 0 && s.Group == "" { // user alone: the user's primary group
			if s.GID = primaryGroup(s.User); s.GID < 0 {
				p.at(s.UserLine, s.User, "user %s has no entry in the user database to take a group from: set group too", s.User)
			}
		}
	}
	if line := p.line["burst"]; line != 0 && s.Rate == 0 && p.line["rate"] == 0 { // a bad rate is reported already
		p.at(line, strconv.Itoa(s.Burst), "burst needs rate")
	}
}

// checkRequired reports the first key of a service's required ones that is missing.
func (p *serviceParse) checkRequired() {
	s := p.s
	need := func(what string) { p.at(s.Line, s.Name, "service needs %s", what) }
	switch {
	case s.Name == "":
		need("a name")
	case len(s.Listen) == 0:
		need("at least one listen address")
	case s.ACL == nil && p.line["acl"] == 0: // a name that names no ACL is reported already
		need("an acl (the name of an entry under acls)")
	case (s.Upstream == "") == (len(s.Exec) == 0):
		need("exactly one of upstream (proxy) and exec (spawn)")
	}
}

// Limits returns the per-source limits of s (limit.Config's zero values where the file set none).
func (s *Service) Limits() limit.Config {
	return limit.Config{PerSource: s.PerSource, Rate: s.Rate, Burst: s.Burst,
		IPv4Prefix: s.SourcePrefix4, IPv6Prefix: s.SourcePrefix6, MaxSources: s.MaxSources}
}

// userOf names who a service's user and group keys set: the user, or the group alone.
func userOf(s *Service) string {
	if s.User != "" {
		return s.User
	}
	return s.Group
}

// CheckPrivileges reports the first service of f whose user or group keys a process running as
// euid cannot honour: switching a handler to another user needs root. It is serve's check, made
// before it applies a file: check, lint and diff load such a file as any user.
func (f *File) CheckPrivileges(euid int) error {
	if euid == 0 {
		return nil
	}
	for _, s := range f.Services {
		if s.UserLine != 0 {
			var errs strictyaml.Errors
			errs.At(f.Path, s.UserLine, userOf(s), fmt.Errorf("%w: user and group need peergate to run as root (it runs as uid %d)", ErrConfig, euid))
			return errs.Err()
		}
	}
	return nil
}
