// Package bans keeps a table of live bans: the layer of a peergate decision that comes before the
// static ACL. A ban is a prefix (a bare address is a /32 or /128), an origin (who made it: "api",
// "auto", "crowdsec"), a reason, when it was made and when it expires (or never). A peer inside
// any live ban is denied even when the ACL allows it; otherwise the ACL decides as before.
//
// A Table is what gate.Options.Bans takes:
//
//	t := bans.New(bans.Config{Guard: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/32")}})
//	ln := gate.NewListener(inner, rules, gate.Options{Bans: t})
//	t.Add(bans.Ban{Prefix: netip.MustParsePrefix("192.0.2.7/32"), Origin: "api", Reason: "scanner",
//		Expires: time.Now().Add(time.Hour)})
//	go func() { for range time.Tick(time.Second) { t.Expire(time.Now()) } }()
//
// Reads are lock-free: the table is an immutable snapshot behind an atomic pointer, so a lookup
// is one atomic load (and, with no bans, nothing more) followed by a binary search over the
// compiled range table package acl uses too (internal/rangetab), whose segments hold the deciding
// ban's expiry, so that Match answers from one table; it never allocates. Writers serialise on a mutex and
// publish a new snapshot, at a cost linear in the number of bans: add many at once with AddBatch.
//
// Semantics:
//   - Addresses and prefixes are normalised as by acl.ParsePrefix: an IPv4-mapped peer is judged
//     as IPv4, and a ::ffff:a.b.c.d/n ban (n ≥ 96) is the IPv4 ban /n-96.
//   - A ban is keyed by its prefix and origin: the same prefix banned again by the same origin
//     replaces the earlier ban (new reason, new expiry); different origins keep a ban each, and
//     the address stays banned until all are gone. Where bans nest, the one that lasts longest
//     is reported.
//   - Expired bans stop applying within a second and are dropped from memory by Expire, which
//     the owner calls at least once a second. A lookup checks the expiry of the ban it finds
//     against the table's clock, not the system's (a read of which costs more than the rest of
//     the lookup): Expire and every Add set that clock to the time they are given. An owner that
//     never calls Expire keeps applying expired bans until its next Add: calling it is required.
//   - The guard (Config.Guard: never_ban in the serve file) is a lockout guard: a ban that would
//     cover any guarded address is refused with ErrGuarded. Exclude cuts a wide range into the
//     pieces that spare the guarded addresses, for sources (such as CrowdSec) that cannot be
//     refused. Loopback is not guarded unless listed.
//   - The table is bounded: at Config.Max live bans (default 1 000 000) a new ban is refused
//     with ErrFull; replacing an existing one is still allowed.
//
// Subscribe reports every change of the set of banned prefixes, for a kernel filter that mirrors
// the layer.
package bans

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/peergate/peergate/gate"
	"github.com/peergate/peergate/internal/rangetab"
)

// Ban is one live denial; the type is gate.Ban, so that a Table is a gate.Bans.
type Ban = gate.Ban

// Origins of bans made by peergate itself.
const (
	OriginAPI      = "api"      // the admin API and the CLI
	OriginAuto     = "auto"     // automatic bans (ban_after)
	OriginCrowdSec = "crowdsec" // decisions read from a CrowdSec LAPI
)

// DefaultMax is the number of live bans a Table holds when Config.Max is 0.
const DefaultMax = 1_000_000

// MaxReason is the longest reason a ban may carry, in bytes.
const MaxReason = 256

// Errors of Add and AddBatch; test with errors.Is.
var (
	ErrInvalid = errors.New("invalid ban")
	ErrGuarded = errors.New("ban covers a never_ban address")
	ErrFull    = errors.New("ban table full")
)

// Config sets up a Table.
type Config struct {
	Max   int              // live bans at most; 0: DefaultMax
	Guard []netip.Prefix   // addresses never to ban (never_ban)
	Now   func() time.Time // the clock; nil: time.Now
}

// entry is a ban as the table stores it: 40 bytes and no pointer, so that the garbage collector
// need not scan a million of them.
type entry struct {
	first   u128   // first address
	created int64  // Unix nanoseconds
	expires int64  // Unix nanoseconds; 0: never
	reason  uint32 // index into the snapshot's reasons
	bits    uint8
	v6      bool
	origin  uint8 // index into the table's origins
}

func (e *entry) prefix() netip.Prefix {
	return netip.PrefixFrom(rangetab.Addr(e.first, !e.v6), int(e.bits))
}

