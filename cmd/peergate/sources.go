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
	f, _, err := config.LoadSources(context.Background(), path, oneShot(stderr))
	return f, err
}

// loadSpecs is loadConfig, and each ACL keeps the rules it was compiled from (lint reads them).
func loadSpecs(path string, stderr io.Writer) (*config.File, error) {
	f, _, err := config.LoadSpecs(context.Background(), path, oneShot(stderr))
	return f, err
}

// oneShot is the sources manager of a command that loads once.
func oneShot(stderr io.Writer) *sources.Manager {
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	m := sources.New(log, nil)
	m.OneShot = true
	return m
}
