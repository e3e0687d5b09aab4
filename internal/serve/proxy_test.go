package serve

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// pattern fills b with the stream's 8-byte big-endian offsets from off on (off a multiple of 8), so
// that a gap or a repeat anywhere in a received stream shows.
func pattern(b []byte, off int64) {
	for i := 0; i+8 <= len(b); i += 8 {
		binary.BigEndian.PutUint64(b[i:], uint64(off)+uint64(i))
	}
}

// slowReader is an upstream that floods the client without end while it reads the client's stream
// slowly: after the first MiB it stops reading for pause. It reports how much of the stream
// arrived intact and how the stream ended.
func slowReader(t *testing.T, pause time.Duration) (addr string, got chan streamEnd) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got = make(chan streamEnd, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.(*net.TCPConn).SetReadBuffer(64 << 10)
		c.SetDeadline(time.Now().Add(30 * time.Second))
		go func() { // the other direction stays busy the whole time
			buf := make([]byte, 64<<10)
			for {
				if _, err := c.Write(buf); err != nil {
					return
				}
			}
		}()
		var off int64
		want := make([]byte, 64<<10)
		buf := make([]byte, 64<<10)
		paused := false
		for {
			if !paused && off >= 1<<20 {
				paused = true
				time.Sleep(pause) // the stall under test: a reader that does not read
			}
			n, err := io.ReadFull(c, buf)
			pattern(want[:n], off)
			if i := firstDiff(buf[:n], want[:n]); i >= 0 {
				got <- streamEnd{off + int64(i), fmt.Errorf("byte %d of the stream is wrong: bytes went missing", off+int64(i))}
				return
			}
			off += int64(n)
			if err != nil {
				got <- streamEnd{off, err}
				return
			}
		}
	}()
	return ln.Addr().String(), got
}

type streamEnd struct {
	n   int64 // bytes that arrived intact
	err error // io.EOF, io.ErrUnexpectedEOF: a clean end; else how it broke
}

func firstDiff(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

// TestProxyNeverCorrupts: with idle_timeout, an upstream that stops reading while the other
// direction is busy gets its connection reset after the idle timeout. Before, the write that
// timed out lost the bytes it had not written and the copy went on: the upstream saw a stream
// with a hole in it and a clean end.
func TestProxyNeverCorrupts(t *testing.T) {
	const idle = 200 * time.Millisecond
	const total = 32 << 20
	up, got := slowReader(t, 5*idle)
	s, addr := start(t, up, "    idle_timeout: 200ms\n")
	c, err := dialFrom("127.0.0.1", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.(*net.TCPConn).SetWriteBuffer(64 << 10)
	go io.Copy(io.Discard, c) // read the flood: the upstream-to-client way is busy throughout
	sent := int64(0)
	buf := make([]byte, 64<<10)
	for sent < total {
		pattern(buf, sent)
		n, err := c.Write(buf)
		sent += int64(n)
		if err != nil {
			break
		}
	}
	c.(*net.TCPConn).CloseWrite()
	var end streamEnd
	select {
	case end = <-got:
	case <-time.After(20 * time.Second):
		t.Fatal("the upstream's stream did not end")
	}
	if end.err != nil && strings.Contains(end.err.Error(), "went missing") {
		t.Fatalf("upstream: %v (client sent %d bytes)", end.err, sent)
	}
	// Whether the upstream's reader sees the reset or an EOF depends on which of its two
	// goroutines takes the socket's error first: TestPipeEnds checks the reset itself.
	if end.n >= sent {
		t.Fatalf("the stall (%v, idle_timeout %v) did not end the connection", 5*idle, idle)
	}
	t.Logf("upstream: %d intact bytes, then %v; client sent %d", end.n, end.err, sent)
	svc := s.m.service("p")
	waitFor(t, "the broken connection counted", func() bool { return testutil.ToFloat64(svc.aborts[endWrite]) == 1 })
}

// waitFor waits, up to a bound, until cond holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t testing.TB) (near, far *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	return s.(*net.TCPConn), c.(*net.TCPConn)
}

// readAll reads c to its end and reports how many bytes of the pattern arrived intact, and the
// error that ended it (nil: EOF).
func readAll(c net.Conn) (int64, error) {
	buf, want := make([]byte, 64<<10), make([]byte, 64<<10)
	var off int64
	for {
		n, err := io.ReadFull(c, buf)
		pattern(want[:n], off)
		if i := firstDiff(buf[:n], want[:n]); i >= 0 {
			return off + int64(i), fmt.Errorf("byte %d of the stream is wrong", off+int64(i))
		}
		off += int64(n)
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return off, nil
		}
		if err != nil {
			return off, err
		}
	}
}

