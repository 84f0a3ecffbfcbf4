package testutil

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

// SmsmilterPkg is the import path of the smsmilter command.
const SmsmilterPkg = "github.com/smsmilter/smsmilter/cmd/smsmilter"

// Smsmilter returns the smsmilter binary built from this checkout (Build
// of SmsmilterPkg), e.g. for a daemon that re-executes itself as its
// built-in plugins. SMSMILTER_BIN names a prebuilt binary instead.
func Smsmilter(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("SMSMILTER_BIN"); p != "" {
		return p
	}
	return Build(t, SmsmilterPkg)
}

var builds struct {
	mu     sync.Mutex
	dir    string
	dirErr error
	pkgs   map[string]*build
}

type build struct {
	once sync.Once
	bin  string
	err  error
}

// Build returns a binary of the Go package pkg (an import path of this
// module) built from this checkout, once per test process, as the
// release is built (CGO_ENABLED=0) and without -race: it is a program
// under test, not the test. The binaries are in a folder every user may
// enter (a program that dropped privileges may be handed the path); call
// Main from TestMain to remove it after the tests.
func Build(t testing.TB, pkg string) string {
	t.Helper()
	builds.mu.Lock()
	if builds.pkgs == nil {
		builds.pkgs = map[string]*build{}
		builds.dir, builds.dirErr = os.MkdirTemp("", "smsmilter-test-bin-")
		if builds.dirErr == nil {
			builds.dirErr = os.Chmod(builds.dir, 0o755)
		}
	}
	dir, dirErr := builds.dir, builds.dirErr
	b := builds.pkgs[pkg]
	if b == nil {
		b = &build{}
		builds.pkgs[pkg] = b
	}
	builds.mu.Unlock()
	if dirErr != nil {
		t.Fatal(dirErr)
	}

	b.once.Do(func() {
		b.bin = filepath.Join(dir, path.Base(pkg))
		cmd := exec.Command(goTool(), "build", "-o", b.bin, pkg)
		cmd.Dir = ModuleRoot()
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			b.err = fmt.Errorf("go build %s: %v\n%s", pkg, err, out.String())
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.bin
}

// Main runs the tests and removes the binaries Build made for them:
//
//	func TestMain(m *testing.M) { testutil.Main(m) }
func Main(m *testing.M) {
	code := m.Run()
	builds.mu.Lock()
	if builds.dir != "" {
		os.RemoveAll(builds.dir)
	}
	builds.mu.Unlock()
	os.Exit(code)
}

// ModuleRoot is the folder holding this checkout's go.mod.
func ModuleRoot() string {
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Dir(file)
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			panic("testutil: go.mod not found above " + filepath.Dir(file))
		}
		dir = parent
	}
}

// goTool is the go command: from PATH, else next to the toolchain that
// built the test (go test runs with GOROOT set).
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	if gr := os.Getenv("GOROOT"); gr != "" {
		return filepath.Join(gr, "bin", "go")
	}
	return "go"
}
