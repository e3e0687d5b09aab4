package acl

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync"
	"testing"
)

func rules(specs ...string) []Rule {
	var rs []Rule
	for i, s := range specs {
		act, pfx, _ := strings.Cut(s, " ")
		a, err := ParseAction(act)
		if err != nil {
			panic(err)
		}
		p, err := ParsePrefix(pfx)
		if err != nil {
			panic(err)
		}
		rs = append(rs, Rule{p, a, Origin{"t", i + 1}})
	}
	return rs
}

func TestDecide(t *testing.T) {
	office := rules("allow 10.0.0.0/8", "deny 10.66.0.0/16", "allow 10.66.1.0/24", "allow 10.66.1.7",
		"allow 2001:db8::/32", "deny 2001:db8:bad::/48", "allow 2001:db8:bad::1")
	for _, tc := range []struct {
		name  string
		def   Action
		rules []Rule
		addr  string
		want  string // "allow 10.0.0.0/8", or "deny default"
	}{
		{"no rules, default deny", Deny, nil, "10.1.2.3", "deny default"},
		{"no rules, default allow", Allow, nil, "::1", "allow default"},
		{"outer prefix", Deny, office, "10.1.2.3", "allow 10.0.0.0/8"},
		{"nested deny", Deny, office, "10.66.2.3", "deny 10.66.0.0/16"},
		{"nested allow", Deny, office, "10.66.1.9", "allow 10.66.1.0/24"},
		{"host rule", Deny, office, "10.66.1.7", "allow 10.66.1.7/32"},
		{"first of nested deny", Deny, office, "10.66.0.0", "deny 10.66.0.0/16"},
		{"last of nested deny", Deny, office, "10.66.255.255", "deny 10.66.0.0/16"},
		{"just past nested deny", Deny, office, "10.67.0.0", "allow 10.0.0.0/8"},
		{"just before nested deny", Deny, office, "10.65.255.255", "allow 10.0.0.0/8"},
		{"outside everything", Deny, office, "11.0.0.0", "deny default"},
		{"mapped address, v4 rule", Deny, office, "::ffff:10.66.2.3", "deny 10.66.0.0/16"},
		{"mapped address, allowed", Deny, office, "::ffff:10.1.1.1", "allow 10.0.0.0/8"},
		{"v6 outer", Deny, office, "2001:db8::1", "allow 2001:db8::/32"},
		{"v6 nested deny", Deny, office, "2001:db8:bad::2", "deny 2001:db8:bad::/48"},
		{"v6 host", Deny, office, "2001:db8:bad::1", "allow 2001:db8:bad::1/128"},
		{"v6 zone dropped", Deny, office, "2001:db8:bad::1%eth0", "allow 2001:db8:bad::1/128"},
		{"v6 outside", Allow, office, "2001:db9::1", "allow default"},
		{"mapped rule, v4 address", Deny, rules("allow ::ffff:127.0.0.0/104"), "127.0.0.2", "allow 127.0.0.0/8"},
		{"mapped host rule, mapped address", Deny, rules("allow ::ffff:127.0.0.2"), "::ffff:127.0.0.2", "allow 127.0.0.2/32"},
		{"v4 /0", Allow, rules("deny 0.0.0.0/0"), "255.255.255.255", "deny 0.0.0.0/0"},
		{"v4 /0 leaves v6 alone", Allow, rules("deny 0.0.0.0/0"), "::1", "allow default"},
		{"v6 /0 leaves v4 alone", Allow, rules("deny ::/0"), "127.0.0.1", "allow default"},
		{"v6 /0 leaves mapped alone", Allow, rules("deny ::/0"), "::ffff:127.0.0.1", "allow default"},
		{"v6 /0", Allow, rules("deny ::/0"), "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "deny ::/0"},
		{"tie: deny wins", Allow, rules("allow 10.0.0.0/8", "deny 10.0.0.0/8"), "10.0.0.1", "deny 10.0.0.0/8"},
		{"tie: deny wins either order", Allow, rules("deny 10.0.0.0/8", "allow 10.0.0.0/8"), "10.0.0.1", "deny 10.0.0.0/8"},
		{"order never matters", Deny, rules("deny 10.66.0.0/16", "allow 10.0.0.0/8"), "10.1.0.0", "allow 10.0.0.0/8"},
		{"adjacent siblings", Deny, rules("allow 10.0.0.0/25", "allow 10.0.0.128/25"), "10.0.0.128", "allow 10.0.0.128/25"},
		{"top of v4 space", Deny, rules("allow 255.255.255.255"), "255.255.255.255", "allow 255.255.255.255/32"},
		{"below top of v4 space", Deny, rules("allow 255.255.255.255"), "255.255.255.254", "deny default"},
		{"top of v6 space", Deny, rules("allow ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "allow ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"},
		{"v6 across the 64-bit boundary", Deny, rules("allow 2001:db8::/63"), "2001:db8:0:1:ffff:ffff:ffff:ffff", "allow 2001:db8::/63"},
		{"v6 past /63", Deny, rules("allow 2001:db8::/63"), "2001:db8:0:2::", "deny default"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := New(Spec{Default: tc.def, Rules: tc.rules})
			if err != nil {
				t.Fatal(err)
			}
			d := a.Decide(netip.MustParseAddr(tc.addr))
			got := d.Action.String() + " default"
			if d.Rule != nil {
				got = d.Action.String() + " " + d.Rule.Prefix.String()
				if d.Rule.Action != d.Action {
					t.Errorf("decision %v names a rule with action %v", d.Action, d.Rule.Action)
				}
			}
			if got != tc.want {
				t.Errorf("Decide(%s) = %s, want %s", tc.addr, got, tc.want)
			}
		})
	}
}

func TestDecideInvalidAddrDenies(t *testing.T) {
	a := MustNew(Spec{Default: Allow})
	if d := a.Decide(netip.Addr{}); d.Action != Deny || d.Rule != nil {
		t.Errorf("Decide(zero Addr) = %v, want deny with no rule", d)
	}
}

func TestUnix(t *testing.T) {
	if d := MustNew(Spec{Default: Allow}).Unix(); d.Allowed() {
		t.Errorf("unix policy by default = %v, want deny", d)
	}
	if d := MustNew(Spec{Default: Deny, Unix: Allow}).Unix(); !d.Allowed() || d.Rule != nil {
		t.Errorf("unix: allow gave %v", d)
	}
}

func TestDecisionOrigin(t *testing.T) {
	a := MustNew(Spec{Default: Deny, Rules: rules("allow 10.0.0.0/8", "deny 10.66.0.0/16")})
	d := a.Decide(netip.MustParseAddr("10.66.0.1"))
	if got, want := d.String(), "deny by 10.66.0.0/16 (t:2)"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if got := a.Decide(netip.MustParseAddr("9.9.9.9")).String(); got != "deny by default" {
		t.Errorf("String() = %q", got)
	}
}

func TestNewRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec Spec
		want error
	}{
		{"host bits", Spec{Rules: []Rule{{Prefix: netip.MustParsePrefix("10.0.0.1/8")}}}, ErrHostBits},
		{"invalid prefix", Spec{Rules: []Rule{{}}}, ErrPrefix},
		{"bad rule action", Spec{Rules: []Rule{{Prefix: netip.MustParsePrefix("10.0.0.0/8"), Action: 7}}}, ErrAction},
		{"bad default", Spec{Default: 2}, ErrAction},
		{"bad unix", Spec{Unix: 9}, ErrAction},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := New(tc.spec)
			if !errors.Is(err, tc.want) || a != nil {
				t.Errorf("New = (ACL %v), %v; want nil, %v", a != nil, err, tc.want)
			}
		})
	}
}

