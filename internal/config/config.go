// Package config reads peergate's configuration file: either a bare ACL file (acl.LoadSpec's
// schema) or a serve file of named ACLs and the services they guard. Every error names the file,
// the line and the value; unknown and duplicate keys are errors.
//
// Each key of a serve file is written once, as a row of a table: serviceKeys (service.go),
// fileKeys and adminKeys. The parser, the known keys an unknown-key error lists and /config's view
// of a service (ShowService) are made from the rows, and a test holds README's serve-file table to
// them.
package config

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/peergate/peergate/acl"
	"github.com/peergate/peergate/gate"
	"github.com/peergate/peergate/internal/sources"
	"github.com/peergate/peergate/internal/strictyaml"
	"gopkg.in/yaml.v3"
)

// Defaults for the keys of a service and of the file.
const (
	DefaultConnectTimeout = 5 * time.Second
	DefaultIdleTimeout    = time.Hour
	DefaultMaxConns       = 1024
	DefaultDrainTimeout   = 10 * time.Second
	DefaultLogRate        = 100
)

// ErrConfig marks errors in the meaning of a config (as opposed to its YAML shape).
var ErrConfig = errors.New("invalid config")

// ErrListenOverlap marks two listen addresses, of one service or of two, that would take the same
// port (or Unix socket): one listener cannot serve two services, nor twice one.
var ErrListenOverlap = errors.New("listen address overlaps another")

// ErrNoACL is returned by Pick when the file has no ACL of the requested name, or several ACLs and
// no name.
var ErrNoACL = errors.New("no such ACL")

// File is a loaded configuration.
type File struct {
	Path         string
	Hash         string // sha256 of the file's bytes, hex: names the version in logs
	ACLs         []*ACL // in the order written
	Services     []*Service
	DrainTimeout time.Duration // how long SIGTERM waits for open connections
	Admin        *Admin        // nil: no admin listener
	MaxFileSize  int64         // max_file_size: the most bytes of one file the load reads; 0: the default

	// Sources holds what the load saw of every file it read or tried to read (this file, ACL
	// files, includes, whether they produced rules or not), as each was when it was read: a
	// watcher compares them with the files now to know when to load again.
	Sources []acl.Source

	read func(path string) ([]byte, error) // while parsing: the load's reader, for files other than ACLs
	// Remotes holds the url includes the load resolved (LoadSources), in order; the daemon
	// refreshes them.
	Remotes []acl.Remote

	// The ban layer (runtime bans in front of every service's ACL).
	NeverBan []netip.Prefix // never_ban: addresses no ban may cover (the lockout guard)
	MaxBans  int            // max_bans: live bans at most
	StateDir string         // state_dir: where bans from the API and auto-bans persist; "": not kept
	CrowdSec *CrowdSec      // crowdsec: read (and report) decisions of a CrowdSec LAPI; nil: off
}

// DefaultMaxBans is max_bans when the file does not set it.
const DefaultMaxBans = 1_000_000

// DefaultCrowdSecInterval is crowdsec.interval when the file does not set it.
const DefaultCrowdSecInterval = 10 * time.Second

// CrowdSec is the "crowdsec" mapping: peergate as a bouncer of a CrowdSec local API (LAPI).
type CrowdSec struct {
	Line       int
	URL        string        // the LAPI, e.g. http://127.0.0.1:8080
	APIKeyFile string        // file holding the bouncer's API key (cscli bouncers add)
	APIKey     string        // its content, read at load
	Interval   time.Duration // how often to pull decisions
	Report     bool          // push automatic bans to the LAPI as alerts
	// CredentialsFile is the machine's credentials (url, login, password, as cscli machines add
	// writes them) for report; read at load.
	CredentialsFile string
	Login, Password string
}

// BanAfter is a service's ban_after: a source that collects Denials ACL denials or LimitHits
// per-source limit refusals within Within is banned for For.
type BanAfter struct {
	Line      int
	Denials   int // 0: not counted
	LimitHits int // 0: not counted
	Within    time.Duration
	For       time.Duration // 0: no expiry
}

// Admin is the optional admin listener of "peergate serve": metrics, health and the effective
// config over HTTP.
type Admin struct {
	Line   int
	Listen string // "host:port"
	ACL    *ACL   // who may connect; LoopbackACL unless the file names one
	// TokenFile, when set, holds a bearer token every admin request but /healthz must carry
	// (Authorization: Bearer TOKEN); Token is its content, read at load.
	TokenFile string
	Token     string
}

// LoopbackACL allows only loopback peers (127.0.0.0/8 and ::1): the admin listener's default.
var LoopbackACL = &ACL{Name: "loopback", ACL: acl.MustNew(acl.Spec{Default: acl.Deny, Rules: []acl.Rule{
	{Prefix: netip.MustParsePrefix("127.0.0.0/8"), Action: acl.Allow},
	{Prefix: netip.MustParsePrefix("::1/128"), Action: acl.Allow},
}})}

// ACL is one named ACL of a file. A bare ACL file holds one, named after the file.
type ACL struct {
	Name string
	Line int
	Spec acl.Spec // the rules as loaded, for lint; empty unless loaded by LoadSpecs
	ACL  *acl.ACL
}