func (e *entry) span() (first, last u128) {
	width := 32
	if e.v6 {
		width = 128
	}
	return e.first, e.first.AddLow(width - int(e.bits))
}

func (e *entry) live(now int64) bool { return e.expires == 0 || e.expires > now }

// compareEntries orders IPv4 before IPv6, then by first address, then wider prefixes first (so
// that a prefix comes before the prefixes it contains), then by origin.
func compareEntries(a, b *entry) int {
	if a.v6 != b.v6 {
		if !a.v6 {
			return -1
		}
		return 1
	}
	if c := cmp.Compare(a.first.Hi, b.first.Hi); c != 0 {
		return c
	}
	if c := cmp.Compare(a.first.Lo, b.first.Lo); c != 0 {
		return c
	}
	if c := cmp.Compare(a.bits, b.bits); c != 0 {
		return c
	}
	return cmp.Compare(a.origin, b.origin)
}

func samePrefix(a, b *entry) bool { return a.v6 == b.v6 && a.first == b.first && a.bits == b.bits }

// snapshot is one immutable state of a Table.
type snapshot struct {
	entries []entry  // sorted by compareEntries
	origins []string // append-only: shared between snapshots
	reasons []string // append-only between compactions: shared between snapshots
	t4      rangetab.Table4[hit]
	t6      rangetab.Table6[hit]
}

// Table is a set of bans, safe for concurrent use; it implements gate.Bans. Lookups are
// lock-free; writers serialise on a mutex and publish a new snapshot.
type Table struct {
	snap  atomic.Pointer[snapshot] // nil: no bans
	clock atomic.Int64             // Unix nanoseconds: the time lookups judge expiry by (see advance)

	mu      sync.Mutex
	max     int
	guard   []netip.Prefix
	now     func() time.Time
	entries []entry  // the published entries (also in snap)
	origins []string // by origin index
	reasons []string // by reason index; 0 is ""
	reasonN map[string]uint32
	subs    map[int]func(added, removed []netip.Prefix)
	nextSub int
}

// New returns an empty Table.
func New(c Config) *Table {
	t := &Table{max: c.Max, guard: normalGuard(c.Guard), now: c.Now, reasons: []string{""}, reasonN: map[string]uint32{"": 0}, subs: map[int]func(added, removed []netip.Prefix){}}
	if t.max <= 0 {
		t.max = DefaultMax
	}
	if t.now == nil {
		t.now = time.Now
	}
	t.clock.Store(t.now().UnixNano())
	return t
}

// advance sets the table's clock, by which lookups judge expiry, to now; t.mu is held. A lookup
// does not read the clock of the system (a call that costs more than the rest of the lookup):
// Expire, which the owner calls at least once a second, and every Add set this one, so an
// expired ban stops applying within that second. It follows the system clock backwards too: a
// clock that kept a later time after the system's was stepped back (NTP) would judge every new
// ban shorter than the step expired at once, and hand its peer on.
func (t *Table) advance(now time.Time) { t.clock.Store(now.UnixNano()) }

func normalGuard(g []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(g))
	for _, p := range g {
		if q, err := normal(p); err == nil {
			out = append(out, q)
		}
	}
	return out
}

// normal checks p and maps an IPv4-mapped prefix of length 96 or more to IPv4, as acl does.
func normal(p netip.Prefix) (netip.Prefix, error) {
	if !p.IsValid() {
		return netip.Prefix{}, fmt.Errorf("%w: prefix %v", ErrInvalid, p)
	}
	if p.Addr().Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%w: prefix %v has a zone", ErrInvalid, p)
	}
	if m := p.Masked(); m != p {
		return netip.Prefix{}, fmt.Errorf("%w: prefix %v has host bits set (did you mean %v?)", ErrInvalid, p, m)
	}
	if a := p.Addr(); a.Is4In6() {
		if p.Bits() < 96 {
			return p, nil
		}
		return netip.PrefixFrom(a.Unmap(), p.Bits()-96), nil
	}
	return p, nil
}

// SetMax changes the most live bans the table holds (0: DefaultMax). Bans already held beyond a
// lower cap stay until they expire or are removed; new ones are refused until there is room.
func (t *Table) SetMax(n int) {
	if n <= 0 {
		n = DefaultMax
	}
	t.mu.Lock()
	t.max = n
	t.mu.Unlock()
}

// Max returns the most live bans the table holds.
func (t *Table) Max() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.max
}

// Banned reports the live ban that covers addr, if any: it makes a Table a gate.Bans. It does not
// allocate.
func (t *Table) Banned(addr netip.Addr) (Ban, bool) { return t.Lookup(addr) }

