// Package harness runs the real programs of an end-to-end test: a private
// Postfix instance, smtp-sink capturing what Postfix relays, the smsmilter
// daemon built from this checkout, swaks as the mail client, and helpers to
// read what came out (sink files, POP3 mailboxes, smsmilter's CLI).
//
// Everything lives in temporary folders and on loopback ports, and every
// process is stopped by t.Cleanup, also when the test fails. The MTA-neutral
// parts (Sink, Smsmilter, Swaks, POP3) serve the Sendmail suite too, and
// Env is the installation both MTA suites share: the cast, DNS, the SMPP
// peer, smsmilter, and the checks and flows of smsmilter's part.
//
// Call Main from the test package's TestMain so that the smsmilter binary
// built for the run is removed afterwards:
//
//	func TestMain(m *testing.M) { harness.Main(m) }
package harness

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

var (
	buildOnce sync.Once
	buildDir  string
	buildBin  string
	buildErr  error
)

// Main runs the tests and removes the binary built for them.
func Main(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
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
			panic("harness: go.mod not found above " + filepath.Dir(file))
		}
		dir = parent
	}
}

// Binary returns the smsmilter binary built from this checkout, built once
// per test run (without -race: it is the program under test, not the test).
// SMSMILTER_BIN names a prebuilt binary instead.
func Binary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("SMSMILTER_BIN"); p != "" {
		return p
	}
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "smsmilter-e2e-bin-")
		if buildErr != nil {
			return
		}
		// Other users (Postfix, nobody) never run it, but the folder must be
		// enterable if a test hands the path to a program that dropped
		// privileges.
		os.Chmod(buildDir, 0o755)
		buildBin = filepath.Join(buildDir, "smsmilter")
		cmd := exec.Command(goTool(), "build", "-o", buildBin, "./cmd/smsmilter")
		cmd.Dir = ModuleRoot()
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/smsmilter: %v\n%s", err, out.String())
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildBin
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