// Service is one entry of "services": where to listen, which ACL guards it, and what to do with
// an allowed connection: proxy it to Upstream or spawn Exec with it as stdin and stdout.
type Service struct {
	Name           string
	Line           int
	Listen         []string            // "host:port" with an IP literal host (or none), or "unix:/path"
	ListenLines    []int               // where each Listen entry was written
	UnixPerms      map[string]UnixPerm // by Listen entry: the mode and owner of a Unix socket's file; nil: none set
	ACL            *ACL
	Upstream       string          // "host:port" or "unix:/path"
	Exec           []string        // program (resolved) and arguments
	OnDeny         gate.DenyAction // on_deny: close (FIN) or reset (RST)
	DryRun         bool            // judge and log, but hand on every connection
	ConnectTimeout time.Duration
	IdleTimeout    time.Duration // 0: none
	MaxConns       int           // 0: no cap
	KernelFilter   string        // "off", "auto", "ebpf", "cbpf" or "required": drop denied SYNs in the kernel
	FilterLine     int           // where kernel_filter was written; 0 when it was not
	LogRate        int           // log lines about single connections a second, per service; 0: no limit
	KeepAlive      time.Duration // TCP keep-alive idle time on both sides of a connection; 0: off
	LogAllowed     bool          // log_allowed: log each allowed connection and its end at Info
	User, Group    string        // user, group: who spawned handlers run as, as written; "": peergate's own
	UID, GID       int           // resolved from User and Group at load; -1: not set
	UserLine       int           // where user (or else group) was written; 0 when neither was

	// PROXY protocol.
	TrustedProxies     []netip.Prefix // direct peers whose PROXY header is read; none: the feature is off
	ProxiesLine        int            // where trusted_proxies was written; 0 when it was not
	ProxyRequired      bool           // proxy_protocol: required: deny peers that are not trusted proxies
	ProxyHeaderTimeout time.Duration  // how long a trusted proxy has to send its header
	SendProxy          string         // "", "v1" or "v2": send a PROXY header to the upstream

	// Per-source limits (0: none).
	PerSource     int     // open connections per source
	Rate          float64 // new connections per second per source
	Burst         int     // token bucket size; 0: max(1, Rate)
	SourcePrefix4 int     // IPv4 prefix length that makes a source (per_source_prefix.ipv4)
	SourcePrefix6 int     // IPv6 prefix length that makes a source (per_source_prefix.ipv6)
	MaxSources    int     // cap on the sources tracked

	// The ban layer.
	NeverBan []netip.Prefix // never_ban: guarded addresses, added to the file's
	BanAfter *BanAfter      // ban_after: automatic bans; nil: none

	// Guard (guard.keep_allowed): addresses a reload must leave allowed; a reload whose ACL
	// would deny any of them is refused (the lockout guard). GuardLine is where it was written.
	Guard     []netip.Prefix
	GuardLine int
}

// Kernel filter modes of a service (kernel_filter).
const (
	FilterOff      = "off"      // the gate alone judges
	FilterAuto     = "auto"     // the eBPF filter, else the classic one where the ACL fits, else the gate alone (logged)
	FilterEBPF     = "ebpf"     // the eBPF filter, or refuse the config
	FilterCBPF     = "cbpf"     // the classic BPF filter, or refuse the config
	FilterRequired = "required" // the eBPF or the classic filter, or refuse the config
)

// DefaultMaxFileSize is max_file_size when the file does not set it.
const DefaultMaxFileSize = acl.DefaultMaxFileSize

// Load reads the file at path.
func Load(path string) (*File, error) {
	f, _, err := LoadContext(context.Background(), path)
	return f, err
}

// LoadContext reads the file at path, and the files it names, as Load does; ctx cancels the load.
// Files are read through an acl.Loader, which refuses what is not a regular file, a file over
// max_file_size, and a file that keeps changing while it is read. It returns what the load saw of
// every file it read or tried to read, on error too (then the files to watch for a fix).
func LoadContext(ctx context.Context, path string) (*File, []acl.Source, error) {
	return LoadSources(ctx, path, nil)
}

// LoadSources is LoadContext with url includes (acl.Remote) resolved by m, which keeps its cached
// copies under the file's state_dir (in memory only without one). With m nil a url include is an
// error (acl.ErrRemote). The cached copies are not among the returned sources: the watcher does
// not poll them; m refreshes them on their timers.
//
// The loaded file keeps the compiled ACLs, not the rules they were compiled from (ACL.Spec is
// empty): a Spec holds a second copy of every rule, 64 bytes each. LoadSpecs keeps them.
func LoadSources(ctx context.Context, path string, m *sources.Manager) (*File, []acl.Source, error) {
	return load(ctx, path, m, false)
}

// LoadSpecs is LoadSources, and every ACL of the file keeps its Spec: the rules as loaded, with
// where each was written, which lint reads.
func LoadSpecs(ctx context.Context, path string, m *sources.Manager) (*File, []acl.Source, error) {
	return load(ctx, path, m, true)
}

func load(ctx context.Context, path string, m *sources.Manager, keepSpecs bool) (*File, []acl.Source, error) {
	l := new(acl.Loader)
	data, err := l.ReadFile(ctx, path)
	if err != nil {
		return nil, l.Sources(), err
	}
	f, err := parse(ctx, l, path, data, m)
	if err != nil {
		return nil, l.Sources(), err
	}
	f.Sources = l.Sources()
	if !keepSpecs {
		f.dropSpecs()
	}
	return f, f.Sources, nil
}

