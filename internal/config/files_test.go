package config

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"testing"

	"github.com/peergate/peergate/acl"
)

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64 // 0: an error
	}{
		{"1", 1}, {"65536", 65536}, {"100B", 100}, {"1kB", 1000}, {"1KB", 1000}, {"2MB", 2e6}, {"3GB", 3e9}, {"1TB", 1e12},
		{"1KiB", 1024}, {"512MiB", 512 << 20}, {"1GiB", 1 << 30}, {"2TiB", 2 << 40}, {"1 GiB", 1 << 30},
		{"", 0}, {"0", 0}, {"-1", 0}, {"GiB", 0}, {"1.5GiB", 0}, {"1gib", 0}, {"1 G", 0}, {"lots", 0},
		{"9223372036854775807", 1<<63 - 1}, {"9223372036854775807B", 1<<63 - 1}, {"9000000TiB", 0}, {"99999999999999999999", 0},
	} {
		got, err := ParseSize(tc.in)
		if tc.want == 0 {
			if err == nil || !errors.Is(err, ErrSize) || !errors.Is(err, ErrConfig) {
				t.Errorf("ParseSize(%q) = %d, %v; want an error", tc.in, got, err)
			}
		} else if got != tc.want || err != nil {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"1", "1GiB", "100 MB", "0", "-5kB", "9223372036854775807", "1e9"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if (err == nil) != (n > 0) {
			t.Fatalf("ParseSize(%q) = %d, %v", s, n, err)
		}
	})
}

// TestLoadSources: a load records every file it read or tried to read, whether it gave rules or
// not (the admin token file too), and on failure too.
func TestLoadSources(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "only-default.yaml", "default: deny\n", 0o644)
	write(t, dir, "empty.txt", "", 0o644)
	write(t, dir, "lists.yaml", "default: deny\ninclude: [{path: empty.txt, action: deny}]\n", 0o644)
	write(t, dir, "token", "s3cret\n", 0o600)
	good := write(t, dir, "serve.yaml", "acls:\n  a: only-default.yaml\n  b: lists.yaml\nadmin: {listen: \"127.0.0.1:0\", token_file: token}\n", 0o644)
	f, sources, err := LoadContext(context.Background(), good)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"serve.yaml", "only-default.yaml", "lists.yaml", "empty.txt", "token"}
	if got := names(sources); !slices.Equal(got, want) || !slices.Equal(names(f.Sources), want) {
		t.Errorf("sources %v, File.Sources %v; want %v", got, names(f.Sources), want)
	}
	for _, s := range sources {
		if !s.Exists || s.Changed() {
			t.Errorf("%+v: want the file as it is", s)
		}
	}

	bad := write(t, dir, "bad.yaml", "acls:\n  a: {default: deny, include: [{path: missing.txt, action: deny}, {path: empty.txt, action: deny}]}\n", 0o644)
	f, sources, err = LoadContext(context.Background(), bad)
	if f != nil || !errors.Is(err, acl.ErrInclude) {
		t.Fatalf("Load = %v, %v; want %v", f, err, acl.ErrInclude)
	}
	if got, want := names(sources), []string{"bad.yaml", "missing.txt", "empty.txt"}; !slices.Equal(got, want) || sources[1].Exists {
		t.Errorf("sources %+v; want %v, missing.txt not existing", sources, want)
	}
	write(t, dir, "missing.txt", "10.0.0.1\n", 0o644)
	if !sources[1].Changed() {
		t.Error("the missing include, created, is not seen as a change")
	}
}

func names(sources []acl.Source) []string {
	var out []string
	for _, s := range sources {
		out = append(out, filepath.Base(s.Path))
	}
	return out
}
