package main

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// nginxStatic serves the files of www with a real nginx (Debian's nginx-light) on a free loopback
// port, one process in the foreground, logging each request's status and If-None-Match to the
// returned access log. stop kills it.
func nginxStatic(t *testing.T, www string) (url, accessLog string, stop func()) {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/nginx"); serr != nil {
			t.Skip("nginx not installed (Debian package nginx-light; .ci/run installs it as root):", err)
		}
		bin = "/usr/sbin/nginx"
	}
	dir := t.TempDir()
	addr := freePort(t)
	accessLog = filepath.Join(dir, "access.log")
	conf := fmt.Sprintf(`daemon off;
master_process off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
events { worker_connections 64; }
http {
  log_format cond '$status "$http_if_none_match" $request_uri';
  access_log %[2]s cond;
  client_body_temp_path %[1]s/body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  server {
    listen %[3]s;
    root %[4]s;
  }
}
`, dir, accessLog, addr, www)
	writeFile(t, dir, "nginx.conf", conf)
	cmd := exec.Command(bin, "-p", dir, "-c", filepath.Join(dir, "nginx.conf"), "-e", filepath.Join(dir, "error.log"))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cmd.Process.Kill()
			cmd.Wait()
		}
	}
	t.Cleanup(stop)
	url = "http://" + addr
	eventually(t, 10*time.Second, "nginx answers", func() bool {
		resp, err := http.Get(url + "/")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})
	return url, accessLog, stop
}

// TestServeURLIncludeNginx: a running peergate serve with a url include served by a real nginx.
// nginx's ETag is honoured (refreshes are conditional and answered 304); a changed list is applied
// by the running server (127.0.0.2 denied once the list names it, 127.0.0.1 still served); with
// nginx killed, refreshes fail and the last good copy stays in force.
func TestServeURLIncludeNginx(t *testing.T) {
	www := t.TempDir()
	writeList := func(text string) {
		tmp := filepath.Join(www, ".drop.txt")
		if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(www, "drop.txt")); err != nil {
			t.Fatal(err)
		}
	}
	writeList("127.0.0.3/32 ; one\n")
	url, accessLog, stop := nginxStatic(t, www)
	up, _ := echoUpstream(t)
	dir := t.TempDir()
	cfg := writeFile(t, dir, "serve.yaml", fmt.Sprintf(`state_dir: state
acls:
  lo:
    default: allow
    include:
      - {url: "%s/drop.txt", action: deny, refresh: 1s}
services:
  - {name: echo, listen: ["127.0.0.1:0"], acl: lo, upstream: %q}
`, url, up))
	p := startServe(t, cfg)
	addr := p.addr("echo")
	if !served(t, "127.0.0.2", addr) || !served(t, "127.0.0.1", addr) {
		t.Fatal("127.0.0.2 or 127.0.0.1 refused before the list names them")
	}

	// Refreshes are conditional: nginx gets the ETag it gave and answers 304.
	etag := regexp.MustCompile(`(?m)^304 "(.+)" /drop\.txt$`)
	eventually(t, 10*time.Second, "a refresh answered 304 by nginx", func() bool {
		b, _ := os.ReadFile(accessLog)
		return etag.Match(b)
	})

	// A changed list is applied by the running server.
	writeList("127.0.0.3/32 ; one\n127.0.0.2/32 ; two\n")
	// (A connection that is served stays open until the client's deadline: wait for the reload
	// rather than poll.)
	p.waitLog(`msg="url include fetched" source=` + regexp.QuoteMeta(url+"/drop.txt") + ` entries=2`)
	p.waitLog(`msg="config reloaded"`)
	if !refused(t, "127.0.0.2", addr) {
		t.Fatal("127.0.0.2 served after the list named it")
	}
	if !served(t, "127.0.0.1", addr) {
		t.Fatal("127.0.0.1 refused after the list changed")
	}

	// Outage: the last good copy stays in force.
	stop()
	p.waitLog(`url include refresh failed; keeping the last good copy.*` + regexp.QuoteMeta(url+"/drop.txt"))
	if !refused(t, "127.0.0.2", addr) || !served(t, "127.0.0.1", addr) {
		t.Fatal("with nginx down, the last good copy is not in force")
	}
	b, _ := os.ReadFile(accessLog)
	if n := strings.Count(string(b), "\n200 "); n < 1 {
		t.Errorf("nginx served the changed list %d times; access log:\n%s", n, b)
	}
}
