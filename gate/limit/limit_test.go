package limit

import (
	"errors"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"
)

// clock is a fake time source for a Limiter.
type clock struct{ ns int64 }

func (c *clock) advance(d time.Duration) { c.ns += int64(d) }

func TestLimiter(t *testing.T) {
	a := netip.MustParseAddr("192.0.2.1")
	for _, tc := range []struct {
		name  string
		cfg   Config
		steps []step
	}{
		{"rate and burst", Config{Rate: 2, Burst: 3}, []step{
			{a, 0, nil}, {a, 0, nil}, {a, 0, nil}, {a, 0, ErrRate}, // the burst, then empty
			{a, 499 * time.Millisecond, ErrRate}, {a, time.Millisecond, nil}, // one token per 500ms
			{a, 0, ErrRate},
		}},
		{"per source", Config{PerSource: 2}, []step{
			{a, 0, nil}, {a, 0, nil}, {a, 0, ErrConcurrency}, {netip.MustParseAddr("192.0.2.2"), 0, nil},
		}},
		{"per /24", Config{PerSource: 1, IPv4Prefix: 24, IPv6Prefix: 64}, []step{
			{a, 0, nil}, {netip.MustParseAddr("192.0.2.200"), 0, ErrConcurrency},
			{netip.MustParseAddr("::ffff:192.0.2.9"), 0, ErrConcurrency}, // mapped is the same source
			{netip.MustParseAddr("2001:db8::1"), 0, nil}, {netip.MustParseAddr("2001:db8::ffff:1"), 0, ErrConcurrency},
			{netip.MustParseAddr("2001:db8:0:1::1"), 0, nil},
		}},
		{"default prefixes: an IPv4 address, an IPv6 /64", Config{PerSource: 1}, []step{
			{a, 0, nil}, {netip.MustParseAddr("192.0.2.2"), 0, nil},
			{netip.MustParseAddr("2001:db8::1"), 0, nil}, {netip.MustParseAddr("2001:db8::2"), 0, ErrConcurrency},
			{netip.MustParseAddr("2001:db8::ffff:ffff:ffff:ffff"), 0, ErrConcurrency},
			{netip.MustParseAddr("2001:db8:0:1::1"), 0, nil},
		}},
		{"a refused rate costs no slot", Config{PerSource: 1, Rate: 1, Burst: 1}, []step{
			{a, 0, nil}, {a, 0, ErrRate}, {a, time.Second, ErrConcurrency},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := New(tc.cfg)
			c := &clock{}
			l.now = func() int64 { return c.ns }
			for i, s := range tc.steps {
				c.advance(s.wait)
				_, err := l.Admit(s.addr)
				if !errors.Is(err, s.err) || (err == nil) != (s.err == nil) {
					t.Fatalf("step %d (%v after %v): %v, want %v", i, s.addr, s.wait, err, s.err)
				}
			}
		})
	}
}

type step struct {
	addr netip.Addr
	wait time.Duration
	err  error
}

// Release gives the slot back, and a source with nothing open and a full bucket leaves the table.
func TestLimiterRelease(t *testing.T) {
	l := New(Config{PerSource: 1})
	a := netip.MustParseAddr("127.0.0.1")
	rel, err := l.Admit(a)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Admit(a); !errors.Is(err, ErrConcurrency) {
		t.Fatalf("second conn: %v", err)
	}
	rel()
	if n := l.Len(); n != 0 {
		t.Errorf("%d sources after the last release, want 0", n)
	}
	if _, err := l.Admit(a); err != nil {
		t.Errorf("after release: %v", err)
	}
}

// A million distinct sources never grow the table past MaxSources; sources with open connections
// are never evicted (their caps hold), and a source that keeps coming keeps its bucket.
func TestLimiterBoundedUnderFlood(t *testing.T) {
	const cap = 10_000
	l := New(Config{PerSource: 2, Rate: 1, Burst: 1, MaxSources: cap})
	c := &clock{}
	l.now = func() int64 { return c.ns }
	held := netip.MustParseAddr("198.51.100.7")
	if _, err := l.Admit(held); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Admit(held); !errors.Is(err, ErrRate) {
		t.Fatalf("hammering source: %v", err)
	}
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	peak := 0
	for i := range 1_000_000 {
		c.advance(time.Microsecond)
		var b [4]byte
		b[0], b[1], b[2], b[3] = 10, byte(i>>16), byte(i>>8), byte(i)
		rel, err := l.Admit(netip.AddrFrom4(b))
		if err != nil {
			t.Fatalf("source %d: %v", i, err)
		}
		rel() // the flood's connections close (a spoofed SYN never even opens one)
		if i%1000 == 0 {
			peak = max(peak, l.Len())
			if _, err := l.Admit(held); !errors.Is(err, ErrRate) && !errors.Is(err, ErrConcurrency) && err != nil {
				t.Fatal(err)
			}
		}
	}
	peak = max(peak, l.Len())
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	t.Logf("1M sources: peak %d entries (cap %d), %d evicted, heap %+.1f MB", peak, cap, l.Evicted(),
		float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/1e6)
	if peak > cap {
		t.Errorf("table reached %d entries, cap %d", peak, cap)
	}
	l.mu.Lock()
	e := l.m[held]
	l.mu.Unlock()
	if e == nil || e.active == 0 {
		t.Fatal("the source with an open connection was evicted")
	}
}

// A table full of sources with open connections refuses new sources rather than forget a cap.
func TestLimiterTableFull(t *testing.T) {
	l := New(Config{PerSource: 1, MaxSources: 4})
	for i := range 4 {
		if _, err := l.Admit(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)})); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.Admit(netip.MustParseAddr("10.0.0.9")); !errors.Is(err, ErrTableFull) {
		t.Errorf("fifth source: %v, want ErrTableFull", err)
	}
}

// Concurrent admissions and releases keep the count exact (run with -race).
func TestLimiterConcurrent(t *testing.T) {
	l := New(Config{PerSource: 3})
	a := netip.MustParseAddr("127.0.0.1")
	var wg sync.WaitGroup
	var mu sync.Mutex
	open, peak := 0, 0
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 2000 {
				rel, err := l.Admit(a)
				if err != nil {
					continue
				}
				mu.Lock()
				open++
				peak = max(peak, open)
				mu.Unlock()
				mu.Lock()
				open--
				mu.Unlock()
				rel()
			}
		}()
	}
	wg.Wait()
	if peak > 3 {
		t.Errorf("%d open at once, cap 3", peak)
	}
	if n := l.Len(); n != 0 {
		t.Errorf("%d sources left", n)
	}
}

// Sources holding connections open must not crowd out idle entries at eviction: with a quarter
// of the table held by long-lived sources, a stream of new sources is never refused.
func TestLimiterEvictsAroundOpenSources(t *testing.T) {
	l := New(Config{PerSource: 4, Rate: 1, Burst: 1, MaxSources: 64})
	var held []func()
	for i := range 16 {
		release, err := l.Admit(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}))
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, release)
	}
	for i := range 2000 {
		release, err := l.Admit(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}))
		if err != nil {
			t.Fatalf("new source %d refused with %d entries, 16 of them open: %v", i, l.Len(), err)
		}
		release()       // a short connection: its bucket is empty, so the entry stays until evicted
		if i%100 == 0 { // the long-lived sources connect again now and then
			if r, err := l.Admit(netip.AddrFrom4([4]byte{10, 0, 0, byte(i / 100 % 16)})); err == nil {
				r()
			}
		}
	}
	if n := l.Len(); n > 64 {
		t.Errorf("%d entries, cap 64", n)
	}
	for _, r := range held {
		r()
	}
}