// Lookup reports the live ban that covers addr (an IPv4-mapped address is looked up as IPv4).
// Where several cover it, it returns the one that lasts longest. It does not allocate.
func (t *Table) Lookup(addr netip.Addr) (Ban, bool) {
	m, ok := t.Match(addr)
	if !ok {
		return Ban{}, false
	}
	return m.Ban(), true
}

// Match is a live ban found by Table.Match: the decision that a peer is banned, and what it takes
// to name the ban (Ban) without another lookup.
type Match struct {
	s *snapshot
	i int
}

// Ban returns the ban matched, as Lookup would have.
func (m Match) Ban() Ban { return m.s.ban(&m.s.entries[m.i]) }

// Match reports whether a live ban covers addr, as Lookup does, reading only the compiled table:
// the ban itself is read and built by Match.Ban, for a caller that names it (a log line, an
// explanation). It is the cheaper question where only the decision is needed. It does not
// allocate.
func (t *Table) Match(addr netip.Addr) (Match, bool) {
	s := t.snap.Load()
	if s == nil {
		return Match{}, false
	}
	i, ok := s.find(addr, t.clock.Load())
	return Match{s, i}, ok
}

func (s *snapshot) ban(e *entry) Ban {
	b := Ban{Prefix: e.prefix(), Origin: s.origins[e.origin], Reason: s.reasons[e.reason], Created: time.Unix(0, e.created)}
	if e.expires != 0 {
		b.Expires = time.Unix(0, e.expires)
	}
	return b
}

// Len returns the number of bans held, including expired ones that Expire has not dropped yet.
func (t *Table) Len() int {
	if s := t.snap.Load(); s != nil {
		return len(s.entries)
	}
	return 0
}

// List returns the live bans, ordered by prefix (IPv4 first) and origin.
func (t *Table) List() []Ban {
	s := t.snap.Load()
	if s == nil {
		return []Ban{}
	}
	now := t.now().UnixNano()
	out := make([]Ban, 0, len(s.entries))
	for i := range s.entries {
		if e := &s.entries[i]; e.live(now) {
			out = append(out, s.ban(e))
		}
	}
	return out
}

// Count returns the number of live bans by origin.
func (t *Table) Count() map[string]int {
	out := map[string]int{}
	s := t.snap.Load()
	if s == nil {
		return out
	}
	now := t.now().UnixNano()
	for i := range s.entries {
		if e := &s.entries[i]; e.live(now) {
			out[s.origins[e.origin]]++
		}
	}
	return out
}

// Guard returns the guarded prefixes.
func (t *Table) Guard() []netip.Prefix {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.guard)
}

// Guarded reports the guarded prefix that p overlaps, if any.
func (t *Table) Guarded(p netip.Prefix) (netip.Prefix, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return guarded(t.guard, p)
}

func guarded(guard []netip.Prefix, p netip.Prefix) (netip.Prefix, bool) {
	for _, g := range guard {
		if g.Overlaps(p) {
			return g, true
		}
	}
	return netip.Prefix{}, false
}

// Add adds b, or replaces the ban of the same prefix and origin, and returns the ban as stored
// (prefix normalised, Created set to now when zero). The ban applies to the next lookup. It
// fails with an error wrapping ErrInvalid (no valid prefix, no origin, a reason longer than
// MaxReason, an expiry already past), ErrGuarded or ErrFull.
func (t *Table) Add(b Ban) (Ban, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	t.advance(now)
	e, err := t.entry(b, now)
	if err != nil {
		return Ban{}, err
	}
	i, found := slices.BinarySearchFunc(t.entries, &e, func(x entry, y *entry) int { return compareEntries(&x, y) })
	var es []entry
	if found {
		es = slices.Clone(t.entries)
		es[i] = e
	} else {
		if len(t.entries) >= t.max {
			return Ban{}, fmt.Errorf("%w: %d bans", ErrFull, t.max)
		}
		es = make([]entry, 0, len(t.entries)+1)
		es = append(append(append(es, t.entries[:i]...), e), t.entries[i:]...)
	}
	s := t.publish(es)
	return s.ban(&s.entries[i]), nil
}