// Parse reads data as the config file path. Relative paths inside it (includes, ACL files,
// programs) are relative to the directory of path. As LoadSources, it keeps no Spec.
func Parse(path string, data []byte) (*File, error) {
	f, err := parse(context.Background(), new(acl.Loader), path, data, nil)
	if err != nil {
		return nil, err
	}
	f.dropSpecs()
	return f, nil
}

func parse(ctx context.Context, l *acl.Loader, path string, data []byte, m *sources.Manager) (f *File, err error) {
	root, err := strictyaml.Parse(path, data)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(data)
	f = &File{Path: path, Hash: hex.EncodeToString(sum[:]), DrainTimeout: DefaultDrainTimeout, MaxBans: DefaultMaxBans}
	f.read = func(file string) ([]byte, error) { return l.ReadFile(ctx, file) }
	l.GeoIP = sources.GeoIP{}
	defer func(f *File) { f.read = nil }(f)
	if m != nil {
		// state_dir before acls, whose url includes cache there, wherever it is written.
		b := m.For(stateDirOf(path, root))
		l.Resolver = b
		defer func() {
			if f != nil {
				f.Remotes = b.Used()
			}
		}()
	}
	if root.Kind == yaml.MappingNode && !hasKey(root, "services") && !hasKey(root, "acls") {
		return f.bareACL(ctx, l, root)
	}
	p := &fileParse{ctx: ctx, l: l}
	f.readMaxFileSize(root, &p.errs) // before acls, whose files it bounds, wherever it is written
	l.MaxFileSize = f.MaxFileSize
	strictyaml.Mapping(path, root, &p.errs, func(key string, k, v *yaml.Node) {
		row := fileKeyIndex[key]
		if row == nil {
			strictyaml.Unknown(&p.errs, path, k, fileKeyList)
			return
		}
		row.read(f, p, v)
	})
	if p.admin != nil {
		f.Admin = f.admin(p.admin, &p.errs)
	}
	if p.services != nil {
		f.services(p.services, &p.errs)
	}
	if err := p.errs.Err(); err != nil {
		return nil, err
	}
	return f, nil
}

// fileParse is the reading of a serve file: what the keys read later need.
type fileParse struct {
	ctx             context.Context
	l               *acl.Loader
	errs            strictyaml.Errors
	services, admin *yaml.Node // read after acls, which they refer to, wherever they are written
}

// fileKey is one top-level key of a serve file: how it is read, and its name, default and doc as
// README's serve-file table gives them (a test holds the two together).
type fileKey struct {
	name   string
	readme string // README's name for it, when not name
	def    string // README's default cell, exactly
	doc    string // how README's description starts; "": README has rows for its keys instead
	read   func(f *File, p *fileParse, v *yaml.Node)
}

// fileKeys are the top-level keys of a serve file, in the order an unknown-key error lists them.
var fileKeys = []fileKey{
	{"acls", "acls.NAME", "—", "an ACL (the schema above) or the path of an ACL file", func(f *File, p *fileParse, v *yaml.Node) {
		strictyaml.Mapping(f.Path, v, &p.errs, func(name string, k, v *yaml.Node) {
			if a := loadACL(p.ctx, p.l, f.Path, name, k, v, &p.errs); a != nil {
				f.ACLs = append(f.ACLs, a)
			}
		})
	}},
	{"services", "", "", "", func(_ *File, p *fileParse, v *yaml.Node) { p.services = v }},
	{"drain_timeout", "", "`10s`", "how long SIGTERM waits for open connections", func(f *File, p *fileParse, v *yaml.Node) {
		f.DrainTimeout = duration(f.Path, v, &p.errs)
	}},
	{"admin", "", "", "", func(_ *File, p *fileParse, v *yaml.Node) { p.admin = v }},
	{"never_ban", "", "none", "addresses or prefixes no ban may cover", func(f *File, p *fileParse, v *yaml.Node) {
		f.NeverBan = prefixes(f.Path, v, &p.errs)
	}},
	{"max_bans", "", "`1000000`", "live bans at most", func(f *File, p *fileParse, v *yaml.Node) {
		if f.MaxBans = count(f.Path, v, &p.errs, "max_bans"); f.MaxBans == 0 {
			p.errs.At(f.Path, v.Line, v.Value, fmt.Errorf("%w: max_bans must be at least 1", ErrConfig))
		}
	}},
	{"state_dir", "", "none: bans are lost on restart", "a directory (made if missing, mode 0700)", func(f *File, p *fileParse, v *yaml.Node) {
		if dir, ok := strictyaml.Scalar(f.Path, v, &p.errs); ok {
			f.StateDir = relative(f.Path, dir)
		}
	}},
	{"crowdsec", "", "none", "`{url: http://127.0.0.1:8080, api_key_file: PATH", func(f *File, p *fileParse, v *yaml.Node) {
		f.CrowdSec = f.crowdsec(v, &p.errs)
	}},
	{"max_file_size", "", "`1GiB`", "the most bytes one file of a load may hold", func(*File, *fileParse, *yaml.Node) {}}, // read first
}

// fileKeyIndex finds a row of fileKeys by its name.
var fileKeyIndex = func() map[string]*fileKey {
	m := make(map[string]*fileKey, len(fileKeys))
	for i := range fileKeys {
		m[fileKeys[i].name] = &fileKeys[i]
	}
	return m
}()

// fileKeyList is the known top-level keys, as an unknown-key error lists them.
var fileKeyList = orList(fileKeys, func(k fileKey) string { return k.name })

