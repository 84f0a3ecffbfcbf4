package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/smsmilter/smsmilter/internal/testutil"
)

// TestPostfixExampleFiles checks examples/postfix with Postfix's own
// parser: every parameter known, master.cf well formed. (TestPostfix runs
// main.cf itself.)
func TestPostfixExampleFiles(t *testing.T) {
	postconf := testutil.NeedCmd(t, "postconf")
	dir := t.TempDir()
	for _, f := range []string{"main.cf", "master.cf"} {
		b, err := os.ReadFile(filepath.Join(testutil.ModuleRoot(), "examples", "postfix", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range [][]string{{"-n"}, {"-M"}, {"-P"}, {"-h", "smtpd_milters"}} {
		out, err := exec.Command(postconf, append([]string{"-c", dir}, args...)...).CombinedOutput()
		if err != nil || strings.Contains(string(out), "warning") || strings.Contains(string(out), "fatal") {
			t.Errorf("postconf %v: %v\n%s", args, err, out)
		}
	}
	out, _ := exec.Command(postconf, "-c", dir, "-x", "-h", "non_smtpd_milters").Output()
	if !strings.Contains(string(out), "inet:127.0.0.1:8890") {
		t.Errorf("non_smtpd_milters does not reach smsmilter: %q", out)
	}
	out, _ = exec.Command(postconf, "-c", dir, "-h", "milter_default_action").Output()
	if strings.TrimSpace(string(out)) != "tempfail" {
		t.Errorf("milter_default_action = %q", out)
	}
	out, _ = exec.Command(postconf, "-c", dir, "-M", "discard/unix").Output()
	if !strings.Contains(string(out), "discard") {
		t.Errorf("master.cf has no discard service: %q", out)
	}
}
