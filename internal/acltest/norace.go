//go:build !race

package acltest

// Race is true when the race detector is on: its instrumentation allocates on its own, so the
// allocation guards (tests named *Allocs, which .ci/run runs again without -race) skip.
const Race = false
