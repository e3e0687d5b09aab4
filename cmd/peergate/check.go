package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"os/user"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/peergate/peergate/acl"
	"github.com/peergate/peergate/gate"
	"github.com/peergate/peergate/gate/bans"
	"github.com/peergate/peergate/internal/serve"
)

// cmdCheck prints, for each address, the decision and the rule that made it, like tcpdmatch. The word
// "unix" asks for the Unix-domain policy. It exits 0 when every address is allowed and 1 when any
// is denied.
func cmdCheck(args []string, stdout, stderr io.Writer) int {
	f := newFlags("check", stderr).withACL()
	f.configOptional = true
	hits := f.Bool("hits", false, "instead of judging addresses, print how many connections each rule decided and when it last did, from a running serve's admin API")
	af := &adminFlags{flags: f}
	f.StringVar(&af.admin, "admin", "", "with -hits: admin listener of the running peergate serve, IP:PORT (default: admin.listen of -config)")
	f.StringVar(&af.tokenFile, "token-file", "", "with -hits: file holding the admin bearer token (default: admin.token_file of -config)")
	service := f.String("service", "", "with -hits: which service (needed when the serve runs several)")
	top := f.Int("top", 50, "with -hits: how many rules to list, most hits first; the rest are summed")
	if !f.parse(args) {
		return f.exit
	}
	if *hits {
		return checkHits(af, *service, *top, stdout, stderr)
	}
	if f.config == "" {
		fmt.Fprintln(stderr, "peergate check: -config FILE is required")
		return exitError
	}
	if f.NArg() == 0 {
		fmt.Fprintln(stderr, "peergate check: give one or more addresses to check")
		return exitError
	}
	file, err := loadConfig(f.config, stderr)
	if err != nil {
		return fail(stderr, "check", err)
	}
	a, err := file.Pick(f.acl)
	if err != nil {
		return fail(stderr, "check", err)
	}
	// A serve file with state_dir: the saved bans (api, auto) are the layer before the ACL.
	var layer *bans.Table
	if file.StateDir != "" {
		saved, err := serve.ReadBans(file.StateDir)
		if err != nil {
			return fail(stderr, "check", err)
		}
		layer = bans.New(bans.Config{Max: len(saved) + 1})
		layer.AddBatch(saved)
	}
	var decisions []acl.Decision
	banned := map[int]gate.Ban{}
	for _, s := range f.Args() {
		if s == "unix" {
			decisions = append(decisions, a.ACL.Unix())
			continue
		}
		if cred, ok, err := parseUnixPeer(s); ok {
			if err != nil {
				return fail(stderr, "check", err)
			}
			decisions = append(decisions, a.ACL.DecideUnix(cred))
			continue
		}
		addr, err := netip.ParseAddr(strings.Trim(s, "[]"))
		if err != nil {
			return fail(stderr, "check", fmt.Errorf("%q is not an IP address", s))
		}
		if layer != nil {
			if b, ok := layer.Lookup(addr); ok {
				banned[len(decisions)] = b
				decisions = append(decisions, acl.Decision{Action: acl.Deny})
				continue
			}
		}
		decisions = append(decisions, a.ACL.Decide(addr))
	}
	status := exitOK
	w := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	for i, d := range decisions {
		if b, ok := banned[i]; ok {
			fmt.Fprintf(w, "%s\tdeny\tban %s\torigin=%s reason=%q expires=%s (%s)\n", f.Arg(i), b.Prefix, b.Origin, b.Reason, b.ExpiresString(), file.StateDir)
			status = exitDenied
			continue
		}
		by := "default"
		if d.Rule != nil {
			by = d.Rule.Prefix.String() + "\t" + d.Rule.Origin.String()
		} else if d.UnixRule != nil {
			by = d.UnixRule.Kind.String() + " " + strconv.FormatUint(uint64(d.UnixRule.ID), 10) + "\t" + d.UnixRule.Origin.String()
		} else if strings.HasPrefix(f.Arg(i), "unix") {
			by = "unix policy"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\n", f.Arg(i), d.Action, by)
		if !d.Allowed() {
			status = exitDenied
		}
	}
	w.Flush()
	return status
}

// parseUnixPeer reads "unix:uid=1000,gid=100" (names accepted: "unix:uid=alice"; a missing gid is
// the user's primary group where the user is known, else none): a Unix-domain peer with those
// credentials. ok is false when s does not start with "unix:".
func parseUnixPeer(s string) (cred acl.UnixCred, ok bool, err error) {
	rest, ok := strings.CutPrefix(s, "unix:")
	if !ok {
		return cred, false, nil
	}
	cred.Valid = true
	cred.GID = ^uint32(0) // no group unless given or found
	haveUID, haveGID := false, false
	for _, kv := range strings.Split(rest, ",") {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "uid":
			cred.UID, err = acl.ResolveUnixID(acl.UID, v)
			haveUID = true
		case "gid":
			cred.GID, err = acl.ResolveUnixID(acl.GID, v)
			haveGID = true
		default:
			err = fmt.Errorf("%q: want unix:uid=USER[,gid=GROUP]", s)
		}
		if err != nil {
			return cred, true, err
		}
	}
	if !haveUID {
		return cred, true, fmt.Errorf("%q: want unix:uid=USER[,gid=GROUP]", s)
	}
	if !haveGID {
		if u, err := user.LookupId(strconv.FormatUint(uint64(cred.UID), 10)); err == nil {
			if g, err := strconv.ParseUint(u.Gid, 10, 32); err == nil {
				cred.GID = uint32(g)
			}
		}
	}
	return cred, true, nil
}

