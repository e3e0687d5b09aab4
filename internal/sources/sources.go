// Package sources fetches the lists that ACL files include by URL (acl.Remote), keeps them fresh
// and keeps their last good copy: in memory, and on disk under the serve config's state_dir.
//
// A Manager is the acl.Resolver of peergate serve and check. A load asks it for the rules of each
// url include: it answers from the copy it holds while that is younger than the include's
// refresh, and otherwise fetches (a conditional request: If-None-Match, If-Modified-Since). A
// fetch that fails, is slow, is cut short or brings a list it refuses (unparseable, a sha256 pin
// that does not match, fewer than min_entries prefixes, or shrunk by more than max_shrink) leaves
// the last good copy in place; with no good copy at all the load fails. Run refreshes the lists of
// the running config on their timers and reloads the config when one changed.
package sources

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
	"unsafe"

	"github.com/peergate/peergate/acl"
	"github.com/peergate/peergate/internal/redact"
	"github.com/peergate/peergate/internal/safefile"
	"github.com/peergate/peergate/internal/strictyaml"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults for what an include and the Manager do not set.
const (
	DefaultRefresh   = time.Hour
	DefaultMaxShrink = 0.5
	DefaultTimeout   = 30 * time.Second
)

// Errors a fetch can fail with (wrapped, with the URL).
var (
	ErrStatus   = errors.New("unexpected HTTP status")
	ErrPin      = errors.New("body does not match the sha256 pin")
	ErrTooFew   = errors.New("list has fewer entries than min_entries")
	ErrShrunk   = errors.New("list shrank by more than max_shrink")
	ErrScheme   = errors.New("unsupported URL scheme (want https, http or file)")
	ErrTooLarge = errors.New("body over max_file_size")
)

// Manager fetches, caches and refreshes url includes. Its methods may be called from several
// goroutines. The zero Manager is not usable: use New.
type Manager struct {
	Client  *http.Client  // nil: a client with the system roots
	Timeout time.Duration // bound on one fetch, body included; 0: DefaultTimeout
	MaxSize int64         // bound on one body; 0: acl.DefaultMaxFileSize
	OneShot bool          // a one-shot load (check, lint): no warning that copies live in memory only
	log     *slog.Logger

	mu      sync.Mutex
	entries map[string]*entry
	warned  bool // said that without state_dir copies live in memory only

	lastOK   *prometheus.GaugeVec
	count    *prometheus.GaugeVec
	failures *prometheus.CounterVec
	fetches  *prometheus.CounterVec
}

// entry is one source: a URL read with one selector and one action.
type entry struct {
	fetch  sync.Mutex // one fetch of a source at a time; held across the fetch
	r      acl.Remote
	dir    string // state_dir; "": memory only
	active bool   // used by the running config: Run refreshes it
	good   bool   // meta and rules or body hold a good copy
	// The good copy is kept in the smaller of two forms: its rules, handed to every load, or its
	// body, parsed again by each load but the first (a plain list's body is a third of its rules'
	// memory, and the compiled ACL holds the rules already). fresh holds the rules parsed from
	// body until the first load takes them.
	rules []acl.Rule
	body  []byte
	fresh []acl.Rule
	meta  Meta
	retry time.Time // after a failed refresh: when to try again
	size  int64     // bytes of the last body: the buffer size of the next fetch without Content-Length
}

// Meta is what the cache keeps beside a copy of a list.
type Meta struct {
	URL          string    `json:"url"`
	Select       string    `json:"select,omitempty"`
	ETag         string    `json:"etag,omitempty"`
	LastModified string    `json:"last_modified,omitempty"`
	SHA256       string    `json:"sha256"`
	Fetched      time.Time `json:"fetched"` // when this copy was fetched
	Checked      time.Time `json:"checked"` // when the source last answered (304 included)
	Entries      int       `json:"entries"`
}

