// Command echo is a TCP echo server whose listener is guarded by peergate's gate: clients the ACL
// denies are closed before the server sees them. SIGHUP reloads the ACL.
//
//	go run ./examples/echo                       # listens on 127.0.0.1:7007 with echo/acl.yaml
//	nc 127.0.0.1 7007                            # echoed
//	nc -s 127.0.0.2 127.0.0.1 7007               # closed at once, and logged
package main

import (
	"errors"
	"flag"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/peergate/peergate/acl"
	"github.com/peergate/peergate/gate"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:7007", "address to listen on")
	aclPath := flag.String("acl", firstExisting("acl.yaml", "examples/echo/acl.yaml"), "ACL file")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))

	rules, err := acl.Load(*aclPath)
	if err != nil {
		log.Error("loading ACL", "err", err)
		os.Exit(2)
	}
	inner, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Error("listen", "err", err)
		os.Exit(1)
	}
	ln := gate.NewListener(inner, rules, gate.Options{Logger: log})
	go reloadOnHUP(ln, *aclPath, log)
	log.Info("echo listening", "addr", ln.Addr().String(), "acl", *aclPath)
	for {
		c, err := ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			log.Warn("accept", "err", err)
			continue
		}
		go func() {
			defer c.Close()
			io.Copy(c, c)
		}()
	}
}

// reloadOnHUP swaps in a freshly loaded ACL on SIGHUP; a bad file keeps the old one.
func reloadOnHUP(ln *gate.Listener, path string, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	for range hup {
		rules, err := acl.Load(path)
		if err != nil {
			log.Error("reload failed; keeping the old ACL", "err", err)
			continue
		}
		ln.SetACL(rules)
		log.Info("ACL reloaded", "rules", rules.Len())
	}
}

func firstExisting(paths ...string) string {
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return paths[0]
}
