package bans

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)

// clock is a settable clock for tests.
type clock struct{ ns atomic.Int64 }

func newClock() *clock               { c := &clock{}; c.ns.Store(t0.UnixNano()); return c }
func (c *clock) now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *clock) add(d time.Duration) { c.ns.Add(int64(d)) }

// tick moves the table's clock to c's time, as Expire and Add do, without changing the table.
func tick(tb *Table, c *clock) {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	tb.advance(c.now())
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }
func ban(p, origin string, d time.Duration) Ban {
	b := Ban{Prefix: pfx(p), Origin: origin, Reason: "r-" + p}
	if d != 0 {
		b.Expires = t0.Add(d)
	}
	return b
}

func TestLookup(t *testing.T) {
	c := newClock()
	tb := New(Config{Now: c.now})
	for _, b := range []Ban{
		ban("192.0.2.0/24", OriginAPI, time.Hour),
		ban("192.0.2.7/32", OriginAuto, time.Minute),
		ban("198.51.100.0/24", OriginCrowdSec, 0),
		ban("198.51.100.9/32", OriginAPI, time.Minute),
		ban("2001:db8::/32", OriginAPI, 0),
		ban("2001:db8::1/128", OriginAuto, time.Minute),
	} {
		if _, err := tb.Add(b); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		addr, want string // want: the prefix of the ban reported, "" for none
		after      time.Duration
	}{
		{"192.0.2.1", "192.0.2.0/24", 0},
		{"192.0.2.7", "192.0.2.0/24", 0}, // the /24 lasts longer than the /32 inside it
		{"::ffff:192.0.2.7", "192.0.2.0/24", 0},
		{"198.51.100.9", "198.51.100.0/24", 0}, // no expiry outlasts any
		{"192.0.3.0", "", 0},
		{"192.0.1.255", "", 0},
		{"2001:db8::1", "2001:db8::/32", 0},
		{"2001:db9::", "", 0},
		{"10.0.0.1", "", 0},
		{"192.0.2.7", "192.0.2.0/24", 2 * time.Minute},
		{"192.0.2.7", "", time.Hour},
		{"192.0.2.7", "", 2 * time.Hour},
		{"198.51.100.9", "198.51.100.0/24", 2 * time.Hour},
	} {
		c.ns.Store(t0.Add(tc.after).UnixNano())
		tick(tb, c) // as Expire would, without dropping the expired bans: the lookup must skip them
		b, ok := tb.Lookup(addr(tc.addr))
		if m, mok := tb.Match(addr(tc.addr)); mok != ok {
			t.Errorf("%s at +%v: Match %v, Lookup %v", tc.addr, tc.after, mok, ok)
		} else if ok && m.Ban() != b {
			t.Errorf("%s at +%v: Match names %v, Lookup %v", tc.addr, tc.after, m.Ban(), b)
		}
		got := ""
		if ok {
			got = b.Prefix.String()
			if b.Reason != "r-"+got {
				t.Errorf("%s: reason %q", tc.addr, b.Reason)
			}
		}
		if got != tc.want {
			t.Errorf("%s at +%v: ban %q, want %q", tc.addr, tc.after, got, tc.want)
		}
	}
}