// New returns a Manager that logs to log and registers its metrics with reg (nil: none).
func New(log *slog.Logger, reg prometheus.Registerer) *Manager {
	m := &Manager{log: log, entries: map[string]*entry{},
		lastOK: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "peergate_source_last_success_timestamp_seconds",
			Help: "When a url include last answered with a good list or 304 (unix time)."}, []string{"source"}),
		count: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "peergate_source_entries",
			Help: "Prefixes in the copy of a url include in use."}, []string{"source"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "peergate_source_failures_total",
			Help: "Fetches of a url include that failed or were refused, by reason (fetch, status, parse, pin, too_few, shrunk, too_large)."}, []string{"source", "reason"}),
		fetches: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "peergate_source_fetches_total",
			Help: "Good answers of a url include: changed (a new list) or unchanged (304 or same body)."}, []string{"source", "result"}),
	}
	if reg != nil {
		reg.MustRegister(m.lastOK, m.count, m.failures, m.fetches)
	}
	return m
}

// Binding is the acl.Resolver of one load: the Manager with that load's state_dir. It records the
// includes the load resolved (Used).
type Binding struct {
	m    *Manager
	dir  string
	mu   sync.Mutex
	used []acl.Remote
}

// For returns a Resolver for a load whose state_dir is dir ("": copies kept in memory only).
func (m *Manager) For(dir string) *Binding { return &Binding{m: m, dir: dir} }

// Used returns the includes resolved through b, in order.
func (b *Binding) Used() []acl.Remote {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.used)
}

// Resolve returns the rules of r: the copy held while it is fresh, else a fetch, else the last
// good copy; an error only when there is no good copy at all.
func (b *Binding) Resolve(ctx context.Context, r acl.Remote) ([]acl.Rule, error) {
	b.mu.Lock()
	b.used = append(b.used, r)
	b.mu.Unlock()
	m := b.m
	if b.dir == "" && !m.OneShot {
		m.mu.Lock()
		if !m.warned {
			m.warned = true
			m.log.Warn("no state_dir: url includes keep their last good copy in memory only; a restart while a source is down fails", "source", r.Name())
		}
		m.mu.Unlock()
	}
	e := m.entry(r, b.dir)
	e.fetch.Lock()
	defer e.fetch.Unlock()
	e.r, e.dir = r, b.dir // the latest options: a pin or min_entries may have changed
	if !e.good && e.dir != "" {
		m.readCache(ctx, e)
	}
	if e.good && time.Since(e.meta.Checked) < refresh(r) {
		return e.take()
	}
	if _, err := m.fetchLocked(ctx, e); err != nil {
		if !e.good {
			return nil, err
		}
		m.log.Warn("url include: keeping the last good copy", "source", r.Name(), "fetched", e.meta.Fetched, "entries", e.meta.Entries, "err", err)
	}
	return e.take()
}

// ruleSize is the memory of one acl.Rule, Origin string header included (not its bytes, which
// the rules of a list share).
const ruleSize = int(unsafe.Sizeof(acl.Rule{}))

// keep makes rules, parsed from body, e's good copy, in the smaller form (e.fetch held).
func (e *entry) keep(rules []acl.Rule, body []byte, meta Meta) {
	e.meta, e.good, e.size = meta, true, int64(len(body))
	if len(rules)*ruleSize <= len(body) {
		e.rules, e.body, e.fresh = rules, nil, nil
		return
	}
	if cap(body)-len(body) > 64<<10 {
		body = bytes.Clone(body) // the fetch's buffer was sized for a bigger body
	}
	e.rules, e.body, e.fresh = nil, body, rules
}

// take returns the rules of e's good copy for a load (e.fetch held).
func (e *entry) take() ([]acl.Rule, error) {
	switch {
	case e.rules != nil:
		return e.rules, nil
	case e.fresh != nil:
		rules := e.fresh
		e.fresh = nil
		return rules, nil
	}
	rules, err := Parse(e.r, e.body) // parsed once before: fails only if the parser changed
	return slices.Clip(rules), err
}

func refresh(r acl.Remote) time.Duration {
	if r.Refresh > 0 {
		return r.Refresh
	}
	return DefaultRefresh
}

func key(r acl.Remote) string {
	name := r.URL // not r.Name(): two URLs that differ only in a secret are two sources
	if r.Select != "" {
		name += "#" + r.Select
	}
	return r.Action.String() + " " + name
}

func (m *Manager) entry(r acl.Remote, dir string) *entry {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.entries[key(r)]
	if e == nil {
		e = &entry{r: r, dir: dir}
		m.entries[key(r)] = e
	}
	return e
}

