package sources

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// ErrSelector marks a selector that does not parse.
var ErrSelector = errors.New("bad selector")

// ErrJSON marks a JSON body that does not hold what the selector asks for.
var ErrJSON = errors.New("bad JSON feed")

// A Selector picks strings out of a JSON document: a path of steps separated by dots, where
//
//	name        takes a key of an object
//	name[]      takes a key that holds an array, and goes on with each element
//	name[k=v]   the same, keeping only the elements whose key k holds the string v
//	            (several filters: name[k=v][k2=v2])
//
// and the last step must hold a string or an array of strings. Examples: AWS ip-ranges.json
// "prefixes[service=EC2][region=eu-west-1].ip_prefix", GitHub meta "hooks", Google goog.json
// "prefixes[].ipv4Prefix" (elements without the key are skipped: IPv6 entries there).
type Selector struct {
	steps []step
}

type step struct {
	key     string
	each    bool
	filters [][2]string
}

// ParseSelector parses a selector (see Selector).
func ParseSelector(s string) (*Selector, error) {
	if s == "" {
		return nil, fmt.Errorf("%w: empty", ErrSelector)
	}
	var sel Selector
	for part := range strings.SplitSeq(s, ".") {
		key, rest, brackets := strings.Cut(part, "[")
		if key == "" || strings.ContainsAny(key, "]=") {
			return nil, fmt.Errorf("%w %q: step %q needs a key", ErrSelector, s, part)
		}
		st := step{key: key}
		if brackets {
			st.each = true
			rest = "[" + rest
			for rest != "" {
				if rest[0] != '[' {
					return nil, fmt.Errorf("%w %q: junk %q after ]", ErrSelector, s, rest)
				}
				inner, after, ok := strings.Cut(rest[1:], "]")
				if !ok {
					return nil, fmt.Errorf("%w %q: unclosed [", ErrSelector, s)
				}
				rest = after
				if inner == "" {
					if len(st.filters) > 0 {
						return nil, fmt.Errorf("%w %q: [] after a filter", ErrSelector, s)
					}
					continue
				}
				k, v, ok := strings.Cut(inner, "=")
				if !ok || k == "" || strings.Contains(inner, "[") {
					return nil, fmt.Errorf("%w %q: filter %q wants [key=value]", ErrSelector, s, inner)
				}
				st.filters = append(st.filters, [2]string{k, v})
			}
		}
		sel.steps = append(sel.steps, st)
	}
	return &sel, nil
}

// Select returns the strings of data the selector picks, in document order. A step whose key is
// missing from an array element skips that element; a missing key at the top, or a value of the
// wrong type, is an error (wrapping ErrJSON): a feed whose shape changed is refused, not read as
// an empty list.
func (sel *Selector) Select(data []byte) ([]string, error) {
	var doc any
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrJSON, err)
	}
	var out []string
	err := sel.walk(doc, 0, false, &out)
	return out, err
}

func (sel *Selector) walk(v any, i int, inArray bool, out *[]string) error {
	if i == len(sel.steps) {
		switch x := v.(type) {
		case string:
			*out = append(*out, x)
		case []any:
			for _, e := range x {
				s, ok := e.(string)
				if !ok {
					return fmt.Errorf("%w: %s holds a %T, want strings", ErrJSON, sel.path(i), e)
				}
				*out = append(*out, s)
			}
		default:
			return fmt.Errorf("%w: %s holds a %T, want a string or strings", ErrJSON, sel.path(i), v)
		}
		return nil
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return fmt.Errorf("%w: %s is a %T, want an object", ErrJSON, sel.path(i), v)
	}
	st := sel.steps[i]
	next, ok := obj[st.key]
	if !ok {
		if inArray {
			return nil
		}
		return fmt.Errorf("%w: no key %q at %s", ErrJSON, st.key, sel.path(i))
	}
	if !st.each {
		return sel.walk(next, i+1, inArray, out)
	}
	arr, ok := next.([]any)
	if !ok {
		return fmt.Errorf("%w: %s is a %T, want an array", ErrJSON, sel.path(i+1), next)
	}
elems:
	for _, e := range arr {
		if len(st.filters) > 0 {
			m, ok := e.(map[string]any)
			if !ok {
				continue
			}
			for _, f := range st.filters {
				if s, _ := m[f[0]].(string); s != f[1] {
					continue elems
				}
			}
		}
		if err := sel.walk(e, i+1, true, out); err != nil {
			return err
		}
	}
	return nil
}

func (sel *Selector) path(i int) string {
	if i == 0 {
		return "the top"
	}
	var b strings.Builder
	for j, st := range sel.steps[:i] {
		if j > 0 {
			b.WriteByte('.')
		}
		b.WriteString(st.key)
		if st.each {
			b.WriteString("[]")
		}
	}
	return b.String()
}
