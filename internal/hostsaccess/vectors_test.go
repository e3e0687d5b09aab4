package hostsaccess

import (
	"cmp"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/peergate/peergate/acl"
	"github.com/peergate/peergate/internal/acltest"
)

// tcpdText writes a's rules as a hosts.allow that tcpd judges as a decides: longest prefix first
// (deny before allow on the same prefix), one "ALL: pattern : allow|deny" line each, so that the
// first match is the longest-prefix match; then "ALL: ALL : deny" where a denies by default (tcpd
// grants what nothing matches). IPv4 prefixes are written net/mask (a /32 as the address alone),
// IPv6 ones [addr]/bits.
func tcpdText(a *acl.ACL) string {
	rules := a.Rules()
	for i := range rules {
		rules[i].Prefix = acltest.Normal(rules[i].Prefix)
	}
	slices.SortStableFunc(rules, func(x, y acl.Rule) int {
		return cmp.Or(cmp.Compare(y.Prefix.Bits(), x.Prefix.Bits()), cmp.Compare(x.Action, y.Action)) // Deny is 0
	})
	var b strings.Builder
	for _, r := range rules {
		p := r.Prefix
		pat := "[" + p.Addr().String() + "]/" + strconv.Itoa(p.Bits())
		switch {
		case p.Addr().Is4() && p.Bits() == 32:
			pat = p.Addr().String() // tcpd cannot tell a mask of 255.255.255.255 from an error
		case p.Addr().Is4():
			mask := netip.PrefixFrom(netip.AddrFrom4([4]byte{255, 255, 255, 255}), p.Bits()).Masked().Addr()
			pat = p.Addr().String() + "/" + mask.String()
		}
		b.WriteString("ALL: " + pat + " : " + r.Action.String() + "\n")
	}
	if a.Default() == acl.Deny {
		b.WriteString("ALL: ALL : deny\n")
	}
	return b.String()
}

// TestVectors runs the conformance vectors through tcpd's rules: each vector's ACL written as a
// hosts.allow (tcpdText), judged by tcpd's procedure (refDecide) and by the ACL Translate makes of
// it. Only the action is compared (the translation names tcpd's entries, not the vector's rules).
// Not expressible, so skipped: 255.255.255.255 (tcpd's net/mask patterns never match it) and a
// unix policy other than the default (tcpd judges a client without an address by its entries).
func TestVectors(t *testing.T) {
	acltest.Run(t, func(t *testing.T, a *acl.ACL, cases []acltest.Case) {
		text := tcpdText(a)
		allow := Parse("hosts.allow", []byte(text), acl.Allow, testOpts())
		deny := Parse("hosts.deny", nil, acl.Deny, testOpts())
		res, err := Translate("sshd", allow, deny)
		if err != nil {
			t.Fatalf("Translate: %v\n%s", err, text)
		}
		tr, err := acl.New(res.Spec)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cases {
			switch {
			case c.Unix && a.Unix().Action != a.Default():
				t.Logf("%v: not expressible: tcpd judges a client without an address by its entries", c)
			case c.Unix:
				if res.Spec.Unix != c.Action {
					t.Errorf("%v: the translation says %v\n%s", c, res.Spec.Unix, text)
				}
			case isBroadcast(c.Addr):
				t.Logf("%v: not expressible: tcpd's net/mask patterns never match the broadcast address", c)
			default:
				if want, _, ok := refDecide("sshd", c.Addr, allow, deny); !ok || want != c.Action {
					t.Errorf("%v: tcpd's procedure says %v (judged: %v)\n%s", c, want, ok, text)
				}
				if got := tr.Decide(c.Addr).Action; got != c.Action {
					t.Errorf("%v: the translation says %v\n%s", c, got, text)
				}
			}
		}
	})
}
