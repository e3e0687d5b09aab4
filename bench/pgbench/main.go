// Command pgbench is peergate's load generator and benchmark upstream. Traffic goes to the given
// target only; use it on loopback.
//
//	pgbench upstream -listen 127.0.0.1:9000
//	    per connection: a request ('x'...) is answered with the same bytes, then the server closes
//	    (it closes first, so TIME_WAIT stays on its side); a 'B' stream is read to EOF and acked.
//	pgbench load -target ADDR -mode connect|bulk [-c 8] [-d 5s] [-n 1000000] [-src 127.0.0.1,...]
//	    connect: new connection, 64-byte request, response, close; prints conns/s and latency
//	             percentiles (connect to response)
//	    bulk:    one connection sends -bytes, prints MB/s
//
// Output is one line of "key=value" fields, easy to grep and to feed to a spreadsheet.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: pgbench upstream|load [flags]")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "upstream":
		upstream(os.Args[2:])
	case "load":
		load(os.Args[2:])
	default:
		fmt.Fprintf(os.Stderr, "pgbench: unknown command %q\n", os.Args[1])
		os.Exit(2)
	}
}

func upstream(args []string) {
	fs := flag.NewFlagSet("upstream", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:9000", "address")
	fs.Parse(args)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			continue
		}
		go func() {
			defer c.Close()
			buf := make([]byte, 64<<10)
			n, err := c.Read(buf)
			if n == 0 || err != nil && !errors.Is(err, io.EOF) {
				return
			}
			if buf[0] == 'B' {
				m, _ := io.CopyBuffer(io.Discard, c, buf)
				fmt.Fprintf(c, "%d\n", int64(n)+m)
				return
			}
			c.Write(buf[:n])
		}()
	}
}

func load(args []string) {
	fs := flag.NewFlagSet("load", flag.ExitOnError)
	target := fs.String("target", "", "host:port to load")
	mode := fs.String("mode", "connect", "connect or bulk")
	conc := fs.Int("c", 8, "concurrent clients")
	dur := fs.Duration("d", 5*time.Second, "how long to run (at most)")
	max := fs.Int("n", 1_000_000, "connections at most")
	srcs := fs.String("src", "127.0.0.1", "comma-separated source addresses, used in turn")
	size := fs.Int64("bytes", 1<<30, "bulk: bytes to send")
	label := fs.String("label", "", "a label to print with the results")
	fs.Parse(args)
	var dialers []*net.Dialer
	for _, s := range strings.Split(*srcs, ",") {
		dialers = append(dialers, &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(s)}, Timeout: 5 * time.Second})
	}
	switch *mode {
	case "connect":
		connectLoad(*label, *target, dialers, *conc, *dur, *max)
	case "bulk":
		bulk(*label, *target, dialers[0], *size)
	default:
		fmt.Fprintf(os.Stderr, "pgbench: unknown mode %q\n", *mode)
		os.Exit(2)
	}
}

func connectLoad(label, target string, dialers []*net.Dialer, conc int, dur time.Duration, max int) {
	var count, fails atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	deadline := time.Now().Add(dur)
	start := time.Now()
	var wg sync.WaitGroup
	req := []byte(strings.Repeat("x", 64))
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := make([]time.Duration, 0, 1<<16)
			resp := make([]byte, len(req))
			for i := w; time.Now().Before(deadline) && count.Add(1) <= int64(max); i += conc {
				t0 := time.Now()
				c, err := dialers[i%len(dialers)].Dial("tcp", target)
				if err != nil {
					fails.Add(1)
					continue
				}
				c.SetDeadline(time.Now().Add(5 * time.Second))
				_, err = c.Write(req)
				if err == nil {
					_, err = io.ReadFull(c, resp)
				}
				if err != nil {
					fails.Add(1)
				} else {
					mine = append(mine, time.Since(t0))
				}
				c.Close()
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(lat)
	pct := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(p*float64(len(lat))))]
	}
	fmt.Printf("label=%s mode=connect ok=%d fail=%d secs=%.2f conns_per_s=%.0f p50_us=%d p99_us=%d p999_us=%d\n",
		label, len(lat), fails.Load(), elapsed.Seconds(), float64(len(lat))/elapsed.Seconds(),
		pct(0.50).Microseconds(), pct(0.99).Microseconds(), pct(0.999).Microseconds())
}

func bulk(label, target string, d *net.Dialer, size int64) {
	c, err := d.Dial("tcp", target)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer c.Close()
	buf := make([]byte, 256<<10)
	for i := range buf {
		buf[i] = 'B'
	}
	start := time.Now()
	var sent int64
	for sent < size {
		n, err := c.Write(buf[:min(int64(len(buf)), size-sent)])
		sent += int64(n)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	c.(*net.TCPConn).CloseWrite()
	ack, _ := io.ReadAll(c)
	elapsed := time.Since(start)
	fmt.Printf("label=%s mode=bulk bytes=%d acked=%s secs=%.2f mb_per_s=%.0f\n",
		label, sent, strings.TrimSpace(string(ack)), elapsed.Seconds(), float64(sent)/elapsed.Seconds()/1e6)
}
