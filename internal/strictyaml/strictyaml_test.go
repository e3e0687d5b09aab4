package strictyaml

import (
	"errors"
	"testing"

	"gopkg.in/yaml.v3"
)

// TestParseOneDocument checks that a file is one YAML document: a second one, even an empty one,
// is refused at its line, since only the first would be read (issue 14, item 6).
func TestParseOneDocument(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		line       int   // line of the error; 0 when none is expected
		want       error // sentinel the error wraps
		keys       int   // keys of the returned mapping when there is no error
	}{
		{"one document", "default: allow\ndeny: [10.0.0.0/8]\n", 0, nil, 2},
		{"empty", "", 0, nil, 0},
		{"comments only", "# nothing\n", 0, nil, 0},
		{"opening ---", "---\ndefault: allow\n", 0, nil, 1},
		{"closing ...", "default: allow\n...\n", 0, nil, 1},
		{"closing ... then comments", "default: allow\n...\n# end\n\n", 0, nil, 1},
		{"opening --- and closing ...", "---\ndefault: allow\n...\n", 0, nil, 1},
		{"second document after ---", "default: allow\n---\ndeny: [0.0.0.0/0]\n", 2, ErrSecondDocument, 0},
		{"second document after --- with opening ---", "---\ndefault: allow\n---\ndeny: [0.0.0.0/0]\n", 3, ErrSecondDocument, 0},
		{"content after ...", "default: allow\n...\ndeny: [0.0.0.0/0]\n", 3, ErrSecondDocument, 0},
		{"content after ... and blank lines", "default: allow\n...\n\n# x\n\ndeny: [0.0.0.0/0]\n", 6, ErrSecondDocument, 0},
		{"empty trailing document", "default: allow\n---\n", 2, ErrSecondDocument, 0},
		{"empty trailing document with comment", "default: allow\n---\n# deny list follows\n", 2, ErrSecondDocument, 0},
		{"--- then ...", "default: allow\n---\n...\n", 2, ErrSecondDocument, 0},
		{"broken second document", "default: allow\n---\ndeny: [\n", 3, ErrSecondDocument, 0},
		{"broken first document", "default: allow\nallow: 10.0.0.0/8: x\n", 2, ErrSyntax, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := Parse("f.yaml", []byte(tc.yaml))
			if tc.want == nil {
				if err != nil || n.Kind != yaml.MappingNode || len(n.Content) != 2*tc.keys {
					t.Fatalf("Parse = %v, %v; want a mapping of %d keys", n, err, tc.keys)
				}
				return
			}
			var pe *posError
			if n != nil || !errors.Is(err, tc.want) || !errors.Is(err, ErrSyntax) || !errors.As(err, &pe) {
				t.Fatalf("Parse = %v, %v; want a *PosError wrapping %v", n, err, tc.want)
			}
			if pe.File != "f.yaml" || pe.Line != tc.line {
				t.Errorf("error %q at %s:%d, want f.yaml:%d", err, pe.File, pe.Line, tc.line)
			}
		})
	}
}
