package serve

import (
	"container/list"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/peergate/peergate/gate"
	"github.com/peergate/peergate/gate/bans"
	"github.com/peergate/peergate/gate/limit"
	"github.com/peergate/peergate/internal/config"
)

// autoBan counts, per source, a service's ACL denials and per-source limit refusals, and bans a
// source that collects ban_after's count of either within its window (fail2ban's maxretry and
// findtime). A source is the client address masked to per_source_prefix. The counting table is
// bounded like gate/limit's: at most max entries, the least recently seen forgotten first.
// observe runs on the accept path: it only counts, and hands bans to the server's banner.
type autoBan struct {
	cfg      config.BanAfter
	service  string
	bits4    int
	bits6    int
	max      int
	now      func() time.Time
	ban      func(bans.Ban) // hands a ban over to be applied
	mu       sync.Mutex
	lru      *list.List // of *source, most recent first
	bySource map[netip.Prefix]*list.Element
}

type source struct {
	p               netip.Prefix
	first           time.Time // start of the window
	denials, limits int
}

func newAutoBan(c *config.Service, ban func(bans.Ban)) *autoBan {
	lc := limitConfig(c).WithDefaults()
	max := lc.MaxSources
	if max == 0 {
		max = limit.DefaultMaxSources
	}
	return &autoBan{cfg: *c.BanAfter, service: c.Name, bits4: lc.IPv4Prefix, bits6: lc.IPv6Prefix, max: max,
		now: time.Now, ban: ban, lru: list.New(), bySource: map[netip.Prefix]*list.Element{}}
}

// same reports whether a keeps counting as c asks, so that a reload keeps its counts.
func (a *autoBan) same(c *config.Service) bool {
	lc := limitConfig(c).WithDefaults()
	return c.BanAfter != nil && *c.BanAfter == a.cfg && lc.IPv4Prefix == a.bits4 && lc.IPv6Prefix == a.bits6
}

// observe counts one judged connection.
func (a *autoBan) observe(ev gate.Event) {
	if ev.Err != nil || ev.Ban != nil || ev.HandedOn || ev.Peer.Unix {
		return // not judged, already banned, let in (dry_run too: it must not enforce)
	}
	limitHit := ev.Limit != nil
	if !limitHit && ev.Decision.Allowed() {
		return
	}
	addr := ev.Peer.AddrPort.Addr().Unmap()
	bits := a.bits6
	if addr.Is4() {
		bits = a.bits4
	}
	p, err := addr.Prefix(bits)
	if err != nil {
		return
	}
	now := a.now()
	a.mu.Lock()
	e := a.bySource[p]
	if e == nil {
		if a.lru.Len() >= a.max {
			old := a.lru.Back()
			delete(a.bySource, old.Value.(*source).p)
			a.lru.Remove(old)
		}
		e = a.lru.PushFront(&source{p: p, first: now})
		a.bySource[p] = e
	} else {
		a.lru.MoveToFront(e)
	}
	s := e.Value.(*source)
	if now.Sub(s.first) > a.cfg.Within {
		s.first, s.denials, s.limits = now, 0, 0
	}
	if limitHit {
		s.limits++
	} else {
		s.denials++
	}
	var reason string
	switch {
	case a.cfg.Denials > 0 && s.denials >= a.cfg.Denials:
		reason = fmt.Sprintf("%d denials in %s (service %s)", s.denials, a.cfg.Within, a.service)
	case a.cfg.LimitHits > 0 && s.limits >= a.cfg.LimitHits:
		reason = fmt.Sprintf("%d limit hits in %s (service %s)", s.limits, a.cfg.Within, a.service)
	}
	if reason != "" { // start over: the ban denies it from now on, and is not counted
		delete(a.bySource, p)
		a.lru.Remove(e)
	}
	a.mu.Unlock()
	if reason != "" {
		b := bans.Ban{Prefix: p, Origin: bans.OriginAuto, Reason: reason, Created: now}
		if a.cfg.For > 0 {
			b.Expires = now.Add(a.cfg.For)
		}
		a.ban(b)
	}
}

// banner applies auto-bans off the accept path: a table write costs a rebuild, so bans are
// collected and added in batches, at most 10 ms after the first of a batch. The queue is
// bounded; a ban that finds it full is refused and counted (the source keeps being denied or
// limited, and is counted again).
type banner struct {
	s    *Server
	q    chan bans.Ban
	done <-chan struct{}
}

func newBanner(s *Server, done <-chan struct{}) *banner {
	b := &banner{s: s, q: make(chan bans.Ban, 4096), done: done}
	go b.run()
	return b
}

func (b *banner) add(ban bans.Ban) {
	select {
	case b.q <- ban:
	default:
		b.s.m.bansRefused.WithLabelValues("full").Inc()
	}
}

func (b *banner) run() {
	for {
		var batch []bans.Ban
		select {
		case <-b.done:
			return
		case first := <-b.q:
			batch = append(batch, first)
		}
		t := time.NewTimer(10 * time.Millisecond)
	collect:
		for len(batch) < cap(b.q) {
			select {
			case x := <-b.q:
				batch = append(batch, x)
			case <-t.C:
				break collect
			}
		}
		t.Stop()
		b.apply(batch)
	}
}

func (b *banner) apply(batch []bans.Ban) {
	s := b.s
	var ok []bans.Ban
	for _, x := range batch {
		if g, guarded := s.bans.Guarded(x.Prefix); guarded {
			s.m.bansRefused.WithLabelValues("guarded").Inc()
			s.log.Warn("auto-ban refused: never_ban", "source", x.Prefix.String(), "never_ban", g.String(), "reason", x.Reason)
			continue
		}
		ok = append(ok, x)
	}
	n, err := s.bans.AddBatch(ok)
	if err != nil {
		s.refused(err)
		s.log.Warn("auto-bans refused", "added", n, "err", err)
	}
	for _, x := range ok {
		if r := s.reporter; r != nil {
			r.report(x)
		}
		s.log.Info("auto-ban", "ban", x.Prefix.String(), "origin", x.Origin, "reason", x.Reason, "expires", x.ExpiresString())
	}
	if n > 0 {
		s.saveBans()
	}
}