// entry validates b and makes its entry; t.mu is held.
func (t *Table) entry(b Ban, now time.Time) (entry, error) {
	p, err := normal(b.Prefix)
	if err != nil {
		return entry{}, err
	}
	switch {
	case b.Origin == "":
		return entry{}, fmt.Errorf("%w: %v: no origin", ErrInvalid, p)
	case len(b.Reason) > MaxReason:
		return entry{}, fmt.Errorf("%w: %v: reason longer than %d bytes", ErrInvalid, p, MaxReason)
	case !b.Expires.IsZero() && !b.Expires.After(now):
		return entry{}, fmt.Errorf("%w: %v: expiry %s is past", ErrInvalid, p, b.Expires.UTC().Format(time.RFC3339))
	}
	if g, ok := guarded(t.guard, p); ok {
		return entry{}, fmt.Errorf("%w: %v covers %v", ErrGuarded, p, g)
	}
	o := slices.Index(t.origins, b.Origin)
	if o < 0 {
		if len(t.origins) == 256 {
			return entry{}, fmt.Errorf("%w: %v: too many origins", ErrInvalid, p)
		}
		o = len(t.origins)
		t.origins = append(t.origins, b.Origin)
	}
	first, _ := rangetab.Span(p)
	e := entry{first: first, bits: uint8(p.Bits()), v6: !p.Addr().Is4(), origin: uint8(o), reason: t.intern(b.Reason), created: b.Created.UnixNano()}
	if b.Created.IsZero() {
		e.created = now.UnixNano()
	}
	if !b.Expires.IsZero() {
		e.expires = b.Expires.UnixNano()
	}
	return e, nil
}

// intern returns the index of reason s, so that a million bans for "ssh-bf" share one copy.
func (t *Table) intern(s string) uint32 {
	if i, ok := t.reasonN[s]; ok {
		return i
	}
	i := uint32(len(t.reasons))
	t.reasons = append(t.reasons, s)
	t.reasonN[s] = i
	return i
}

// compactReasons drops the reasons that no entry of es uses any more, once they are the many,
// renumbering es in place (es is not published yet); t.mu is held.
func (t *Table) compactReasons(es []entry) {
	if len(t.reasons) <= 2*len(es)+1024 {
		return
	}
	used := make([]uint32, len(t.reasons)) // new index + 1
	reasons := []string{""}
	for i := range es {
		r := es[i].reason
		if r != 0 && used[r] == 0 {
			reasons = append(reasons, t.reasons[r])
			used[r] = uint32(len(reasons) - 1)
		}
		es[i].reason = used[r]
	}
	t.reasons = reasons
	t.reasonN = make(map[string]uint32, len(reasons))
	for i, r := range reasons {
		t.reasonN[r] = uint32(i)
	}
}

// AddBatch adds many bans under one new snapshot, as Add would one by one (a later ban of the
// same prefix and origin replaces an earlier one). It returns how many it stored and, for those it
// refused, an error joining the first few reasons and counting the rest; test it with errors.Is
// for ErrInvalid, ErrGuarded and ErrFull.
func (t *Table) AddBatch(bs []Ban) (added int, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	es, added, err := t.merged(t.entries, bs)
	if added > 0 {
		t.publish(es)
	}
	return added, err
}