// Retain marks the sources of the running config (the Used of its load): Run refreshes those
// only, and the others are forgotten.
func (m *Manager) Retain(used []acl.Remote) {
	keep := map[string]bool{}
	for _, r := range used {
		keep[key(r)] = true
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, e := range m.entries {
		if !keep[k] {
			delete(m.entries, k)
			m.count.DeleteLabelValues(e.r.Name())
			continue
		}
		e.active = true
	}
}

// Run refreshes the retained sources on their timers until ctx is done. When a refresh brings a
// changed list it calls reload (the daemon's one-at-a-time Reload), which picks the new copy up;
// a 304 or a refused list changes nothing. A failed refresh is tried again after a minute (or the
// refresh interval, if shorter).
func (m *Manager) Run(ctx context.Context, tick time.Duration, reload func(context.Context) error) {
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if m.RefreshDue(ctx) {
			_ = reload(ctx) // logs its outcome
		}
	}
}

// RefreshDue fetches every retained source whose copy is older than its refresh, and reports
// whether one changed.
func (m *Manager) RefreshDue(ctx context.Context) bool {
	m.mu.Lock()
	var due []*entry
	for _, e := range m.entries {
		due = append(due, e)
	}
	m.mu.Unlock()
	changed := false
	now := time.Now()
	for _, e := range due {
		e.fetch.Lock()
		if e.active && now.Sub(e.meta.Checked) >= refresh(e.r) && !now.Before(e.retry) {
			c, err := m.fetchLocked(ctx, e)
			if err != nil {
				e.retry = now.Add(min(time.Minute, refresh(e.r)))
				m.log.Warn("url include refresh failed; keeping the last good copy", "source", e.r.Name(), "fetched", e.meta.Fetched, "err", err)
			}
			changed = changed || c
		}
		e.fetch.Unlock()
	}
	return changed
}

// fetchLocked fetches e's source (e.fetch held) and, when the answer is a good list, makes it
// e's copy. It reports whether the copy changed.
func (m *Manager) fetchLocked(ctx context.Context, e *entry) (bool, error) {
	r := e.r
	name := r.Name()
	fail := func(reason string, err error) (bool, error) {
		m.failures.WithLabelValues(name, reason).Inc()
		return false, fmt.Errorf("%s: %w", redact.URL(r.URL), err)
	}
	timeout := m.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	body, meta, notModified, err := m.get(ctx, e)
	if err != nil {
		reason := "fetch"
		switch {
		case errors.Is(err, ErrStatus):
			reason = "status"
		case errors.Is(err, ErrTooLarge):
			reason = "too_large"
		}
		return fail(reason, err)
	}
	now := time.Now()
	if notModified || (e.good && meta.SHA256 == e.meta.SHA256) {
		e.meta.Checked = now
		if meta.ETag != "" && (meta.ETag != e.meta.ETag || meta.LastModified != e.meta.LastModified) {
			e.meta.ETag, e.meta.LastModified = meta.ETag, meta.LastModified
			m.saveMeta(e) // else nothing to keep: a restart asks again, conditionally
		}
		m.lastOK.WithLabelValues(name).Set(float64(now.Unix()))
		m.fetches.WithLabelValues(name, "unchanged").Inc()
		return false, nil
	}
	// The copy for state_dir is written and synced while the list is parsed and checked (the
	// two take about as long for a big list), and put in place only once it is found good.
	var save *staged
	if e.dir != "" {
		bodyPath, _ := cachePaths(e)
		save = stage(bodyPath, body)
	}
	rules, reason, err := m.check(e, body, meta.SHA256)
	if err != nil {
		save.abort()
		return fail(reason, err)
	}
	meta.Fetched, meta.Checked, meta.Entries = now, now, len(rules)
	e.keep(rules, body, meta)
	if err := save.commit(); err != nil {
		m.log.Warn("url include: cannot cache the copy", "source", name, "err", err)
	} else {
		m.saveMeta(e)
	}
	m.lastOK.WithLabelValues(name).Set(float64(now.Unix()))
	m.count.WithLabelValues(name).Set(float64(len(rules)))
	m.fetches.WithLabelValues(name, "changed").Inc()
	m.log.Info("url include fetched", "source", name, "entries", len(rules), "sha256", meta.SHA256[:12])
	return true, nil
}