func TestAddErrors(t *testing.T) {
	c := newClock()
	tb := New(Config{Now: c.now, Max: 3, Guard: []netip.Prefix{pfx("10.0.0.1/32"), pfx("::ffff:10.9.0.0/112")}})
	long := make([]byte, MaxReason+1)
	for _, tc := range []struct {
		ban  Ban
		want error
	}{
		{Ban{Prefix: pfx("10.0.0.0/8"), Origin: "api"}, ErrGuarded},
		{Ban{Prefix: pfx("10.0.0.1/32"), Origin: "api"}, ErrGuarded},
		{Ban{Prefix: pfx("10.9.1.1/32"), Origin: "api"}, ErrGuarded},
		{Ban{Prefix: pfx("0.0.0.0/0"), Origin: "api"}, ErrGuarded},
		{Ban{Prefix: pfx("10.0.0.1/8"), Origin: "api"}, ErrInvalid},
		{Ban{Origin: "api"}, ErrInvalid},
		{Ban{Prefix: pfx("192.0.2.1/32")}, ErrInvalid},
		{Ban{Prefix: pfx("192.0.2.1/32"), Origin: "api", Reason: string(long)}, ErrInvalid},
		{Ban{Prefix: pfx("192.0.2.1/32"), Origin: "api", Expires: t0}, ErrInvalid},
		{Ban{Prefix: pfx("192.0.2.1/32"), Origin: "api"}, nil},
		{Ban{Prefix: pfx("192.0.2.2/32"), Origin: "api"}, nil},
		{Ban{Prefix: pfx("192.0.2.3/32"), Origin: "api"}, nil},
		{Ban{Prefix: pfx("192.0.2.4/32"), Origin: "auto"}, ErrFull},
		{Ban{Prefix: pfx("192.0.2.3/32"), Origin: "api", Reason: "again"}, nil}, // a replacement fits
	} {
		_, err := tb.Add(tc.ban)
		if !errors.Is(err, tc.want) || (err == nil) != (tc.want == nil) {
			t.Errorf("Add(%v %s): %v, want %v", tc.ban.Prefix, tc.ban.Origin, err, tc.want)
		}
	}
	if tb.Len() != 3 {
		t.Errorf("Len %d, want 3", tb.Len())
	}
	if b, _ := tb.Lookup(addr("192.0.2.3")); b.Reason != "again" {
		t.Errorf("replacement not applied: %v", b)
	}
}

func TestNormalise(t *testing.T) {
	tb := New(Config{})
	b, err := tb.Add(Ban{Prefix: pfx("::ffff:192.0.2.0/120"), Origin: "api"})
	if err != nil || b.Prefix != pfx("192.0.2.0/24") || b.Created.IsZero() {
		t.Fatalf("mapped prefix stored as %v (%v)", b, err)
	}
	if _, ok := tb.Lookup(addr("::ffff:192.0.2.9")); !ok {
		t.Error("mapped address not banned")
	}
	if !tb.Remove(pfx("192.0.2.0/24")) || tb.Remove(pfx("192.0.2.0/24")) || tb.Len() != 0 {
		t.Error("Remove")
	}
	if _, ok := tb.Lookup(addr("192.0.2.9")); ok {
		t.Error("still banned after Remove")
	}
}

func TestOrigins(t *testing.T) {
	tb := New(Config{})
	tb.Add(Ban{Prefix: pfx("192.0.2.7/32"), Origin: "api"})
	tb.Add(Ban{Prefix: pfx("192.0.2.7/32"), Origin: "crowdsec"})
	if tb.Len() != 2 || len(tb.Prefixes()) != 1 {
		t.Fatalf("Len %d, prefixes %v", tb.Len(), tb.Prefixes())
	}
	if !tb.RemoveOrigin(pfx("192.0.2.7/32"), "crowdsec") {
		t.Fatal("RemoveOrigin")
	}
	if b, ok := tb.Lookup(addr("192.0.2.7")); !ok || b.Origin != "api" {
		t.Fatalf("api ban lost with the crowdsec one: %v %v", b, ok)
	}
	if got := tb.Count(); got["api"] != 1 || len(got) != 1 {
		t.Errorf("Count %v", got)
	}
}

// TestClockSteppedBack: after the system clock is stepped back (NTP), a new ban applies at once
// and until its expiry by the clock of now, not by the later time the table saw before.
func TestClockSteppedBack(t *testing.T) {
	c := newClock()
	tb := New(Config{Now: c.now})
	c.add(time.Hour)
	tb.Expire(c.now())
	c.add(-time.Hour) // the step back
	if _, err := tb.Add(Ban{Prefix: pfx("192.0.2.7/32"), Origin: "api", Expires: c.now().Add(10 * time.Minute)}); err != nil {
		t.Fatal(err)
	}
	tb.Expire(c.now())
	if _, ok := tb.Lookup(addr("192.0.2.7")); !ok {
		t.Fatal("a ban added after the clock was stepped back does not apply")
	}
	c.add(11 * time.Minute)
	tb.Expire(c.now())
	if _, ok := tb.Lookup(addr("192.0.2.7")); ok {
		t.Error("the ban still applies after its expiry")
	}
}

