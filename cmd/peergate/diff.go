package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/netip"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/peergate/peergate/acl"
	"github.com/peergate/peergate/internal/config"
)

// diffArgs reads "diff -config OLD [-acl NAME] NEW [-acl NAME] [-json]": an -acl before NEW names
// OLD's ACL, one after NEW names NEW's; NEW's defaults to OLD's name when NEW has several ACLs.
type diffArgs struct {
	old, new       string
	oldACL, newACL string
	json           bool
}

func parseDiffArgs(args []string, stderr io.Writer) (diffArgs, int, bool) {
	var d diffArgs
	f := bareFlags("diff", stderr)
	f.String("config", "", "the old config: a bare ACL file or a serve file (required)")
	f.String("acl", "", "which ACL to use, when a file has several: before NEW for OLD, after NEW for NEW")
	f.Bool("json", false, "print the changes as JSON")
	usageErr := func(format string, a ...any) (diffArgs, int, bool) {
		fmt.Fprintf(stderr, "peergate diff: "+format+"\n", a...)
		fmt.Fprintf(stderr, "usage: peergate diff %s\n", diffSynopsis)
		return d, exitError, false
	}
	newACLSet := false
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			for _, p := range args[i+1:] {
				if d.new != "" {
					return usageErr("more than one NEW file: %q", p)
				}
				d.new = p
			}
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			if d.new != "" {
				return usageErr("more than one NEW file: %q", a)
			}
			d.new = a
			continue
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		switch name {
		case "h", "help":
			f.Usage()
			return d, exitOK, false
		case "json":
			switch {
			case !hasVal || val == "true":
				d.json = true
			case val == "false":
				d.json = false
			default:
				return usageErr("-json=%q: want true or false", val)
			}
			continue
		case "config", "acl":
		default:
			return usageErr("flag provided but not defined: %s", a)
		}
		if !hasVal {
			if i+1 >= len(args) {
				return usageErr("flag needs an argument: %s", a)
			}
			i++
			val = args[i]
		}
		switch {
		case name == "config":
			d.old = val
		case d.new == "":
			d.oldACL = val
		default:
			d.newACL, newACLSet = val, true
		}
	}
	if d.old == "" || d.new == "" {
		return usageErr("need -config OLD and NEW")
	}
	if !newACLSet {
		d.newACL = "" // resolved against NEW's ACLs in cmdDiff
	}
	return d, exitOK, true
}

const diffSynopsis = "-config OLD [-acl NAME] NEW [-acl NAME] [-json]"

// pickDiff loads path and picks its ACL called name; when fallback is set and the file has several
// ACLs, the one called fallback.
func pickDiff(path, name, fallback string) (*config.ACL, error) {
	file, err := loadConfig(path, io.Discard)
	if err != nil {
		return nil, err
	}
	if name == "" && fallback != "" && len(file.ACLs) > 1 {
		name = fallback
	}
	return file.Pick(name)
}

// diffRule is one side of a change, as JSON.
type diffRule struct {
	Action string `json:"action"`
	Rule   string `json:"rule"`   // the deciding prefix, or "default"
	Origin string `json:"origin"` // file:line of the rule, or the ACL's file for the default
}

type diffChange struct {
	First     string   `json:"first"`
	Last      string   `json:"last"`
	Prefixes  []string `json:"prefixes"`
	Addresses string   `json:"addresses"` // decimal: an IPv6 count can exceed 2^64
	Old       diffRule `json:"old"`
	New       diffRule `json:"new"`
}

type diffReport struct {
	Old     string         `json:"old"`
	New     string         `json:"new"`
	Changes []diffChange   `json:"changes"`
	Unix    *diffUnix      `json:"unix,omitempty"`
	Summary map[string]any `json:"summary"`
}

type diffUnix struct {
	Old string `json:"old"`
	New string `json:"new"`
}

func sideOf(d acl.Decision, a *config.ACL, path string) diffRule {
	if d.Rule == nil {
		return diffRule{d.Action.String(), "default", path}
	}
	return diffRule{d.Action.String(), d.Rule.Prefix.String(), d.Rule.Origin.String()}
}

// cmdDiff prints every address range whose verdict differs between two ACLs, as prefixes, with the
// rule deciding it on each side and the number of addresses. It exits 0 when nothing changes and 1
// when something does.
func cmdDiff(args []string, stdout, stderr io.Writer) int {
	d, status, ok := parseDiffArgs(args, stderr)
	if !ok {
		return status
	}
	oldA, newA, err := loadDiffPair(d)
	if err != nil {
		return fail(stderr, "diff", err)
	}
	r := &diffResult{d: d, old: oldA, new: newA, changes: acl.Diff(oldA.ACL, newA.ACL)}
	r.unixOld, r.unixNew = oldA.ACL.Unix().Action, newA.ACL.Unix().Action
	r.unixChanged = r.unixOld != r.unixNew || unixRulesKey(oldA.ACL) != unixRulesKey(newA.ACL)
	for i := range r.nowDenied {
		r.nowDenied[i], r.nowAllowed[i] = new(big.Int), new(big.Int)
	}
	w := bufio.NewWriter(stdout)
	defer w.Flush()
	if d.json {
		err = r.writeJSON(w)
	} else {
		r.writeText(w)
	}
	if err != nil {
		return fail(stderr, "diff", err)
	}
	if err := w.Flush(); err != nil {
		return fail(stderr, "diff", err)
	}
	if len(r.changes) == 0 && !r.unixChanged {
		return exitOK
	}
	return exitDenied
}

