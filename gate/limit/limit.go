// Package limit caps connections per source address: how many may be open at once (xinetd's
// per_source) and how fast new ones may come (a token bucket per source, xinetd's cps, HAProxy's
// stick-table conn_rate). A source is an address masked to a prefix (a /24 or a /64, say), so a
// client cannot dodge the limit by hopping addresses inside its own network.
//
// The table of sources is bounded: a source that holds no open connection and whose bucket has
// refilled carries no state worth keeping and is dropped, and when the table is full the least
// recently seen idle source makes room. A flood from a million spoofed sources therefore costs
// at most Config.MaxSources entries, and a source that keeps hammering stays at the recent end of
// the table, so its bucket is not forgotten.
package limit

import (
	"errors"
	"math"
	"net/netip"
	"sync"
	"time"
)

// Why Admit refuses a connection.
var (
	ErrConcurrency = errors.New("too many open connections from this source")
	ErrRate        = errors.New("connection rate from this source over the limit")
	ErrTableFull   = errors.New("source table full of sources with open connections")
)

// DefaultMaxSources is the size of the source table when Config.MaxSources is 0.
const DefaultMaxSources = 1 << 16

// The prefix lengths that make a source when Config.IPv4Prefix or Config.IPv6Prefix is 0: a
// whole IPv4 address, and an IPv6 /64, the smallest network a host is normally given (SLAAC and
// privacy addresses let one host use any address of its /64).
const (
	DefaultIPv4Prefix = 32
	DefaultIPv6Prefix = 64
)

// evictScan bounds how many entries at the old end of the table one admission looks at, to drop
// idle ones or to make room: the cost per connection stays constant.
const evictScan = 8

// Config sets the limits. The zero value limits nothing.
type Config struct {
	// PerSource caps the open connections of one source; 0 means no cap.
	PerSource int
	// Rate is the sustained rate of new connections one source may make, per second; 0 means
	// no rate limit.
	Rate float64
	// Burst is how many connections a source may make at once before Rate applies; 0 means
	// max(1, Rate).
	Burst int
	// IPv4Prefix and IPv6Prefix are the prefix lengths that make a source: an address is
	// masked to them. 0 means DefaultIPv4Prefix (a whole address) and DefaultIPv6Prefix (a /64:
	// one host is routinely given a whole /64, so a /128 would let it take as many slots as it
	// has addresses).
	IPv4Prefix, IPv6Prefix int
	// MaxSources caps the entries of the source table; 0 means DefaultMaxSources. With
	// PerSource, a source holding an open connection cannot be evicted, so a table full of them
	// refuses every new source (ErrTableFull): make MaxSources at least the number of
	// connections that can be open (and admitted) at once.
	MaxSources int
}

// Enabled reports whether c limits anything.
func (c Config) Enabled() bool { return c.PerSource > 0 || c.Rate > 0 }

// Limiter enforces a Config. Its methods are safe for concurrent use.
type Limiter struct {
	cfg   Config
	burst float64
	full  int64 // nanoseconds for an empty bucket to refill; 0 without a rate
	epoch time.Time
	now   func() int64 // nanoseconds since epoch; a test can replace it

	mu         sync.Mutex
	m          map[netip.Addr]*entry
	head, tail *entry // most and least recently seen
	// Counters, for tests and metrics.
	evicted uint64
}

// entry is one source: its open connections and its token bucket.
type entry struct {
	key        netip.Addr
	active     int
	tokens     float64
	last       int64 // when tokens was last brought up to date
	prev, next *entry
	linked     bool // in the recency list: exactly the entries with no open connection
}

// WithDefaults returns c with every zero or out-of-range field set to what a Limiter uses.
func (c Config) WithDefaults() Config {
	if c.Burst <= 0 {
		c.Burst = max(1, int(c.Rate))
	}
	if c.IPv4Prefix <= 0 || c.IPv4Prefix > 32 {
		c.IPv4Prefix = DefaultIPv4Prefix
	}
	if c.IPv6Prefix <= 0 || c.IPv6Prefix > 128 {
		c.IPv6Prefix = DefaultIPv6Prefix
	}
	if c.MaxSources <= 0 {
		c.MaxSources = DefaultMaxSources
	}
	return c
}