// check parses body as e's list and applies the include's guards against the copy held.
func (m *Manager) check(e *entry, body []byte, sum string) ([]acl.Rule, string, error) {
	r := e.r
	if r.SHA256 != "" && sum != r.SHA256 {
		return nil, "pin", fmt.Errorf("%w: got %s", ErrPin, sum)
	}
	rules, err := Parse(r, body)
	if err != nil {
		return nil, "parse", err
	}
	if n := max(r.MinEntries, 1); len(rules) < n {
		return nil, "too_few", fmt.Errorf("%w: %d < %d", ErrTooFew, len(rules), n)
	}
	shrink := r.MaxShrink
	if shrink <= 0 {
		shrink = DefaultMaxShrink
	}
	if e.good && shrink < 1 && float64(len(rules)) < float64(e.meta.Entries)*(1-shrink) {
		return nil, "shrunk", fmt.Errorf("%w (%g): %d entries, was %d", ErrShrunk, shrink, len(rules), e.meta.Entries)
	}
	return slices.Clip(rules), "", nil
}

// Parse reads body as the list r names: a plain list (acl.ParseList), or with r.Select a JSON
// feed whose selected strings are prefixes. Rules get r.Action and Origins of r.Name() and the
// line (plain) or the position among the selected strings (JSON).
func Parse(r acl.Remote, body []byte) ([]acl.Rule, error) {
	if r.Select == "" {
		return acl.ParseListBytes(r.Name(), body, r.Action)
	}
	sel, err := ParseSelector(r.Select)
	if err != nil {
		return nil, err
	}
	strs, err := sel.Select(body)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", r.Name(), err)
	}
	rules := make([]acl.Rule, 0, len(strs))
	var errs strictyaml.Errors
	for i, s := range strs {
		p, err := acl.ParsePrefix(s)
		if err != nil {
			errs.At(r.Name(), i+1, s, err)
			continue
		}
		rules = append(rules, acl.Rule{Prefix: p, Action: r.Action, Origin: acl.Origin{File: r.Name(), Line: i + 1}})
	}
	if err := errs.Err(); err != nil {
		return nil, err
	}
	return rules, nil
}

// get fetches e's URL, conditionally when e holds a copy.
func (m *Manager) get(ctx context.Context, e *entry) (body []byte, meta Meta, notModified bool, err error) {
	r := e.r
	meta = Meta{URL: r.URL, Select: r.Select}
	limit := m.MaxSize
	if limit <= 0 {
		limit = acl.DefaultMaxFileSize
	}
	u, err := url.Parse(r.URL)
	if err != nil {
		return nil, meta, false, err
	}
	switch u.Scheme {
	case "file":
		body, _, err = safefile.ReadFile(ctx, u.Path, limit)
		if err != nil {
			return nil, meta, false, err
		}
	case "http", "https":
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.URL, nil)
		if err != nil {
			return nil, meta, false, err
		}
		if e.good {
			if e.meta.ETag != "" {
				req.Header.Set("If-None-Match", e.meta.ETag)
			}
			if e.meta.LastModified != "" {
				req.Header.Set("If-Modified-Since", e.meta.LastModified)
			}
		}
		req.Header.Set("User-Agent", "peergate")
		c := m.Client
		if c == nil {
			c = http.DefaultClient
		}
		resp, err := c.Do(req)
		if err != nil {
			return nil, meta, false, err
		}
		defer resp.Body.Close()
		if resp.StatusCode == http.StatusNotModified && e.good {
			meta.ETag, meta.LastModified = resp.Header.Get("ETag"), resp.Header.Get("Last-Modified")
			return nil, meta, true, nil
		}
		if resp.StatusCode != http.StatusOK {
			return nil, meta, false, fmt.Errorf("%w %s", ErrStatus, resp.Status)
		}
		// Size the buffer up front from Content-Length, else from the last body: growing a
		// big body by doubling copies it about twice over.
		hint := e.size
		if resp.ContentLength >= 0 {
			hint = resp.ContentLength
		}
		buf := bytes.NewBuffer(make([]byte, 0, min(hint, limit)+bytes.MinRead))
		_, err = buf.ReadFrom(io.LimitReader(resp.Body, limit+1))
		if err != nil { // cut short (Content-Length or chunking not met) or too slow
			return nil, meta, false, fmt.Errorf("reading the body: %w", err)
		}
		body = buf.Bytes()
		if int64(len(body)) > limit {
			return nil, meta, false, fmt.Errorf("%w (%d bytes)", ErrTooLarge, limit)
		}
		meta.ETag, meta.LastModified = resp.Header.Get("ETag"), resp.Header.Get("Last-Modified")
	default:
		return nil, meta, false, fmt.Errorf("%w: %q", ErrScheme, u.Scheme)
	}
	sum := sha256.Sum256(body)
	meta.SHA256 = hex.EncodeToString(sum[:])
	return body, meta, false, nil
}

