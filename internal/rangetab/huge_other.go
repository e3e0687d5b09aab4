//go:build !linux

package rangetab

// collapse does nothing here: huge pages are asked for on Linux only.
func collapse[T any](s []T) {}