func TestExpire(t *testing.T) {
	c := newClock()
	tb := New(Config{Now: c.now})
	var mu sync.Mutex
	var removed []netip.Prefix
	cancel := tb.Subscribe(func(a, r []netip.Prefix) { mu.Lock(); removed = append(removed, r...); mu.Unlock() })
	defer cancel()
	tb.AddBatch([]Ban{ban("192.0.2.1/32", "api", time.Second), ban("192.0.2.2/32", "api", time.Hour), ban("2001:db8::/48", "auto", time.Second)})
	c.add(time.Second)
	// Lookups judge expiry by the table's clock, which Expire and Add move: until one of them
	// runs (the owner calls Expire at least once a second), the ban still applies.
	if _, ok := tb.Lookup(addr("192.0.2.1")); !ok {
		t.Error("the table's clock moved by itself")
	}
	if _, err := tb.Add(ban("198.51.100.1/32", "api", time.Hour)); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"192.0.2.1", "2001:db8::1"} {
		if _, ok := tb.Lookup(addr(a)); ok {
			t.Errorf("expired ban of %s applies after the clock moved, before Expire", a)
		}
	}
	if _, ok := tb.Lookup(addr("192.0.2.2")); !ok {
		t.Error("live ban lost")
	}
	tb.Remove(pfx("198.51.100.1/32"))
	mu.Lock()
	removed = nil
	mu.Unlock()
	c.add(time.Second)
	if n := tb.Expire(c.now()); n != 2 || tb.Len() != 1 {
		t.Errorf("Expire dropped %d, %d left", n, tb.Len())
	}
	if want := []netip.Prefix{pfx("192.0.2.1/32"), pfx("2001:db8::/48")}; !slices.Equal(removed, want) {
		t.Errorf("subscriber saw removed %v, want %v", removed, want)
	}
	if l := tb.List(); len(l) != 1 || l[0].Prefix != pfx("192.0.2.2/32") {
		t.Errorf("List %v", l)
	}
}

func TestAddBatch(t *testing.T) {
	tb := New(Config{Max: 4, Guard: []netip.Prefix{pfx("10.0.0.1/32")}})
	tb.Add(Ban{Prefix: pfx("192.0.2.1/32"), Origin: "api", Reason: "old"})
	n, err := tb.AddBatch([]Ban{
		{Prefix: pfx("192.0.2.1/32"), Origin: "api", Reason: "mid"},
		{Prefix: pfx("192.0.2.1/32"), Origin: "api", Reason: "new"}, // the later wins
		{Prefix: pfx("10.0.0.0/8"), Origin: "crowdsec"},             // guarded
		{Prefix: pfx("192.0.2.2/32"), Origin: "crowdsec"},
		{Prefix: pfx("192.0.2.3/32"), Origin: "crowdsec"},
		{Prefix: pfx("192.0.2.4/32"), Origin: "crowdsec"},
		{Prefix: pfx("192.0.2.5/32"), Origin: "crowdsec"}, // over Max
	})
	if n != 4 || !errors.Is(err, ErrGuarded) || !errors.Is(err, ErrFull) || tb.Len() != 4 {
		t.Fatalf("AddBatch: %d, %v; Len %d", n, err, tb.Len())
	}
	if b, _ := tb.Lookup(addr("192.0.2.1")); b.Reason != "new" {
		t.Errorf("reason %q, want the later ban's", b.Reason)
	}
}

func TestExclude(t *testing.T) {
	for _, tc := range []struct {
		p     string
		guard []string
		want  []string
	}{
		{"192.0.2.0/24", nil, []string{"192.0.2.0/24"}},
		{"192.0.2.0/24", []string{"10.0.0.0/8"}, []string{"192.0.2.0/24"}},
		{"192.0.2.0/24", []string{"192.0.0.0/16"}, nil},
		{"192.0.2.0/30", []string{"192.0.2.1/32"}, []string{"192.0.2.0/32", "192.0.2.2/31"}},
		{"10.0.0.0/8", []string{"10.0.0.1/32", "10.255.255.255/32"}, nil}, // checked by count below
		{"::ffff:192.0.2.0/126", []string{"192.0.2.3/32"}, []string{"192.0.2.0/31", "192.0.2.2/32"}},
		{"2001:db8::/126", []string{"2001:db8::/128"}, []string{"2001:db8::1/128", "2001:db8::2/127"}},
	} {
		var g []netip.Prefix
		for _, s := range tc.guard {
			g = append(g, pfx(s))
		}
		got := Exclude(pfx(tc.p), g)
		if tc.p == "10.0.0.0/8" {
			if len(got) != 2*23 { // one prefix a level on each side
				t.Errorf("Exclude(%s): %d prefixes, want 46", tc.p, len(got))
			}
			for _, q := range got {
				for _, x := range g {
					if q.Overlaps(x) {
						t.Errorf("Exclude(%s) kept %v, which covers %v", tc.p, q, x)
					}
				}
			}
			continue
		}
		var want []netip.Prefix
		for _, s := range tc.want {
			want = append(want, pfx(s))
		}
		if !slices.Equal(got, want) {
			t.Errorf("Exclude(%s, %v) = %v, want %v", tc.p, tc.guard, got, want)
		}
	}
}