// stateDirOf returns the state_dir that root sets (relative to path's directory), or "". A bad
// one is reported where it is read.
func stateDirOf(path string, root *yaml.Node) string {
	dir := ""
	if root.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(root.Content); i += 2 {
			if k, v := root.Content[i], root.Content[i+1]; k.Value == "state_dir" && v.Kind == yaml.ScalarNode && v.Value != "" {
				dir = relative(path, v.Value)
			}
		}
	}
	return dir
}

// readMaxFileSize reads max_file_size, wherever it is written.
func (f *File) readMaxFileSize(root *yaml.Node, errs *strictyaml.Errors) {
	if root.Kind != yaml.MappingNode {
		return
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		if k, v := root.Content[i], root.Content[i+1]; k.Value == "max_file_size" {
			if word, ok := strictyaml.Scalar(f.Path, v, errs); ok {
				n, err := ParseSize(word)
				if err != nil {
					errs.At(f.Path, v.Line, word, err)
				}
				f.MaxFileSize = n
			}
			return
		}
	}
}

// bareACL reads root as a bare ACL file: the file's one ACL, named after the file.
func (f *File) bareACL(ctx context.Context, l *acl.Loader, root *yaml.Node) (*File, error) {
	//lint:ignore SA1019 the serve file is parsed once and its nodes walked; ParseSpecAt would parse it again per ACL
	spec, err := l.SpecFromNode(ctx, f.Path, root)
	if err != nil {
		return nil, err
	}
	a, err := acl.New(spec)
	if err != nil {
		return nil, &acl.PosError{File: f.Path, Err: err}
	}
	name := strings.TrimSuffix(filepath.Base(f.Path), filepath.Ext(f.Path))
	f.ACLs = []*ACL{{Name: name, Line: 1, Spec: spec, ACL: a}}
	return f, nil
}

// services reads the "services" list.
func (f *File) services(n *yaml.Node, errs *strictyaml.Errors) {
	names := map[string]int{}
	for _, n := range strictyaml.Sequence(f.Path, n, errs) {
		s := f.service(n, errs)
		if s == nil {
			continue
		}
		if first, dup := names[s.Name]; dup {
			errs.At(f.Path, s.Line, s.Name, fmt.Errorf("%w: service name used twice (first at line %d)", ErrConfig, first))
		}
		names[s.Name] = s.Line
		f.Services = append(f.Services, s)
	}
	checkOverlaps(f.Path, f.Services, errs)
}

func hasKey(n *yaml.Node, key string) bool {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return true
		}
	}
	return false
}

// loadACL reads one entry of "acls": an inline ACL, or the path of an ACL file.
func loadACL(ctx context.Context, l *acl.Loader, path, name string, k, v *yaml.Node, errs *strictyaml.Errors) *ACL {
	var spec acl.Spec
	var err error
	if v.Kind == yaml.ScalarNode {
		file := v.Value
		if !filepath.IsAbs(file) {
			file = filepath.Join(filepath.Dir(path), file)
		}
		spec, err = l.LoadSpec(ctx, file)
		var pe *acl.PosError
		if err != nil && !errors.As(err, &pe) { // the file itself could not be read
			err = &acl.PosError{File: path, Line: v.Line, Value: v.Value, Err: fmt.Errorf("%w: %w", acl.ErrInclude, err)}
		}
	} else {
		//lint:ignore SA1019 the serve file is parsed once and its nodes walked; ParseSpecAt would parse it again per ACL
		spec, err = l.SpecFromNode(ctx, path, v)
	}
	if err != nil {
		errs.Add(err)
		return nil
	}
	a, err := acl.New(spec)
	if err != nil {
		errs.At(path, k.Line, name, err)
		return nil
	}
	return &ACL{Name: name, Line: k.Line, Spec: spec, ACL: a}
}

// namedACL returns the ACL that the scalar v names, or nil after reporting that there is none.
func (f *File) namedACL(v *yaml.Node, errs *strictyaml.Errors) *ACL {
	name, ok := strictyaml.Scalar(f.Path, v, errs)
	if !ok {
		return nil
	}
	if i := slices.IndexFunc(f.ACLs, func(a *ACL) bool { return a.Name == name }); i >= 0 {
		return f.ACLs[i]
	}
	errs.At(f.Path, v.Line, name, fmt.Errorf("%w: no ACL of that name under acls (have %s)", ErrConfig, f.aclNames()))
	return nil
}

// admin reads the "admin" mapping: listen (required) and acl (default: loopback only).
func (f *File) admin(n *yaml.Node, errs *strictyaml.Errors) *Admin {
	a := &Admin{Line: n.Line, ACL: LoopbackACL}
	strictyaml.Mapping(f.Path, n, errs, func(key string, k, v *yaml.Node) {
		i := slices.IndexFunc(adminKeys, func(r adminKey) bool { return r.name == key })
		if i < 0 {
			strictyaml.Unknown(errs, f.Path, k, adminKeyList)
			return
		}
		adminKeys[i].read(f, a, v, errs)
	})
	if a.Listen == "" {
		errs.At(f.Path, n.Line, "admin", fmt.Errorf("%w: admin needs listen (e.g. 127.0.0.1:9180)", ErrConfig))
	}
	return a
}

// adminKey is one key of the "admin" mapping: how it is read, and its default and doc as
// README's serve-file table gives them (admin.NAME; a test holds the two together).
type adminKey struct {
	name, def, doc string
	read           func(f *File, a *Admin, v *yaml.Node, errs *strictyaml.Errors)
}

