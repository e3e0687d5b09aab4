package safefile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteSynced(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteSynced(f, []byte("state\n")); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "state\n" {
		t.Errorf("read back %q, %v", b, err)
	}
	if err := f.Close(); err == nil {
		t.Error("the file is still open after WriteSynced")
	}
	// A file opened read-only cannot be written: the write's error is returned, and it is closed.
	r, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteSynced(r, []byte("x")); err == nil {
		t.Error("WriteSynced to a read-only file: no error")
	}
	if err := r.Close(); err == nil {
		t.Error("the file is still open after a failed WriteSynced")
	}
}