// merged returns old with bs added (or replacing), without publishing; t.mu is held.
func (t *Table) merged(old []entry, bs []Ban) (es []entry, added int, err error) {
	now := t.now()
	t.advance(now)
	var errs batchErrors
	news := make([]entry, 0, len(bs))
	for _, b := range bs {
		e, err := t.entry(b, now)
		if err != nil {
			errs.add(err)
			continue
		}
		news = append(news, e)
	}
	// Sort, and keep the last of equals: the later ban replaces the earlier. (An index sort: a
	// stable sort of the entries themselves is several times slower.)
	order := make([]int32, len(news))
	for i := range order {
		order[i] = int32(i)
	}
	slices.SortFunc(order, func(a, b int32) int {
		if c := compareEntries(&news[a], &news[b]); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
	sorted := make([]entry, 0, len(news))
	for _, i := range order {
		if n := len(sorted); n > 0 && compareEntries(&sorted[n-1], &news[i]) == 0 {
			sorted[n-1] = news[i]
			continue
		}
		sorted = append(sorted, news[i])
	}
	news = sorted
	es = make([]entry, 0, min(len(old)+len(news), t.max))
	i, j := 0, 0
	for i < len(old) || j < len(news) {
		switch c := cmpAt(old, i, news, j); {
		case c < 0:
			es = append(es, old[i])
			i++
		case c == 0:
			es = append(es, news[j])
			added++
			i++
			j++
		default:
			if len(es)+(len(old)-i) >= t.max {
				errs.add(fmt.Errorf("%w: %d bans; %v refused", ErrFull, t.max, news[j].prefix()))
				j++
				continue
			}
			es = append(es, news[j])
			added++
			j++
		}
	}
	return es, added, errs.err()
}

// cmpAt compares a[i] with b[j], an exhausted side coming last.
func cmpAt(a []entry, i int, b []entry, j int) int {
	switch {
	case i == len(a):
		return 1
	case j == len(b):
		return -1
	}
	return compareEntries(&a[i], &b[j])
}

// batchErrors joins the first few errors of a batch and counts the rest.
type batchErrors struct {
	first []error
	more  int
}

func (b *batchErrors) add(err error) {
	if len(b.first) < 10 {
		b.first = append(b.first, err)
	} else {
		b.more++
	}
}

func (b *batchErrors) err() error {
	if b.more > 0 {
		b.first = append(b.first, fmt.Errorf("and %d more refused", b.more))
	}
	return errors.Join(b.first...)
}

// Remove removes every ban of prefix p (whatever its origin) and reports whether there was one.
func (t *Table) Remove(p netip.Prefix) bool { return t.RemoveOrigin(p, "") }

// RemoveOrigin removes the ban of prefix p made by origin ("" for every origin) and reports
// whether there was one.
func (t *Table) RemoveOrigin(p netip.Prefix, origin string) bool {
	p, err := normal(p)
	if err != nil {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	first, _ := rangetab.Span(p)
	key := entry{first: first, bits: uint8(p.Bits()), v6: !p.Addr().Is4()}
	return t.removeWhere(func(e *entry) bool {
		return samePrefix(e, &key) && (origin == "" || t.origins[e.origin] == origin)
	})
}

// removeWhere publishes the entries without those drop selects; t.mu is held.
func (t *Table) removeWhere(drop func(*entry) bool) bool {
	n := 0
	for i := range t.entries {
		if drop(&t.entries[i]) {
			n++
		}
	}
	if n == 0 {
		return false
	}
	es := make([]entry, 0, len(t.entries)-n)
	for i := range t.entries {
		if !drop(&t.entries[i]) {
			es = append(es, t.entries[i])
		}
	}
	t.publish(es)
	return true
}

// RemoveOriginAll removes every ban made by origin and returns how many there were (a CrowdSec
// resync starts from nothing).
func (t *Table) RemoveOriginAll(origin string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	o := slices.Index(t.origins, origin)
	if o < 0 {
		return 0
	}
	n := len(t.entries)
	t.removeWhere(func(e *entry) bool { return int(e.origin) == o })
	return n - len(t.entries)
}

// ReplaceOrigin makes bs the bans of origin (each b.Origin is set to origin), removing that
// origin's other bans, in one new snapshot: no lookup sees the table between the two (a resync
// from a source of truth, such as a CrowdSec startup stream). It returns how many of bs it stored
// and an error as AddBatch's for those it refused.
func (t *Table) ReplaceOrigin(origin string, bs []Ban) (added int, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	o := slices.Index(t.origins, origin)
	kept := make([]entry, 0, len(t.entries))
	for i := range t.entries {
		if o < 0 || int(t.entries[i].origin) != o {
			kept = append(kept, t.entries[i])
		}
	}
	for i := range bs {
		bs[i].Origin = origin
	}
	es, added, err := t.merged(kept, bs)
	if added > 0 {
		t.publish(es)
	} else if len(kept) != len(t.entries) {
		t.publish(kept)
	}
	return added, err
}

// Expire moves the table's clock to now, so that lookups no longer apply the bans expired by
// then, and drops those bans, returning how many: it gives back their memory and tells
// subscribers. Call it at least once a second.
func (t *Table) Expire(now time.Time) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.advance(now)
	n := len(t.entries)
	ns := now.UnixNano()
	t.removeWhere(func(e *entry) bool { return !e.live(ns) })
	return n - len(t.entries)
}

// SetGuard replaces the guard. Bans already in the table that cover a newly guarded address are
// cut with Exclude into the pieces that spare it (keeping their origin, reason and expiry); it
// returns the bans so cut.
func (t *Table) SetGuard(guard []netip.Prefix) []Ban {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.guard = normalGuard(guard)
	s := t.snap.Load()
	var cut []Ban
	var keep, pieces []entry
	for i := range t.entries {
		e := &t.entries[i]
		p := e.prefix()
		if _, ok := guarded(t.guard, p); !ok {
			keep = append(keep, *e)
			continue
		}
		cut = append(cut, s.ban(e))
		for _, q := range Exclude(p, t.guard) {
			f, _ := rangetab.Span(q)
			n := *e
			n.first, n.bits = f, uint8(q.Bits())
			pieces = append(pieces, n)
		}
	}
	if cut == nil {
		return nil
	}
	es := append(keep, pieces...)
	slices.SortFunc(es, func(a, b entry) int { return compareEntries(&a, &b) })
	es = slices.CompactFunc(es, func(a, b entry) bool { return compareEntries(&a, &b) == 0 })
	t.publish(es)
	return cut
}

// Exclude returns p minus the addresses of guard, as the fewest prefixes, in address order: p
// itself when no guarded prefix overlaps it, nothing when one contains it.
func Exclude(p netip.Prefix, guard []netip.Prefix) []netip.Prefix {
	p, err := normal(p)
	if err != nil {
		return nil
	}
	guard = normalGuard(guard)
	var out []netip.Prefix
	var walk func(q netip.Prefix)
	walk = func(q netip.Prefix) {
		overlap := false
		for _, g := range guard {
			if !g.Overlaps(q) {
				continue
			}
			if g.Bits() <= q.Bits() { // g contains q
				return
			}
			overlap = true
		}
		if !overlap {
			out = append(out, q)
			return
		}
		lo := netip.PrefixFrom(q.Addr(), q.Bits()+1)
		_, last := rangetab.Span(lo)
		hiAddr := rangetab.Addr(last.Next(), q.Addr().Is4())
		walk(lo)
		walk(netip.PrefixFrom(hiAddr, q.Bits()+1))
	}
	walk(p)
	return out
}

// Subscribe calls fn after every change of the set of banned prefixes, with the prefixes that
// became banned and those that no longer are (a prefix banned by two origins is added with the
// first and removed with the last). fn is called with the table locked, in order: it must be
// quick and must not call back into the table. cancel stops the calls. To start from the current
// state, list the table after subscribing.
func (t *Table) Subscribe(fn func(added, removed []netip.Prefix)) (cancel func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	id := t.nextSub
	t.nextSub++
	t.subs[id] = fn
	return func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		delete(t.subs, id)
	}
}

// Prefixes returns the distinct banned prefixes, expired or not, in table order.
func (t *Table) Prefixes() []netip.Prefix {
	t.mu.Lock()
	defer t.mu.Unlock()
	return distinct(t.entries)
}

func distinct(es []entry) []netip.Prefix {
	var out []netip.Prefix
	for i := range es {
		if i == 0 || !samePrefix(&es[i-1], &es[i]) {
			out = append(out, es[i].prefix())
		}
	}
	return out
}

// publish makes es (sorted, owned by the table from now on) the table's entries, compiles and
// stores the snapshot and tells subscribers; t.mu is held.
func (t *Table) publish(es []entry) *snapshot {
	t.compactReasons(es)
	old := t.entries
	t.entries = es
	s := &snapshot{entries: es, origins: t.origins, reasons: t.reasons}
	s.t4, s.t6 = compile(es)
	if len(es) == 0 {
		t.snap.Store(nil)
	} else {
		t.snap.Store(s)
	}
	if len(t.subs) > 0 {
		added, removed := diff(old, es)
		if len(added) > 0 || len(removed) > 0 {
			for _, fn := range t.subs {
				fn(added, removed)
			}
		}
	}
	return s
}

// diff returns the prefixes present in b and not a, and those in a and not b; both are sorted.
func diff(a, b []entry) (added, removed []netip.Prefix) {
	pa, pb := distinctEntries(a), distinctEntries(b)
	i, j := 0, 0
	for i < len(pa) || j < len(pb) {
		switch c := cmpPrefixAt(pa, i, pb, j); {
		case c < 0:
			removed = append(removed, pa[i].prefix())
			i++
		case c > 0:
			added = append(added, pb[j].prefix())
			j++
		default:
			i++
			j++
		}
	}
	return added, removed
}

func distinctEntries(es []entry) []*entry {
	out := make([]*entry, 0, len(es))
	for i := range es {
		if i == 0 || !samePrefix(&es[i-1], &es[i]) {
			out = append(out, &es[i])
		}
	}
	return out
}

func cmpPrefixAt(a []*entry, i int, b []*entry, j int) int {
	switch {
	case i == len(a):
		return 1
	case j == len(b):
		return -1
	}
	x, y := *a[i], *b[j]
	x.origin, y.origin = 0, 0
	return compareEntries(&x, &y)
}