// adminKeys are the keys of "admin", in the order an unknown-key error lists them.
var adminKeys = []adminKey{
	{"listen", "no admin listener", "`IP:PORT` of the admin HTTP listener", func(f *File, a *Admin, v *yaml.Node, errs *strictyaml.Errors) {
		if addr, ok := strictyaml.Scalar(f.Path, v, errs); ok {
			if _, isUnix := UnixPath(addr); isUnix {
				errs.At(f.Path, v.Line, addr, fmt.Errorf("%w: the admin listener takes IP:PORT", ErrConfig))
			} else if err := checkListen(addr); err != nil {
				errs.At(f.Path, v.Line, addr, err)
			}
			a.Listen = addr
		}
	}},
	{"acl", "loopback only (`127.0.0.0/8`, `::1`)", "the name of an entry under `acls` that guards the admin listener", func(f *File, a *Admin, v *yaml.Node, errs *strictyaml.Errors) {
		if named := f.namedACL(v, errs); named != nil {
			a.ACL = named
		}
	}},
	{"token_file", "none: the admin ACL alone", "a file holding a bearer token", func(f *File, a *Admin, v *yaml.Node, errs *strictyaml.Errors) {
		if file, ok := strictyaml.Scalar(f.Path, v, errs); ok {
			a.TokenFile = relative(f.Path, file)
			tok, err := f.secret(a.TokenFile)
			if err != nil {
				errs.At(f.Path, v.Line, file, err)
			}
			a.Token = tok
		}
	}},
}

// adminKeyList is the known keys of "admin", as an unknown-key error lists them.
var adminKeyList = orList(adminKeys, func(k adminKey) string { return k.name })

func (f *File) aclNames() string {
	if len(f.ACLs) == 0 {
		return "none"
	}
	names := make([]string, len(f.ACLs))
	for i, a := range f.ACLs {
		names[i] = a.Name
	}
	return strings.Join(names, ", ")
}

// dropSpecs forgets the Spec of every ACL of f, keeping the compiled ACLs: all but lint judge with
// the ACLs alone, and the Spec holds a second copy of every rule (it doubled the heap a 1 M-rule
// list takes).
func (f *File) dropSpecs() {
	for _, a := range f.ACLs {
		a.Spec = acl.Spec{}
	}
}

// Pick returns the ACL called name, or the only ACL of the file when name is empty.
func (f *File) Pick(name string) (*ACL, error) {
	if name == "" {
		if len(f.ACLs) == 1 {
			return f.ACLs[0], nil
		}
		return nil, fmt.Errorf("%w: %s has %d ACLs (%s); choose one with -acl NAME", ErrNoACL, f.Path, len(f.ACLs), f.aclNames())
	}
	for _, a := range f.ACLs {
		if a.Name == name {
			return a, nil
		}
	}
	return nil, fmt.Errorf("%w: %q in %s (have %s)", ErrNoACL, name, f.Path, f.aclNames())
}

// prefixes reads a list of addresses and prefixes (one may stand alone), normalised as ACL rules
// are (::ffff:a.b.c.d/n is the IPv4 prefix /n-96).
func prefixes(path string, v *yaml.Node, errs *strictyaml.Errors) []netip.Prefix {
	items := []*yaml.Node{v}
	if v.Kind == yaml.SequenceNode {
		items = v.Content
	}
	var out []netip.Prefix
	for _, item := range items {
		word, ok := strictyaml.Scalar(path, item, errs)
		if !ok {
			continue
		}
		p, err := acl.ParsePrefix(word)
		if err != nil {
			errs.At(path, item.Line, word, err)
			continue
		}
		out = append(out, p)
	}
	return out
}

// count reads a whole number ≥ 0.

// boolean reads true or false.
func boolean(path string, v *yaml.Node, errs *strictyaml.Errors, key string) bool {
	b, ok := strictyaml.Scalar(path, v, errs)
	if ok && b != "true" && b != "false" {
		errs.At(path, v.Line, b, fmt.Errorf("%w: %s must be true or false", ErrConfig, key))
	}
	return b == "true"
}

// ErrNoSuchUser marks a user or group name that the system does not know.
var ErrNoSuchUser = errors.New("no such user or group")

// lookupID reads a user (key "user") or group name, or a number, and returns it with its id.
func lookupID(path string, v *yaml.Node, errs *strictyaml.Errors, key string) (string, int) {
	word, ok := strictyaml.Scalar(path, v, errs)
	if !ok {
		return "", -1
	}
	if n, err := strconv.ParseUint(word, 10, 32); err == nil {
		return word, int(n)
	}
	var id string
	var err error
	if key == "user" {
		var u *user.User
		if u, err = user.Lookup(word); err == nil {
			id = u.Uid
		}
	} else {
		var g *user.Group
		if g, err = user.LookupGroup(word); err == nil {
			id = g.Gid
		}
	}
	n, perr := strconv.Atoi(id)
	if err != nil || perr != nil || word == "" {
		errs.At(path, v.Line, word, fmt.Errorf("%w: %w: %s", ErrConfig, ErrNoSuchUser, key))
		return word, -1
	}
	return word, n
}

