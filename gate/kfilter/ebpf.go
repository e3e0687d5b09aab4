//go:build linux

package kfilter

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/peergate/peergate/acl"
	"golang.org/x/sys/unix"
)

// mapCap is the max_entries of every LPM-trie map: an ACL holds fewer rules than this (acl.New
// refuses 1<<24), and the maps allocate per entry (BPF_F_NO_PREALLOC), so the cap costs nothing.
const mapCap = 1 << 24

// key4 and key6 are the keys of the LPM-trie maps (struct bpf_lpm_trie_key: the prefix length in
// host order, then the address in network order).
type key4 struct {
	Bits uint32
	Addr [4]byte
}

type key6 struct {
	Bits uint32
	Addr [16]byte
}

// EBPF is an eBPF socket filter whose longest-prefix-match maps hold an ACL, and a set of banned
// prefixes checked before it. One EBPF may be attached to any number of TCP listening sockets; a
// Load or UpdateBans changes what all of them drop at once, with no detach. Its methods are safe for
// concurrent use. Close it when no socket needs it any more (a socket it is attached to keeps the
// program and maps alive until it is closed or detached).
type EBPF struct {
	prog                   *ebpf.Program
	acl4, acl6, ban4, ban6 *ebpf.Map
	drops                  *ebpf.Map

	mu   sync.Mutex
	cur4 []entry4 // the entries of acl4 and acl6, sorted
	cur6 []entry6
	bans map[netip.Prefix]struct{} // the entries of ban4 and ban6
	bad  error                     // set when an update failed half-way: the maps are no longer known
}

// entry4 is a prefix of the IPv4 ACL map and its action, packed for sorting: address<<32 |
// length<<1 | action.
type entry4 uint64

func (e entry4) key() key4 {
	a := uint32(e >> 32)
	return key4{Bits: uint32(e>>1) & 63, Addr: [4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)}}
}

func (e entry4) act() uint8 { return uint8(e & 1) }

// entry6 is a prefix of the IPv6 ACL map and its action.
type entry6 struct {
	addr [16]byte
	bits uint8
	act  uint8
}

func (e entry6) key() key6 { return key6{Bits: uint32(e.bits), Addr: e.addr} }

func (e entry6) action() uint8 { return e.act }

func cmp6(a, b entry6) int {
	if c := slices.Compare(a.addr[:], b.addr[:]); c != 0 {
		return c
	}
	return int(a.bits) - int(b.bits)
}

// Family indexes of the drop counters (the per-CPU array map), by the IP version of the packet.
const (
	famV4 = 0
	famV6 = 1
)

// ErrNoEBPF means the kernel or the process cannot load the eBPF socket filter: no bpf(2) (a
// sandbox, seccomp), no CAP_BPF (or CAP_SYS_ADMIN) with kernel.unprivileged_bpf_disabled set, or
// a kernel without LPM-trie maps.
var ErrNoEBPF = errors.New("kfilter: eBPF socket filter unavailable")

// NewEBPF creates the maps and loads the program of an eBPF filter that keeps every packet (empty
// maps) until Load gives it an ACL. An error wraps ErrNoEBPF and says which capability is missing
// when the kernel refused with EPERM.
func NewEBPF() (*EBPF, error) {
	f := &EBPF{bans: map[netip.Prefix]struct{}{}}
	var err error
	mk := func(name string, typ ebpf.MapType, k, v, n uint32, flags uint32) *ebpf.Map {
		if err != nil {
			return nil
		}
		var m *ebpf.Map
		m, err = ebpf.NewMap(&ebpf.MapSpec{Name: name, Type: typ, KeySize: k, ValueSize: v, MaxEntries: n, Flags: flags})
		return m
	}
	f.acl4 = mk("pg_acl4", ebpf.LPMTrie, 8, 1, mapCap, unix.BPF_F_NO_PREALLOC)
	f.acl6 = mk("pg_acl6", ebpf.LPMTrie, 20, 1, mapCap, unix.BPF_F_NO_PREALLOC)
	f.ban4 = mk("pg_ban4", ebpf.LPMTrie, 8, 1, mapCap, unix.BPF_F_NO_PREALLOC)
	f.ban6 = mk("pg_ban6", ebpf.LPMTrie, 20, 1, mapCap, unix.BPF_F_NO_PREALLOC)
	f.drops = mk("pg_drops", ebpf.PerCPUArray, 4, 8, 2, 0)
	if err == nil {
		f.prog, err = ebpf.NewProgram(&ebpf.ProgramSpec{Name: "peergate", Type: ebpf.SocketFilter,
			License: "BSD", Instructions: program(f.acl4, f.acl6, f.ban4, f.ban6, f.drops, netOffE)})
	}
	if err != nil {
		f.Close()
		return nil, noEBPF(err)
	}
	return f, nil
}

