package acl

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"

	"github.com/peergate/peergate/internal/strictyaml"
)

// ParseList reads a list file: one address or prefix per line, each becoming a rule with action
// act and an Origin of name and the line number. '#' and ';' start comments, so Spamhaus DROP lines
// ("192.0.2.0/24 ; SBL123") load as they are; blank lines are skipped. Any bad line makes the whole
// list an error (listing up to 20 bad lines), never a partial list.
func ParseList(name string, r io.Reader, act Action) ([]Rule, error) {
	return parseList(name, r, act, 0)
}

// ParseListBytes is ParseList for a list already in memory (a fetched body): it sizes the rules
// from the number of lines up front, so a big list is parsed without growing the slice.
func ParseListBytes(name string, data []byte, act Action) ([]Rule, error) {
	return parseList(name, bytes.NewReader(data), act, bytes.Count(data, []byte{'\n'})+1)
}

// parseList is ParseList with room for hint rules made up front.
func parseList(name string, r io.Reader, act Action, hint int) ([]Rule, error) {
	rules := make([]Rule, 0, hint)
	var errs strictyaml.Errors
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for line := 1; sc.Scan(); line++ {
		b := sc.Bytes()
		if i := bytes.IndexAny(b, "#;"); i >= 0 {
			b = b[:i]
		}
		b = bytes.TrimSpace(b)
		if len(b) == 0 {
			continue
		}
		p, ok := parse4(b) // most lines of a big list: no allocation
		if !ok {
			s := string(b)
			var err error
			if bytes.ContainsAny(b, " \t") {
				err = fmt.Errorf("%w: one address or prefix per line", ErrSyntax)
			} else if p, err = ParsePrefix(s); err == nil {
				rules = append(rules, Rule{Prefix: p, Action: act, Origin: Origin{name, line}})
				continue
			}
			if !strictyaml.AddressToken(s) {
				// A list may be any file (say /etc/shadow), and this error reaches logs and
				// terminals: say where, and nothing of what.
				s, err = "", strictyaml.Hidden(err, "not an address or prefix (the line is not shown)")
			}
			errs.At(name, line, s, err)
			continue
		}
		rules = append(rules, Rule{Prefix: p, Action: act, Origin: Origin{name, line}})
	}
	if err := sc.Err(); err != nil {
		errs.Add(&PosError{File: name, Err: err})
	}
	if err := errs.Err(); err != nil {
		return nil, err
	}
	return rules, nil
}

// LoadList reads the list file at path with ParseList, as a default Loader reads files.
func LoadList(path string, act Action) ([]Rule, error) {
	return new(Loader).LoadList(context.Background(), path, act)
}

// LoadList is the package's LoadList, with the Loader's bounds and ctx.
func (l *Loader) LoadList(ctx context.Context, path string, act Action) ([]Rule, error) {
	data, err := l.ReadFile(ctx, path)
	if err != nil {
		return nil, err
	}
	// Size the rules exactly: a big list is most of an ACL's memory, and growing it by doubling
	// would touch twice the pages.
	return ParseListBytes(path, data, act)
}