// checkHits prints the per-rule hits of a running serve (GET /rules): the top rules by the number
// of connections they decided, the rest summed, and the rules that never decided one.
func checkHits(f *adminFlags, service string, top int, stdout, stderr io.Writer) int {
	if f.NArg() > 0 {
		return fail(stderr, "check", fmt.Errorf("-hits takes no addresses: %q", f.Args()))
	}
	base, token, err := f.client()
	if err != nil {
		return fail(stderr, "check", err)
	}
	q := url.Values{"service": {service}, "top": {strconv.Itoa(top)}}
	code, out, err := call("GET", base+"/rules?"+q.Encode(), token, nil)
	if err != nil {
		return fail(stderr, "check", err)
	}
	if code != http.StatusOK {
		fmt.Fprintf(stderr, "peergate check: %s\n", apiError(out))
		return exitError
	}
	var h serve.RuleHits
	if err := json.Unmarshal(out, &h); err != nil {
		return fail(stderr, "check", err)
	}
	fmt.Fprintf(stdout, "service %s, acl %s: hits since %s\n", h.Service, h.ACL, h.Since.Format(time.RFC3339))
	w := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "RULE\tORIGIN\tACTION\tHITS\tLAST HIT")
	for _, r := range h.Top {
		origin := r.Origin
		if origin == "" {
			origin = "-"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\n", r.Rule, origin, r.Action, r.Hits, r.LastHit.Format(time.RFC3339))
	}
	w.Flush()
	if h.Rest.Rules > 0 || h.Untracked > 0 {
		fmt.Fprintf(stdout, "rest: %d more rules, %d hits", h.Rest.Rules, h.Rest.Hits)
		if h.Untracked > 0 {
			fmt.Fprintf(stdout, " (%d by rules beyond the %d tracked)", h.Untracked, h.Capacity)
		}
		fmt.Fprintln(stdout)
	}
	switch {
	case h.UnusedCount == nil:
		fmt.Fprintf(stdout, "never matched: unknown (more than %d rules decided connections)\n", h.Capacity)
	case *h.UnusedCount > 0:
		fmt.Fprintf(stdout, "never matched since %s: %d rules\n", h.Since.Format(time.RFC3339), *h.UnusedCount)
		for _, r := range h.Unused {
			fmt.Fprintf(stdout, "  %s\n", r)
		}
		if *h.UnusedCount > len(h.Unused) {
			fmt.Fprintf(stdout, "  ... and %d more\n", *h.UnusedCount-len(h.Unused))
		}
	}
	return exitOK
}