// noEBPF wraps a refusal of the kernel in ErrNoEBPF, naming the missing capability.
func noEBPF(err error) error {
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		return fmt.Errorf("%w (needs CAP_BPF, or CAP_SYS_ADMIN on kernels before 5.8, or kernel.unprivileged_bpf_disabled=0): %w", ErrNoEBPF, err)
	}
	if errors.Is(err, unix.ENOSYS) {
		return fmt.Errorf("%w (no bpf(2) system call: kernel without CONFIG_BPF_SYSCALL, or a seccomp sandbox): %w", ErrNoEBPF, err)
	}
	return fmt.Errorf("%w: %w", ErrNoEBPF, err)
}

// EBPFAvailable reports whether NewEBPF can work here, by creating and closing a filter: nil, or
// an error wrapping ErrNoEBPF that says why not.
func EBPFAvailable() error {
	f, err := NewEBPF()
	if err != nil {
		return err
	}
	return f.Close()
}

// Close releases the program and maps. Sockets it is attached to keep them until they are closed.
func (f *EBPF) Close() error {
	var errs []error
	if f.prog != nil {
		errs = append(errs, f.prog.Close())
	}
	for _, m := range []*ebpf.Map{f.acl4, f.acl6, f.ban4, f.ban6, f.drops} {
		if m != nil {
			errs = append(errs, m.Close())
		}
	}
	return errors.Join(errs...)
}

// Attach installs the filter on the socket behind rc (SO_ATTACH_BPF), replacing atomically any
// filter it had, classic or eBPF. On an MPTCP socket the error wraps ErrMPTCP.
func (f *EBPF) Attach(rc syscall.RawConn) error {
	var serr error
	var proto int
	err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_BPF, f.prog.FD())
		if errors.Is(serr, unix.EOPNOTSUPP) {
			proto, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PROTOCOL)
		}
	})
	switch {
	case err != nil:
		return fmt.Errorf("kfilter: attach: %w", err)
	case serr != nil && proto == unix.IPPROTO_MPTCP:
		return fmt.Errorf("%w: %w", ErrMPTCP, serr)
	case serr != nil:
		return fmt.Errorf("kfilter: attach (SO_ATTACH_BPF): %w", serr)
	}
	return nil
}

