package acl

import (
	"errors"

	"github.com/peergate/peergate/internal/safefile"
	"github.com/peergate/peergate/internal/strictyaml"
)

// Sentinel errors. Loader errors wrap one of these inside a *PosError, so callers can test the kind
// of a failure with errors.Is and still print where it happened.
var (
	ErrPrefix         = errors.New("invalid address or prefix")
	ErrHostBits       = errors.New("prefix has host bits set")
	ErrZone           = errors.New("IPv6 zone not allowed in a rule")
	ErrAction         = errors.New("unknown action")
	ErrMissingDefault = errors.New(`missing required key "default"`)
	ErrInclude        = errors.New("cannot read include")
	ErrTooMany        = errors.New("too many rules")
	// ErrUnixID: a user or group of the unix policy is unknown, or its number is out of range.
	ErrUnixID = errors.New("unknown user or group")
	// ErrNoKey: the keys given to ParseSpecAt lead to no value of the file.
	ErrNoKey        = errors.New("no such key")
	ErrUnknownKey   = strictyaml.ErrUnknownKey
	ErrDuplicateKey = strictyaml.ErrDuplicateKey
	ErrSyntax       = strictyaml.ErrSyntax
	// ErrSecondDocument: a file holds more than one YAML document (content after "---" or
	// "..."); only one is read, so the file is refused. It wraps ErrSyntax.
	ErrSecondDocument = strictyaml.ErrSecondDocument
	ErrNotRegular     = safefile.ErrNotRegular // a file to load is a FIFO, a device or a directory
	ErrTooBig         = safefile.ErrTooBig     // a file to load is over the Loader's MaxFileSize
	ErrUnsettled      = safefile.ErrUnsettled  // a file to load kept changing while it was read
)

// PosError is an error at a place in a file: every error of the loaders (Load, LoadSpec,
// ParseSpec, LoadList, a Loader's methods) is one, or several joined with errors.Join, so
// errors.As finds the place of each. Its message reads "file:line: "value": error", leaving out
// the parts that are empty.
type PosError struct {
	File  string // the file as the load named it
	Line  int    // 1-based; 0 when the whole file is at fault
	Value string // the offending value as written; "" when none is quoted
	Err   error  // the underlying error, which wraps one of the package's sentinels
}

// Error returns "file:line: "value": err", leaving out the parts that are empty.
func (e *PosError) Error() string { return strictyaml.FormatPos(e.File, e.Line, e.Value, e.Err) }

// Unwrap returns the underlying error, so that errors.Is sees the sentinel through a PosError.
func (e *PosError) Unwrap() error { return e.Err }

// The strict YAML walkers shared with peergate's other loaders report their errors as *PosError.
func init() {
	strictyaml.NewPosError = func(file string, line int, value string, err error) error {
		return &PosError{File: file, Line: line, Value: value, Err: err}
	}
}
