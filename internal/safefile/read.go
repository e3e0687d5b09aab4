// Package safefile is the one reader of peergate's configuration and list files: it refuses what
// is not a regular file before opening it, bounds the bytes read, and never returns the bytes of a
// file that changed while it was read. Source records what a load saw, for change watching.
package safefile

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"
)

// DefaultMaxFileSize bounds the bytes of one file a load reads when the caller sets no bound:
// generous (a 1 M-line blocklist is about 16 MiB), yet short of what would take a server down.
const DefaultMaxFileSize = 1 << 30

// Sentinel errors of ReadFile.
var (
	ErrNotRegular = errors.New("not a regular file")
	ErrTooBig     = errors.New("file too big")
	ErrUnsettled  = errors.New("file kept changing while it was read; replace it atomically (write a temporary file, then rename it over this one)")
)

// Source is what a load saw of one file it read or tried to read: the path as the load named it
// and the file's identity, size and times from the stat taken when it was read. Exists is false
// when the file could not be stat'ed (it is missing, say): a file that appears later differs
// from that record.
type Source struct {
	Path         string
	Exists       bool
	Mode         fs.FileMode // type bits only
	Dev, Ino     uint64
	Size         int64
	Mtime, Ctime int64 // nanoseconds since the epoch
}

// StatSource stats path (following symbolic links, as opening it does) and returns what it finds.
func StatSource(path string) Source {
	fi, err := os.Stat(path)
	if err != nil {
		return Source{Path: path}
	}
	return sourceOf(path, fi)
}

func sourceOf(path string, fi fs.FileInfo) Source {
	dev, ino, ctime := sysStat(fi) // zero where the system does not say
	return Source{Path: path, Exists: true, Mode: fi.Mode().Type(), Dev: dev, Ino: ino, Size: fi.Size(),
		Mtime: fi.ModTime().UnixNano(), Ctime: ctime}
}

// Changed reports whether the file at s.Path is no longer the one s records: replaced, written,
// created or removed since.
func (s Source) Changed() bool { return StatSource(s.Path) != s }

func kind(m fs.FileMode) string {
	switch {
	case m&fs.ModeDir != 0:
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a device"
	}
	return "not a plain file"
}

// Settle is how long a file must have been left alone before ReadFile reads it: a file written less
// than Settle ago is watched until it is Settle old, so that a list being rewritten in place is not
// read while its writer is still at work. readAttempts bounds the reads of one file that changed
// while it was read.
const (
	Settle       = 100 * time.Millisecond
	readAttempts = 5
	readChunk    = 4 << 20 // ctx is checked between chunks
)

// AfterReadHook, when not nil, is called by ReadFile after it has read a file's bytes and before it
// checks that the file did not change meanwhile. It is for tests of that check; production code
// leaves it nil.
var AfterReadHook func(path string)

// ReadFile reads the regular file at path, at most limit bytes (DefaultMaxFileSize when limit ≤ 0),
// and returns its bytes and the Source seen when they were read. It fails closed:
//   - anything but a regular file (a FIFO, a device such as /dev/zero, a directory) is refused
//     before it is opened, with an error wrapping ErrNotRegular;
//   - a file over limit bytes is refused with an error wrapping ErrTooBig;
//   - a file whose size, times or identity change while it is read is read again, a few times with
//     a short backoff, and then refused with an error wrapping ErrUnsettled: bytes that were
//     being written are never returned as the file's content;
//   - ctx, checked between chunks and while waiting, ends the read with ctx.Err().
//
// The Source is returned on error too (Exists false when the file could not be found), so that a
// caller watching for changes sees a missing or broken file fixed.
func ReadFile(ctx context.Context, path string, limit int64) ([]byte, Source, error) {
	if limit <= 0 {
		limit = DefaultMaxFileSize
	}
	wait := 10 * time.Millisecond
	for attempt := 1; ; attempt++ {
		data, src, settled, err := readOnce(ctx, path, limit)
		if err != nil || settled {
			return data, src, err
		}
		if attempt == readAttempts {
			return nil, src, fmt.Errorf("%s: %w", path, ErrUnsettled)
		}
		if err := sleep(ctx, wait); err != nil {
			return nil, src, err
		}
		wait *= 2
	}
}

// readOnce reads path once. settled is false when the file changed while it was read.
func readOnce(ctx context.Context, path string, limit int64) (data []byte, src Source, settled bool, err error) {
	if err := ctx.Err(); err != nil {
		return nil, Source{Path: path}, false, err
	}
	// Stat before open: opening a device can do things (rewind a tape, start a watchdog) and
	// opening a FIFO waits for a writer.
	fi, err := os.Stat(path)
	if err != nil {
		return nil, Source{Path: path}, false, err
	}
	src = sourceOf(path, fi)
	if err := check(path, src, limit); err != nil {
		return nil, src, false, err
	}
	if age := time.Since(time.Unix(0, max(src.Mtime, src.Ctime))); age < Settle {
		// Written a moment ago: wait until it is Settle old (at most Settle, should the file's
		// clock be ahead of ours) and see whether it was left alone meanwhile.
		if err := sleep(ctx, min(Settle-age, Settle)); err != nil {
			return nil, src, false, err
		}
		if StatSource(path) != src {
			return nil, src, false, nil
		}
	}
	// openFlags has O_NONBLOCK: should the path have become a FIFO since the stat, the open does
	// not wait.
	f, err := os.OpenFile(path, os.O_RDONLY|openFlags, 0)
	if err != nil {
		return nil, src, false, err
	}
	defer f.Close()
	if fi, err = f.Stat(); err != nil {
		return nil, src, false, err
	}
	if before := sourceOf(path, fi); before != src { // replaced between stat and open
		return nil, before, false, check(path, before, limit)
	}
	data = make([]byte, 0, min(src.Size, limit)+1) // one spare byte sees a file that grew
	for {
		if err := ctx.Err(); err != nil {
			return nil, src, false, err
		}
		if len(data) == cap(data) {
			if int64(len(data)) > limit {
				return nil, src, false, fmt.Errorf("%s: %w (more than %d bytes)", path, ErrTooBig, limit)
			}
			data = append(data, 0)[:len(data)]
		}
		n, err := f.Read(data[len(data):min(cap(data), len(data)+readChunk)])
		data = data[:len(data)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, src, false, err
		}
	}
	if int64(len(data)) > limit {
		return nil, src, false, fmt.Errorf("%s: %w (more than %d bytes)", path, ErrTooBig, limit)
	}
	if AfterReadHook != nil {
		AfterReadHook(path)
	}
	if fi, err = f.Stat(); err != nil {
		return nil, src, false, err
	}
	if sourceOf(path, fi) != src || int64(len(data)) != src.Size {
		return nil, src, false, nil
	}
	return data, src, true, nil
}

func check(path string, src Source, limit int64) error {
	if src.Mode != 0 {
		return fmt.Errorf("%s: %w (%s)", path, ErrNotRegular, kind(src.Mode))
	}
	if src.Size > limit {
		return fmt.Errorf("%s: %w (%d bytes, over the bound of %d)", path, ErrTooBig, src.Size, limit)
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
