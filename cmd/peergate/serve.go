package main

import (
	"context"
	"fmt"
	"io"
	"log/syslog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/peergate/peergate/internal/serve"
)

// cmdServe runs the services of the config until SIGTERM or SIGINT, then drains open connections up
// to the config's drain_timeout and exits 0. SIGHUP or a change of the config (or of a file its
// rules came from) reloads it; an invalid file keeps the running config. SIGTERM is served while a
// reload runs, and cancels it.
func cmdServe(args []string, stdout, stderr io.Writer) int {
	f := newFlags("serve", stderr).withLog()
	logTo := f.String("log", "stderr", "where to log: stderr or syslog (facility daemon; stderr when syslog cannot be reached)")
	watch := f.Duration("watch", time.Second, "how often to check the config files for changes (0: only on SIGHUP)")
	if !f.parse(args) {
		return f.exit
	}
	if f.NArg() > 0 {
		return fail(stderr, "serve", fmt.Errorf("unexpected arguments: %q", f.Args()))
	}
	if *logTo != "stderr" && *logTo != "syslog" {
		return fail(stderr, "serve", fmt.Errorf("-log must be stderr or syslog, not %q", *logTo))
	}
	log, err := wrapLogger(f, *logTo, stderr, dialSyslog(syslog.LOG_DAEMON))
	if err != nil {
		return fail(stderr, "serve", err)
	}
	// Signals are caught before the first load, which takes seconds with a big list: a SIGHUP
	// then (logrotate, a config manager) would otherwise end the process. One that comes during
	// the load reloads once it is done; SIGTERM stops at once after it.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	log.Debug("loading", "file", f.config)
	srv, err := serve.New(f.config, log)
	if err != nil {
		return fail(stderr, "serve", err)
	}
	if err := serve.ReapOrphans(); err != nil {
		log.Warn("orphans of handlers will not be reaped here", "err", err)
	}
	// ctx ends with SIGTERM: it stops the watcher and cancels a load still running.
	ctx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	if *watch > 0 {
		go srv.Watch(ctx, *watch)
	}
	go srv.RefreshSources(ctx, time.Second)
	// SIGHUP reloads off this loop, so that SIGTERM is served while a load runs: one reload at a
	// time, and SIGHUPs that come during one make a single reload after it.
	hup := make(chan struct{}, 1)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				srv.ReloadContext(ctx)
			}
		}
	}()
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()
	for name, addrs := range srv.Addrs() {
		for _, a := range addrs {
			log.Info("listening", "service", name, "addr", a.String())
		}
	}
	if a := srv.AdminAddr(); a != nil {
		log.Info("listening", "service", "admin", "addr", a.String(), "paths", "/metrics /healthz /config /bans /explain /rules /whatif")
	}
	if err := serve.Notify("READY=1"); err != nil { // systemd Type=notify: started
		log.Warn("systemd not told that serve is ready", "err", err)
	}
	for sig := range sigs {
		if sig == syscall.SIGHUP {
			select {
			case hup <- struct{}{}:
			default: // one is pending already
			}
			continue
		}
		log.Info("stopping", "signal", sig.String())
		serve.Notify("STOPPING=1")
		stopWatch() // a load that is still running stops; Shutdown refuses to apply one that finishes
		dctx, cancel := context.WithTimeout(context.Background(), srv.DrainTimeout())
		srv.Shutdown(dctx)
		cancel()
		<-served
		log.Info("stopped")
		return exitOK
	}
	return exitOK
}
