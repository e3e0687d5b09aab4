package main

import (
	"fmt"
	"io"
	"net/netip"
	"os/user"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/peergate/peergate/acl"
	"github.com/peergate/peergate/gate"
	"github.com/peergate/peergate/gate/bans"
	"github.com/peergate/peergate/internal/config"
	"github.com/peergate/peergate/internal/serve"
)

// cmdCheck prints, for each address, the decision and the rule that made it, like tcpdmatch. The word
// "unix" asks for the Unix-domain policy. It exits 0 when every address is allowed and 1 when any
// is denied.
func cmdCheck(args []string, stdout, stderr io.Writer) int {
	f := newFlags("check", stderr).withACL()
	if !f.parse(args) {
		return f.exit
	}
	if f.NArg() == 0 {
		fmt.Fprintln(stderr, "peergate check: give one or more addresses to check")
		return exitError
	}
	file, err := config.Load(f.config)
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
