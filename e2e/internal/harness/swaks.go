package harness

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/smsmilter/smsmilter/internal/testutil"
)

// SwaksResult is one swaks run: its transcript and exit code (0: the
// message was accepted; 23/24: recipients refused; 25: DATA refused; see
// swaks(1) for the others).
type SwaksResult struct {
	Args   []string
	Output string
	Exit   int
}

// Swaks runs swaks against server (host:port) with args. POSIXLY_CORRECT is
// set so that an address starting with '+' is not read as an option.
func Swaks(t testing.TB, server string, args ...string) SwaksResult {
	t.Helper()
	bin := testutil.NeedCmd(t, "swaks")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	all := append([]string{"--server", server, "--helo", "client.e2e.test", "--timeout", "60"}, args...)
	cmd := exec.CommandContext(ctx, bin, all...)
	cmd.Env = append(os.Environ(), "POSIXLY_CORRECT=1")
	out, err := cmd.CombinedOutput()
	r := SwaksResult{Args: all, Output: string(out)}
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("swaks: %v", err)
		}
		r.Exit = ee.ExitCode()
	}
	return r
}

// SwaksMessage sends msg (a complete message: header, blank line, body)
// from envelope sender from to rcpts, with more swaks args (e.g. the
// source address).
func SwaksMessage(t testing.TB, server, from string, rcpts []string, msg string, more ...string) SwaksResult {
	t.Helper()
	f := filepath.Join(t.TempDir(), "msg.eml")
	if err := os.WriteFile(f, []byte(msg), 0o644); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"--from", from, "--to", strings.Join(rcpts, ","), "--data", "@" + f}, more...)
	return Swaks(t, server, args...)
}

// ServerLines are the server's replies in the transcript ("<- " normal,
// "<** " error), without the marker.
func (r SwaksResult) ServerLines() []string {
	var out []string
	for _, l := range strings.Split(r.Output, "\n") {
		switch {
		case strings.HasPrefix(l, "<** "):
			out = append(out, strings.TrimPrefix(l, "<** "))
		case strings.HasPrefix(l, "<-  "):
			out = append(out, strings.TrimPrefix(l, "<-  "))
		case strings.HasPrefix(l, "<- "):
			out = append(out, strings.TrimPrefix(l, "<- "))
		}
	}
	return out
}

// Errors are the server's error replies ("<** " lines).
func (r SwaksResult) Errors() []string {
	var out []string
	for _, l := range strings.Split(r.Output, "\n") {
		if strings.HasPrefix(l, "<** ") {
			out = append(out, strings.TrimPrefix(l, "<** "))
		}
	}
	return out
}

var queuedAs = regexp.MustCompile(`250 2\.0\.0 Ok: queued as ([0-9A-Za-z]+)`)

// QueueID is Postfix's queue ID from "250 2.0.0 Ok: queued as ID", "" if
// the message was not accepted.
func (r SwaksResult) QueueID() string {
	if m := queuedAs.FindStringSubmatch(r.Output); m != nil {
		return m[1]
	}
	return ""
}

// Accepted reports whether the message got its 250 after DATA.
func (r SwaksResult) Accepted() bool { return r.Exit == 0 && r.QueueID() != "" }
