//go:build !linux

package sqlite

// freeBytes is not implemented here; Ping relies on its test write alone.
func freeBytes(string) (uint64, bool, error) { return 0, false, nil }
