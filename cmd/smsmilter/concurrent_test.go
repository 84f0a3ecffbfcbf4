package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/smsmilter/smsmilter/internal/store"
	"github.com/smsmilter/smsmilter/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// TestConcurrentCLIWrites runs many CLI processes at once while the daemon
// (`smsmilter serve`, a real second process) has the same store open and
// sends SMS, and while this process keeps enqueueing jobs: no command may
// fail with "database is locked", and every row must be there afterwards.
func TestConcurrentCLIWrites(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs many processes")
	}
	t.Parallel()
	bin := testutil.Smsmilter(t)
	port := testutil.FreePort(t)
	e := newEnv(t, fmt.Sprintf("milter:\n  listen: inet:127.0.0.1:%d\n", port))
	e.must("user", "add", "ops", "--sender-id", "ACME")

	// The daemon.
	var daemonLog testutil.Buffer
	serve := exec.Command(bin, "serve", "--config", e.cfgPath)
	serve.Stdout = &daemonLog
	serve.Stderr = &daemonLog
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- serve.Wait() }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			serve.Process.Kill()
			<-served
		}
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for i := 0; ; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		if i == 200 {
			t.Fatalf("smsmilter serve did not listen on %s:\n%s", addr, daemonLog.String())
		}
		select {
		case err := <-served:
			t.Fatalf("smsmilter serve exited: %v\n%s", err, daemonLog.String())
		case <-time.After(50 * time.Millisecond):
		}
	}

	// This process writes too: jobs the daemon then claims and sends, and
	// events, in a loop until the CLI runs are done.
	st := e.store()
	ctx, cancel := context.WithCancel(context.Background())
	var writer sync.WaitGroup
	const maxJobs = 30
	var enqueued int
	var writeErr error
	writer.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			now := time.Now()
			var err error
			// The outbox sends 10 SMS/s: enough jobs to keep the daemon
			// writing through the test, few enough to drain quickly.
			if i < maxJobs {
				_, err = st.Enqueue(ctx, []store.Job{{DedupeKey: fmt.Sprintf("load-%d", i), MessageID: fmt.Sprintf("<load-%d@example.com>", i),
					Sender: "ops@example.com", User: "ops", SenderID: "ACME", To: "+447400123456", Text: fmt.Sprintf("load %d", i),
					Encoding: "gsm7", Parts: 1, Created: now, NextTry: now}}, time.Minute)
				if err == nil {
					enqueued++
				}
			}
			if err == nil {
				err = st.LogEvent(ctx, store.Event{Time: now, Kind: store.EventAccepted, Message: fmt.Sprintf("load %d", i)})
			}
			if err != nil {
				if ctx.Err() == nil {
					writeErr = err
				}
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})

	// The CLI: n workers, each a user, its address rule and its ip rule,
	// one process per command, all at once.
	const n = 16
	type failure struct {
		args []string
		out  string
		err  error
	}
	var mu sync.Mutex
	var failures []failure
	var runs int
	cli := func(args ...string) {
		cmd := exec.Command(bin, append(args, "--config", e.cfgPath)...)
		out, err := cmd.CombinedOutput()
		mu.Lock()
		defer mu.Unlock()
		runs++
		if err != nil || strings.Contains(strings.ToLower(string(out)), "locked") || strings.Contains(string(out), "busy") {
			failures = append(failures, failure{args, string(out), err})
		}
	}
	// Every worker also tries to add the same user: one wins, the others
	// are told it exists (exit 1), none sees a locked database.
	var sharedOK, sharedDup int
	shared := func() {
		out, err := exec.Command(bin, "user", "add", "shared", "--sender-id", "ACME", "--config", e.cfgPath).CombinedOutput()
		mu.Lock()
		defer mu.Unlock()
		runs++
		var ee *exec.ExitError
		switch {
		case err == nil:
			sharedOK++
		case errors.As(err, &ee) && ee.ExitCode() == exitFailed && strings.Contains(string(out), `forwarding user "shared" already exists`):
			sharedDup++
		default:
			failures = append(failures, failure{[]string{"user", "add", "shared"}, string(out), err})
		}
	}
	start := time.Now()
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			u := fmt.Sprintf("u%02d", i)
			shared()
			cli("user", "add", u, "--sender-id", "ACME", "--tps", "1")
			cli("address", "add", u+"@example.com", "--user", u)
			cli("ip", "add", fmt.Sprintf("10.%d.0.0/16", i), "--user", u)
			cli("domain", "add", u+".example.com", "--user", u)
			cli("list")
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	cancel()
	writer.Wait()

	for _, f := range failures {
		t.Errorf("smsmilter %s: %v\n%s", strings.Join(f.args, " "), f.err, f.out)
	}
	if sharedOK != 1 || sharedDup != n-1 {
		t.Errorf("adding one user from %d processes: %d succeeded, %d were told it exists; want 1 and %d", n, sharedOK, sharedDup, n-1)
	}
	if writeErr != nil {
		t.Errorf("the test's own store writes failed: %v", writeErr)
	}
	t.Logf("%d CLI processes in %v next to the daemon; %d jobs enqueued meanwhile", runs, elapsed, enqueued)

	// Every row is there.
	users, err := st.ListUsers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(users) != n+2 {
		t.Errorf("%d users in the store, want %d", len(users), n+2)
	}
	rules := e.rules()
	for i := range n {
		u := fmt.Sprintf("u%02d", i)
		for _, k := range []string{"address:" + u + "@example.com", fmt.Sprintf("ip:10.%d.0.0/16", i), "domain:" + u + ".example.com"} {
			if r, ok := rules[k]; !ok || r.User != u {
				t.Errorf("rule %s missing or wrong: %+v", k, r)
			}
		}
	}
	if len(rules) != 3*n {
		t.Errorf("%d rules in the store, want %d", len(rules), 3*n)
	}
	evs, err := st.ListEvents(context.Background(), store.EventRegistry, time.Time{}, 0)
	if err != nil || len(evs) != 2+4*n {
		t.Errorf("%d registry events (%v), want %d", len(evs), err, 2+4*n)
	}

	// The daemon was really at work on the same store: it sent what this
	// process enqueued through its outbox. Then it stops cleanly.
	deadline := time.Now().Add(20 * time.Second)
	sent := 0
	for time.Now().Before(deadline) {
		sent = countLines(filepath.Join(e.dir, "outbox.jsonl"))
		if sent >= enqueued {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if enqueued == 0 || sent < enqueued {
		t.Errorf("the daemon sent %d of %d jobs enqueued during the test", sent, enqueued)
	}
	serve.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-served:
		stopped = true
		if err != nil {
			t.Errorf("smsmilter serve after SIGTERM: %v\n%s", err, daemonLog.String())
		}
	case <-time.After(30 * time.Second):
		t.Errorf("smsmilter serve did not stop on SIGTERM")
	}
	if s := daemonLog.String(); strings.Contains(strings.ToLower(s), "database is locked") {
		t.Errorf("the daemon hit a locked database:\n%s", s)
	}
}

func countLines(path string) int {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		n++
	}
	return n
}
