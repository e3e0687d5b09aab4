package main

import (
	"fmt"
	"net"
	"sync"
	"testing"
	"time"
)

const limitsConfig = `
acls:
  lo: {default: deny, allow: [127.0.0.0/8]}
services:
  - name: conc
    listen: ["127.0.0.1:0"]
    acl: lo
    upstream: %[1]s
    per_source: 2
  - name: rate
    listen: ["127.0.0.100:0"]  # another address: services cannot share "127.0.0.1:0"
    acl: lo
    upstream: %[1]s
    rate: 1/2s
    burst: 3
admin:
  listen: 127.0.0.1:0
`

// Several sources at once: each may hold per_source connections, the next is refused, other
// sources are unaffected, and closing one frees its slot. The rate limit lets a burst through per
// source, refuses the next, and lets one more through once the bucket has refilled.
func TestServeLimits(t *testing.T) {
	up, _ := echoUpstream(t)
	cfg := writeFile(t, t.TempDir(), "serve.yaml", fmt.Sprintf(limitsConfig, up))
	p := startServe(t, cfg, "-watch", "0")
	addrs := map[string]string{}
	for range 3 {
		m := p.waitLog(`msg=listening service=(\S+) addr=(\S+)`)
		addrs[m[1]] = m[2]
	}
	sources := []string{"127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"}

	// Concurrency: every source opens two (held), then a third that must be refused.
	var wg sync.WaitGroup
	held := make([][]net.Conn, len(sources))
	for i, src := range sources {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 2 {
				c := dial(t, src, addrs["conc"])
				roundTrip(t, c, "hi")
				held[i] = append(held[i], c)
			}
			if !refused(t, src, addrs["conc"]) {
				t.Errorf("%s: third connection not refused", src)
			}
		}()
	}
	wg.Wait()
	p.waitLog(`msg="peer over limit; connection closed" service=conc .*peer=127\.0\.0\.\d:\d+ reason=limit err="too many open connections`)
	for _, cs := range held {
		cs[0].Close()
	}
	for _, src := range sources { // the slot comes back once peergate has seen the close
		pollUntil(t, func() bool { return served(t, src, addrs["conc"]) }, src+" never got its slot back")
	}
	for _, cs := range held {
		cs[1].Close()
	}

	// Rate: a burst of 3 per source, then refused, then one more after the refill (2s).
	for _, src := range sources {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 3 {
				if !served(t, src, addrs["rate"]) {
					t.Errorf("%s: connection %d of the burst not served", src, i)
				}
			}
			if !refused(t, src, addrs["rate"]) {
				t.Errorf("%s: connection past the burst not refused", src)
			}
		}()
	}
	wg.Wait()
	pollUntil(t, func() bool { return served(t, "127.0.0.1", addrs["rate"]) }, "rate limit never recovered")

	got := scrape(t, addrs["admin"])
	for svc, min := range map[string]float64{"conc": 4, "rate": 4} {
		if n := got[`peergate_connections_total{reason="limit",service="`+svc+`",verdict="deny"}`]; n < min {
			t.Errorf("%s: %v connections counted as reason=limit, want at least %v", svc, n, min)
		}
	}
}

// pollUntil retries cond until it holds, or fails after a deadline.
func pollUntil(t *testing.T, cond func() bool, msg string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal(msg)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition, with a deadline
	}
}
