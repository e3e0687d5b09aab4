package serve

import (
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"path/filepath"
	"sync"
	"time"

	"github.com/peergate/peergate/acl"
	"github.com/peergate/peergate/gate"
	"github.com/peergate/peergate/internal/config"
)

// MaxRecentPeers is how many distinct recent peers a service remembers for what-if questions:
// the most recently seen, about 64 bytes each (640 KB a service at the most).
const MaxRecentPeers = 10_000

// recentPeerBytes is the approximate memory one remembered peer takes (ring entry + map entry).
const recentPeerBytes = 64

// recentPeers remembers the last MaxRecentPeers distinct IP peers of a service: a ring of
// addresses in the order they were last seen, overwritten oldest first, and an index.
type recentPeers struct {
	mu   sync.Mutex
	ring []recentPeer
	next int
	idx  map[netip.Addr]int
}

type recentPeer struct {
	addr netip.Addr
	last time.Time
}

// add records a as seen now.
func (r *recentPeers) add(a netip.Addr, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.idx == nil {
		r.idx = make(map[netip.Addr]int)
	}
	if i, ok := r.idx[a]; ok {
		r.ring[i].last = now
		return
	}
	if len(r.ring) < MaxRecentPeers {
		r.idx[a] = len(r.ring)
		r.ring = append(r.ring, recentPeer{a, now})
		return
	}
	delete(r.idx, r.ring[r.next].addr) // forget the oldest inserted
	r.ring[r.next] = recentPeer{a, now}
	r.idx[a] = r.next
	r.next = (r.next + 1) % MaxRecentPeers
}

// addEvent records the judged peer of ev, when it is an IP peer that could be found.
func (r *recentPeers) addEvent(ev gate.Event) {
	if r == nil || ev.Err != nil || ev.Peer.Unix || !ev.Peer.AddrPort.IsValid() {
		return
	}
	r.add(ev.Peer.AddrPort.Addr(), time.Now())
}

func (r *recentPeers) snapshot() []recentPeer {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]recentPeer(nil), r.ring...)
}

// recentOf returns the recent peers of service name, kept across reloads.
func (m *metrics) recentOf(name string) *recentPeers {
	m.hitsMu.Lock()
	defer m.hitsMu.Unlock()
	if m.recent == nil {
		m.recent = map[string]*recentPeers{}
	}
	r := m.recent[name]
	if r == nil {
		r = &recentPeers{}
		m.recent[name] = r
	}
	return r
}

// WhatIfSide is one side of a what-if change: the action and what decided it.
type WhatIfSide struct {
	Action string `json:"action"`
	Rule   string `json:"rule"`
	Origin string `json:"origin,omitempty"`
}

func sideOfDecision(d acl.Decision) WhatIfSide {
	rule, origin := d.By()
	return WhatIfSide{d.Action.String(), rule, origin}
}

// WhatIfChange is one recent peer whose verdict the candidate would change.
type WhatIfChange struct {
	Peer     string     `json:"peer"`
	LastSeen time.Time  `json:"last_seen"`
	Old      WhatIfSide `json:"old"`
	New      WhatIfSide `json:"new"`
}

// WhatIfService is the what-if answer for one running service.
type WhatIfService struct {
	Service    string         `json:"service"`
	OldACL     string         `json:"old_acl"`
	NewACL     string         `json:"new_acl,omitempty"`
	Skipped    string         `json:"skipped,omitempty"` // why the candidate says nothing about this service
	Peers      int            `json:"peers"`             // recent distinct peers checked
	NowDenied  int            `json:"now_denied"`
	NowAllowed int            `json:"now_allowed"`
	Changes    []WhatIfChange `json:"changes"`
}

// WhatIf is the answer of POST /whatif.
type WhatIf struct {
	Candidate   string          `json:"candidate"`
	Capacity    int             `json:"recent_capacity"`     // peers remembered per service at most
	MemoryBytes int             `json:"recent_memory_bytes"` // about what the remembered peers take now
	Services    []WhatIfService `json:"services"`
	Changed     int             `json:"changed"` // peers whose verdict changes, all services
}

// postWhatIf serves POST /whatif: the body is a candidate serve file or ACL file; the answer says,
// per running service, which of its recent peers the candidate's ACL would decide the other way.
// Nothing is applied. Relative includes resolve against the running config's directory.
func (s *Server) postWhatIf(w http.ResponseWriter, r *http.Request) {
	data, err := io.ReadAll(io.LimitReader(r.Body, 256<<20))
	if err != nil {
		jsonError(w, http.StatusBadRequest, err)
		return
	}
	s.mu.Lock()
	cfg := s.cfg
	s.mu.Unlock()
	name := r.URL.Query().Get("name")
	if name == "" {
		name = "candidate.yaml"
	}
	path := filepath.Join(filepath.Dir(cfg.Path), filepath.Base(name))
	cand, err := config.Parse(path, data)
	if err != nil {
		jsonError(w, http.StatusBadRequest, fmt.Errorf("candidate: %w", err))
		return
	}
	writeJSON(w, http.StatusOK, s.whatIf(cfg, cand, path))
}

// candidateACL picks the ACL of cand that would guard svc: the ACL of cand's service of the same
// name; else, for a file of one ACL and no services (a bare ACL file), that ACL; else cand's ACL of
// the name svc's ACL has.
func candidateACL(cand *config.File, svc *config.Service) (*config.ACL, string) {
	for _, c := range cand.Services {
		if c.Name == svc.Name {
			return c.ACL, ""
		}
	}
	if len(cand.Services) == 0 && len(cand.ACLs) == 1 {
		return cand.ACLs[0], ""
	}
	for _, a := range cand.ACLs {
		if a.Name == svc.ACL.Name {
			return a, ""
		}
	}
	return nil, fmt.Sprintf("the candidate has no service %q and no ACL %q", svc.Name, svc.ACL.Name)
}

func (s *Server) whatIf(cfg, cand *config.File, path string) WhatIf {
	out := WhatIf{Candidate: path, Capacity: MaxRecentPeers, Services: []WhatIfService{}}
	for _, svc := range cfg.Services {
		ws := WhatIfService{Service: svc.Name, OldACL: svc.ACL.Name, Changes: []WhatIfChange{}}
		na, why := candidateACL(cand, svc)
		peers := s.m.recentOf(svc.Name).snapshot()
		out.MemoryBytes += len(peers) * recentPeerBytes
		if na == nil {
			ws.Skipped = why
			out.Services = append(out.Services, ws)
			continue
		}
		ws.NewACL, ws.Peers = na.Name, len(peers)
		for _, p := range peers {
			od, nd := svc.ACL.ACL.Decide(p.addr), na.ACL.Decide(p.addr)
			if od.Action == nd.Action {
				continue
			}
			if nd.Allowed() {
				ws.NowAllowed++
			} else {
				ws.NowDenied++
			}
			ws.Changes = append(ws.Changes, WhatIfChange{Peer: p.addr.String(), LastSeen: p.last, Old: sideOfDecision(od), New: sideOfDecision(nd)})
		}
		out.Changed += len(ws.Changes)
		out.Services = append(out.Services, ws)
	}
	return out
}
