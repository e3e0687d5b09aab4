package acl

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/peergate/peergate/internal/conf"
)

// ParseList reads a list file: one address or prefix per line, each becoming a rule with action
// act and an Origin of name and the line number. '#' and ';' start comments, so Spamhaus DROP lines
// ("192.0.2.0/24 ; SBL123") load as they are; blank lines are skipped. Any bad line makes the whole
// list an error (listing up to 20 bad lines), never a partial list.
func ParseList(name string, r io.Reader, act Action) ([]Rule, error) {
	return parseList(name, r, act, 0)
}

// parseList is ParseList with room for hint rules made up front.
func parseList(name string, r io.Reader, act Action, hint int) ([]Rule, error) {
	rules := make([]Rule, 0, hint)
	var errs conf.Errors
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for line := 1; sc.Scan(); line++ {
		s := sc.Text()
		if i := strings.IndexAny(s, "#;"); i >= 0 {
			s = s[:i]
		}
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if strings.IndexAny(s, " \t") >= 0 {
			errs.At(name, line, s, fmt.Errorf("%w: one address or prefix per line", ErrSyntax))
		} else if p, err := ParsePrefix(s); err != nil {
			errs.At(name, line, s, err)
		} else {
			rules = append(rules, Rule{Prefix: p, Action: act, Origin: Origin{name, line}})
		}
	}
	if err := sc.Err(); err != nil {
		errs.Add(&PosError{File: name, Err: err})
	}
	if err := errs.Err(); err != nil {
		return nil, err
	}
	return rules, nil
}

// LoadList reads the list file at path with ParseList.
func LoadList(path string, act Action) ([]Rule, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	hint := 0
	if fi, err := f.Stat(); err == nil {
		hint = int(min(fi.Size()/16, 1<<24)) // a typical line holds 14 to 30 bytes
	}
	return parseList(path, f, act, hint)
}