// entries returns a's prefixes as the maps hold them, sorted: one entry a prefix, with the action
// that decides it (deny when the same prefix is both allowed and denied), and the /0 of each family
// with the ACL's default unless a rule gives it.
func entries(a *acl.ACL) (e4 []entry4, e6 []entry6) {
	def := uint8(a.Default())
	e4 = make([]entry4, 0, a.Len()+1)
	for r := range a.All() {
		if p := r.Prefix; p.Addr().Is4() {
			b := p.Addr().As4()
			e4 = append(e4, entry4(uint64(b[0])<<56|uint64(b[1])<<48|uint64(b[2])<<40|uint64(b[3])<<32|
				uint64(p.Bits())<<1|uint64(r.Action)))
		} else {
			e6 = append(e6, entry6{addr: p.Addr().As16(), bits: uint8(p.Bits()), act: uint8(r.Action)})
		}
	}
	// Sorted deny first among equal prefixes, and the first of each prefix kept: deny on a tie.
	slices.Sort(e4)
	slices.SortFunc(e6, func(x, y entry6) int {
		if c := cmp6(x, y); c != 0 {
			return c
		}
		return int(x.act) - int(y.act)
	})
	e4 = slices.CompactFunc(e4, func(x, y entry4) bool { return x>>1 == y>>1 })
	e6 = slices.CompactFunc(e6, func(x, y entry6) bool { return cmp6(x, y) == 0 })
	// The default is the /0 of each family, unless a rule gives the /0 (a /0 sorts first).
	if len(e4) == 0 || e4[0]>>1 != 0 {
		e4 = slices.Insert(e4, 0, entry4(def))
	}
	if len(e6) == 0 || e6[0].bits != 0 {
		e6 = slices.Insert(e6, 0, entry6{act: def})
	}
	return e4, e6
}

// Load brings the filter's ACL maps to a. The first Load fills them; a later one changes only the
// prefixes whose action changed, were added or were removed, in an order that never lets through a
// peer both the old and the new ACL deny (see the package documentation). On error the filter is
// in an unknown state and every later Load or UpdateBans fails: detach and close it.
func (f *EBPF) Load(a *acl.ACL) error {
	if a == nil {
		return ErrNoACL
	}
	n4, n6 := entries(a)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.bad != nil {
		return f.bad
	}
	for _, st := range f.plan(n4, n6) {
		if err := st(); err != nil {
			f.bad = fmt.Errorf("kfilter: eBPF maps half-updated by a failed load: %w", err)
			return f.bad
		}
	}
	f.cur4, f.cur6 = n4, n6
	return nil
}

// plan returns the steps that bring the ACL maps from f.cur4 and f.cur6 to n4 and n6: 1. set
// the prefixes that deny now (new, or allowed before), 2. delete the allow prefixes that go; each
// only turns peers away. 3. set the prefixes that allow now, 4. delete the deny prefixes that go;
// each lets in only peers the new ACL allows, since all of its deny prefixes are in place by then
// and none of the old ACL's allow prefixes is left. So at every instant a peer is judged as the
// old or as the new ACL judges it, or denied.
func (f *EBPF) plan(n4 []entry4, n6 []entry6) []func() error {
	d4 := diff(f.cur4, n4, func(x, y entry4) int { return cmp.Compare(x>>1, y>>1) }, entry4.act)
	d6 := diff(f.cur6, n6, cmp6, entry6.action)
	return []func() error{
		func() error { return update(f.acl4, d4.set[acl.Deny], entry4.key, entry4.act) },
		func() error { return update(f.acl6, d6.set[acl.Deny], entry6.key, entry6.action) },
		func() error { return deleteAll(f.acl4, d4.del[acl.Allow], entry4.key) },
		func() error { return deleteAll(f.acl6, d6.del[acl.Allow], entry6.key) },
		func() error { return update(f.acl4, d4.set[acl.Allow], entry4.key, entry4.act) },
		func() error { return update(f.acl6, d6.set[acl.Allow], entry6.key, entry6.action) },
		func() error { return deleteAll(f.acl4, d4.del[acl.Deny], entry4.key) },
		func() error { return deleteAll(f.acl6, d6.del[acl.Deny], entry6.key) },
	}
}

// delta is what turns one sorted entry list into another: the entries to set (new, or with a new
// action) and those to delete, each by the action they have (set: the new one; del: the old one).
type delta[E any] struct {
	set, del [2][]E
}

func diff[E any](old, cur []E, cmp func(E, E) int, act func(E) uint8) delta[E] {
	var d delta[E]
	i, j := 0, 0
	for i < len(old) || j < len(cur) {
		c := 0
		switch {
		case i == len(old):
			c = 1
		case j == len(cur):
			c = -1
		default:
			c = cmp(old[i], cur[j])
		}
		switch {
		case c < 0:
			d.del[act(old[i])] = append(d.del[act(old[i])], old[i])
			i++
		case c > 0:
			d.set[act(cur[j])] = append(d.set[act(cur[j])], cur[j])
			j++
		default:
			if act(old[i]) != act(cur[j]) {
				d.set[act(cur[j])] = append(d.set[act(cur[j])], cur[j])
			}
			i++
			j++
		}
	}
	return d
}