// cachePaths returns the files of e's copy under state_dir/sources.
func cachePaths(e *entry) (body, meta string) {
	sum := sha256.Sum256([]byte(key(e.r)))
	base := filepath.Join(e.dir, "sources", hex.EncodeToString(sum[:12]))
	return base + ".body", base + ".json"
}

// readCache makes the copy in state_dir e's copy, when it is still a good list for e's include.
func (m *Manager) readCache(ctx context.Context, e *entry) {
	bodyPath, metaPath := cachePaths(e)
	raw, _, err := safefile.ReadFile(ctx, metaPath, 1<<20)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			m.log.Warn("url include: cannot read the cached copy", "source", e.r.Name(), "file", metaPath, "err", err)
		}
		return
	}
	var meta Meta
	if err := json.Unmarshal(raw, &meta); err != nil || meta.URL != e.r.URL || meta.Select != e.r.Select {
		m.log.Warn("url include: ignoring a cached copy that does not describe it", "source", e.r.Name(), "file", metaPath, "err", err)
		return
	}
	limit := m.MaxSize
	if limit <= 0 {
		limit = acl.DefaultMaxFileSize
	}
	body, _, err := safefile.ReadFile(ctx, bodyPath, limit)
	if err != nil {
		m.log.Warn("url include: cannot read the cached copy", "source", e.r.Name(), "file", bodyPath, "err", err)
		return
	}
	sum := sha256.Sum256(body)
	if hex.EncodeToString(sum[:]) != meta.SHA256 {
		m.log.Warn("url include: cached copy does not match its sha256; ignored", "source", e.r.Name(), "file", bodyPath)
		return
	}
	rules, _, err := m.check(e, body, meta.SHA256)
	if err != nil {
		m.log.Warn("url include: cached copy refused", "source", e.r.Name(), "file", bodyPath, "err", err)
		return
	}
	meta.Entries = len(rules)
	e.keep(rules, body, meta)
	m.count.WithLabelValues(e.r.Name()).Set(float64(len(rules)))
}

func (m *Manager) saveMeta(e *entry) {
	if e.dir == "" {
		return
	}
	_, metaPath := cachePaths(e)
	raw, _ := json.MarshalIndent(e.meta, "", "  ")
	if err := writeAtomic(metaPath, append(raw, '\n')); err != nil {
		m.log.Warn("url include: cannot cache the copy", "source", e.r.Name(), "err", err)
	}
}

func writeAtomic(path string, data []byte) error { return stage(path, data).commit() }

// staged is a file being written and synced in the background, beside the path it will replace.
type staged struct {
	path, tmp string
	done      chan struct{}
	err       error
}

// stage starts writing data to a temporary file in the directory of path; commit then renames it
// to path (an atomic replacement), abort removes it. data must not change until then.
func stage(path string, data []byte) *staged {
	s := &staged{path: path, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		s.tmp, s.err = writeTemp(path, data)
	}()
	return s
}

// commit waits for the write and puts the file in place; a nil s does nothing.
func (s *staged) commit() error {
	if s == nil {
		return nil
	}
	<-s.done
	if s.err != nil {
		return s.err
	}
	if err := os.Rename(s.tmp, s.path); err != nil {
		os.Remove(s.tmp)
		return err
	}
	return nil
}

// abort waits for the write and removes the file; a nil s does nothing.
func (s *staged) abort() {
	if s == nil {
		return
	}
	<-s.done
	if s.err == nil {
		os.Remove(s.tmp)
	}
}

// writeTemp writes data to a new temporary file in the directory of path, synced, and returns its
// name.
func writeTemp(path string, data []byte) (string, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return "", err
	}
	if err := safefile.WriteSynced(f, data); err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}
