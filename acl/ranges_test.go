package acl

import (
	"fmt"
	"testing"
)

func TestRangesExample(t *testing.T) {
	a := MustNew(Spec{Default: Deny, Rules: rules(
		"allow 10.0.0.0/8", "deny 10.1.0.0/16", "allow 10.1.0.0/16", "allow 2001:db8::/32",
		"deny ::ffff:10.0.0.0/104",
	)})
	var got []string
	for r := range a.Ranges() {
		got = append(got, fmt.Sprintf("%v-%v %v", r.First, r.Last, r.Decision))
	}
	want := []string{
		"0.0.0.0-9.255.255.255 deny by default",
		"10.0.0.0-10.0.255.255 deny by 10.0.0.0/8 (t:5)", // the mapped spelling is the IPv4 /8; deny wins
		"10.1.0.0-10.1.255.255 deny by 10.1.0.0/16 (t:2)",
		"10.2.0.0-10.255.255.255 deny by 10.0.0.0/8 (t:5)",
		"11.0.0.0-255.255.255.255 deny by default",
		"::-2001:db7:ffff:ffff:ffff:ffff:ffff:ffff deny by default",
		"2001:db8::-2001:db8:ffff:ffff:ffff:ffff:ffff:ffff allow by 2001:db8::/32 (t:4)",
		"2001:db9::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff deny by default",
	}
	if len(got) != len(want) {
		t.Fatalf("got %d ranges:\n%q\nwant %d:\n%q", len(got), got, len(want), want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("range %d: got %q, want %q", i, got[i], want[i])
		}
	}
}

func TestRangesEmptyACL(t *testing.T) {
	n := 0
	for r := range MustNew(Spec{Default: Allow}).Ranges() {
		n++
		if r.Decision.Rule != nil || !r.Decision.Allowed() {
			t.Errorf("%v: %v, want allow by default", r.First, r.Decision)
		}
	}
	if n != 2 {
		t.Errorf("got %d ranges, want 2 (one a family)", n)
	}
}

func TestRangesStopsEarly(t *testing.T) {
	a := MustNew(Spec{Default: Deny, Rules: rules("allow 10.0.0.0/8", "allow 2001:db8::/32")})
	n := 0
	for range a.Ranges() {
		n++
		if n == 2 {
			break
		}
	}
	if n != 2 {
		t.Errorf("n = %d", n)
	}
}
