//go:build race

package gate

// raceEnabled: the race detector is on, and its instrumentation allocates on its own.
const raceEnabled = true
