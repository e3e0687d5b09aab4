package serve

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/peergate/peergate/acl"
	"github.com/peergate/peergate/gate/bans"
	"github.com/peergate/peergate/internal/safefile"
)

// The state file keeps the bans of origin api and auto across restarts and crashes (CrowdSec's
// are read again from the LAPI). It is a text file, one ban a line, written whole to a temporary
// file, fsynced and renamed over the old one (whose previous version is kept as bans.prev), so a
// crash leaves either the old or the new state, never a mix. The last line carries the count and
// a CRC-32 of everything before it: a torn or corrupt file is detected, reported, set aside, and
// the previous good state loaded instead.
//
//	peergate-bans 1
//	192.0.2.7/32	api	1764694800	1764698400	"scanner"
//	end 1 3a1b2c3d
//
// Fields: prefix, origin, created and expires in Unix seconds (0: never), reason quoted.

const (
	stateName   = "bans"
	stateHeader = "peergate-bans 1"
)

// ErrState marks a state file that cannot be read.
var ErrState = errors.New("bad ban state file")

// persisted reports whether bans of origin o are kept in the state file.
func persisted(o string) bool { return o == bans.OriginAPI || o == bans.OriginAuto }

// encodeState returns the state file's bytes for the persisted bans of list.
func encodeState(list []bans.Ban) []byte {
	var b bytes.Buffer
	b.WriteString(stateHeader + "\n")
	n := 0
	for _, x := range list {
		if !persisted(x.Origin) {
			continue
		}
		var exp int64
		if !x.Expires.IsZero() {
			exp = x.Expires.Unix()
		}
		fmt.Fprintf(&b, "%s\t%s\t%d\t%d\t%s\n", x.Prefix, x.Origin, x.Created.Unix(), exp, strconv.Quote(x.Reason))
		n++
	}
	fmt.Fprintf(&b, "end %d %08x\n", n, crc32.ChecksumIEEE(b.Bytes()))
	return b.Bytes()
}

// decodeState reads a state file's bytes; any damage is an error wrapping ErrState naming the line.
func decodeState(path string, data []byte) ([]bans.Ban, error) {
	i := bytes.LastIndex(bytes.TrimSuffix(data, []byte("\n")), []byte("\n"))
	if i < 0 || !bytes.HasPrefix(data, []byte(stateHeader+"\n")) {
		return nil, fmt.Errorf("%s: %w: no header or no end line (torn?)", path, ErrState)
	}
	body, trailer := data[:i+1], strings.TrimSpace(string(data[i+1:]))
	var n int
	var sum uint32
	if _, err := fmt.Sscanf(trailer, "end %d %x", &n, &sum); err != nil {
		return nil, fmt.Errorf("%s: %w: bad end line %q (torn?)", path, ErrState, trailer)
	}
	if got := crc32.ChecksumIEEE(body); got != sum {
		return nil, fmt.Errorf("%s: %w: checksum %08x, want %08x (corrupt)", path, ErrState, got, sum)
	}
	var out []bans.Ban
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(nil, 1<<20)
	line := 0
	for sc.Scan() {
		line++
		if line == 1 {
			continue
		}
		f := strings.SplitN(sc.Text(), "\t", 5)
		bad := func(what string) error {
			return fmt.Errorf("%s:%d: %w: %s", path, line, ErrState, what)
		}
		if len(f) != 5 {
			return nil, bad("want 5 fields")
		}
		p, err := acl.ParsePrefix(f[0])
		if err != nil {
			return nil, bad(err.Error())
		}
		created, err1 := strconv.ParseInt(f[2], 10, 64)
		expires, err2 := strconv.ParseInt(f[3], 10, 64)
		reason, err3 := strconv.Unquote(f[4])
		if err1 != nil || err2 != nil || err3 != nil || !persisted(f[1]) {
			return nil, bad("bad origin, time or reason")
		}
		b := bans.Ban{Prefix: p, Origin: f[1], Reason: reason, Created: time.Unix(created, 0)}
		if expires != 0 {
			b.Expires = time.Unix(expires, 0)
		}
		out = append(out, b)
	}
	if len(out) != n {
		return nil, fmt.Errorf("%s: %w: %d bans, the end line says %d", path, ErrState, len(out), n)
	}
	return out, nil
}