// primaryGroup returns the primary group id of user (a name or a number), or -1.
func primaryGroup(name string) int {
	u, err := user.Lookup(name)
	if err != nil {
		u, err = user.LookupId(name)
	}
	if err != nil {
		return -1
	}
	n, err := strconv.Atoi(u.Gid)
	if err != nil {
		return -1
	}
	return n
}

func count(path string, v *yaml.Node, errs *strictyaml.Errors, key string) int {
	word, _ := strictyaml.Scalar(path, v, errs)
	n, err := strconv.Atoi(word)
	if err != nil || n < 0 {
		errs.At(path, v.Line, word, fmt.Errorf("%w: %s must be a whole number, 0 for none", ErrConfig, key))
	}
	return n
}

// ErrSize marks a size that ParseSize cannot read.
var ErrSize = errors.New("want a size such as 1GiB, 512MiB, 100MB or 65536 (bytes)")

// sizeUnits are the units ParseSize knows, in bytes.
var sizeUnits = map[string]int64{"": 1, "B": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12,
	"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}

// ParseSize reads a size: a whole number of bytes, or of a unit (kB, MB, GB, TB; KiB, MiB, GiB, TiB),
// such as "1GiB" or "100MB". It must be more than 0.
func ParseSize(s string) (int64, error) {
	i := strings.IndexFunc(s, func(r rune) bool { return r < '0' || r > '9' })
	if i < 0 {
		i = len(s)
	}
	unit, ok := sizeUnits[strings.TrimSpace(s[i:])]
	n, err := strconv.ParseInt(s[:i], 10, 64)
	if !ok || err != nil || n <= 0 || n > math.MaxInt64/unit {
		return 0, fmt.Errorf("%w: %w", ErrConfig, ErrSize)
	}
	return n * unit, nil
}

// ErrRate marks a rate that ParseRate cannot read.
var ErrRate = errors.New("want a rate such as 10/s, 600/m or 5/100ms")

// ParseRate reads a rate "N/UNIT": N connections per UNIT, a duration ("100ms", "2s") or a bare
// unit ("s", "m", "h" for one of it). It returns connections per second.
func ParseRate(s string) (float64, error) {
	num, unit, ok := strings.Cut(s, "/")
	n, err := strconv.ParseFloat(num, 64)
	if !ok || err != nil || n <= 0 || math.IsInf(n, 0) || math.IsNaN(n) {
		return 0, fmt.Errorf("%w: %w", ErrConfig, ErrRate)
	}
	if unit != "" && (unit[0] < '0' || unit[0] > '9') {
		unit = "1" + unit
	}
	d, err := time.ParseDuration(unit)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%w: %w", ErrConfig, ErrRate)
	}
	// Between one a day and a billion a second: beyond either, a token bucket's arithmetic in
	// nanoseconds overflows, and neither is a limit anyone means.
	r := n / d.Seconds()
	if r < 1.0/86400 || r > 1e9 {
		return 0, fmt.Errorf("%w: %w (between 1/24h and 1000000000/s)", ErrConfig, ErrRate)
	}
	return r, nil
}

func duration(path string, v *yaml.Node, errs *strictyaml.Errors) time.Duration {
	word, ok := strictyaml.Scalar(path, v, errs)
	if !ok {
		return 0
	}
	d, err := time.ParseDuration(word)
	if err != nil || d < 0 {
		errs.At(path, v.Line, word, fmt.Errorf("%w: want a duration such as 5s, 2m or 1h", ErrConfig))
	}
	return d
}

// UnixPath returns the socket path of a "unix:/path" address, and whether addr is one.
func UnixPath(addr string) (string, bool) { return strings.CutPrefix(addr, "unix:") }

// UnixPerm is what a listen entry written {unix: PATH, mode: "0660", owner: USER, group: GROUP}
// sets on the socket's file once it is bound.
type UnixPerm struct {
	Mode     os.FileMode // 0: as bound (the umask decides)
	UID, GID int         // -1: unchanged
}

// unixListen reads a listen entry written as a mapping: a Unix socket path with the mode, owner
// and group of its file. It returns the entry as "unix:PATH".
func unixListen(path string, n *yaml.Node, errs *strictyaml.Errors) (string, UnixPerm, bool) {
	perm := UnixPerm{UID: -1, GID: -1}
	var sock string
	var permLine int
	strictyaml.Mapping(path, n, errs, func(key string, k, v *yaml.Node) {
		switch key {
		case "unix":
			sock, _ = strictyaml.Scalar(path, v, errs)
		case "mode":
			permLine = v.Line
			word, _ := strictyaml.Scalar(path, v, errs)
			m, err := strconv.ParseUint(word, 8, 32)
			if err != nil || m == 0 || m > 0o777 {
				errs.At(path, v.Line, word, fmt.Errorf("%w: mode must be octal permission bits, such as \"0660\"", ErrConfig))
			}
			perm.Mode = os.FileMode(m) & os.ModePerm
		case "owner":
			permLine = v.Line
			_, perm.UID = lookupID(path, v, errs, "user")
		case "group":
			permLine = v.Line
			_, perm.GID = lookupID(path, v, errs, "group")
		default:
			strictyaml.Unknown(errs, path, k, "unix, mode, owner or group")
		}
	})
	addr := "unix:" + sock
	switch err := checkListen(addr); {
	case sock == "":
		errs.At(path, n.Line, "listen", fmt.Errorf("%w: a listen entry written as a mapping needs unix: PATH", ErrConfig))
		return "", perm, false
	case err != nil:
		errs.At(path, n.Line, addr, err)
	case sock[0] == '@' && permLine != 0:
		errs.At(path, permLine, addr, fmt.Errorf("%w: an abstract socket has no file: mode, owner and group do not apply", ErrConfig))
	}
	return addr, perm, true
}

