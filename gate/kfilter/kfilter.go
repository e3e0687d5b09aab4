// Package kfilter makes the kernel drop the SYNs of denied peers on a listening TCP socket, before
// a connection exists, with one of two socket filters: an eBPF program over longest-prefix-match
// maps (EBPF), which holds an ACL of any size and is updated in place, or a classic BPF program
// compiled from the ACL (Compile, Apply), which holds about 2000 IPv4 rules but needs no eBPF. It is an optimisation in front of the gate, never a replacement:
// the getpeername check after accept (package gate) stays the authority.
//
//	var lc net.ListenConfig
//	lc.SetMultipathTCP(false) // the kernel takes no socket filter on an MPTCP socket
//	ln, _ := lc.Listen(ctx, "tcp", ":8080")
//	rc, _ := ln.(syscall.Conn).SyscallConn()
//	if err := kfilter.Apply(rc, rules); err != nil {
//		log.Print("no kernel filter; the gate still denies: ", err)
//	}
//	http.Serve(gate.NewListener(ln, rules, gate.Options{}), handler)
//
// # The eBPF filter
//
// NewEBPF loads a BPF_PROG_TYPE_SOCKET_FILTER program and creates its maps: two LPM tries for the
// ACL (IPv4, IPv6), two for runtime bans, and a per-CPU array counting drops by IP version. Load
// puts an ACL in the maps: one entry a prefix with the action that decides it (acl resolves a tie
// to deny), and the ACL's default as the /0 of each family, so the trie's longest-prefix match is
// acl.ACL.Decide. Attach (SO_ATTACH_BPF) installs it on any number of sockets. The program reads
// the IP version from the packet, so one program serves IPv4, IPv6 and dual-stack sockets; an
// IPv4 packet on a [::] socket is judged as IPv4, and so is an IPv4-mapped IPv6 source, as Decide
// does. It judges only segments with SYN set (the TCP header is found through the IPv4 header
// length; an IPv6 packet with extension headers is judged whatever it carries): connections the
// kernel accepted inherit the filter, and their packets then cost about ten instructions and no
// lookup, and a change of the ACL never stalls an open connection. A non-SYN segment from a denied
// peer meets the listener, which answers it with a reset; it never becomes a connection.
//
// A later Load changes the maps by difference, never detaching: first the prefixes that deny in
// the new ACL are set and the allow prefixes it drops are deleted (each step only turns peers
// away), then its allow prefixes are set and the deny prefixes it drops deleted (each step lets in
// only peers the new ACL allows, its deny prefixes being all in place). Each map element changes
// atomically, but the whole reload is not one transaction: while it runs, a peer is judged as the
// old ACL or as the new one would, or denied; never is a peer that both deny let through. On a
// failure half-way (out of kernel memory) the filter's state is unknown and Load refuses further
// use: the caller detaches it and the gate alone judges. UpdateBans adds and removes ban prefixes
// in their own maps, checked before the ACL maps; their expiry is the caller's.
//
// The maps allocate per entry (BPF_F_NO_PREALLOC) and are charged to the memory cgroup of the
// process (memlock): about 140 bytes an IPv4 /32 (EBPFStats.MapBytes). Loading needs CAP_BPF (or
// CAP_SYS_ADMIN before Linux 5.8, or kernel.unprivileged_bpf_disabled=0); NewEBPF's error wraps
// ErrNoEBPF and names what is missing. Nothing outlives the process: the kernel frees program
// and maps when the last socket and descriptor holding them close.
//
// # What the client sees
//
// A denied peer's SYN is dropped without a reply, so its connect gets no RST and no FIN: the
// kernel retransmits the SYN (after 1 s, 3 s, 7 s, … on Linux) and the connect fails only when
// the client's own timeout expires, or after about two minutes of retries. A userspace denial
// completes the handshake and then closes (FIN) or resets (RST) the connection, which the client
// sees at once. The filter therefore costs a denied client time and tells it nothing, which is
// what a flood or a scanner deserves, but a legitimate client that is denied by mistake hangs
// instead of failing fast, and the server keeps no trace of the attempt: nothing is accepted,
// counted or logged. Denials that must be logged or counted need the userspace gate alone, and
// so does a gate in dry-run mode (gate.Options.DryRun), which must not drop anyone.
//
// In exchange the server spends nothing on a denied attempt: no handshake, no accept, no socket.
// BenchmarkShed measures it on loopback (bash bench/kfilter.sh; medians of 8 rounds of 20000
// attempts on a 2-core VM, results in bench/results/kfilter.txt): with the filter, the server
// process used 0.03 µs of CPU per denied attempt, against 50 µs for accept, getpeername and close
// through gate.Listener alone; counting the client and the kernel's work too, 20 µs of CPU instead
// of 117 µs, and 86 000 attempts shed a second instead of 14 000.
//
// # Scope and limits
//
//   - The filter sees every packet for the socket and judges each by its source address: a SYN
//     from a denied peer, and anything else it sends to the port, is dropped.
//   - Accepted connections inherit the listener's filter (the kernel copies it to the new socket
//     when the handshake completes), so their packets are judged too, by the filter in force
//     then; an Apply after a reload does not reach them.
//   - Attaching to a socket that has a filter replaces it atomically: each packet meets the old
//     filter or the new one, never none. Apply again after a reload. The kernel holds both
//     programs during the swap, within net.core.optmem_max; when they do not fit together (on
//     this project's test machine, 128 KiB: any two IPv4 programs fit, two dual-stack programs
//     of 3000 or more instructions with IPv6 rules do not), Apply detaches the old one first and
//     the gate alone judges for that moment.
//   - The program reads the source address from the IP header through the SKF_NET_OFF base. A
//     packet that is neither IPv4 nor IPv6 is kept (fail open: the userspace check decides);
//     so is one from an address the ACL allows. A load beyond the end of the packet would make the
//     kernel drop it, but no such packet reaches a TCP socket: the IP layer has checked its
//     header before.
//   - A program holds at most MaxInstructions (4096) instructions. It is a binary search over the
//     boundaries between allowed and denied ranges (neighbours of the same action merged first):
//     one compare for each IPv4 boundary; for IPv6, a search over the first 32-bit word of the
//     address, then over the next word among the boundaries that share the first, and so on. An
//     allow-by-default ACL fits about 2030 scattered IPv4 addresses or prefixes to deny, on an
//     AF_INET or an AF_INET6 socket, and about 1010 scattered IPv6 /64s, 840 /48s or 500 /128s
//     (1010 if they share a /64). Larger ACLs give ErrTooLarge; Apply then
//     removes any older filter, so that no stale ACL goes on judging, and the gate alone decides.
//   - Go's net.Listen makes a multipath TCP (MPTCP) socket on Linux when the kernel supports it,
//     and the kernel refuses socket filters on those (EOPNOTSUPP): listen with a net.ListenConfig
//     on which SetMultipathTCP(false) was called. Attach reports the case with ErrMPTCP.
//   - Linux only; elsewhere Attach, Detach and Apply return an error wrapping
//     errors.ErrUnsupported. Compile works everywhere.
package kfilter

import "errors"

// Errors of this package; test with errors.Is.
var (
	// ErrTooLarge means the ACL's program would not fit in MaxInstructions.
	ErrTooLarge = errors.New("kfilter: ACL too large for a socket filter")
	// ErrFamily means the socket, or the family asked of Compile, is neither IPv4 nor IPv6.
	ErrFamily = errors.New("kfilter: not an IPv4 or IPv6 socket")
	// ErrMPTCP means the socket is a multipath TCP socket, on which the kernel takes no filter.
	ErrMPTCP = errors.New("kfilter: MPTCP socket takes no socket filter (listen with SetMultipathTCP(false))")
	// ErrNoACL means a nil ACL was given.
	ErrNoACL = errors.New("kfilter: no ACL")
	// ErrEmpty means an empty program was given to Attach.
	ErrEmpty = errors.New("kfilter: empty program")
)