// loadDiffPair loads the two ACLs of d, in parallel: with big lists, loading is most of the time.
// When both fail, the old one's error is returned.
func loadDiffPair(d diffArgs) (oldA, newA *config.ACL, err error) {
	var newErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		newA, newErr = pickDiff(d.new, d.newACL, d.oldACL)
	}()
	oldA, err = pickDiff(d.old, d.oldACL, "")
	<-done
	if err != nil {
		return nil, nil, err
	}
	if newErr != nil {
		return nil, nil, newErr
	}
	return oldA, newA, nil
}

// diffResult is what cmdDiff found, with the totals its writers add up by family ([IPv4, IPv6])
// and direction as they go through the changes.
type diffResult struct {
	d                     diffArgs
	old, new              *config.ACL
	changes               []acl.Change
	unixOld, unixNew      acl.Action
	unixChanged           bool
	nowDenied, nowAllowed [2]*big.Int
	nprefixes             int
}

// count adds c to the totals and returns its number of addresses and its prefixes.
func (r *diffResult) count(c acl.Change) (*big.Int, []netip.Prefix) {
	fam := 0
	if c.First.Is6() {
		fam = 1
	}
	n := c.Count()
	if c.New.Allowed() {
		r.nowAllowed[fam].Add(r.nowAllowed[fam], n)
	} else {
		r.nowDenied[fam].Add(r.nowDenied[fam], n)
	}
	ps := c.Prefixes()
	r.nprefixes += len(ps)
	return n, ps
}

// writeJSON writes the changes, the Unix-domain change and the totals as one JSON document.
func (r *diffResult) writeJSON(w io.Writer) error {
	report := diffReport{Old: r.d.old, New: r.d.new, Changes: make([]diffChange, 0, len(r.changes))}
	for _, c := range r.changes {
		n, ps := r.count(c)
		o, nw := sideOf(c.Old, r.old, r.d.old), sideOf(c.New, r.new, r.d.new)
		dc := diffChange{First: c.First.String(), Last: c.Last.String(), Addresses: n.String(), Old: o, New: nw}
		for _, p := range ps {
			dc.Prefixes = append(dc.Prefixes, p.String())
		}
		report.Changes = append(report.Changes, dc)
	}
	if r.unixChanged {
		report.Unix = &diffUnix{r.unixOld.String(), r.unixNew.String()}
	}
	report.Summary = map[string]any{
		"ranges": len(r.changes), "prefixes": r.nprefixes,
		"ipv4_now_denied": r.nowDenied[0].String(), "ipv4_now_allowed": r.nowAllowed[0].String(),
		"ipv6_now_denied": r.nowDenied[1].String(), "ipv6_now_allowed": r.nowAllowed[1].String(),
		"unix_changed": r.unixChanged,
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(report)
}

// writeText writes a table of the changed prefixes and the Unix-domain change, then a summary line.
func (r *diffResult) writeText(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if len(r.changes) > 0 {
		fmt.Fprintln(tw, "prefix\tverdict\taddresses\told rule\tnew rule")
	}
	for _, c := range r.changes {
		_, ps := r.count(c)
		o, nw := sideOf(c.Old, r.old, r.d.old), sideOf(c.New, r.new, r.d.new)
		for _, p := range ps {
			size := new(big.Int).Lsh(big.NewInt(1), uint(p.Addr().BitLen()-p.Bits()))
			fmt.Fprintf(tw, "%s\t%s -> %s\t%s\t%s %s\t%s %s\n", p, o.Action, nw.Action, size, o.Rule, o.Origin, nw.Rule, nw.Origin)
		}
	}
	oldA, newA := r.old.ACL, r.new.ACL
	if r.unixChanged {
		if r.unixOld != r.unixNew {
			fmt.Fprintf(tw, "unix\t%s -> %s\t-\tunix policy %s\tunix policy %s\n", r.unixOld, r.unixNew, r.d.old, r.d.new)
		}
		if ok, nk := unixRulesKey(oldA), unixRulesKey(newA); ok != nk {
			fmt.Fprintf(tw, "unix\tentries\t-\t%s\t%s\n", describeUnixRules(oldA), describeUnixRules(newA))
		}
	}
	tw.Flush()
	if len(r.changes) == 0 && !r.unixChanged {
		fmt.Fprintf(w, "no change: %s and %s decide every address and Unix-domain peer alike\n", r.d.old, r.d.new)
		return
	}
	fmt.Fprintf(w, "%d prefixes in %d ranges change verdict: IPv4 %s now denied, %s now allowed; IPv6 %s now denied, %s now allowed",
		r.nprefixes, len(r.changes), r.nowDenied[0], r.nowAllowed[0], r.nowDenied[1], r.nowAllowed[1])
	if r.unixOld != r.unixNew {
		fmt.Fprintf(w, "; Unix-domain peers now %s by default", map[acl.Action]string{acl.Allow: "allowed", acl.Deny: "denied"}[r.unixNew])
	}
	if unixRulesKey(oldA) != unixRulesKey(newA) {
		fmt.Fprint(w, "; the unix policy's uid/gid entries change")
	}
	fmt.Fprintln(w)
}

// unixRulesKey returns what a's unix-policy entries decide, in a canonical form, so that two ACLs
// whose entries differ only in order or origin compare equal.
func unixRulesKey(a *acl.ACL) string {
	var keys []string
	for _, r := range a.UnixRules() {
		keys = append(keys, fmt.Sprint(r.Action, r.Kind, r.ID))
	}
	slices.Sort(keys)
	return strings.Join(keys, ",")
}

func describeUnixRules(a *acl.ACL) string {
	var parts []string
	for _, r := range a.UnixRules() {
		parts = append(parts, r.String())
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, "; ")
}
