package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/peergate/peergate/internal/serve"
)

// cmdServe runs the services of the config until SIGTERM or SIGINT, then drains open connections up
// to the config's drain_timeout and exits 0. SIGHUP or a change of the config (or of a file its
// rules came from) reloads it; an invalid file keeps the running config.
func cmdServe(args []string, stdout, stderr io.Writer) int {
	f := newFlags("serve", stderr).withLog()
	watch := f.Duration("watch", time.Second, "how often to check the config files for changes (0: only on SIGHUP)")
	if !f.parse(args) {
		return f.exit
	}
	if f.NArg() > 0 {
		return fail(stderr, "serve", fmt.Errorf("unexpected arguments: %q", f.Args()))
	}
	log := f.logger(stderr)
	srv, err := serve.New(f.config, log)
	if err != nil {
		return fail(stderr, "serve", err)
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	ctx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	if *watch > 0 {
		go srv.Watch(ctx, *watch)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()
	for name, addrs := range srv.Addrs() {
		for _, a := range addrs {
			log.Info("listening", "service", name, "addr", a.String())
		}
	}
	if a := srv.AdminAddr(); a != nil {
		log.Info("listening", "service", "admin", "addr", a.String(), "paths", "/metrics /healthz /config /bans /explain")
	}
	for sig := range sigs {
		if sig == syscall.SIGHUP {
			srv.Reload()
			continue
		}
		log.Info("stopping", "signal", sig.String())
		stopWatch()
		dctx, cancel := context.WithTimeout(context.Background(), srv.DrainTimeout())
		srv.Shutdown(dctx)
		cancel()
		<-served
		log.Info("stopped")
		return exitOK
	}
	return exitOK
}