func checkListen(addr string) error {
	if p, ok := UnixPath(addr); ok {
		switch {
		case p == "":
			return fmt.Errorf("%w: unix: needs a socket path", ErrConfig)
		case p == "@":
			return fmt.Errorf("%w: unix:@ needs a name for the abstract socket (unix:@NAME)", ErrConfig)
		}
		return nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%w: want IP:PORT, [IPv6]:PORT, :PORT, unix:/path or unix:@name", ErrConfig)
	}
	if host != "" {
		if _, err := netip.ParseAddr(host); err != nil {
			return fmt.Errorf("%w: listen on an IP address, not a name (%s)", ErrConfig, host)
		}
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 && port != "0" {
		return fmt.Errorf("%w: bad port %q", ErrConfig, port)
	}
	return nil
}

// bind is what a listen address takes: a TCP port on an address (any address when wild), or a
// Unix socket name.
type bind struct {
	unix bool
	name string // Unix: the absolute, cleaned path, or "@name" for an abstract socket
	port uint16
	addr netip.Addr // unmapped, without zone; the zero Addr when wild
	wild bool       // "", 0.0.0.0 or ::: Go listens dual-stack on all addresses for each
}

// bindOf returns what addr takes, and false when addr is not a valid listen address (reported
// already) or takes nothing fixed (port 0: the kernel picks a free one).
func bindOf(addr string) (bind, bool) {
	if p, ok := UnixPath(addr); ok {
		if strings.HasPrefix(p, "@") { // abstract: a name, not a path
			return bind{unix: true, name: p}, p != ""
		}
		abs, err := filepath.Abs(p)
		if err != nil {
			abs = filepath.Clean(p)
		}
		return bind{unix: true, name: abs}, p != ""
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return bind{}, false
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return bind{}, false
	}
	b := bind{port: uint16(n), wild: host == ""}
	if host != "" {
		ip, err := netip.ParseAddr(host)
		if err != nil {
			return bind{}, false
		}
		b.addr = ip.Unmap().WithZone("")
		if b.addr.IsUnspecified() {
			b.addr, b.wild = netip.Addr{}, true
		}
	}
	return b, true
}

// checkOverlaps reports, at the later of each pair, two listen addresses that take the same port
// or socket: written twice, the later service silently took the listener (and its ACL applied to
// the earlier one's clients). Go listens on every unspecified address (":P", "0.0.0.0:P",
// "[::]:P") with one dual-stack socket, so each takes its port on every address of both families.
func checkOverlaps(path string, services []*Service, errs *strictyaml.Errors) {
	type seen struct {
		addr string
		line int
		svc  *Service
	}
	exact := map[bind]seen{}    // by socket name, or by port and address
	anyOn := map[uint16]seen{}  // the first address on each port
	wildOn := map[uint16]seen{} // the first unspecified address on each port
	for _, s := range services {
		for i, addr := range s.Listen {
			b, ok := bindOf(addr)
			if !ok {
				continue
			}
			line := s.Line
			if i < len(s.ListenLines) {
				line = s.ListenLines[i]
			}
			e, clash := exact[b]
			switch {
			case b.unix || clash:
			case b.wild:
				e, clash = anyOn[b.port]
			default:
				e, clash = wildOn[b.port]
			}
			this := seen{addr, line, s}
			switch {
			case clash && e.svc == s:
				errs.At(path, line, addr, fmt.Errorf("%w: %w: service %s: %q (line %d) of the same service takes it already",
					ErrConfig, ErrListenOverlap, s.Name, e.addr, e.line))
			case clash:
				errs.At(path, line, addr, fmt.Errorf("%w: %w: service %s: %q (line %d) of service %s takes it already; one listener serves one service",
					ErrConfig, ErrListenOverlap, s.Name, e.addr, e.line, e.svc.Name))
			}
			if _, ok := exact[b]; !ok {
				exact[b] = this
			}
			if b.unix {
				continue
			}
			if _, ok := anyOn[b.port]; !ok {
				anyOn[b.port] = this
			}
			if _, ok := wildOn[b.port]; !ok && b.wild {
				wildOn[b.port] = this
			}
		}
	}
}

func checkDial(addr string) error {
	if p, ok := UnixPath(addr); ok {
		if p == "" {
			return fmt.Errorf("%w: unix: needs a socket path", ErrConfig)
		}
		return nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return fmt.Errorf("%w: want HOST:PORT or unix:/path", ErrConfig)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("%w: bad port %q", ErrConfig, port)
	}
	return nil
}

// findProgram resolves an exec program: a path with a slash is taken relative to the config's
// directory, a bare name is looked up in PATH. The program must exist and be executable.
//
// A path is made absolute before the lookup: filepath.Join(".", "./prog") is "prog", a bare name
// that exec.LookPath would search PATH for, running a same-named program from elsewhere.
func findProgram(config, prog string) (string, error) {
	if strings.Contains(prog, "/") {
		if !filepath.IsAbs(prog) {
			prog = filepath.Join(filepath.Dir(config), prog)
		}
		abs, err := filepath.Abs(prog)
		if err != nil {
			return prog, err
		}
		prog = abs
	}
	p, err := exec.LookPath(prog)
	if err != nil {
		return prog, err
	}
	return filepath.Abs(p)
}

// relative resolves a path written in the config file: relative to the file's directory.
func relative(config, p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(filepath.Dir(config), p)
}

// secret reads a token or key from file: its content with surrounding white space trimmed, which
// must not be empty. It is read as ACL files are (a regular file, watched for changes).
func (f *File) secret(file string) (string, error) {
	b, err := f.read(file)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrConfig, err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("%w: %s is empty", ErrConfig, file)
	}
	return s, nil
}

