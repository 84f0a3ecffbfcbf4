package milter

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/smsmilter/smsmilter/internal/testutil"
)

// TestMiltertest drives the running milter with the Debian miltertest
// (libmilter's MTA side) through the Lua scripts in testdata/miltertest:
// an independent implementation of the protocol's MTA end.
func TestMiltertest(t *testing.T) {
	bin := testutil.NeedCmd(t, "miltertest")
	dir, err := filepath.Abs("testdata/miltertest")
	if err != nil {
		t.Fatal(err)
	}
	scripts, _ := filepath.Glob(filepath.Join(dir, "*.lua"))
	e := newEnv(t)
	host, port, _ := strings.Cut(e.addr, ":")
	sock := "inet:" + port + "@" + host
	ran := 0
	for _, script := range scripts {
		name := strings.TrimSuffix(filepath.Base(script), ".lua")
		if name == "common" {
			continue
		}
		ran++
		t.Run(name, func(t *testing.T) {
			cmd := exec.Command(bin, "-D", "sock="+sock, "-D", "dir="+dir, "-s", script)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			done := make(chan error, 1)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("miltertest %s: %v\n%s", name, err, out.String())
				}
			case <-time.After(30 * time.Second):
				cmd.Process.Kill()
				t.Fatalf("miltertest %s hung:\n%s", name, out.String())
			}
		})
	}
	if ran < 3 {
		t.Fatalf("only %d scripts", ran)
	}
	// What the scripts did, seen from the store.
	var texts []string
	for _, j := range e.jobs() {
		texts = append(texts, j.To+" "+j.Text)
	}
	want := []string{"+819012345678 Mixed.", "+447400123456 Sent through miltertest."}
	if strings.Join(texts, "|") != strings.Join(want, "|") {
		t.Errorf("jobs %q, want %q", texts, want)
	}
}