// batch is how many entries one bpf(2) call updates or deletes.
const batch = 1 << 16

func update[E any, K any](m *ebpf.Map, es []E, key func(E) K, val func(E) uint8) error {
	for len(es) > 0 {
		n := min(len(es), batch)
		keys := make([]K, n)
		vals := make([]uint8, n)
		for i, e := range es[:n] {
			keys[i], vals[i] = key(e), val(e)
		}
		if _, err := m.BatchUpdate(keys, vals, nil); err != nil {
			return err
		}
		es = es[n:]
	}
	return nil
}

func deleteAll[E any, K any](m *ebpf.Map, es []E, key func(E) K) error {
	for len(es) > 0 {
		n := min(len(es), batch)
		keys := make([]K, n)
		for i, e := range es[:n] {
			keys[i] = key(e)
		}
		if _, err := m.BatchDelete(keys, nil); err != nil {
			return err
		}
		es = es[n:]
	}
	return nil
}

// UpdateBans adds the prefixes of add to the filter's bans and removes those of remove (a prefix
// in both stays banned). A banned prefix drops its peers whatever the ACL says;
// an IPv4-mapped IPv6 prefix of length 96 or more stands for the IPv4 prefix it carries. Prefixes
// already banned, or not banned, are ignored; an invalid one is an error and changes nothing. On
// a failure of the kernel the filter is in an unknown state, as after a failed Load.
func (f *EBPF) UpdateBans(add, remove []netip.Prefix) error {
	norm := func(ps []netip.Prefix) ([]netip.Prefix, error) {
		out := make([]netip.Prefix, 0, len(ps))
		for _, p := range ps {
			if !p.IsValid() {
				return nil, fmt.Errorf("kfilter: ban %v: invalid prefix", p)
			}
			p = p.Masked()
			if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
				p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
			}
			out = append(out, p)
		}
		return out, nil
	}
	add, err := norm(add)
	if err != nil {
		return err
	}
	remove, err = norm(remove)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.bad != nil {
		return f.bad
	}
	var del4, set4 []key4
	var del6, set6 []key6
	adding := make(map[netip.Prefix]bool, len(add))
	for _, p := range add {
		adding[p] = true
		if _, ok := f.bans[p]; !ok {
			f.bans[p] = struct{}{}
			set4, set6 = appendKey(set4, set6, p)
		}
	}
	for _, p := range remove {
		if _, ok := f.bans[p]; ok && !adding[p] {
			delete(f.bans, p)
			del4, del6 = appendKey(del4, del6, p)
		}
	}
	id4 := func(k key4) key4 { return k }
	id6 := func(k key6) key6 { return k }
	for _, step := range []func() error{
		func() error { return update(f.ban4, set4, id4, func(key4) uint8 { return 1 }) },
		func() error { return update(f.ban6, set6, id6, func(key6) uint8 { return 1 }) },
		func() error { return deleteAll(f.ban4, del4, id4) },
		func() error { return deleteAll(f.ban6, del6, id6) },
	} {
		if err := step(); err != nil {
			f.bad = fmt.Errorf("kfilter: eBPF ban maps half-updated: %w", err)
			return f.bad
		}
	}
	return nil
}

func appendKey(k4 []key4, k6 []key6, p netip.Prefix) ([]key4, []key6) {
	if p.Addr().Is4() {
		return append(k4, key4{Bits: uint32(p.Bits()), Addr: p.Addr().As4()}), k6
	}
	return k4, append(k6, key6{Bits: uint32(p.Bits()), Addr: p.Addr().As16()})
}

