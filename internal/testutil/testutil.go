// Package testutil holds the few helpers every package's tests share:
// finding the external programs the integration tests drive (dnsmasq,
// socat, node, postfix, swaks, curl) and free loopback ports.
package testutil

import (
	"net"
	"os"
	"os/exec"
	"testing"
)

// InCI reports whether the tests run under CI (.ci/run sets CI=true).
// There, a missing external program is a failure, not a skip: a test that
// silently skips in CI cannot fail.
func InCI() bool { return os.Getenv("CI") != "" }

// NeedCmd returns the path of an external program the test needs. When it
// is missing the test is skipped on a developer machine and fails in CI.
func NeedCmd(t testing.TB, name string) string {
	t.Helper()
	for _, p := range []string{name, "/usr/sbin/" + name, "/usr/bin/" + name} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	if InCI() {
		t.Fatalf("%s is not installed; .ci/run must install it", name)
	}
	t.Skipf("%s is not installed", name)
	return ""
}

// FreePort returns a loopback TCP port that was free a moment ago, for
// programs that must be told their port before they start.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// OpenDir returns a new empty directory that every user may enter and
// write, removed at the end of the test. Programs that drop privileges
// (smtp-sink -u nobody, Postfix) cannot use t.TempDir, whose parent is
// private to root.
func OpenDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "smsmilter-test-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
