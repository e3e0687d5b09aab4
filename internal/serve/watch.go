package serve

import (
	"context"
	"os"
	"syscall"
	"time"

	"github.com/peergate/peergate/internal/config"
)

// Watch reloads the config whenever the config file, or a file that one of its rules came from (an
// ACL file, an include), changes. It polls their stat every interval, which also sees a file
// replaced by rename (as editors and config managers do) and costs a few syscalls a second. It
// returns when ctx is done.
func (s *Server) Watch(ctx context.Context, interval time.Duration) {
	seen := s.snapshot()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := s.snapshot()
		if !sameFiles(seen, now) {
			s.Reload() // logs its outcome; a bad file is retried when it changes again
			seen = s.snapshot()
		}
	}
}

type fileStamp struct {
	mtime time.Time
	size  int64
	ino   uint64
	err   bool
}

func (s *Server) snapshot() map[string]fileStamp {
	s.mu.Lock()
	files := s.files
	s.mu.Unlock()
	out := make(map[string]fileStamp, len(files))
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			out[f] = fileStamp{err: true}
			continue
		}
		st := fileStamp{mtime: fi.ModTime(), size: fi.Size()}
		if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
			st.ino = sys.Ino
		}
		out[f] = st
	}
	return out
}

func sameFiles(a, b map[string]fileStamp) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || !v.mtime.Equal(w.mtime) || v.size != w.size || v.ino != w.ino || v.err != w.err {
			return false
		}
	}
	return true
}

// sourceFiles returns the config file and every file a rule of cfg came from.
func sourceFiles(cfg *config.File) []string {
	files := []string{cfg.Path}
	seen := map[string]bool{cfg.Path: true}
	for _, a := range cfg.ACLs {
		for _, r := range a.Spec.Rules {
			if f := r.Origin.File; !seen[f] {
				seen[f] = true
				files = append(files, f)
			}
		}
	}
	return files
}
