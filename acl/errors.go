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
	ErrUnixID       = errors.New("unknown user or group")
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

// PosError is an error at a place in a file: the file, the 1-based line (0 when the whole file is
// at fault), the offending value as written, and the underlying error, which errors.Is sees
// through. Its message reads "file:line: "value": error".
type PosError = strictyaml.PosError
