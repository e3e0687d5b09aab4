package sources

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/peergate/peergate/acl"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// feed is a loopback list server whose body, status and behaviour a test changes.
type feed struct {
	mu       sync.Mutex
	body     string
	status   int           // 0: 200
	truncate bool          // promise more bytes than sent
	stall    chan struct{} // non-nil: hold the body until closed
	started  chan struct{} // non-nil: closed when a request arrives
	hits     atomic.Int32
	cond     atomic.Int32 // conditional requests answered 304
}

func (f *feed) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.hits.Add(1)
	f.mu.Lock()
	body, status, truncate, stall, started := f.body, f.status, f.truncate, f.stall, f.started
	f.started = nil
	f.mu.Unlock()
	if started != nil {
		close(started)
	}
	etag := fmt.Sprintf("%q", fmt.Sprint(len(body), body[:min(len(body), 20)], body[max(0, len(body)-20):]))
	if status == 0 && r.Header.Get("If-None-Match") == etag {
		f.cond.Add(1)
		w.WriteHeader(http.StatusNotModified)
		return
	}
	if status != 0 {
		w.WriteHeader(status)
		return
	}
	w.Header().Set("ETag", etag)
	if truncate {
		w.Header().Set("Content-Length", fmt.Sprint(len(body)+100))
	}
	if stall != nil {
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		w.WriteHeader(200)
		io.WriteString(w, body[:len(body)/2])
		w.(http.Flusher).Flush()
		select {
		case <-stall:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, body[len(body)/2:])
		return
	}
	io.WriteString(w, body)
}

func (f *feed) set(fn func(f *feed)) { f.mu.Lock(); fn(f); f.mu.Unlock() }

func list(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "%d.%d.%d.0/24 ; SBL%d\n", 10+i>>16, i>>8&255, i&255, i)
	}
	return b.String()
}

func newFeed(t testing.TB, body string) (*feed, *httptest.Server) {
	f := &feed{body: body}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestResolve(t *testing.T) {
	for _, tc := range []struct {
		name    string
		first   string            // body of the first fetch
		change  func(f *feed)     // then the feed does this
		remote  func(*acl.Remote) // include options
		wantErr error             // of the second fetch (RefreshDue logs it; fetchLocked returns it)
		want    int               // rules in use after the second fetch
		changed bool
	}{
		{"304", list(100), func(f *feed) {}, nil, nil, 100, false},
		{"changed", list(100), func(f *feed) { f.body = list(120) }, nil, nil, 120, true},
		{"outage", list(100), func(f *feed) { f.status = 503 }, nil, ErrStatus, 100, false},
		{"truncated", list(100), func(f *feed) { f.body, f.truncate = list(101), true }, nil, io.ErrUnexpectedEOF, 100, false},
		{"garbage", list(100), func(f *feed) { f.body = "<html>oops</html>\n" }, nil, acl.ErrPrefix, 100, false},
		{"empty", list(100), func(f *feed) { f.body = "# nothing\n" }, nil, ErrTooFew, 100, false},
		{"shrunk", list(100), func(f *feed) { f.body = list(40) }, nil, ErrShrunk, 100, false},
		{"shrunk within bound", list(100), func(f *feed) { f.body = list(40) }, func(r *acl.Remote) { r.MaxShrink = 0.7 }, nil, 40, true},
		{"min_entries", list(100), func(f *feed) { f.body = list(90) }, func(r *acl.Remote) { r.MinEntries = 95 }, ErrTooFew, 100, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, srv := newFeed(t, tc.first)
			m := New(quiet(), prometheus.NewRegistry())
			b := m.For(t.TempDir())
			r := acl.Remote{URL: srv.URL + "/drop.txt", Action: acl.Deny, Refresh: time.Hour}
			if tc.remote != nil {
				tc.remote(&r)
			}
			rules, err := b.Resolve(context.Background(), r)
			if err != nil || len(rules) != 100 {
				t.Fatalf("first resolve: %d rules, %v", len(rules), err)
			}
			if got := rules[3].Origin.String(); got != srv.URL+"/drop.txt:4" {
				t.Errorf("origin %q", got)
			}
			f.set(tc.change)
			e := m.entry(r, "")
			e.fetch.Lock()
			changed, err := m.fetchLocked(context.Background(), e)
			e.fetch.Unlock()
			if !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
				t.Fatalf("refresh: %v, want %v", err, tc.wantErr)
			}
			if changed != tc.changed {
				t.Errorf("changed %v, want %v", changed, tc.changed)
			}
			if tc.name == "304" && f.cond.Load() != 1 {
				t.Errorf("conditional requests answered 304: %d", f.cond.Load())
			}
			// A load now gets the copy in use without fetching (it is fresh).
			hits := f.hits.Load()
			rules, err = b.Resolve(context.Background(), r)
			if err != nil || len(rules) != tc.want || f.hits.Load() != hits {
				t.Errorf("resolve: %d rules (want %d), %v, %d fetches", len(rules), tc.want, err, f.hits.Load()-hits)
			}
			if g := testutil.ToFloat64(m.count.WithLabelValues(r.Name())); int(g) != tc.want {
				t.Errorf("peergate_source_entries %v, want %d", g, tc.want)
			}
			fails := testutil.CollectAndCount(m.failures)
			if (fails > 0) != (tc.wantErr != nil) {
				t.Errorf("failure series %d for err %v", fails, tc.wantErr)
			}
		})
	}
}

