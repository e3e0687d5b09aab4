package rangetab

import (
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// collapse asks the kernel to back the 2 MiB-aligned middle of s with huge pages
// (MADV_COLLAPSE, Linux 6.1), so that a lookup's random probes into a large table miss the TLB
// per 2 MiB rather than per 4 KiB: with 1 M bans beside a 1 M-rule ACL that took about a third
// off a decision (BENCHMARKS.md). It works whatever the THP setting but "never", changes no
// mapping flag (unlike MADV_HUGEPAGE, which would split the heap's mapping at every table) and
// is only advice: an error (an older kernel, no huge page free) leaves the table as it was.
// Tables under 4 MiB are left alone.
func collapse[T any](s []T) {
	const huge = 2 << 20
	size := uintptr(len(s)) * unsafe.Sizeof(*new(T))
	if size < 2*huge {
		return
	}
	lo := uintptr(unsafe.Pointer(unsafe.SliceData(s)))
	hi := lo + size
	lo = (lo + huge - 1) &^ (huge - 1)
	hi &^= huge - 1
	if hi <= lo {
		return
	}
	unix.Syscall(unix.SYS_MADVISE, lo, hi-lo, unix.MADV_COLLAPSE)
	runtime.KeepAlive(s) // the heap does not move: s's memory is where lo says while s lives
}