// EBPFStats describes an eBPF filter: what its maps hold, what the kernel charges for them, and
// how many packets it dropped.
type EBPFStats struct {
	ACL4, ACL6   int    // prefixes in the ACL maps, the /0 of each family included
	Bans4, Bans6 int    // banned prefixes
	MapBytes     uint64 // kernel memory of the maps (the memlock the kernel reports for them)
	Dropped4     uint64 // packets dropped, IPv4 (including those an IPv6 socket received)
	Dropped6     uint64 // packets dropped, IPv6
}

// Stats returns the filter's map sizes and drop counters.
func (f *EBPF) Stats() (EBPFStats, error) {
	f.mu.Lock()
	s := EBPFStats{ACL4: len(f.cur4), ACL6: len(f.cur6)}
	for p := range f.bans {
		if p.Addr().Is4() {
			s.Bans4++
		} else {
			s.Bans6++
		}
	}
	f.mu.Unlock()
	var err error
	s.Dropped4, s.Dropped6, err = f.Dropped()
	for _, m := range []*ebpf.Map{f.acl4, f.acl6, f.ban4, f.ban6, f.drops} {
		s.MapBytes += memlock(m)
	}
	return s, err
}

// Dropped returns how many packets the filter dropped, by the IP version of the packet, since it
// was created.
func (f *EBPF) Dropped() (v4, v6 uint64, err error) {
	var per []uint64
	for i, p := range []*uint64{&v4, &v6} {
		if err = f.drops.Lookup(uint32(i), &per); err != nil {
			return 0, 0, fmt.Errorf("kfilter: drop counters: %w", err)
		}
		for _, n := range per {
			*p += n
		}
	}
	return v4, v6, nil
}

// memlock reads what the kernel charges for m, from /proc/self/fdinfo (0 when unknown).
func memlock(m *ebpf.Map) uint64 {
	b, err := os.ReadFile("/proc/self/fdinfo/" + strconv.Itoa(m.FD()))
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "memlock:"); ok {
			n, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}

// netOffE is SKF_NET_OFF as a signed LD_ABS offset.
const netOffE = -0x100000

