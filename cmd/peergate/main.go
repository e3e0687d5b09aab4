// Command peergate is an address access-control gate for TCP services: it judges each client by
// the address the kernel reports for the connected socket (getpeername) against a CIDR allow/deny
// list, and closes the connection or hands it on.
//
// Usage:
//
//	peergate serve -config FILE                 run the services of FILE (proxy or spawn)
//	peergate wrap  -config FILE [-acl NAME] -- PROGRAM ARGS...
//	                                            tcpd: judge the socket on fd 0 (or systemd's fd 3),
//	                                            then exec PROGRAM or exit 1
//	peergate check -config FILE [-acl NAME] ADDR...
//	                                            which rule decides each address
//	peergate lint  -config FILE [-acl NAME]     errors and suspicious rules
//	peergate convert -daemon NAME [-o FILE] HOSTS.ALLOW HOSTS.DENY
//	                                            TCP Wrappers' rules for NAME as an ACL file
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

const usage = `usage:
  peergate serve -config FILE [-log-format text|json]
  peergate wrap  -config FILE [-acl NAME] [-log-format text|json] -- PROGRAM [ARGS...]
  peergate check -config FILE [-acl NAME] ADDR...
  peergate lint  -config FILE [-acl NAME]
  peergate convert -daemon NAME [-o FILE] HOSTS.ALLOW HOSTS.DENY
`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitError
	}
	cmds := map[string]func([]string, io.Writer, io.Writer) int{
		"serve": cmdServe, "wrap": cmdWrap, "check": cmdCheck, "lint": cmdLint, "convert": cmdConvert,
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		if args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
			fmt.Fprint(stdout, usage)
			return exitOK
		}
		fmt.Fprintf(stderr, "peergate: unknown command %q\n%s", args[0], usage)
		return exitError
	}
	return cmd(args[1:], stdout, stderr)
}

// flags is the flag set every subcommand shares.
type flags struct {
	*flag.FlagSet
	config, acl, logFormat string
}

func newFlags(name string, stderr io.Writer) *flags {
	f := &flags{FlagSet: flag.NewFlagSet("peergate "+name, flag.ContinueOnError)}
	f.SetOutput(stderr)
	f.StringVar(&f.config, "config", "", "config file: a bare ACL file or a serve file (required)")
	return f
}

func (f *flags) withACL() *flags {
	f.StringVar(&f.acl, "acl", "", "which ACL of the config to use, when it has several")
	return f
}

func (f *flags) withLog() *flags {
	f.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	return f
}

// parse parses args and checks that -config was given; it returns false after printing why not.
func (f *flags) parse(args []string) bool {
	if err := f.Parse(args); err != nil {
		return false
	}
	if f.config == "" {
		fmt.Fprintf(f.Output(), "%s: -config FILE is required\n", f.Name())
		return false
	}
	if f.logFormat != "" && f.logFormat != "text" && f.logFormat != "json" {
		fmt.Fprintf(f.Output(), "%s: -log-format must be text or json, not %q\n", f.Name(), f.logFormat)
		return false
	}
	return true
}

func (f *flags) logger(w io.Writer) *slog.Logger {
	if f.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, nil))
	}
	return slog.New(slog.NewTextHandler(w, nil))
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
