// Command http is an http.Server whose listener is guarded by peergate's gate: the handler only
// ever runs for allowed peers. Denied clients are reset (RST) and counted; /stats shows the counts.
//
//	go run ./examples/http                                # 127.0.0.1:8080 with http/acl.yaml
//	curl http://127.0.0.1:8080/                           # hello 127.0.0.1
//	curl --interface 127.0.0.2 http://127.0.0.1:8080/     # connection reset
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"

	"github.com/peergate/peergate/acl"
	"github.com/peergate/peergate/gate"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to listen on")
	aclPath := flag.String("acl", firstExisting("acl.yaml", "examples/http/acl.yaml"), "ACL file")
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
	ln := gate.NewListener(inner, rules, gate.Options{OnDeny: gate.DenyReset, Logger: log})

	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		fmt.Fprintf(w, "hello %s\n", host)
	})
	mux.HandleFunc("/stats", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(ln.Stats())
	})
	log.Info("http listening", "addr", ln.Addr().String(), "acl", *aclPath)
	if err := http.Serve(ln, mux); err != nil {
		log.Error("serve", "err", err)
		os.Exit(1)
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