// stateStore saves the persisted bans of a table to dir, from a goroutine woken on each change.
type stateStore struct {
	dir string
	t   *bans.Table
	log interface {
		Error(string, ...any)
		Warn(string, ...any)
	}
	wake     chan struct{}
	finished chan struct{} // closed when run returns

	mu      sync.Mutex
	cond    *sync.Cond
	want    uint64 // changes asked to be saved
	done    uint64 // changes saved (or failed: see err)
	err     error  // the last save's error
	stopped bool
}

func (st *stateStore) file() string { return filepath.Join(st.dir, stateName) }

// loadState reads the state of dir: the current file, or when it is damaged the previous one
// (the damaged file is renamed aside and the error logged). It fails only when a file exists and
// no good state can be found: starting without the bans would let banned peers in.
func loadState(dir string, log interface{ Error(string, ...any) }) ([]bans.Ban, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state_dir: %w", err)
	}
	return readState(dir, log, true)
}

// ReadBans returns the bans saved in state_dir dir (as peergate serve would load them at start),
// touching nothing: for peergate check.
func ReadBans(dir string) ([]bans.Ban, error) {
	return readState(dir, nil, false)
}

func readState(dir string, log interface{ Error(string, ...any) }, setAside bool) ([]bans.Ban, error) {
	cur := filepath.Join(dir, stateName)
	var firstErr error
	for _, p := range []string{cur, cur + ".prev"} {
		// Through the loaders' reader: a FIFO or device put there cannot hang or exhaust startup.
		data, _, err := safefile.ReadFile(context.Background(), p, 0)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err == nil {
			var list []bans.Ban
			if list, err = decodeState(p, data); err == nil {
				if firstErr != nil && log != nil {
					log.Error("ban state file damaged; loaded the previous state instead", "err", firstErr, "file", p)
				}
				return list, nil
			}
			if setAside {
				aside := fmt.Sprintf("%s.bad-%d", p, time.Now().Unix())
				if rerr := os.Rename(p, aside); rerr == nil {
					err = fmt.Errorf("%w (kept as %s)", err, aside)
				}
			}
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	if firstErr != nil {
		return nil, fmt.Errorf("%w; no good ban state left: start refused so that banned peers are not let in (move the files away to start without them)", firstErr)
	}
	return nil, nil
}

func newStateStore(dir string, t *bans.Table, log interface {
	Error(string, ...any)
	Warn(string, ...any)
}) *stateStore {
	st := &stateStore{dir: dir, t: t, log: log, wake: make(chan struct{}, 1), finished: make(chan struct{})}
	st.cond = sync.NewCond(&st.mu)
	return st
}

// changed asks for a save and returns the change's number, for wait.
func (st *stateStore) changed() uint64 {
	st.mu.Lock()
	st.want++
	n := st.want
	st.mu.Unlock()
	select {
	case st.wake <- struct{}{}:
	default:
	}
	return n
}

// wait waits until change n is saved, and returns the error of the save that covered it.
func (st *stateStore) wait(n uint64) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	for st.done < n && !st.stopped {
		st.cond.Wait()
	}
	if st.done < n {
		return errors.New("ban state not saved: shutting down")
	}
	return st.err
}

// run saves until done is closed, then once more if a change is pending.
func (st *stateStore) run(done <-chan struct{}) {
	defer close(st.finished)
	for {
		select {
		case <-st.wake:
		case <-done:
			st.save()
			st.mu.Lock()
			st.stopped = true
			st.cond.Broadcast()
			st.mu.Unlock()
			return
		}
		st.save()
	}
}

func (st *stateStore) save() {
	st.mu.Lock()
	n := st.want
	if st.done >= n {
		st.mu.Unlock()
		return
	}
	st.mu.Unlock()
	err := writeState(st.file(), encodeState(st.t.List()))
	if err != nil {
		st.log.Error("ban state not saved; bans apply but would not survive a restart", "file", st.file(), "err", err)
	}
	st.mu.Lock()
	st.done, st.err = n, err
	st.cond.Broadcast()
	st.mu.Unlock()
}

// writeState replaces file with data: written to a temporary file, fsynced, the old file kept as
// file.prev (a hard link, so file itself always exists), renamed over, and the directory fsynced.
func writeState(file string, data []byte) error {
	tmp := file + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if err := safefile.WriteSynced(f, data); err != nil {
		os.Remove(tmp)
		return err
	}
	if _, err := os.Stat(file); err == nil {
		os.Remove(file + ".prev.tmp")
		if err := os.Link(file, file+".prev.tmp"); err == nil {
			os.Rename(file+".prev.tmp", file+".prev")
		}
	}
	if err := os.Rename(tmp, file); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(file))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