func TestParsePrefix(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		err      error
		msg      string
	}{
		{in: "10.0.0.0/8", want: "10.0.0.0/8"},
		{in: "10.1.2.3", want: "10.1.2.3/32"},
		{in: "2001:db8::/32", want: "2001:db8::/32"},
		{in: "::1", want: "::1/128"},
		{in: "::ffff:10.0.0.0/104", want: "10.0.0.0/8"},
		{in: "::ffff:10.1.2.3", want: "10.1.2.3/32"},
		{in: "::ffff:0.0.0.0/96", want: "0.0.0.0/0"},
		{in: "::/64", want: "::/64"}, // shorter than /96: stays IPv6
		{in: "10.0.0.1/8", err: ErrHostBits, msg: "did you mean 10.0.0.0/8?"},
		{in: "2001:db8::1/32", err: ErrHostBits, msg: "did you mean 2001:db8::/32?"},
		{in: "fe80::1%eth0", err: ErrZone},
		{in: "fe80::%eth0/64", err: ErrZone},
		{in: "10.0.0.0/33", err: ErrPrefix},
		{in: "10.0.0", err: ErrPrefix},
		{in: "010.0.0.1", err: ErrPrefix},
		{in: "example.com", err: ErrPrefix},
		{in: "", err: ErrPrefix},
	} {
		t.Run(tc.in, func(t *testing.T) {
			p, err := ParsePrefix(tc.in)
			if tc.err != nil {
				if !errors.Is(err, tc.err) || !strings.Contains(err.Error(), tc.msg) {
					t.Fatalf("ParsePrefix(%q) = %v, %v; want error %v containing %q", tc.in, p, err, tc.err, tc.msg)
				}
				return
			}
			if err != nil || p.String() != tc.want {
				t.Fatalf("ParsePrefix(%q) = %v, %v; want %s", tc.in, p, err, tc.want)
			}
		})
	}
}