// New returns a Limiter for cfg.
func New(cfg Config) *Limiter {
	cfg = cfg.WithDefaults()
	l := &Limiter{cfg: cfg, burst: float64(cfg.Burst), epoch: time.Now(), m: map[netip.Addr]*entry{}}
	if cfg.Rate > 0 {
		l.full = int64(min(float64(cfg.Burst)/cfg.Rate*1e9, math.MaxInt64/2)) // no overflow for absurd rates
	}
	l.now = func() int64 { return int64(time.Since(l.epoch)) }
	return l
}

// Config returns the limiter's configuration, with defaults filled in.
func (l *Limiter) Config() Config { return l.cfg }

// Source returns the source that addr counts against: addr (unmapped) masked to the configured
// prefix length of its family.
func (l *Limiter) Source(addr netip.Addr) netip.Addr {
	addr = addr.Unmap().WithZone("")
	bits := l.cfg.IPv6Prefix
	if addr.Is4() {
		bits = l.cfg.IPv4Prefix
	}
	p, err := addr.Prefix(bits)
	if err != nil { // the zero Addr
		return addr
	}
	return p.Addr()
}

// Admit decides whether a new connection from addr is within the limits. When it is, and a
// per-source cap is set, it returns a release func that must be called exactly once when the
// connection closes; otherwise release is nil. When it is not, the error wraps ErrConcurrency,
// ErrRate or ErrTableFull.
func (l *Limiter) Admit(addr netip.Addr) (release func(), err error) {
	key := l.Source(addr)
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	l.sweep(now)
	e := l.m[key]
	if e == nil {
		if len(l.m) >= l.cfg.MaxSources && !l.makeRoom() {
			return nil, ErrTableFull
		}
		e = &entry{key: key, tokens: l.burst, last: now}
		l.m[key] = e
	} else {
		l.unlink(e)
	}
	// Seen now: back to the recent end, unless it holds connections, which keep it out of the
	// list (and so out of eviction's way) until release.
	defer func() {
		if e.active == 0 {
			l.pushFront(e)
		}
	}()
	if l.cfg.Rate > 0 {
		e.tokens = min(l.burst, e.tokens+float64(now-e.last)*l.cfg.Rate/1e9)
		e.last = now
		if e.tokens < 1 {
			return nil, ErrRate
		}
	}
	if l.cfg.PerSource > 0 && e.active >= l.cfg.PerSource {
		return nil, ErrConcurrency
	}
	if l.cfg.Rate > 0 {
		e.tokens--
	}
	if l.cfg.PerSource == 0 {
		return nil, nil
	}
	e.active++
	return func() { l.release(e) }, nil
}

func (l *Limiter) release(e *entry) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e.active--
	switch {
	case e.active > 0:
	case l.idle(e, l.now()):
		l.remove(e)
	default:
		l.pushFront(e)
	}
}

// idle reports whether e carries no state: no open connection and a full bucket.
func (l *Limiter) idle(e *entry, now int64) bool {
	return e.active == 0 && (l.full == 0 || now-e.last >= l.full)
}

// sweep drops idle entries from the old end of the table, a few per call.
func (l *Limiter) sweep(now int64) {
	for range evictScan {
		e := l.tail
		if e == nil || !l.idle(e, now) {
			return
		}
		l.remove(e)
	}
}

// makeRoom evicts the least recently seen entry without open connections (the list holds only
// those). It fails only when every source in the table has a connection open.
func (l *Limiter) makeRoom() bool {
	e := l.tail
	if e == nil {
		return false
	}
	l.remove(e)
	l.evicted++
	return true
}

// Len returns the number of sources in the table.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m)
}

// Evicted returns how many sources with no open connection were dropped to make room in a full
// table: under a flood of distinct sources, how much rate state may have been forgotten.
func (l *Limiter) Evicted() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.evicted
}

func (l *Limiter) remove(e *entry) {
	l.unlink(e)
	delete(l.m, e.key)
}

func (l *Limiter) pushFront(e *entry) {
	e.linked = true
	e.prev, e.next = nil, l.head
	if l.head != nil {
		l.head.prev = e
	}
	l.head = e
	if l.tail == nil {
		l.tail = e
	}
}

func (l *Limiter) unlink(e *entry) {
	if !e.linked {
		return
	}
	e.linked = false
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		l.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		l.tail = e.prev
	}
	e.prev, e.next = nil, nil
}
