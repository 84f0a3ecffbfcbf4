package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smsmilter/smsmilter/internal/store"
	"github.com/smsmilter/smsmilter/internal/store/storetest"
)

// testLog logs to stderr when -v, so failures show the store's warnings.
func testLog(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func openTest(t testing.TB) *Store {
	t.Helper()
	s, err := Open(t.Context(), filepath.Join(t.TempDir(), FileName), testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return openTest(t) })
}

func TestOpenDir(t *testing.T) {
	ctx := t.Context()
	dir := filepath.Join(t.TempDir(), "state", "smsmilter")
	s, err := OpenDir(ctx, dir, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o750 {
		t.Errorf("state directory mode %o, want 750", perm)
	}
	if s.Path() != filepath.Join(dir, FileName) {
		t.Errorf("Path = %s", s.Path())
	}
	if err := s.AddUser(ctx, store.User{Name: "ops", SenderID: "ACME"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.AddUser(ctx, store.User{Name: "late", SenderID: "X"}); err == nil {
		t.Error("write after Close: no error")
	}

	// Reopened, the data is there and the schema is not applied again.
	s, err = OpenDir(ctx, dir, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.GetUser(ctx, "ops"); err != nil {
		t.Errorf("after reopen: %v", err)
	}
}

func TestPathWithSpecialCharacters(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a b?c#d%e", FileName)
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		t.Fatal(err)
	}
	s, err := Open(t.Context(), path, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("database not at the path given: %v", err)
	}
}

func TestSchemaNewerThanBinary(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), FileName)
	s, err := Open(ctx, path, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	n := len(migrations())
	err = s.submit(ctx, &op{raw: true, fn: func(w *wtx) error {
		_, err := w.conn.ExecContext(bg, `UPDATE schema_version SET version = ?`, n+1)
		return err
	}})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	_, err = Open(ctx, path, testLog(t))
	if err == nil {
		t.Fatal("opened a database newer than the binary")
	}
	if want := fmt.Sprintf("schema version %d, newer than this smsmilter knows (%d)", n+1, n); !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
}

func TestMigrationsStepwise(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), FileName)
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	list := []string{
		`CREATE TABLE a (x INTEGER)`,
		`ALTER TABLE a ADD COLUMN y TEXT`,
		`INSERT INTO a (x, y) VALUES (1, 'one')`,
	}
	steps := []struct {
		list     []string
		from, to int
		wantErr  bool
	}{
		{list[:1], 0, 1, false},
		{list[:1], 1, 1, false},
		{list, 1, 3, false},
		{list[:2], 3, 2, true},                        // newer than known
		{append(list[:3:3], `BOGUS SQL`), 3, 4, true}, // a failing step
		{append(list[:3:3], `INSERT INTO a VALUES (2, 'two')`), 3, 4, false}, // the failed one left nothing
	}
	for i, st := range steps {
		from, to, err := migrate(ctx, conn, path, st.list)
		if (err != nil) != st.wantErr || from != st.from || to != st.to {
			t.Errorf("step %d: migrate = %d, %d, %v; want %d, %d, error %v", i, from, to, err, st.from, st.to, st.wantErr)
		}
	}
	var n int
	if err := conn.QueryRowContext(ctx, `SELECT COUNT(*) FROM a`).Scan(&n); err != nil || n != 2 {
		t.Errorf("rows in a: %d, %v; want 2", n, err)
	}
}

// TestConcurrentOpen opens one new file from several stores at once, as
// the daemon and a CLI command may: one migrates, the others wait.
func TestConcurrentOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			s, err := Open(t.Context(), path, testLog(t))
			if err != nil {
				t.Error(err)
				return
			}
			defer s.Close()
			if err := s.Ping(t.Context()); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
}

// TestTwoInstances checks what the CLI relies on: a second Store on the same
// file (another process, in real life) sees writes and registry changes.
func TestTwoInstances(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), FileName)
	a := openWith(t, path, defaultOptions())
	b := openWith(t, path, defaultOptions())
	v1, err := a.RegistryVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.AddUser(ctx, store.User{Name: "ops", SenderID: "ACME"}); err != nil {
		t.Fatal(err)
	}
	v2, err := a.RegistryVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v2 <= v1 {
		t.Errorf("registry version seen by the other instance: %d then %d", v1, v2)
	}
	if _, err := a.GetUser(ctx, "ops"); err != nil {
		t.Error(err)
	}
	res, err := a.Enqueue(ctx, []store.Job{{To: "+447400123456", DedupeKey: "k"}}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	res, err = b.Enqueue(ctx, []store.Job{{To: "+447400123456", DedupeKey: "k"}}, time.Hour)
	if err != nil || res.Duplicates != 1 {
		t.Errorf("dedupe across instances: %+v, %v", res, err)
	}
}