func TestSetGuard(t *testing.T) {
	tb := New(Config{})
	tb.Add(Ban{Prefix: pfx("192.0.2.0/30"), Origin: "crowdsec", Reason: "x"})
	cut := tb.SetGuard([]netip.Prefix{pfx("192.0.2.1/32")})
	if len(cut) != 1 {
		t.Fatalf("cut %v", cut)
	}
	if _, ok := tb.Lookup(addr("192.0.2.1")); ok {
		t.Error("guarded address still banned")
	}
	for _, a := range []string{"192.0.2.0", "192.0.2.2", "192.0.2.3"} {
		if b, ok := tb.Lookup(addr(a)); !ok || b.Reason != "x" {
			t.Errorf("%s: %v %v, want the rest of the range banned", a, b, ok)
		}
	}
}

// TestModel checks the table against a plain list of bans, through random adds, removes, expiry
// and lookups.
func TestModel(t *testing.T) {
	c := newClock()
	tb := New(Config{Now: c.now})
	type key struct {
		p netip.Prefix
		o string
	}
	model := map[key]Ban{}
	r := rand.New(rand.NewPCG(1, 2))
	randPrefix := func() netip.Prefix {
		if r.IntN(4) == 0 {
			b := [16]byte{0x20, 0x01, 0x0d, 0xb8, 0, byte(r.IntN(4))}
			b[15] = byte(r.IntN(8))
			return netip.PrefixFrom(netip.AddrFrom16(b), 112+r.IntN(17)).Masked()
		}
		a := netip.AddrFrom4([4]byte{192, 0, byte(r.IntN(4)), byte(r.IntN(64))})
		return netip.PrefixFrom(a, 20+r.IntN(13)).Masked()
	}
	origins := []string{"api", "auto", "crowdsec"}
	judged := c.now() // the table's clock: the time of the last Add or Expire
	for step := range 3000 {
		switch op := r.IntN(10); {
		case op < 4:
			b := Ban{Prefix: randPrefix(), Origin: origins[r.IntN(3)], Reason: "s"}
			if r.IntN(2) == 0 {
				b.Expires = c.now().Add(time.Duration(1+r.IntN(20)) * time.Second)
			}
			got, err := tb.Add(b)
			if err != nil {
				t.Fatal(err)
			}
			judged = c.now()
			model[key{got.Prefix, got.Origin}] = got
		case op < 5:
			p := randPrefix()
			had := false
			for k := range model {
				if k.p == p {
					delete(model, k)
					had = true
				}
			}
			if tb.Remove(p) != had {
				// an expired ban not yet dropped is still removable: accept either only then
				t.Fatalf("step %d: Remove(%v) disagrees (model had %v)", step, p, had)
			}
		case op < 6:
			c.add(time.Duration(r.IntN(3000)) * time.Millisecond)
			if r.IntN(2) == 0 {
				tb.Expire(c.now())
				judged = c.now()
				for k, b := range model {
					if !b.Expires.IsZero() && !b.Expires.After(c.now()) {
						delete(model, k)
					}
				}
			}
		default:
			for range 20 {
				p := randPrefix()
				a := p.Addr()
				_, ok := tb.Lookup(a)
				want := false
				for _, b := range model {
					if b.Prefix.Contains(a) && (b.Expires.IsZero() || b.Expires.After(judged)) {
						want = true
					}
				}
				if ok != want {
					t.Fatalf("step %d: Lookup(%v) = %v, want %v", step, a, ok, want)
				}
			}
		}
	}
}

