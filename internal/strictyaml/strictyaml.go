// Package strictyaml holds what peergate's strict YAML loaders share: errors that name a file, a line
// and a value, a bounded collector for them, and walkers over yaml.v3 nodes that reject duplicate
// keys and wrong shapes. Package acl re-exports its error types.
package strictyaml

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"

	"gopkg.in/yaml.v3"
)

// Sentinel errors for the shape of a file.
var (
	ErrSyntax       = errors.New("syntax error")
	ErrUnknownKey   = errors.New("unknown key")
	ErrDuplicateKey = errors.New("duplicate key")
	// ErrSecondDocument: the file holds more than one YAML document (content after "---" or
	// "..."). Only the first would be read, so the rest is refused rather than dropped. It wraps
	// ErrSyntax.
	ErrSecondDocument = fmt.Errorf("%w: more than one YAML document", ErrSyntax)
)

// NewPosError makes the error at a place in a file that every loader reports: the file, the
// 1-based line (0 when the whole file is at fault), the offending value as written, and the
// underlying error, which errors.Is sees through; its message is FormatPos's. Package acl sets it,
// when it is initialised, to make its *acl.PosError, the type that acl's users test for with
// errors.As, so that the errors of every loader built on this package (acl, the serve config, the
// hosts.allow import) are that one public type. It is not changed after that; without acl (this
// package's own tests) it makes an unexported type with the same fields and message.
var NewPosError = func(file string, line int, value string, err error) error {
	return &posError{file, line, value, err}
}

// FormatPos returns "file:line: "value": err", leaving out the parts that are empty: the message
// of an error at a place in a file.
func FormatPos(file string, line int, value string, err error) string {
	s := file
	if line > 0 {
		s += ":" + strconv.Itoa(line)
	}
	if value != "" {
		s += ": " + strconv.Quote(value)
	}
	return s + ": " + err.Error()
}

// posError is what NewPosError makes when package acl has not replaced it.
type posError struct {
	File  string
	Line  int
	Value string
	Err   error
}

func (e *posError) Error() string { return FormatPos(e.File, e.Line, e.Value, e.Err) }
func (e *posError) Unwrap() error { return e.Err }

// MaxToken is the longest value AddressToken lets an error repeat.
const MaxToken = 64

// AddressToken reports whether s, read from a file that may be any file at all (a list named by
// an include), looks enough like an address or prefix to be repeated in an error message: at
// most MaxToken bytes of hex digits, '.', ':', '/', spaces and tabs. Anything else could be a
// line of /etc/shadow, and errors reach logs and terminals that others read.
func AddressToken(s string) bool {
	if len(s) > MaxToken {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case '0' <= c && c <= '9', 'a' <= c && c <= 'f', 'A' <= c && c <= 'F':
		case c == '.', c == ':', c == '/', c == ' ', c == '\t':
		default:
			return false
		}
	}
	return true
}

// Hidden returns an error whose message is msg, in place of err's (which may quote what it
// failed on), and which still unwraps to err, so that errors.Is finds its sentinels.
func Hidden(err error, msg string) error { return &hidden{err, msg} }

type hidden struct {
	err error
	msg string
}

func (h *hidden) Error() string { return h.msg }
func (h *hidden) Unwrap() error { return h.err }

// MaxErrors bounds how many errors an Errors collects, so a broken million-line file yields a
// readable report instead of a million lines.
const MaxErrors = 20

// Errors collects the errors of one load. The zero value is ready to use.
type Errors struct {
	errs []error
	more int
}

// Add records err.
func (l *Errors) Add(err error) {
	if len(l.errs) < MaxErrors {
		l.errs = append(l.errs, err)
	} else {
		l.more++
	}
}

// At records an error at file:line about value.
func (l *Errors) At(file string, line int, value string, err error) {
	l.Add(NewPosError(file, line, value, err))
}

