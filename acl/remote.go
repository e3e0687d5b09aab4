package acl

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/peergate/peergate/internal/redact"
	"github.com/peergate/peergate/internal/strictyaml"
	"gopkg.in/yaml.v3"
)

// ErrRemote marks an include that names a URL where the loader has no Resolver to fetch it (plain
// Load, LoadSpec), or one whose Resolver could not supply a good copy.
var ErrRemote = errors.New("remote include")

// Remote is an include of a list fetched from a URL:
//
//	include:
//	  - {url: https://www.spamhaus.org/drop/drop.txt, action: deny, refresh: 1h, min_entries: 100}
//	  - {url: https://ip-ranges.amazonaws.com/ip-ranges.json, action: allow,
//	     select: "prefixes[service=CLOUDFRONT].ip_prefix"}
//
// The package itself never fetches anything: a Loader hands every Remote to its Resolver.
type Remote struct {
	URL        string        // http, https or file URL
	Action     Action        // what the list's prefixes get
	Refresh    time.Duration // how often to fetch it again; 0: the Resolver's default
	SHA256     string        // optional pin of the body (hex, lower case); "": none
	MinEntries int           // a list with fewer prefixes is refused
	MaxShrink  float64       // a list that shrinks by more than this fraction is refused; 0: the default
	Select     string        // "": a plain list (one prefix a line); else the body is JSON, read by this selector
	File       string        // the file that names it
	Line       int           // its line there
}

// Name returns the URL, with the selector when there is one: the Origin.File of its rules, and
// what logs and metrics call the source. Secrets written into the URL (a password, a key or token
// in the query) are masked, so that they show nowhere else.
func (r Remote) Name() string {
	if r.Select == "" {
		return redact.URL(r.URL)
	}
	return redact.URL(r.URL) + "#" + r.Select
}

// A Resolver supplies the rules of a Remote include: fetched, cached, or the last good copy. Its
// rules carry Origins naming the URL (Remote.Name) and the line (or element) they came from, and
// Action r.Action. An error fails the load: a Resolver never returns an empty or partial list for
// a source it cannot read.
type Resolver interface {
	Resolve(ctx context.Context, r Remote) ([]Rule, error)
}

// remote reads the keys of a url include after include has seen "url".
func (l *Loader) remote(ctx context.Context, name string, n *yaml.Node, errs *strictyaml.Errors) []Rule {
	r := Remote{File: name, Line: n.Line}
	haveAct := false
	var urlLine int
	ok := strictyaml.Mapping(name, n, errs, func(key string, k, v *yaml.Node) {
		s, ok := strictyaml.Scalar(name, v, errs)
		if !ok {
			return
		}
		bad := func(err error) { errs.At(name, v.Line, s, err) }
		switch key {
		case "url":
			r.URL, urlLine = s, v.Line
		case "action":
			r.Action, haveAct = scalarAction(name, v, errs), true
		case "refresh":
			d, err := time.ParseDuration(s)
			if err == nil && d < time.Second {
				err = errors.New("at least 1s")
			}
			if err != nil {
				bad(fmt.Errorf("%w: refresh: %w", ErrSyntax, err))
			}
			r.Refresh = d
		case "sha256":
			r.SHA256 = strings.ToLower(s)
			if len(s) != 64 || strings.Trim(r.SHA256, "0123456789abcdef") != "" {
				bad(fmt.Errorf("%w: sha256 wants 64 hex digits", ErrSyntax))
			}
		case "min_entries":
			m, err := strconv.Atoi(s)
			if err != nil || m < 0 {
				bad(fmt.Errorf("%w: min_entries wants a count", ErrSyntax))
			}
			r.MinEntries = m
		case "max_shrink":
			f, err := parseFraction(s)
			if err != nil {
				bad(fmt.Errorf("%w: max_shrink: %w", ErrSyntax, err))
			}
			r.MaxShrink = f
		case "select":
			r.Select = s
		default:
			strictyaml.Unknown(errs, name, k, "url, action, refresh, sha256, min_entries, max_shrink or select in a url include")
		}
	})
	if !ok {
		return nil
	}
	if !haveAct {
		errs.At(name, n.Line, "", fmt.Errorf("%w: an include needs both url and action", ErrSyntax))
		return nil
	}
	if l.Resolver == nil {
		errs.At(name, urlLine, r.URL, fmt.Errorf("%w: url includes are fetched only by peergate serve, check, lint and diff; this loader has no Resolver", ErrRemote))
		return nil
	}
	rules, err := l.Resolver.Resolve(ctx, r)
	if err != nil {
		var pe *PosError
		if !errors.As(err, &pe) {
			err = &PosError{File: name, Line: urlLine, Value: r.URL, Err: fmt.Errorf("%w: %w", ErrRemote, err)}
		}
		errs.Add(err)
		return nil
	}
	return rules
}

// parseFraction reads "0.5" or "50%" as a fraction in (0, 1].
func parseFraction(s string) (float64, error) {
	div := 1.0
	if t, ok := strings.CutSuffix(s, "%"); ok {
		s, div = t, 100
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f/div <= 0 || f/div > 1 {
		return 0, errors.New("want a fraction such as 0.5 or 50%")
	}
	return f / div, nil
}