func TestConcurrent(t *testing.T) {
	tb := New(Config{})
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				tb.Lookup(addr("192.0.2.7"))
				tb.List()
			}
		}()
	}
	for i := range 200 {
		tb.Add(Ban{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), 32), Origin: "api"})
	}
	close(stop)
	wg.Wait()
	if tb.Len() != 200 {
		t.Fatal(tb.Len())
	}
}

func TestLookupAllocs(t *testing.T) {
	tb := New(Config{})
	tb.Add(Ban{Prefix: pfx("192.0.2.0/24"), Origin: "api", Expires: time.Now().Add(time.Hour)})
	a := addr("192.0.2.7")
	if n := testing.AllocsPerRun(100, func() { tb.Lookup(a) }); n != 0 {
		t.Errorf("Lookup allocates %v times", n)
	}
	if n := testing.AllocsPerRun(100, func() { tb.Match(a) }); n != 0 {
		t.Errorf("Match allocates %v times", n)
	}
}

func TestReplaceOrigin(t *testing.T) {
	tb := New(Config{})
	var added, removed []netip.Prefix
	tb.Subscribe(func(a, r []netip.Prefix) { added, removed = append(added, a...), append(removed, r...) })
	tb.AddBatch([]Ban{{Prefix: pfx("192.0.2.1/32"), Origin: "crowdsec"}, {Prefix: pfx("192.0.2.2/32"), Origin: "crowdsec"},
		{Prefix: pfx("192.0.2.9/32"), Origin: "api"}})
	added, removed = nil, nil
	n, err := tb.ReplaceOrigin("crowdsec", []Ban{{Prefix: pfx("192.0.2.2/32")}, {Prefix: pfx("192.0.2.3/32")}})
	if n != 2 || err != nil {
		t.Fatal(n, err)
	}
	for a, want := range map[string]bool{"192.0.2.1": false, "192.0.2.2": true, "192.0.2.3": true, "192.0.2.9": true} {
		if _, ok := tb.Lookup(addr(a)); ok != want {
			t.Errorf("%s banned %v, want %v", a, ok, want)
		}
	}
	if !slices.Equal(added, []netip.Prefix{pfx("192.0.2.3/32")}) || !slices.Equal(removed, []netip.Prefix{pfx("192.0.2.1/32")}) {
		t.Errorf("subscriber: added %v removed %v", added, removed)
	}
	if n, _ := tb.ReplaceOrigin("crowdsec", nil); n != 0 || tb.Len() != 1 {
		t.Errorf("replace with nothing: Len %d", tb.Len())
	}
}

// TestExpiryInSecond: a segment holds its ban's expiry in whole seconds; within the second the
// ban expires in, the lookup goes by the nanosecond.
func TestExpiryInSecond(t *testing.T) {
	c := newClock()
	base := time.Unix(2_000_000_000, 0)
	c.ns.Store(base.UnixNano())
	tb := New(Config{Now: c.now})
	exp := base.Add(1500 * time.Millisecond)
	for _, b := range []Ban{
		{Prefix: pfx("192.0.2.1/32"), Origin: "api", Expires: exp},
		{Prefix: pfx("2001:db8::/64"), Origin: "api", Expires: exp},
		{Prefix: pfx("192.0.2.2/32"), Origin: "api", Expires: time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)}, // past 2106
	} {
		if _, err := tb.Add(b); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		at   time.Duration
		want bool
	}{{999 * time.Millisecond, true}, {1499 * time.Millisecond, true}, {1500 * time.Millisecond, false}, {1999 * time.Millisecond, false}, {3 * time.Second, false}} {
		c.ns.Store(base.Add(tc.at).UnixNano())
		tick(tb, c)
		for _, a := range []string{"192.0.2.1", "2001:db8::1"} {
			if _, ok := tb.Lookup(addr(a)); ok != tc.want {
				t.Errorf("%s at +%v: banned %v, want %v", a, tc.at, ok, tc.want)
			}
		}
		if _, ok := tb.Lookup(addr("192.0.2.2")); !ok {
			t.Errorf("ban to 2200 lost at +%v", tc.at)
		}
	}
}
