// Package testutil holds the few helpers every package's tests share:
// finding the external programs the integration tests drive (dnsmasq,
// socat, node, postfix, swaks, curl), free loopback ports, the smsmilter
// binary built once per test run (Smsmilter, Build), a Buffer several
// goroutines may write, and checking that generated protobuf code is
// current.
package testutil

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
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

// CheckGeneratedProto regenerates the Go code of protoFile (NAME.proto in
// the test's folder: NAME.pb.go and NAME_grpc.pb.go) with the pinned tools
// and compares it with the committed files, so that an edit to the .proto
// without `go generate` is caught; pkg is the package's path for the
// message (./plugins/proto). Other tool versions generate different
// (equally valid) code, so the check runs only when the pinned versions
// are on PATH, and skips the test otherwise.
func CheckGeneratedProto(t *testing.T, protoFile, pkg string) {
	t.Helper()
	pinned := []struct{ tool, arg, want string }{
		{"protoc", "--version", "libprotoc 3.21.12"},
		{"protoc-gen-go", "--version", "protoc-gen-go v1.36.6"},
		{"protoc-gen-go-grpc", "--version", "protoc-gen-go-grpc 1.3.0"},
	}
	for _, p := range pinned {
		path, err := exec.LookPath(p.tool)
		if err != nil {
			t.Skipf("%s is not on PATH", p.tool)
		}
		out, err := exec.Command(path, p.arg).CombinedOutput()
		if got := strings.TrimSpace(string(out)); err != nil || got != p.want {
			t.Skipf("%s is %q, not the pinned %q", p.tool, got, p.want)
		}
	}

	dir := t.TempDir()
	cmd := exec.Command("protoc", "--go_out="+dir, "--go_opt=paths=source_relative",
		"--go-grpc_out="+dir, "--go-grpc_opt=paths=source_relative", protoFile)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("protoc: %v\n%s", err, out)
	}
	name := strings.TrimSuffix(protoFile, ".proto")
	for _, f := range []string{name + ".pb.go", name + "_grpc.pb.go"} {
		want, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is not what %s generates: run `go generate %s`", f, protoFile, pkg)
		}
	}
}

// Buffer is a bytes.Buffer that goroutines (a logger, a child process's
// output) may write while the test reads it.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
