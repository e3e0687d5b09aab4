package hostsaccess

import (
	"errors"
	"io/fs"
	"net/netip"
	"testing"

	"github.com/peergate/peergate/acl"
)

// memFiles serves pattern files from a map, so fuzzing never reads the disk.
func memFiles(m map[string]string) *Options {
	return &Options{ReadFile: func(p string) ([]byte, error) {
		if s, ok := m[p]; ok {
			return []byte(s), nil
		}
		return nil, fs.ErrNotExist
	}}
}

// FuzzConvert is the differential test: random small hosts.allow, hosts.deny and pattern files
// built from the fuzz bytes, translated for sshd, must decide every probed address (IPv4, IPv6,
// IPv4-mapped, the edges of every pattern) as a word-by-word first-match evaluation of the
// same parsed files does, and the client without an address too.
func FuzzConvert(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("\x02\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f"))
	f.Add([]byte("\x04\x03\x05\x06\x01\x02\x03\x04\x00\x01\x04\x03\x02\x07\x03\x06\x05"))
	f.Add([]byte("\x03\x01\x06\x09\x03\x04\x05\x00\x01\x0b\x02\x05\x06\x07\x08\x09\x0a\x01\x02\x03"))
	f.Add([]byte("sshd: 10. EXCEPT 10.1. EXCEPT 10.1.2.0/255.255.255.0 and some more bytes"))
	f.Add([]byte("\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8\xf7\xf6\xf5\xf4\xf3\xf2\xf1\xf0\xef\xee\xed\xec\xeb\xea"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c := &chooser{b: data}
		allowText, denyText, pf := c.files("/pf")
		opts := memFiles(pf)
		allow := Parse("hosts.allow", []byte(allowText), acl.Allow, opts)
		deny := Parse("hosts.deny", []byte(denyText), acl.Deny, opts)
		var addrs []netip.Addr
		for range 8 {
			addrs = append(addrs, c.addr())
		}
		checkAgainstReference(t, "sshd", addrs, allow, deny)
	})
}

// FuzzParse feeds arbitrary text to the parser as hosts.allow and hosts.deny: it must not panic,
// every error must carry a position and a sentinel, and whatever translates must agree with the
// reference on the edges of its patterns.
func FuzzParse(f *testing.F) {
	for _, s := range [][2]string{
		{"sshd: 10. EXCEPT 10.1. EXCEPT 10.1.2.0/255.255.255.0\nsshd: [2001:db8::]/32 : deny\n", "ALL: ALL\n"},
		{"ALL EXCEPT in.fingerd: 192.168.1.0/24, [::1] : spawn echo %a : allow\n", "ALL: ALL: twist /bin/echo no\n"},
		{"sshd: /p\n# comment\n  # not a comment: ALL\nsshd: 10.0.\\\n0.1\n", "sshd: .example.com KNOWN user@10.0.0.1 @ng 10.* 10.1\n"},
		{"sshd: 10.0.0.0/255.0.255.0 10.1.2.3/8 0.0.0.0/0 [::ffff:1.2.3.4] [10.1.2.3] 2001 010.1.2.3\n", "sshd: ALL : allow : deny\nsshd: ALL: (safe_finger -l @%h) &\n"},
		{"sshd@10.0.0.1: ALL\nss*: ALL EXCEPT\nEXCEPT: ALL\n:\n", "sshd"},
		{"sshd: [fe80::1%eth0] [2001:db8::1]/32 [::]/0 [2001:db8::]/129 [2001:db8::\n", "sshd: ALL : aclexec /bin/true\n"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, allowText, denyText string) {
		opts := memFiles(map[string]string{"/p": "10.1.2.3 [2001:db8::]/48\n/p\n", "/q": "ALL"})
		allow := Parse("hosts.allow", []byte(allowText), acl.Allow, opts)
		deny := Parse("hosts.deny", []byte(denyText), acl.Deny, opts)
		for _, file := range []*File{allow, deny} {
			checkErrs(t, file.Err())
			for _, w := range file.Warnings {
				_ = w.String()
			}
		}
		if _, err := Translate("sshd", allow, deny); err != nil {
			checkErrs(t, err)
		}
		checkAgainstReference(t, "sshd", nil, allow, deny)
	})
}

// checkErrs checks that every error in err names a file and wraps a sentinel.
func checkErrs(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	for _, e := range errs {
		var pe *PosError
		if !errors.As(e, &pe) {
			if e.Error() != "" && len(errs) > 1 && e == errs[len(errs)-1] {
				continue // "and N more errors"
			}
			t.Fatalf("error without a position: %v", e)
		}
		if pe.File == "" || pe.Line == 0 {
			t.Fatalf("error without file:line: %v", e)
		}
		if !errors.Is(e, ErrUnsupported) && !errors.Is(e, ErrPattern) && !errors.Is(e, ErrOption) && !errors.Is(e, ErrPatternFile) {
			t.Fatalf("error wraps no sentinel: %v", e)
		}
	}
}