// Err returns all recorded errors joined, or nil.
func (l *Errors) Err() error {
	if l.more > 0 {
		return errors.Join(append(l.errs, errors.New("and "+strconv.Itoa(l.more)+" more errors"))...)
	}
	return errors.Join(l.errs...)
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// Parse parses data as one YAML document and returns its top node, turning syntax errors into
// positioned errors (NewPosError) naming name and the line. An empty document is returned as an
// empty mapping.
//
// A file holds exactly one document: anything after a "---" that follows the first document, or
// after a "..." that ends it, is an error wrapping ErrSyntax and ErrSecondDocument, even when the
// second document is empty ("---" and nothing after it). Only the first document would be read, so
// a deny list written after the marker would silently never apply; and a file that ends in "---"
// may have been cut short by whatever was writing it, so it fails closed too. A "---" opening the
// first document and a "..." ending it, followed by nothing but comments, are fine.
func Parse(name string, data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil && err != io.EOF {
		return nil, syntaxError(name, err, ErrSyntax)
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case err == io.EOF:
	case err != nil: // content after "...", or a broken document after "---"
		return nil, syntaxError(name, err, ErrSecondDocument)
	default:
		return nil, NewPosError(name, next.Line, "", fmt.Errorf(
			"%w: only the first would be read; remove this \"---\" or merge the documents", ErrSecondDocument))
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: 1}, nil
	}
	return doc.Content[0], nil
}

// noDocStart is what yaml.v3 says of content after a "..." that ended a document.
const noDocStart = "did not find expected <document start>"

// syntaxError turns a yaml.v3 error into a positioned error at its line, wrapping sentinel.
func syntaxError(name string, err, sentinel error) error {
	msg, line := err.Error(), 0
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	if msg == noDocStart {
		// A parser error, which yaml.v3 reports one line early (scanner errors it reports right).
		line++
		msg = "content after the \"...\" that ends the first; only the first would be read"
	}
	return NewPosError(name, line, "", fmt.Errorf("%w: %s", sentinel, msg))
}

// Mapping calls fn for each key of the mapping node n, in order. A node that is not a mapping, a
// key that is not a scalar and a duplicate key are recorded in errs; fn is not called for them.
// It reports whether n was a mapping.
func Mapping(name string, n *yaml.Node, errs *Errors, fn func(key string, k, v *yaml.Node)) bool {
	if n.Kind != yaml.MappingNode {
		errs.At(name, n.Line, n.Value, fmt.Errorf("%w: want a mapping of key: value", ErrSyntax))
		return false
	}
	seen := make(map[string]int, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			errs.At(name, k.Line, "", fmt.Errorf("%w: a key must be a plain word", ErrSyntax))
			continue
		}
		if first, dup := seen[k.Value]; dup {
			errs.At(name, k.Line, k.Value, fmt.Errorf("%w (first at line %d)", ErrDuplicateKey, first))
			continue
		}
		seen[k.Value] = k.Line
		fn(k.Value, k, v)
	}
	return true
}

// Unknown records key as an unknown key, listing the keys that are known.
func Unknown(errs *Errors, name string, k *yaml.Node, known string) {
	errs.At(name, k.Line, k.Value, fmt.Errorf("%w (want %s)", ErrUnknownKey, known))
}

// Sequence returns the items of a list node. A single scalar counts as a list of one and null as
// an empty list; anything else is recorded in errs.
func Sequence(name string, n *yaml.Node, errs *Errors) []*yaml.Node {
	switch n.Kind {
	case yaml.SequenceNode:
		return n.Content
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return nil
		}
		return []*yaml.Node{n}
	}
	errs.At(name, n.Line, "", fmt.Errorf("%w: want a list", ErrSyntax))
	return nil
}

// Scalar returns the value of a scalar node; anything else, null included, is recorded in errs.
func Scalar(name string, n *yaml.Node, errs *Errors) (string, bool) {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		errs.At(name, n.Line, "", fmt.Errorf("%w: want a single value", ErrSyntax))
		return "", false
	}
	return n.Value, true
}
