package sqlite

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smsmilter/smsmilter/internal/store"
)

// The multi-process test re-executes the test binary as child processes
// (the helper-process pattern): with helperPathEnv set, TestHelperProcess
// runs one child's workload against that file instead of skipping.
const (
	helperPathEnv = "SMSMILTER_STORE_HELPER_DB"
	helperNameEnv = "SMSMILTER_STORE_HELPER_NAME"
)

// Per process: users, rules and events each, and messages (two jobs each).
const (
	mpUsers    = 100
	mpMessages = 150
	mpWorkers  = 4 // goroutines per process
)

func TestHelperProcess(t *testing.T) {
	path := os.Getenv(helperPathEnv)
	if path == "" {
		t.Skip("only run as a child of TestMultiProcess")
	}
	s, err := Open(t.Context(), path, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := workload(t.Context(), s, os.Getenv(helperNameEnv)); err != nil {
		t.Fatal(err)
	}
}

// workload does a process's share of writes from several goroutines.
func workload(ctx context.Context, s *Store, name string) error {
	errc := make(chan error, mpWorkers)
	var wg sync.WaitGroup
	for w := range mpWorkers {
		wg.Go(func() {
			for i := w; i < mpUsers; i += mpWorkers {
				user := fmt.Sprintf("%s-u%d", name, i)
				if err := s.AddUser(ctx, store.User{Name: user, SenderID: "ACME"}); err != nil {
					errc <- fmt.Errorf("AddUser %s: %w", user, err)
					return
				}
				r, err := s.AddRule(ctx, store.Rule{Kind: store.KindAddress, Pattern: user + "@example.com", User: user, Security: "spf"})
				if err != nil {
					errc <- fmt.Errorf("AddRule %s: %w", user, err)
					return
				}
				if _, err := s.SeeClientIP(ctx, r.ID, "192.0.2.1", time.Now()); err != nil {
					errc <- fmt.Errorf("SeeClientIP: %w", err)
					return
				}
				if err := s.LogEvent(ctx, store.Event{Kind: store.EventRegistry, Message: "added " + user, Fields: map[string]string{"proc": name}}); err != nil {
					errc <- fmt.Errorf("LogEvent: %w", err)
					return
				}
			}
			for i := w; i < mpMessages; i += mpWorkers {
				key := fmt.Sprintf("%s-m%d", name, i)
				jobs := []store.Job{
					{DedupeKey: key + "|a", To: "+447400123456", User: name, Text: key},
					{DedupeKey: key + "|b", To: "+819012345678", User: name, Text: key},
				}
				if _, err := s.Enqueue(ctx, jobs, time.Hour); err != nil {
					errc <- fmt.Errorf("Enqueue %s: %w", key, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	return <-errc
}

func TestMultiProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), FileName)
	s := openWith(t, path, defaultOptions()) // creates and migrates the file

	const children = 4
	type result struct {
		name string
		out  []byte
		err  error
	}
	results := make(chan result, children)
	for c := range children {
		name := fmt.Sprintf("c%d", c)
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
		cmd.Env = append(os.Environ(), helperPathEnv+"="+path, helperNameEnv+"="+name)
		go func() {
			out, err := cmd.CombinedOutput()
			results <- result{name, out, err}
		}()
	}
	start := time.Now()
	if err := workload(ctx, s, "parent"); err != nil {
		t.Error(err)
	}
	for range children {
		r := <-results
		if r.err != nil {
			t.Errorf("child %s: %v\n%s", r.name, r.err, r.out)
		}
		if strings.Contains(strings.ToLower(string(r.out)), "locked") {
			t.Errorf("child %s mentions a lock:\n%s", r.name, r.out)
		}
	}
	t.Logf("%d processes × %d writes in %v", children+1, 4*mpUsers+mpMessages, time.Since(start))

	procs := []string{"parent"}
	for c := range children {
		procs = append(procs, fmt.Sprintf("c%d", c))
	}
	users, err := s.ListUsers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rules, err := s.ListRules(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(users) != len(procs)*mpUsers || len(rules) != len(procs)*mpUsers {
		t.Errorf("%d users, %d rules; want %d each", len(users), len(rules), len(procs)*mpUsers)
	}
	for _, p := range procs {
		for i := range mpUsers {
			u := fmt.Sprintf("%s-u%d", p, i)
			if _, err := s.FindRule(ctx, store.KindAddress, u+"@example.com"); err != nil {
				t.Errorf("rule of %s: %v", u, err)
			}
		}
		n, err := s.CountEvents(ctx, store.EventRegistry, "proc", p, time.Time{})
		if err != nil || n != mpUsers {
			t.Errorf("events of %s: %d, %v; want %d", p, n, err, mpUsers)
		}
		parts, err := s.CountUserSince(ctx, p, time.Time{})
		if err != nil || parts != 2*mpMessages {
			t.Errorf("jobs of %s: %d, %v; want %d", p, parts, err, 2*mpMessages)
		}
	}
	v, err := s.RegistryVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(2 * len(procs) * mpUsers); v < want {
		t.Errorf("registry version %d, want at least %d", v, want)
	}
}