func TestActionString(t *testing.T) {
	if Allow.String() != "allow" || Deny.String() != "deny" || Action(5).String() != "Action(5)" {
		t.Error("Action.String")
	}
	if _, err := ParseAction("permit"); !errors.Is(err, ErrAction) {
		t.Errorf("ParseAction(permit) = %v", err)
	}
}

// TestConcurrentDecide runs Decide from many goroutines while new ACLs are built; under -race it
// shows that an ACL is safe to share.
func TestConcurrentDecide(t *testing.T) {
	a := MustNew(Spec{Default: Deny, Rules: rules("allow 10.0.0.0/8", "deny 10.66.0.0/16")})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 1))
			for range 2000 {
				ip := netip.AddrFrom4([4]byte{10, byte(r.IntN(256)), 0, 1})
				want := ip.As4()[1] != 66
				if got := a.Decide(ip).Allowed(); got != want {
					t.Errorf("Decide(%v) allowed=%v", ip, got)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func TestRulesIsACopy(t *testing.T) {
	a := MustNew(Spec{Default: Deny, Rules: rules("allow 10.0.0.0/8")})
	rs := a.Rules()
	rs[0].Action = Deny
	if !a.Decide(netip.MustParseAddr("10.0.0.1")).Allowed() || a.Len() != 1 || a.Default() != Deny {
		t.Error("changing Rules() changed the ACL")
	}
}

func ExampleACL_Decide() {
	a, err := New(Spec{
		Default: Deny,
		Rules: []Rule{
			{Prefix: netip.MustParsePrefix("10.0.0.0/8"), Action: Allow},
			{Prefix: netip.MustParsePrefix("10.66.0.0/16"), Action: Deny},
		},
	})
	if err != nil {
		panic(err)
	}
	for _, s := range []string{"10.1.2.3", "10.66.0.9", "::ffff:10.66.0.9", "192.0.2.1"} {
		fmt.Println(s, a.Decide(netip.MustParseAddr(s)))
	}
	// Output:
	// 10.1.2.3 allow by 10.0.0.0/8 (-)
	// 10.66.0.9 deny by 10.66.0.0/16 (-)
	// ::ffff:10.66.0.9 deny by 10.66.0.0/16 (-)
	// 192.0.2.1 deny by default
}

func ExampleParsePrefix() {
	for _, s := range []string{"192.0.2.7", "::ffff:10.0.0.0/104", "10.0.0.1/8"} {
		p, err := ParsePrefix(s)
		fmt.Println(p, err)
	}
	// Output:
	// 192.0.2.7/32 <nil>
	// 10.0.0.0/8 <nil>
	// invalid Prefix prefix has host bits set (did you mean 10.0.0.0/8?)
}
