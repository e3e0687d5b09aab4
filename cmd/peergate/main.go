// Command peergate is an address access-control gate for TCP services: it judges each client by
// the address the kernel reports for the connected socket (getpeername) against a CIDR allow/deny
// list, and closes the connection or hands it on.
//
// Usage (the command table of commands.go; "peergate help" prints it):
//
//	peergate serve -config FILE [-log stderr|syslog] [-log-level debug|info|warn] [-log-format text|json] [-watch 1s]
//	    run the services of a serve file
//	peergate wrap -config FILE [-acl NAME] [-on-deny close|reset] [-reset] [-log auto|stderr|syslog] [-log-level debug|info|warn] [-log-format text|json] -- PROGRAM ARGS...
//	    tcpd: judge the socket on fd 0 (inetd) or fd 3 (systemd Accept=yes), then exec PROGRAM or close it
//	peergate check -config FILE [-acl NAME] ADDR... (or -hits [-admin ADDR] [-service NAME] [-top N])
//	    which rule decides each address, and where it was written (tcpdmatch)
//	peergate lint -config FILE [-acl NAME]
//	    load errors, then suspicious rules (tcpdchk)
//	peergate ban -admin ADDR [-for 1h] [-reason TEXT] PREFIX...
//	    ban addresses or prefixes now, through the admin API of a running serve
//	peergate unban -admin ADDR PREFIX...
//	    remove the bans of addresses or prefixes through the admin API
//	peergate bans -admin ADDR
//	    list the live bans of a running serve
//	peergate whatif -admin ADDR FILE
//	    which recent peers of each service of a running serve a candidate serve or ACL file would decide the other way; applies nothing
//	peergate diff -config OLD [-acl NAME] NEW [-acl NAME] [-json]
//	    every address range whose verdict changes between two ACLs, as prefixes, with the deciding rule on each side
//	peergate convert -daemon NAME [-o FILE] HOSTS.ALLOW HOSTS.DENY
//	    TCP Wrappers' rules for one daemon as an ACL file
//	peergate reload -admin ADDR [-force]
//	    reload a running serve through its admin API, refused if it would lock out a guarded address or this client
//	peergate version
//	    the module version, VCS revision and time, and Go version of this binary
//	peergate help [-man DIR] [COMMAND]
//	    this list, or one command's usage and flags; -man writes the man pages
//
// Every -config takes a bare ACL file or a serve file; see README.md for both formats.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
)

// Exit statuses shared by the subcommands.
const (
	exitOK     = 0 // allowed, clean
	exitDenied = 1 // a peer was denied (check, wrap) or lint found warnings
	exitError  = 2 // bad usage, bad config, or a failure
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage())
		return exitError
	}
	switch args[0] {
	case "-h", "-help", "--help":
		args[0] = "help"
	case "-version", "--version":
		args[0] = "version"
	}
	c, ok := lookup(args[0])
	if !ok {
		fmt.Fprintf(stderr, "peergate: unknown command %q\n%s", args[0], usage())
		return exitError
	}
	return c.run(args[1:], stdout, stderr)
}

// flags is the flag set every subcommand shares.
type flags struct {
	*flag.FlagSet
	config, acl, logFormat string
	logLevel               string // -log-level: debug, info or warn
	exit                   int    // the status to exit with when parse returns false
	programArgs            bool   // the first argument starts a program's command line (wrap): no flags after it
	configOptional         bool   // -config may be left out (ban, unban, bans: -admin will do)
}

// newFlags returns the flags of command name with -config (required).
func newFlags(name string, stderr io.Writer) *flags {
	f := bareFlags(name, stderr)
	f.StringVar(&f.config, "config", "", "config file: a bare ACL file or a serve file (required)")
	return f
}

// bareFlags returns the flags of command name with none defined yet.
func bareFlags(name string, stderr io.Writer) *flags {
	f := &flags{FlagSet: flag.NewFlagSet("peergate "+name, flag.ContinueOnError), exit: exitError}
	f.SetOutput(stderr)
	f.Usage = func() {
		c, _ := lookup(name)
		fmt.Fprintf(f.Output(), "usage: peergate %s\n  %s\n\nflags:\n", strings.TrimSpace(name+" "+c.synopsis), c.summary)
		f.PrintDefaults()
	}
	return f
}

func (f *flags) withACL() *flags {
	f.StringVar(&f.acl, "acl", "", "which ACL of the config to use, when it has several")
	return f
}

func (f *flags) withLog() *flags {
	f.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	f.StringVar(&f.logLevel, "log-level", "info", "the least severe lines to log: debug, info or warn")
	return f
}

// parse parses args and checks that -config was given; it returns false after printing why not,
// with f.exit set to the status to exit with (0 after -h, which prints the usage). Flags may
// follow the positional arguments (check ADDR -config FILE), except after "--" and, where
// programArgs is set, after the first positional argument.
func (f *flags) parse(args []string) bool {
	var pos []string
	for {
		if err := f.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				f.exit = exitOK
			}
			return false
		}
		rest := f.Args()
		consumed := len(args) - len(rest)
		if f.programArgs || len(rest) == 0 || consumed > 0 && args[consumed-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
	f.Parse(append([]string{"--"}, pos...)) // f.Args() = the positional arguments; flags keep their values
	if f.config == "" && f.Lookup("config") != nil && !f.configOptional {
		fmt.Fprintf(f.Output(), "%s: -config FILE is required\n", f.Name())
		return false
	}
	if f.logFormat != "" && f.logFormat != "text" && f.logFormat != "json" {
		fmt.Fprintf(f.Output(), "%s: -log-format must be text or json, not %q\n", f.Name(), f.logFormat)
		return false
	}
	if _, ok := logLevels[f.logLevel]; !ok {
		fmt.Fprintf(f.Output(), "%s: -log-level must be debug, info or warn, not %q\n", f.Name(), f.logLevel)
		return false
	}
	return true
}

// logLevels are the values of -log-level ("" where a command has no such flag).
var logLevels = map[string]slog.Level{"": slog.LevelInfo, "debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn}

func (f *flags) logger(w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: logLevels[f.logLevel]}
	if f.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// fail prints err for the user and returns exitError.
func fail(stderr io.Writer, cmd string, err error) int {
	// Joined loader errors print one per line; prefix only the first.
	var joined interface{ Unwrap() []error }
	if errors.As(err, &joined) && len(joined.Unwrap()) > 1 {
		fmt.Fprintf(stderr, "peergate %s: %d errors:\n%v\n", cmd, len(joined.Unwrap()), err)
		return exitError
	}
	fmt.Fprintf(stderr, "peergate %s: %v\n", cmd, err)
	return exitError
}
