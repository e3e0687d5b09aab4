package main

import (
	"fmt"
	"io"
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
		{"serve", "-config FILE [-log-format text|json] [-watch 1s]",
			"run the services of a serve file", "0 after SIGTERM; 2 on a bad config", cmdServe},
		{"wrap", "-config FILE [-acl NAME] [-reset] [-log auto|stderr|syslog] [-log-format text|json] -- PROGRAM ARGS...",
			"tcpd: judge the socket on fd 0 (inetd) or fd 3 (systemd Accept=yes), then exec PROGRAM or close it",
			"(the program's) / 1 denied / 2 error", cmdWrap},
		{"check", "-config FILE [-acl NAME] ADDR...",
			"which rule decides each address, and where it was written (tcpdmatch)", "0 all allowed / 1 any denied / 2 error", cmdCheck},
		{"lint", "-config FILE [-acl NAME]",
			"load errors, then suspicious rules (tcpdchk)", "0 clean / 1 warnings / 2 errors", cmdLint},
		{"ban", "-admin ADDR [-for 1h] [-reason TEXT] PREFIX...",
			"ban addresses or prefixes now, through the admin API of a running serve", "0 banned / 1 refused / 2 error", cmdBan},
		{"unban", "-admin ADDR PREFIX...",
			"remove the bans of addresses or prefixes through the admin API", "0 removed / 1 no such ban / 2 error", cmdUnban},
		{"bans", "-admin ADDR",
			"list the live bans of a running serve", "0 / 2 error", cmdBans},
		{"convert", "-daemon NAME [-o FILE] HOSTS.ALLOW HOSTS.DENY",
			"TCP Wrappers' rules for one daemon as an ACL file", "0 written / 2 cannot be translated", cmdConvert},
		{"version", "",
			"the module version, VCS revision and time, and Go version of this binary", "0", cmdVersion},
		{"help", "[COMMAND]",
			"this list, or one command's usage and flags", "0 / 2 unknown command", cmdHelp},
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
	switch {
	case len(args) == 0:
		fmt.Fprint(stdout, usage())
		return exitOK
	case len(args) > 1:
		fmt.Fprintln(stderr, "usage: peergate help [COMMAND]")
		return exitError
	}
	c, ok := lookup(args[0])
	if !ok {
		fmt.Fprintf(stderr, "peergate help: unknown command %q\n%s", args[0], usage())
		return exitError
	}
	if c.name == "help" {
		fmt.Fprint(stdout, usage())
		return exitOK
	}
	return c.run([]string{"-h"}, stdout, stdout) // asked for: the usage is the output
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