// program returns the instructions of the filter. base is the offset of the IP header for LD_ABS
// (netOffE; the maps are those of NewEBPF).
//
// r6 holds the context (LD_ABS needs it there), r7 the IPv4 header length or the first words of an
// IPv6 source, r8 the family index of the drop counter. The key is built on the stack: an IPv6 key
// at fp-20 (length, then 16 bytes of address), an IPv4 key at fp-8, overlapping the last 8 bytes of
// the IPv6 one, so that an IPv4-mapped IPv6 source becomes an IPv4 key by rewriting the length.
func program(acl4, acl6, ban4, ban6, drops *ebpf.Map, base int32) asm.Instructions {
	const (
		tcpSYN   = 0x02
		protoTCP = 6
	)
	lookup := func(m *ebpf.Map, keyOff int16) asm.Instructions {
		return asm.Instructions{
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, int32(keyOff)),
			asm.LoadMapPtr(asm.R1, m.FD()),
			asm.FnMapLookupElem.Call(),
		}
	}
	// loadWord loads the 32-bit word at IP header offset off and stores it, in network order, at
	// fp+at; r0 keeps it in host order.
	loadWord := func(off int32, at int16) asm.Instructions {
		return asm.Instructions{
			asm.LoadAbs(base+off, asm.Word),
			asm.Mov.Reg(asm.R1, asm.R0),
			asm.HostTo(asm.BE, asm.R1, asm.Word),
			asm.StoreMem(asm.RFP, at, asm.R1, asm.Word),
		}
	}
	var p asm.Instructions
	add := func(ins ...asm.Instruction) { p = append(p, ins...) }
	addAll := func(iss ...asm.Instructions) {
		for _, is := range iss {
			p = append(p, is...)
		}
	}
	add(
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadAbs(base, asm.Byte),
		asm.RSh.Imm(asm.R0, 4),
		asm.JEq.Imm(asm.R0, 4, "v4"),
		asm.JEq.Imm(asm.R0, 6, "v6"),
		// Neither IPv4 nor IPv6, or a segment that opens no connection: keep it.
		asm.Mov.Imm32(asm.R0, -1).WithSymbol("keep"),
		asm.Return(),

		// IPv4: judge SYNs only (the TCP header starts after IHL words).
		asm.LoadAbs(base, asm.Byte).WithSymbol("v4"),
		asm.And.Imm(asm.R0, 0x0f),
		asm.LSh.Imm(asm.R0, 2),
		asm.Mov.Reg(asm.R7, asm.R0),
		asm.LoadInd(asm.R0, asm.R7, base+13, asm.Byte),
		asm.JSet.Imm(asm.R0, tcpSYN, "judge4"),
		asm.Ja.Label("keep"),
		asm.Mov.Imm(asm.R8, famV4).WithSymbol("judge4"),
		asm.StoreImm(asm.RFP, -8, 32, asm.Word),
	)
	addAll(loadWord(12, -4))
	// lookup4: the IPv4 key is at fp-8.
	l4 := lookup(ban4, -8)
	l4[0] = l4[0].WithSymbol("lookup4")
	addAll(l4)
	add(asm.JNE.Imm(asm.R0, 0, "drop"))
	addAll(lookup(acl4, -8))
	add(
		asm.JEq.Imm(asm.R0, 0, "keep"), // no entry (never: the /0 is always there): the gate judges
		asm.LoadMem(asm.R0, asm.R0, 0, asm.Byte),
		asm.JEq.Imm(asm.R0, int32(acl.Deny), "drop"),
		asm.Ja.Label("keep"),

		// IPv6: judge SYNs when TCP follows the fixed header; judge every packet with extension
		// headers, rather than walk them.
		asm.Mov.Imm(asm.R8, famV6).WithSymbol("v6"),
		asm.LoadAbs(base+6, asm.Byte),
		asm.JNE.Imm(asm.R0, protoTCP, "judge6"),
		asm.LoadAbs(base+40+13, asm.Byte),
		asm.JSet.Imm(asm.R0, tcpSYN, "judge6"),
		asm.Ja.Label("keep"),
		asm.StoreImm(asm.RFP, -20, 128, asm.Word).WithSymbol("judge6"),
	)
	addAll(loadWord(8, -16))
	add(asm.Mov.Reg(asm.R7, asm.R0))
	addAll(loadWord(12, -12))
	add(asm.Or.Reg(asm.R7, asm.R0))
	addAll(loadWord(16, -8))
	add(asm.Mov.Reg(asm.R9, asm.R0))
	addAll(loadWord(20, -4))
	add(
		asm.JNE.Imm(asm.R7, 0, "lookup6"),
		asm.JNE.Imm(asm.R9, 0xffff, "lookup6"),
		// ::ffff:a.b.c.d: judged as IPv4, as acl.ACL.Decide does.
		asm.StoreImm(asm.RFP, -8, 32, asm.Word),
		asm.Ja.Label("lookup4"),
	)
	l6 := lookup(ban6, -20)
	l6[0] = l6[0].WithSymbol("lookup6")
	addAll(l6)
	add(asm.JNE.Imm(asm.R0, 0, "drop"))
	addAll(lookup(acl6, -20))
	add(
		asm.JEq.Imm(asm.R0, 0, "keep"),
		asm.LoadMem(asm.R0, asm.R0, 0, asm.Byte),
		asm.JEq.Imm(asm.R0, int32(acl.Deny), "drop"),
		asm.Ja.Label("keep"),

		// drop: count the packet in this CPU's counter for its family, and drop it.
		asm.StoreMem(asm.RFP, -24, asm.R8, asm.Word).WithSymbol("drop"),
	)
	addAll(lookup(drops, -24))
	add(
		asm.JEq.Imm(asm.R0, 0, "ret0"),
		asm.Mov.Imm(asm.R1, 1),
		asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("ret0"),
		asm.Return(),
	)
	return p
}
