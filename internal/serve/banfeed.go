package serve

import (
	"log/slog"
	"net/netip"
	"sync"

	"github.com/peergate/peergate/gate/bans"
	"github.com/peergate/peergate/gate/kfilter"
)

// banFeed mirrors the ban table into a listener's eBPF filter: it subscribes to the table's
// changes and applies them, in order, from a goroutine of its own (the table calls subscribers
// with its lock held, and the filter's own lock is taken around the table's elsewhere). A new
// filter is brought to the whole table first (resync), then kept up by the deltas; a delta that
// the resync already included is harmless, since each prefix ends in the state of its last delta.
type banFeed struct {
	t      *bans.Table
	log    *slog.Logger
	cancel func()
	wake   chan struct{}

	mu     sync.Mutex
	q      [][2][]netip.Prefix // added, removed
	f      *kfilter.EBPF       // the filter fed; nil: none
	resync bool
	closed bool
}

func newBanFeed(t *bans.Table, log *slog.Logger) *banFeed {
	b := &banFeed{t: t, log: log, wake: make(chan struct{}, 1)}
	b.cancel = t.Subscribe(func(added, removed []netip.Prefix) {
		b.mu.Lock()
		if b.f != nil {
			b.q = append(b.q, [2][]netip.Prefix{added, removed})
		}
		b.mu.Unlock()
		b.poke()
	})
	go b.run()
	return b
}

func (b *banFeed) poke() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// use makes f the filter fed (nil: none), starting with the whole table.
func (b *banFeed) use(f *kfilter.EBPF) {
	b.mu.Lock()
	if b.f != f {
		b.f, b.q, b.resync = f, nil, f != nil
	}
	b.mu.Unlock()
	b.poke()
}

func (b *banFeed) close() {
	b.cancel()
	b.mu.Lock()
	b.closed, b.f, b.q = true, nil, nil
	b.mu.Unlock()
	b.poke()
}

func (b *banFeed) run() {
	for range b.wake {
		for {
			b.mu.Lock()
			if b.closed {
				b.mu.Unlock()
				return
			}
			f, resync, q := b.f, b.resync, b.q
			b.resync, b.q = false, nil
			b.mu.Unlock()
			if f == nil || !resync && len(q) == 0 {
				break
			}
			if resync {
				if err := f.UpdateBans(b.t.Prefixes(), nil); err != nil {
					b.log.Warn("kernel filter: bans not loaded; the gate still denies them", "err", err)
				}
			}
			for _, d := range q {
				if err := f.UpdateBans(d[0], d[1]); err != nil {
					b.log.Warn("kernel filter: bans not updated; the gate still judges them", "err", err)
				}
			}
		}
	}
}
