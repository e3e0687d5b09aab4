package main

import (
	"context"
	"io"
	"log/slog"

	"github.com/peergate/peergate/internal/config"
	"github.com/peergate/peergate/internal/sources"
)

// loadConfig loads path as serve does, url includes included: from the copy cached in the file's
// state_dir while it is fresh, else fetched. Warnings (a source down, the cached copy used) go to
// stderr.
func loadConfig(path string, stderr io.Writer) (*config.File, error) {
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	m := sources.New(log, nil)
	m.OneShot = true
	f, _, err := config.LoadSources(context.Background(), path, m)
	return f, err
}
