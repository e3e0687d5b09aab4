package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/peergate/peergate/acl"
	"github.com/peergate/peergate/internal/hostsaccess"
)

// cmdConvert translates TCP Wrappers' hosts.allow and hosts.deny, for one daemon, into a bare ACL
// file that decides every address as tcpd would. Warnings go to stderr; exit 0 when the ACL was
// written, 2 when the files cannot be translated.
func cmdConvert(args []string, stdout, stderr io.Writer) int {
	f := bareFlags("convert", stderr)
	daemon := f.String("daemon", "", "the daemon's process name, as tcpd matches it: its argv[0] (sshd, in.telnetd) (required)")
	out := f.String("o", "", "write the ACL to `FILE` (replaced atomically) instead of stdout")
	if !f.parse(args) {
		return f.exit
	}
	if *daemon == "" || f.NArg() != 2 {
		f.Usage()
		return exitError
	}
	var files []*hostsaccess.File
	for i, path := range f.Args() {
		data, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			err = fmt.Errorf("%w (tcpd reads a missing file as an empty one: give /dev/null for it)", err)
		}
		if err != nil {
			return fail(stderr, "convert", err)
		}
		files = append(files, hostsaccess.Parse(path, data, []acl.Action{acl.Allow, acl.Deny}[i], nil))
	}
	res, err := hostsaccess.Translate(*daemon, files...)
	if err != nil {
		return fail(stderr, "convert", err)
	}
	for _, w := range res.Warnings {
		fmt.Fprintf(stderr, "peergate convert: warning: %s\n", w)
	}
	text := formatACL(res, *daemon, f.Arg(0), f.Arg(1))
	if err := sameACL(res.Spec, text); err != nil {
		return fail(stderr, "convert", err)
	}
	if *out == "" {
		if _, err := io.WriteString(stdout, text); err != nil {
			return fail(stderr, "convert", err)
		}
		return exitOK
	}
	if err := writeAtomic(*out, text); err != nil {
		return fail(stderr, "convert", err)
	}
	fmt.Fprintf(stderr, "peergate convert: %s: default %s, %d rules, from %d entries for %s\n",
		*out, res.Spec.Default, len(res.Spec.Rules), len(res.Entries), *daemon)
	return exitOK
}

// formatACL writes the translation as a bare ACL file, each rule with the entry it comes from.
func formatACL(res *hostsaccess.Result, daemon, allowPath, denyPath string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# peergate ACL for the daemon %q, converted from TCP Wrappers by \"peergate convert\":\n", oneLine(daemon))
	fmt.Fprintf(&b, "#   hosts.allow: %s\n#   hosts.deny:  %s\n", oneLine(allowPath), oneLine(denyPath))
	b.WriteString("# It decides every address as tcpd does: the first entry of hosts.allow that matches allows,\n" +
		"# else the first of hosts.deny denies, else allow. Each comment names the entry that decides.\n")
	from := func(o acl.Origin) string {
		if o.File == "" {
			return "no entry matches: tcpd grants"
		}
		return oneLine(o.String())
	}
	fmt.Fprintf(&b, "default: %-6s # %s\n", res.Spec.Default, from(res.DefaultOrigin))
	fmt.Fprintf(&b, "unix: %-9s # a client without an address, as tcpd judges one: %s\n", res.Spec.Unix, from(res.UnixOrigin))
	width := 0
	for _, r := range res.Spec.Rules {
		width = max(width, len(yamlPrefix(r.Prefix.String())))
	}
	for _, act := range []acl.Action{acl.Allow, acl.Deny} {
		rules := slices.DeleteFunc(slices.Clone(res.Spec.Rules), func(r acl.Rule) bool { return r.Action != act })
		if len(rules) == 0 {
			continue
		}
		fmt.Fprintf(&b, "%s:\n", act)
		for _, r := range rules {
			fmt.Fprintf(&b, "  - %-*s  # %s\n", width, yamlPrefix(r.Prefix.String()), from(r.Origin))
		}
	}
	return b.String()
}

// yamlPrefix quotes IPv6 prefixes, which a plain YAML scalar may misread ("::/0").
func yamlPrefix(s string) string {
	if strings.Contains(s, ":") {
		return `"` + s + `"`
	}
	return s
}

// oneLine keeps a name from ending a YAML comment early.
func oneLine(s string) string { return strings.NewReplacer("\n", `\n`, "\r", `\r`).Replace(s) }

// sameACL checks that text, loaded as an ACL file, has exactly the rules of spec.
func sameACL(spec acl.Spec, text string) error {
	loaded, err := acl.ParseSpec("converted ACL", []byte(text))
	if err != nil {
		return fmt.Errorf("internal error: the converted ACL does not load: %w", err)
	}
	key := func(s acl.Spec) string {
		a, err := acl.New(s)
		if err != nil {
			return err.Error()
		}
		var parts []string
		for _, r := range a.Rules() {
			parts = append(parts, r.Action.String()+" "+r.Prefix.String())
		}
		return fmt.Sprint(s.Default, s.Unix, parts)
	}
	if key(loaded) != key(spec) {
		return errors.New("internal error: the converted ACL does not load as the rules it was made from")
	}
	return nil
}

// writeAtomic replaces path with text, so a peergate watching it never reads half a file.
func writeAtomic(path, text string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".peergate-convert-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(text); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
