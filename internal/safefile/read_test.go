package safefile

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestReadFile: regular files are read whole and stamped; what is not a regular file is refused
// before it is opened (a FIFO must not block, /dev/zero must not be read); a file over the bound,
// a missing file, a file that changes while it is read and a cancelled read all fail, and every
// failure still returns the Source a watcher needs.
func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		path   string
		limit  int64
		hook   func(path string, call int) // between read and re-stat
		cancel bool
		want   string // content; "" with err
		err    error
		exists bool
	}{
		{name: "regular", path: write("a.txt", "10.0.0.0/8\n"), want: "10.0.0.0/8\n", exists: true},
		{name: "empty", path: write("empty.txt", ""), want: "", exists: true},
		{name: "at the bound", path: write("at.txt", "12345"), limit: 5, want: "12345", exists: true},
		{name: "over the bound", path: write("big.txt", "123456"), limit: 5, err: ErrTooBig, exists: true},
		{name: "fifo", path: fifo, err: ErrNotRegular, exists: true},
		{name: "/dev/zero", path: "/dev/zero", err: ErrNotRegular, exists: true},
		{name: "/dev/urandom", path: "/dev/urandom", err: ErrNotRegular, exists: true},
		{name: "directory", path: dir, err: ErrNotRegular, exists: true},
		{name: "missing", path: filepath.Join(dir, "nope"), err: fs.ErrNotExist},
		{name: "rewritten while read, then settles", path: write("rw.txt", ""), want: "127.0.0.2\n127.0.0.3\n", exists: true,
			hook: func(path string, call int) {
				if call == 1 { // the writer finishes what it had truncated
					if err := os.WriteFile(path, []byte("127.0.0.2\n127.0.0.3\n"), 0o644); err != nil {
						t.Error(err)
					}
				}
			}},
		{name: "never settles", path: write("busy.txt", "x\n"), err: ErrUnsettled, exists: true,
			hook: func(path string, call int) {
				f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
				if err != nil {
					t.Error(err)
					return
				}
				f.WriteString("127.0.0.1\n")
				f.Close()
			}},
		{name: "cancelled", path: write("c.txt", "x\n"), cancel: true, err: context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls := 0
			if tc.hook != nil {
				AfterReadHook = func(path string) { calls++; tc.hook(path, calls) }
				defer func() { AfterReadHook = nil }()
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.cancel {
				cancel()
			}
			done := make(chan struct{})
			var data []byte
			var src Source
			var err error
			go func() { data, src, err = ReadFile(ctx, tc.path, tc.limit); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("ReadFile did not return")
			}
			if tc.err != nil {
				if !errors.Is(err, tc.err) || data != nil {
					t.Fatalf("got %q, %v; want error %v", data, err, tc.err)
				}
				if !tc.cancel && !strings.Contains(err.Error(), tc.path) {
					t.Errorf("error %q does not name the file", err)
				}
			} else if err != nil || string(data) != tc.want {
				t.Fatalf("got %q, %v; want %q", data, err, tc.want)
			}
			if src.Path != tc.path || src.Exists != tc.exists {
				t.Errorf("source %+v: want path %s, exists %v", src, tc.path, tc.exists)
			}
			if err == nil && (src.Size != int64(len(data)) || src.Changed()) {
				t.Errorf("source %+v does not describe the %d bytes read from the file as it is", src, len(data))
			}
		})
	}
}

// TestSourceChanged: a stamp taken at read time sees an in-place write, a rename over the file,
// its removal, and a missing file that appears.
func TestSourceChanged(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "list.txt")
	for _, tc := range []struct {
		name   string
		before func() // the state when the stamp is taken
		change func()
	}{
		// Not the same size: on kernels without fine-grained timestamps (before Linux 6.13), a
		// same-size write in the same clock tick as the stamp leaves size and times as they were.
		{"in place", func() { os.WriteFile(p, []byte("aaaa"), 0o644) }, func() {
			f, _ := os.OpenFile(p, os.O_WRONLY, 0)
			f.WriteAt([]byte("bbbbb"), 0)
			f.Close()
		}},
		{"renamed over", func() { os.WriteFile(p, []byte("aaaa"), 0o644) }, func() {
			os.WriteFile(p+".tmp", []byte("aaaa"), 0o644)
			os.Rename(p+".tmp", p)
		}},
		{"removed", func() { os.WriteFile(p, []byte("aaaa"), 0o644) }, func() { os.Remove(p) }},
		{"appears", func() { os.Remove(p) }, func() { os.WriteFile(p, nil, 0o644) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.before()
			src := StatSource(p)
			if src.Changed() {
				t.Fatal("changed before any change")
			}
			tc.change()
			if !src.Changed() {
				t.Errorf("change not seen: %+v", src)
			}
		})
	}
}
