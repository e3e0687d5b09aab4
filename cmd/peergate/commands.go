package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/peergate/peergate/internal/version"
)

// command is one row of the command table: what usage, "peergate help", "CMD -h" and README's
// Commands table are made of (TestREADMECommands keeps README in step with it).
type command struct {
	name     string
	synopsis string // flags and arguments after "peergate NAME"
	summary  string // what it does, one line
	exits    string // its exit statuses
	run      func(args []string, stdout, stderr io.Writer) int
}

// commands is the command table, in the order usage lists them. It is filled in init because
// help, which prints it, is one of its rows.
var commands []command

func init() {
	commands = []command{
		{"serve", "-config FILE [-log stderr|syslog] [-log-level debug|info|warn] [-log-format text|json] [-watch 1s]",
			"run the services of a serve file", "0 after SIGTERM; 2 on a bad config", cmdServe},
		{"wrap", "-config FILE [-acl NAME] [-on-deny close|reset] [-reset] [-log auto|stderr|syslog] [-log-level debug|info|warn] [-log-format text|json] -- PROGRAM ARGS...",
			"tcpd: judge the socket on fd 0 (inetd) or fd 3 (systemd Accept=yes), then exec PROGRAM or close it",
			"(the program's) / 1 denied / 2 error", cmdWrap},
		{"check", "-config FILE [-acl NAME] ADDR... (or -hits [-admin ADDR] [-service NAME] [-top N])",
			"which rule decides each address, and where it was written (tcpdmatch)", "0 all allowed / 1 any denied / 2 error", cmdCheck},
		{"lint", "-config FILE [-acl NAME]",
			"load errors, then suspicious rules (tcpdchk)", "0 clean / 1 warnings / 2 errors", cmdLint},
		{"ban", "-admin ADDR [-for 1h] [-reason TEXT] PREFIX...",
			"ban addresses or prefixes now, through the admin API of a running serve", "0 banned / 1 refused / 2 error", cmdBan},
		{"unban", "-admin ADDR PREFIX...",
			"remove the bans of addresses or prefixes through the admin API", "0 removed / 1 no such ban / 2 error", cmdUnban},
		{"bans", "-admin ADDR",
			"list the live bans of a running serve", "0 / 2 error", cmdBans},
		{"whatif", "-admin ADDR FILE",
			"which recent peers of each service of a running serve a candidate serve or ACL file would decide the other way; applies nothing",
			"0 no change / 1 changes / 2 error", cmdWhatIf},
		{"diff", diffSynopsis,
			"every address range whose verdict changes between two ACLs, as prefixes, with the deciding rule on each side",
			"0 no change / 1 changes / 2 error", cmdDiff},
		{"convert", "-daemon NAME [-o FILE] HOSTS.ALLOW HOSTS.DENY",
			"TCP Wrappers' rules for one daemon as an ACL file", "0 written / 2 cannot be translated", cmdConvert},
		{"reload", "-admin ADDR [-force]",
			"reload a running serve through its admin API, refused if it would lock out a guarded address or this client",
			"0 reloaded / 1 refused by the lockout guard / 2 error", cmdReload},
		{"version", "",
			"the module version, VCS revision and time, and Go version of this binary", "0", cmdVersion},
		{"help", "[-man DIR] [COMMAND]",
			"this list, or one command's usage and flags; -man writes the man pages", "0 / 2 unknown command", cmdHelp},
	}
}

// usage returns the usage lines of every command.
func usage() string {
	var b strings.Builder
	b.WriteString("usage:\n")
	for _, c := range commands {
		fmt.Fprintf(&b, "  peergate %s\n      %s\n", strings.TrimSpace(c.name+" "+c.synopsis), c.summary)
	}
	b.WriteString("\nRun \"peergate help COMMAND\" or \"peergate COMMAND -h\" for its flags; see README.md for the files.\n")
	return b.String()
}

