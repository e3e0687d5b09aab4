package sources

import (
	"errors"
	"testing"
)

// FuzzSelector: any selector and any body either parse and select, or fail with the package's
// errors; never a panic, and a selector that parses selects the same twice.
func FuzzSelector(f *testing.F) {
	f.Add("prefixes[service=EC2][region=eu-west-1].ip_prefix", `{"prefixes":[{"ip_prefix":"1.2.3.0/24","service":"EC2","region":"eu-west-1"}]}`)
	f.Add("hooks", `{"hooks":["192.30.252.0/22","2620:112:3000::/44"]}`)
	f.Add("a[].b[].c", `{"a":[{"b":[{"c":"x"},{"d":1}]},{"b":2}]}`)
	f.Add("a[=]", `[]`)
	f.Add("a[][k=v]", `{"a":[1,"s",null,{"k":"v","a":"z"}]}`)
	f.Fuzz(func(t *testing.T, sel, body string) {
		s, err := ParseSelector(sel)
		if err != nil {
			if !errors.Is(err, ErrSelector) {
				t.Fatalf("ParseSelector(%q): %v does not wrap ErrSelector", sel, err)
			}
			return
		}
		a, errA := s.Select([]byte(body))
		b, errB := s.Select([]byte(body))
		if (errA == nil) != (errB == nil) || len(a) != len(b) {
			t.Fatalf("Select(%q) not deterministic", sel)
		}
		if errA != nil && !errors.Is(errA, ErrJSON) {
			t.Fatalf("Select(%q, %q): %v does not wrap ErrJSON", sel, body, errA)
		}
	})
}
