package serve

import (
	"context"
	"time"
)

// Watch reloads the config whenever a file the last load read or tried to read changes: the
// config itself, ACL files and includes (empty ones and those that only set a default too), and a
// missing or broken file that a failed load named, once it appears or is fixed. It polls their
// stat every interval and compares it with the stat taken when each was read, so it also sees a
// file replaced by rename (as editors and config managers do) and a write that landed while a
// reload was running; it costs a few syscalls a second. It returns when ctx is done, which also
// cancels a reload it started.
func (s *Server) Watch(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if s.changed() {
			s.ReloadContext(ctx) // logs its outcome; a bad file is retried when it changes again
		}
	}
}

// changed reports whether a file of the last load differs from what the load saw of it.
func (s *Server) changed() bool {
	s.mu.Lock()
	sources := s.sources
	s.mu.Unlock()
	for _, src := range sources {
		if src.Changed() {
			return true
		}
	}
	return false
}