// writeAll writes up to n bytes of the pattern to c and returns how many it wrote.
func writeAll(c net.Conn, n int64) int64 {
	buf := make([]byte, 64<<10)
	var off int64
	for off < n {
		pattern(buf, off)
		w, err := c.Write(buf[:min(int64(len(buf)), n-off)])
		off += int64(w)
		if err != nil {
			break
		}
	}
	return off
}

// TestPipeEnds: how a pipe ends, copying through a buffer and splicing. It resets both sides when
// a write fails or stalls (the bytes it holds can never be delivered) or a read fails, and closes
// them when both ways reached EOF or were quiet for the idle timeout.
func TestPipeEnds(t *testing.T) {
	const idle = 150 * time.Millisecond
	for _, tc := range []struct {
		name  string
		run   func(t *testing.T, fa, fb *net.TCPConn) // the far ends of the pipe's a and b
		why   end
		reset bool // fb sees a reset, not an EOF
	}{
		{"both ways to EOF", func(t *testing.T, fa, fb *net.TCPConn) {
			go func() { writeAll(fa, 3<<20); fa.CloseWrite() }()
			go func() { writeAll(fb, 1<<20); fb.CloseWrite() }()
			if n, err := readAll(fa); n != 1<<20 || err != nil {
				t.Errorf("a's peer read %d bytes, %v; want %d, EOF", n, err, 1<<20)
			}
		}, endDone, false},
		{"quiet both ways", func(t *testing.T, fa, fb *net.TCPConn) {
			if n, err := readAll(fa); n != 0 || err != nil {
				t.Errorf("a's peer read %d bytes, %v; want EOF", n, err)
			}
		}, endIdle, false},
		{"b's peer stops reading", func(t *testing.T, fa, fb *net.TCPConn) {
			fb.SetReadBuffer(64 << 10)
			go writeAll(fa, 256<<20) // until the reset
		}, endWrite, true},
		{"a's peer resets", func(t *testing.T, fa, fb *net.TCPConn) {
			writeAll(fa, 100<<10)
			fa.SetLinger(0)
			fa.Close()
		}, endRead, true},
	} {
		for _, splice := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/splice=%v", tc.name, splice), func(t *testing.T) {
				spliceLocal = splice
				defer func() { spliceLocal = false }()
				a, fa := tcpPair(t)
				b, fb := tcpPair(t)
				type result struct {
					why end
					at  time.Time
				}
				ended := make(chan result, 1)
				t0 := time.Now()
				go func() { _, _, why, _ := pipe(a, b, idle); ended <- result{why, time.Now()} }()
				tc.run(t, fa, fb)
				var r result
				select {
				case r = <-ended:
				case <-time.After(15 * time.Second):
					t.Fatal("pipe did not end")
				}
				if r.why != tc.why {
					t.Errorf("pipe ended with %q, want %q", abortReasons[r.why], abortReasons[tc.why])
				}
				if tc.why == endIdle && r.at.Sub(t0) < idle {
					t.Errorf("idle end after %v, before the idle timeout %v", r.at.Sub(t0), idle)
				}
				n, err := readAll(fb)
				switch {
				case err != nil && !errors.Is(err, syscall.ECONNRESET):
					t.Errorf("b's peer: %v after %d intact bytes", err, n)
				case tc.reset && err == nil:
					t.Errorf("b's peer saw a clean end after %d bytes; want a reset", n)
				case !tc.reset && err != nil:
					t.Errorf("b's peer saw a reset after %d bytes; want a clean end", n)
				}
			})
		}
	}
}

// BenchmarkPipe: throughput of one direction of a pipe between loopback sockets, through a buffer
// and spliced.
func BenchmarkPipe(b *testing.B) {
	for _, splice := range []bool{false, true} {
		b.Run(fmt.Sprintf("splice=%v", splice), func(b *testing.B) {
			spliceLocal = splice
			defer func() { spliceLocal = false }()
			a, fa := tcpPair(b)
			c, fc := tcpPair(b)
			go pipe(a, c, time.Hour)
			buf := make([]byte, 64<<10)
			go func() {
				for {
					if _, err := fa.Write(buf); err != nil {
						return
					}
				}
			}()
			rbuf := make([]byte, 64<<10)
			b.SetBytes(int64(len(rbuf)))
			b.ResetTimer()
			for range b.N {
				if _, err := io.ReadFull(fc, rbuf); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			fa.Close()
			fc.Close()
		})
	}
}