// TestGroupCommit checks that concurrent writes share commits and that
// each still gets its own result.
func TestGroupCommit(t *testing.T) {
	ctx := t.Context()
	s := openTest(t)
	const n = 200
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			res, err := s.Enqueue(ctx, []store.Job{{To: "+447400123456", DedupeKey: fmt.Sprint(i), Text: fmt.Sprint(i)}}, time.Hour)
			if err != nil {
				t.Error(err)
				return
			}
			j, err := s.GetJob(ctx, res.IDs[0])
			if err != nil || j.Text != fmt.Sprint(i) {
				t.Errorf("message %d: got job %+v, %v", i, j, err)
			}
		})
	}
	close(start)
	wg.Wait()
	st := s.Stats()
	t.Logf("%d writes in %d commits", st.Writes, st.Commits)
	if st.Writes < n || st.Commits >= st.Writes {
		t.Errorf("stats %+v: want %d writes sharing fewer commits", st, n)
	}
}

// blockWriter holds the writer goroutine until the returned function is
// called, so tests can line up writes behind it.
func blockWriter(t *testing.T, s *Store) (release func()) {
	t.Helper()
	entered, hold := make(chan struct{}), make(chan struct{})
	go s.submit(context.Background(), &op{raw: true, fn: func(*wtx) error {
		close(entered)
		<-hold
		return nil
	}})
	<-entered
	var once sync.Once
	release = func() { once.Do(func() { close(hold) }) }
	t.Cleanup(release)
	return release
}

// TestCancelledWhileQueued: a caller that gives up before its write ran gets
// an error, and the write never happens (no dedupe key either).
func TestCancelledWhileQueued(t *testing.T) {
	s := openTest(t)
	release := blockWriter(t, s)
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		_, err := s.Enqueue(ctx, []store.Job{{To: "+447400123456", DedupeKey: "k"}}, time.Hour)
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond) // let it queue behind the blocker
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Enqueue: %v, want context.Canceled", err)
	}
	release()
	res, err := s.Enqueue(t.Context(), []store.Job{{To: "+447400123456", DedupeKey: "k"}}, time.Hour)
	if err != nil || res.Duplicates != 0 {
		t.Errorf("after a withdrawn Enqueue: %+v, %v; want queued", res, err)
	}
	if js, _ := s.ListJobs(t.Context(), "", 0); len(js) != 1 {
		t.Errorf("%d jobs, want 1", len(js))
	}
}

// TestFailingWriteInBatch: a write that fails or panics inside a shared
// transaction is undone alone.
func TestFailingWriteInBatch(t *testing.T) {
	ctx := t.Context()
	s := openTest(t)
	release := blockWriter(t, s)
	var wg sync.WaitGroup
	errs := make([]error, 6)
	for i := range errs {
		wg.Go(func() {
			errs[i] = s.write(ctx, func(w *wtx) error {
				if _, err := w.exec(`INSERT INTO users (name, sender_id, created) VALUES (?, 'X', 1)`, fmt.Sprint("u", i)); err != nil {
					return err
				}
				switch i {
				case 2:
					return errors.New("refused after writing")
				case 4:
					panic("boom")
				}
				return nil
			})
		})
	}
	time.Sleep(50 * time.Millisecond) // all six queued behind the blocker: one batch
	release()
	wg.Wait()
	for i, err := range errs {
		if (err != nil) != (i == 2 || i == 4) {
			t.Errorf("write %d: %v", i, err)
		}
		_, gerr := s.GetUser(ctx, fmt.Sprint("u", i))
		if (gerr == nil) != (err == nil) {
			t.Errorf("write %d (err %v): user stored = %v", i, err, gerr == nil)
		}
	}
	if st := s.Stats(); st.Commits > 3 {
		t.Logf("stats %+v: writes were not batched as intended (test still valid)", st)
	}
}

// TestPragmas checks that the DSN settings reach the connections: the
// durability promise rests on them.
func TestPragmas(t *testing.T) {
	s := openTest(t)
	want := map[string]string{
		"journal_mode": "wal",
		"synchronous":  "2", // FULL
		"foreign_keys": "1",
		"busy_timeout": "10000",
		"query_only":   "0",
	}
	got := map[string]string{}
	err := s.submit(t.Context(), &op{raw: true, fn: func(w *wtx) error {
		for k := range want {
			var v string
			if err := w.conn.QueryRowContext(bg, "PRAGMA "+k).Scan(&v); err != nil {
				return err
			}
			got[k] = v
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("writer PRAGMA %s = %q, want %q", k, got[k], v)
		}
	}
	var ro, bt string
	if err := s.rdb.QueryRowContext(t.Context(), "PRAGMA query_only").Scan(&ro); err != nil || ro != "1" {
		t.Errorf("reader query_only = %q, %v", ro, err)
	}
	if err := s.rdb.QueryRowContext(t.Context(), "PRAGMA busy_timeout").Scan(&bt); err != nil || bt != "10000" {
		t.Errorf("reader busy_timeout = %q, %v", bt, err)
	}
}
