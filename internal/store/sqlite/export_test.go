package sqlite

import (
	"context"
	"testing"
)

// Test hooks into the package.

// openWith opens a store at path with non-default options.
func openWith(t testing.TB, path string, opt options) *Store {
	t.Helper()
	s, err := open(t.Context(), path, testLog(t), opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// setQueryOnly turns PRAGMA query_only on or off on the write connection:
// every later write fails with SQLITE_READONLY, as on a file that became
// read-only. (We run tests as root, for whom chmod does not stop writes.)
func (s *Store) setQueryOnly(ctx context.Context, on bool) error {
	v := "0"
	if on {
		v = "1"
	}
	return s.submit(ctx, &op{raw: true, fn: func(w *wtx) error {
		_, err := w.conn.ExecContext(bg, "PRAGMA query_only = "+v)
		return err
	}})
}