// A first fetch that fails with no copy cached fails the load; with a copy in state_dir (a
// restart while the source is down) the copy is used.
func TestFirstFetchFailsClosedUnlessCached(t *testing.T) {
	f, srv := newFeed(t, list(50))
	dir := t.TempDir()
	r := acl.Remote{URL: srv.URL + "/l", Action: acl.Deny, Refresh: time.Second}
	f.set(func(f *feed) { f.status = 500 })
	if _, err := New(quiet(), nil).For(dir).Resolve(context.Background(), r); !errors.Is(err, ErrStatus) {
		t.Fatalf("outage with no copy: %v, want ErrStatus", err)
	}
	f.set(func(f *feed) { f.status = 0 })
	if rules, err := New(quiet(), nil).For(dir).Resolve(context.Background(), r); err != nil || len(rules) != 50 {
		t.Fatalf("fetch: %d rules, %v", len(rules), err)
	}
	f.set(func(f *feed) { f.status = 500 })
	rules, err := New(quiet(), nil).For(dir).Resolve(context.Background(), r) // a new process
	if err != nil || len(rules) != 50 {
		t.Fatalf("outage with a cached copy: %d rules, %v", len(rules), err)
	}
	// Without state_dir nothing survives the process.
	if _, err := New(quiet(), nil).For("").Resolve(context.Background(), r); err == nil {
		t.Fatal("outage, no state_dir, new process: no error")
	}
	// A cached copy that does not match its pin any more is refused.
	r.SHA256 = strings.Repeat("0", 64)
	if _, err := New(quiet(), nil).For(dir).Resolve(context.Background(), r); err == nil {
		t.Fatal("pinned include, wrong cached copy, source down: no error")
	}
}

// A slow body is cut off by the timeout; the last good copy stays.
func TestSlowBody(t *testing.T) {
	f, srv := newFeed(t, list(20))
	m := New(quiet(), nil)
	m.Timeout = 200 * time.Millisecond
	r := acl.Remote{URL: srv.URL, Action: acl.Allow, Refresh: time.Second}
	if _, err := m.For("").Resolve(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	stall := make(chan struct{})
	defer close(stall)
	f.set(func(f *feed) { f.body, f.stall = list(21), stall })
	e := m.entry(r, "")
	e.fetch.Lock()
	_, err := m.fetchLocked(context.Background(), e)
	e.fetch.Unlock()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("slow body: %v, want a deadline", err)
	}
	if rules, err := e.take(); len(rules) != 20 {
		t.Fatalf("copy in use: %d rules, %v", len(rules), err)
	}
}

