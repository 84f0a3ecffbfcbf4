package harness

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/smsmilter/smsmilter/internal/testutil"
)

// NeedRoot skips the test unless it runs as root (Postfix's master and
// smtp-sink -u need it); in CI it fails instead, as a missing program does.
func NeedRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if testutil.InCI() {
		t.Fatal("the end-to-end tests run Postfix and must run as root")
	}
	t.Skip("the end-to-end tests run Postfix: run them as root")
}

// Eventually polls cond until it is true or timeout passes, then fails the
// test naming what it waited for. It polls often at first and every 200ms
// later, since some conditions run a program (the smsmilter CLI).
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	pause := 10 * time.Millisecond
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(pause)
		pause = min(2*pause, 200*time.Millisecond)
	}
}

// showLogs reports whether the programs' logs are wanted also when a test
// passes (E2E_LOGS=1).
func showLogs() bool { return os.Getenv("E2E_LOGS") != "" }

// Tail returns the last n lines of s.
func Tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// LinesWith returns the lines of text (a log) containing every one of subs.
func LinesWith(text string, subs ...string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
next:
	for sc.Scan() {
		for _, s := range subs {
			if !strings.Contains(sc.Text(), s) {
				continue next
			}
		}
		out = append(out, sc.Text())
	}
	return out
}

// proc is a started program in its own process group.
type proc struct {
	cmd      *exec.Cmd
	done     chan struct{}
	err      error // valid once done is closed
	watchdog *proc
}

// startProc starts cmd as the leader of a new process group, with a
// watchdog that kills the group should the test binary die without
// cleaning up (Pdeathsig alone is not enough: it is cleared when a
// program drops privileges, as smtp-sink -u does).
func startProc(cmd *exec.Cmd) (*proc, error) {
	ownGroup(cmd)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	p.watchdog = startWatchdog(`kill -KILL "-$2"`, strconv.Itoa(cmd.Process.Pid))
	return p, nil
}

// startWatchdog runs a shell, in a session of its own so that it outlives
// the test binary, that waits for the test binary to exit and then runs
// script (with $2 ... set to args). Kill it once the resource it guards
// is cleaned up normally.
func startWatchdog(script string, args ...string) *proc {
	cmd := exec.Command("/bin/sh", append([]string{"-c",
		`while kill -0 "$1" 2>/dev/null; do sleep 1; done; ` + script,
		"e2e-watchdog", strconv.Itoa(os.Getpid())}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil
	}
	w := &proc{cmd: cmd, done: make(chan struct{})}
	go func() {
		w.err = cmd.Wait()
		close(w.done)
	}()
	return w
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill kills the whole group (the program and whatever it started) and
// waits for the program to be gone.
func (p *proc) kill() {
	killGroup(p.cmd.Process.Pid)
	<-p.done
	if p.watchdog != nil {
		p.watchdog.kill()
		p.watchdog = nil
	}
}

// signal sends sig to the program alone.
func (p *proc) signal(sig syscall.Signal) {
	p.cmd.Process.Signal(sig)
}

// waitListening waits until addr accepts TCP connections; false when the
// program exited or timeout passed first.
func waitListening(addr string, p *proc, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if p != nil && p.exited() {
			return false
		}
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// ownGroup makes cmd the leader of a new process group, so that it and
// every child it starts (plugins) can be signalled at once, and has it
// killed if the test binary dies without cleaning up (go test -timeout).
func ownGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// killGroup kills a process group started with ownGroup; a group already
// gone is no error.
func killGroup(pgid int) {
	if pgid > 0 {
		syscall.Kill(-pgid, syscall.SIGKILL)
	}
}