func lookup(name string) (command, bool) {
	for _, c := range commands {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

// cmdHelp prints the usage of every command, or of the one named.
func cmdHelp(args []string, stdout, stderr io.Writer) int {
	f := bareFlags("help", stderr)
	man := f.String("man", "", "write a man page for peergate and one for each command into `DIR` instead")
	if !f.parse(args) {
		return f.exit
	}
	if *man != "" {
		if err := writeManPages(*man); err != nil {
			return fail(stderr, "help", err)
		}
		return exitOK
	}
	switch f.NArg() {
	case 0:
		fmt.Fprint(stdout, usage())
		return exitOK
	case 1:
	default:
		f.Usage()
		return exitError
	}
	c, ok := lookup(f.Arg(0))
	if !ok {
		fmt.Fprintf(stderr, "peergate help: unknown command %q\n%s", f.Arg(0), usage())
		return exitError
	}
	if c.name == "help" {
		fmt.Fprint(stdout, usage())
		return exitOK
	}
	return c.run([]string{"-h"}, stdout, stdout) // asked for: the usage is the output
}

// writeManPages writes peergate.1 and peergate-COMMAND.1 for every command into dir: the man pages
// are made from the command table and each command's flags, so they cannot drift from them.
func writeManPages(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	v := version.Get().Version
	var see []string
	for _, c := range commands {
		see = append(see, `\fBpeergate-`+c.name+`\fR(1)`)
	}
	var b strings.Builder
	fmt.Fprintf(&b, ".TH PEERGATE 1 \"\" \"peergate %s\" \"User Commands\"\n", v)
	b.WriteString(".SH NAME\npeergate \\- an address access-control gate for TCP services\n")
	b.WriteString(".SH SYNOPSIS\n.B peergate\n.I COMMAND\n[\\fIFLAGS\\fR] [\\fIARGS\\fR]\n")
	b.WriteString(".SH DESCRIPTION\nAfter accept, peergate asks the kernel who the peer is (getpeername(2) on the connected socket), " +
		"judges that address against a CIDR allow/deny list (the most specific prefix decides), and closes the connection or hands it on.\n")
	b.WriteString(".SH COMMANDS\n")
	for _, c := range commands {
		fmt.Fprintf(&b, ".TP\n.B peergate %s\n%s\n", manEscape(strings.TrimSpace(c.name+" "+c.synopsis)), manEscape(c.summary))
	}
	b.WriteString(".SH SEE ALSO\n" + strings.Join(see, ", ") + "\n")
	if err := os.WriteFile(filepath.Join(dir, "peergate.1"), []byte(b.String()), 0o644); err != nil {
		return err
	}
	for _, c := range commands {
		var flags bytes.Buffer
		c.run([]string{"-h"}, &flags, &flags)
		_, opts, _ := strings.Cut(flags.String(), "flags:\n")
		b.Reset()
		fmt.Fprintf(&b, ".TH PEERGATE-%s 1 \"\" \"peergate %s\" \"User Commands\"\n", strings.ToUpper(c.name), v)
		fmt.Fprintf(&b, ".SH NAME\npeergate-%s \\- %s\n", c.name, manEscape(c.summary))
		fmt.Fprintf(&b, ".SH SYNOPSIS\n.B peergate %s\n%s\n", c.name, manEscape(c.synopsis))
		if opts != "" {
			fmt.Fprintf(&b, ".SH OPTIONS\n.nf\n%s.fi\n", manEscape(opts))
		}
		fmt.Fprintf(&b, ".SH EXIT STATUS\n%s\n", manEscape(c.exits))
		b.WriteString(".SH SEE ALSO\n\\fBpeergate\\fR(1)\n")
		if err := os.WriteFile(filepath.Join(dir, "peergate-"+c.name+".1"), []byte(b.String()), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// manEscape makes s safe as troff text: backslashes doubled, and a leading dot or quote (a
// request) guarded on every line.
func manEscape(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, ".") || strings.HasPrefix(l, "'") {
			lines[i] = `\&` + l
		}
	}
	return strings.Join(lines, "\n")
}

// cmdVersion prints which build this is.
func cmdVersion(args []string, stdout, stderr io.Writer) int {
	f := bareFlags("version", stderr)
	if !f.parse(args) {
		return f.exit
	}
	if f.NArg() > 0 {
		return fail(stderr, "version", fmt.Errorf("unexpected arguments: %q", f.Args()))
	}
	fmt.Fprintln(stdout, version.Get())
	return exitOK
}