// A load during a refresh's fetch waits for it and gets its result, not a second fetch.
func TestResolveDuringRefresh(t *testing.T) {
	f, srv := newFeed(t, list(30))
	m := New(quiet(), nil)
	r := acl.Remote{URL: srv.URL, Action: acl.Deny, Refresh: time.Second}
	b := m.For("")
	if _, err := b.Resolve(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	m.Retain(b.Used())
	stall, started := make(chan struct{}), make(chan struct{})
	f.set(func(f *feed) { f.body, f.stall, f.started = list(31), stall, started })
	m.entry(r, "").meta.Checked = time.Time{} // due now
	refreshed := make(chan bool)
	go func() { refreshed <- m.RefreshDue(context.Background()) }()
	<-started
	got := make(chan int)
	go func() {
		rules, _ := m.For("").Resolve(context.Background(), r)
		got <- len(rules)
	}()
	close(stall)
	if !<-refreshed {
		t.Error("refresh: no change reported")
	}
	if n := <-got; n != 31 {
		t.Errorf("load during the refresh got %d rules, want the new 31", n)
	}
	if h := f.hits.Load(); h != 2 {
		t.Errorf("%d fetches, want 2", h)
	}
}

func TestJSONFeed(t *testing.T) {
	body := `{"syncToken":"1","prefixes":[
{"ip_prefix":"3.5.140.0/22","region":"ap-northeast-2","service":"AMAZON"},
{"ip_prefix":"13.34.37.64/27","region":"eu-west-1","service":"EC2"},
{"ip_prefix":"52.94.76.0/22","region":"eu-west-1","service":"EC2"}],
"ipv6_prefixes":[{"ipv6_prefix":"2600:1f14::/35","region":"eu-west-1","service":"EC2"}]}`
	_, srv := newFeed(t, body)
	for _, tc := range []struct {
		sel  string
		want []string
		err  error
	}{
		{"prefixes[service=EC2][region=eu-west-1].ip_prefix", []string{"13.34.37.64/27", "52.94.76.0/22"}, nil},
		{"prefixes[].ip_prefix", []string{"3.5.140.0/22", "13.34.37.64/27", "52.94.76.0/22"}, nil},
		{"ipv6_prefixes[].ipv6_prefix", []string{"2600:1f14::/35"}, nil},
		{"prefixes[service=NOPE].ip_prefix", nil, ErrTooFew},
		{"prefixes[].region", nil, acl.ErrPrefix},
		{"nokey[].ip_prefix", nil, ErrJSON},
		{"syncToken[]", nil, ErrJSON},
		{"prefixes[", nil, ErrSelector},
	} {
		t.Run(tc.sel, func(t *testing.T) {
			r := acl.Remote{URL: srv.URL + "/ip-ranges.json", Select: tc.sel, Action: acl.Allow}
			rules, err := New(quiet(), nil).For("").Resolve(context.Background(), r)
			if !errors.Is(err, tc.err) || (err == nil) != (tc.err == nil) {
				t.Fatalf("err %v, want %v", err, tc.err)
			}
			var got []string
			for _, r := range rules {
				got = append(got, r.Prefix.String())
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
			if len(rules) > 0 && rules[0].Origin.File != r.Name() {
				t.Errorf("origin %v", rules[0].Origin)
			}
		})
	}
}

// file:// URLs (local mirrors) read through the file reader.
func TestFileURL(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "l.txt")
	if err := os.WriteFile(p, []byte("192.0.2.0/24\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rules, err := New(quiet(), nil).For("").Resolve(context.Background(), acl.Remote{URL: "file://" + p, Action: acl.Deny})
	if err != nil || len(rules) != 1 || rules[0].Prefix != netip.MustParsePrefix("192.0.2.0/24") {
		t.Fatalf("%v %v", rules, err)
	}
}

// A plain list is kept as its body, a third of its rules' memory: the first load takes the rules
// parsed at the fetch, later loads parse the body again and get the same rules.
func TestCopyKeptAsBody(t *testing.T) {
	_, srv := newFeed(t, list(1000))
	m := New(quiet(), nil)
	r := acl.Remote{URL: srv.URL + "/drop.txt", Action: acl.Deny, Refresh: time.Hour}
	b := m.For("")
	first, err := b.Resolve(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	e := m.entry(r, "")
	if e.rules != nil || e.fresh != nil || len(e.body) == 0 {
		t.Fatalf("after the first load: %d rules, %d fresh, %d bytes of body kept", len(e.rules), len(e.fresh), len(e.body))
	}
	second, err := b.Resolve(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	if len(first) != 1000 || !slices.Equal(first, second) || &first[0] == &second[0] {
		t.Fatalf("second load: %d rules (shared: %v), want the first load's 1000 rules again", len(second), &first[0] == &second[0])
	}
	if got := second[999].Origin.String(); got != r.URL+":1000" {
		t.Errorf("origin %s", got)
	}
}

// TestSecretsInURL: a URL's secrets are masked where the source is named (rule origins, logs,
// metrics) but still tell sources apart, and the cache of a URL without secrets keeps its name.
func TestSecretsInURL(t *testing.T) {
	a := acl.Remote{URL: "https://dl.example/list?license_key=aaa", Action: acl.Deny}
	b := acl.Remote{URL: "https://dl.example/list?license_key=bbb", Action: acl.Deny}
	if a.Name() != "https://dl.example/list?license_key=xxxxx" || a.Name() != b.Name() {
		t.Errorf("names %q and %q, want the key masked", a.Name(), b.Name())
	}
	if key(a) == key(b) {
		t.Errorf("two URLs differing in their key share the entry %q", key(a))
	}
	plain := acl.Remote{URL: "https://www.spamhaus.org/drop/drop.txt", Action: acl.Deny, Select: "x"}
	if got, want := key(plain), "deny "+plain.Name(); got != want {
		t.Errorf("key %q, want %q (the cache file name of a URL without secrets must not change)", got, want)
	}
}