// banAfter reads a service's ban_after mapping.
func banAfter(path string, n *yaml.Node, errs *strictyaml.Errors) *BanAfter {
	b := &BanAfter{Line: n.Line}
	withinLine := 0
	strictyaml.Mapping(path, n, errs, func(key string, k, v *yaml.Node) {
		switch key {
		case "denials":
			b.Denials = count(path, v, errs, "ban_after.denials")
		case "limit_hits":
			b.LimitHits = count(path, v, errs, "ban_after.limit_hits")
		case "within":
			withinLine = v.Line
			b.Within = duration(path, v, errs)
		case "for":
			b.For = duration(path, v, errs)
		default:
			strictyaml.Unknown(errs, path, k, "denials, limit_hits, within or for")
		}
	})
	if b.Denials == 0 && b.LimitHits == 0 {
		errs.At(path, n.Line, "ban_after", fmt.Errorf("%w: ban_after needs denials or limit_hits (how many within the window make a ban)", ErrConfig))
	}
	if b.Within <= 0 && withinLine == 0 {
		errs.At(path, n.Line, "ban_after", fmt.Errorf("%w: ban_after needs within (the window, e.g. 1m)", ErrConfig))
	} else if b.Within <= 0 {
		errs.At(path, withinLine, "within", fmt.Errorf("%w: ban_after.within must be more than 0", ErrConfig))
	}
	return b
}

// crowdsec reads the top-level crowdsec mapping.
func (f *File) crowdsec(n *yaml.Node, errs *strictyaml.Errors) *CrowdSec {
	path := f.Path
	c := &CrowdSec{Line: n.Line, Interval: DefaultCrowdSecInterval}
	reportLine := 0
	strictyaml.Mapping(path, n, errs, func(key string, k, v *yaml.Node) {
		switch key {
		case "url":
			if u, ok := strictyaml.Scalar(path, v, errs); ok {
				if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
					errs.At(path, v.Line, u, fmt.Errorf("%w: crowdsec.url must be an http:// or https:// URL", ErrConfig))
				}
				c.URL = strings.TrimSuffix(u, "/")
			}
		case "api_key_file":
			if file, ok := strictyaml.Scalar(path, v, errs); ok {
				c.APIKeyFile = relative(path, file)
				key, err := f.secret(c.APIKeyFile)
				if err != nil {
					errs.At(path, v.Line, file, err)
				}
				c.APIKey = key
			}
		case "interval":
			c.Interval = duration(path, v, errs)
			if d, err := time.ParseDuration(v.Value); err == nil && d < 100*time.Millisecond {
				errs.At(path, v.Line, v.Value, fmt.Errorf("%w: crowdsec.interval must be at least 100ms", ErrConfig))
			}
		case "report":
			reportLine = v.Line
			b, ok := strictyaml.Scalar(path, v, errs)
			if c.Report = b == "true"; ok && b != "true" && b != "false" {
				errs.At(path, v.Line, b, fmt.Errorf("%w: crowdsec.report must be true or false", ErrConfig))
			}
		case "credentials_file":
			if file, ok := strictyaml.Scalar(path, v, errs); ok {
				c.CredentialsFile = relative(path, file)
				login, password, err := f.machineCredentials(c.CredentialsFile)
				if err != nil {
					errs.At(path, v.Line, file, err)
				}
				c.Login, c.Password = login, password
			}
		default:
			strictyaml.Unknown(errs, path, k, "url, api_key_file, interval, report or credentials_file")
		}
	})
	if c.URL == "" {
		errs.At(path, n.Line, "crowdsec", fmt.Errorf("%w: crowdsec needs url (e.g. http://127.0.0.1:8080)", ErrConfig))
	}
	if c.APIKeyFile == "" {
		errs.At(path, n.Line, "crowdsec", fmt.Errorf("%w: crowdsec needs api_key_file (a key from cscli bouncers add)", ErrConfig))
	}
	if c.Report && c.CredentialsFile == "" {
		errs.At(path, reportLine, "report", fmt.Errorf("%w: crowdsec.report needs credentials_file (a machine's login, from cscli machines add)", ErrConfig))
	}
	return c
}

// machineCredentials reads a CrowdSec machine's credentials file, the YAML cscli machines add -f
// writes (url, login, password).
func (f *File) machineCredentials(file string) (login, password string, err error) {
	b, err := f.read(file)
	if err != nil {
		return "", "", fmt.Errorf("%w: %w", ErrConfig, err)
	}
	var c struct {
		Login    string `yaml:"login"`
		Password string `yaml:"password"`
	}
	if err := yaml.Unmarshal(b, &c); err != nil {
		return "", "", fmt.Errorf("%w: %s: %w", ErrConfig, file, err)
	}
	if c.Login == "" || c.Password == "" {
		return "", "", fmt.Errorf("%w: %s needs login and password", ErrConfig, file)
	}
	return c.Login, c.Password, nil
}
