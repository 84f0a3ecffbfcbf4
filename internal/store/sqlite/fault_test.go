package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/smsmilter/smsmilter/internal/store"
)

// Fault injection. Tests run as root, for whom chmod does not stop writes,
// so a read-only file is simulated with PRAGMA query_only on the write
// connection (SQLite then refuses writes with SQLITE_READONLY, as for a
// read-only file or filesystem); a full disk with a small tmpfs when mount
// is allowed; a replaced file by renaming another one over it.

func TestReadOnlyFault(t *testing.T) {
	ctx := t.Context()
	s := openTest(t)
	res, err := s.Enqueue(ctx, []store.Job{{To: "+447400123456", DedupeKey: "before"}}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	before := res.IDs[0]
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping before the fault: %v", err)
	}

	if err := s.setQueryOnly(ctx, true); err != nil {
		t.Fatal(err)
	}
	err = s.Ping(ctx)
	if err == nil || !strings.Contains(err.Error(), "readonly") || !strings.Contains(err.Error(), s.Path()) {
		t.Errorf("Ping on a read-only store: %v; want an error naming the store and the cause", err)
	}
	// Several writes at once (one batch): each fails.
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			_, err := s.Enqueue(ctx, []store.Job{{To: "+447400123456", DedupeKey: "during"}}, time.Hour)
			if err == nil {
				t.Errorf("Enqueue %d on a read-only store: no error", i)
			}
		})
	}
	wg.Wait()
	writes := []struct {
		name string
		fn   func() error
	}{
		{"AddUser", func() error { return s.AddUser(ctx, store.User{Name: "ops", SenderID: "X"}) }},
		{"LogEvent", func() error { return s.LogEvent(ctx, store.Event{Kind: store.EventConfig}) }},
		{"Claim", func() error { _, err := s.Claim(ctx, time.Now(), 10, time.Minute); return err }},
		{"EnqueueMail", func() error {
			_, err := s.EnqueueMail(ctx, store.Mail{To: []string{"a@example.com"}, Data: []byte("x")})
			return err
		}},
	}
	for _, w := range writes {
		if err := w.fn(); err == nil {
			t.Errorf("%s on a read-only store: no error", w.name)
		}
	}
	// Reads still work (the CLI can still show the queue).
	if _, err := s.GetJob(ctx, before); err != nil {
		t.Errorf("GetJob on a read-only store: %v", err)
	}

	if err := s.setQueryOnly(ctx, false); err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(ctx); err != nil {
		t.Errorf("Ping after recovery: %v", err)
	}
	// The failed enqueues left no dedupe key: the MTA's retry goes through.
	res, err = s.Enqueue(ctx, []store.Job{{To: "+447400123456", DedupeKey: "during"}}, time.Hour)
	if err != nil || res.Duplicates != 0 {
		t.Errorf("retry after recovery: %+v, %v; want queued", res, err)
	}
	if j, err := s.GetJob(ctx, before); err != nil || j.State != store.JobQueued {
		t.Errorf("job from before the fault: %+v, %v", j, err)
	}
}

func TestFileReplaced(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	s := openWith(t, filepath.Join(dir, FileName), defaultOptions())
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(dir, "other.db")
	if err := os.WriteFile(other, nil, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(other, s.Path()); err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(ctx); err == nil || !strings.Contains(err.Error(), "replaced") {
		t.Errorf("Ping after the file was replaced: %v", err)
	}
	if err := os.Remove(s.Path()); err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(ctx); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Ping after the file was deleted: %v", err)
	}
}

// TestDiskFull fills a small tmpfs under the store. It needs mount (root
// with CAP_SYS_ADMIN) and skips otherwise.
func TestDiskFull(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	ctx := t.Context()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	s, err := Open(ctx, filepath.Join(dir, FileName), testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if _, err := s.Enqueue(ctx, []store.Job{{To: "+447400123456", DedupeKey: "before"}}, time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping before the disk is full: %v", err)
	}

	filler := filepath.Join(dir, "filler")
	fill(t, filler)
	big := strings.Repeat("x", 256<<10) // needs new pages: cannot fit
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			_, err := s.Enqueue(ctx, []store.Job{{To: "+447400123456", DedupeKey: "during", Text: big}}, time.Hour)
			if err == nil {
				t.Errorf("Enqueue %d on a full disk: no error", i)
			}
		})
	}
	wg.Wait()
	if err := s.Ping(ctx); err == nil {
		t.Error("Ping on a full disk: no error")
	} else {
		t.Logf("Ping on a full disk: %v", err)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(ctx); err != nil {
		t.Errorf("Ping after space came back: %v", err)
	}
	res, err := s.Enqueue(ctx, []store.Job{{To: "+447400123456", DedupeKey: "during", Text: big}}, time.Hour)
	if err != nil || res.Duplicates != 0 {
		t.Errorf("retry after space came back: %+v, %v; want queued", res, err)
	}
	var check string
	if err := s.rdb.QueryRowContext(ctx, "PRAGMA integrity_check").Scan(&check); err != nil || check != "ok" {
		t.Errorf("integrity_check: %q, %v", check, err)
	}
	if js, err := s.ListJobs(ctx, "", 0); err != nil || len(js) != 2 {
		t.Errorf("after the fault: %d jobs, %v; want 2", len(js), err)
	}
}

// fill writes to path until the filesystem is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling the disk: %v", err)
			}
			break
		}
	}
	// Smaller writes take the last partial blocks too.
	for _, n := range []int{4096, 512, 1} {
		for {
			if _, err := f.Write(buf[:n]); err != nil {
				break
			}
		}
	}
}

// TestLockHeldElsewhere: another connection (another process, in real
// life) holds the write lock for a while. Writes wait for it instead of
// failing with "database is locked"; a caller whose deadline passes first
// gets its error and its write is never made; Ping with a deadline reports
// the stuck store.
func TestLockHeldElsewhere(t *testing.T) {
	ctx := t.Context()
	s := openTest(t)
	other, err := sql.Open("sqlite", s.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	conn, err := other.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	const hold = 700 * time.Millisecond
	go func() {
		time.Sleep(hold)
		conn.ExecContext(context.Background(), "COMMIT")
	}()

	start := time.Now()
	var wg sync.WaitGroup
	wg.Go(func() {
		short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		_, err := s.Enqueue(short, []store.Job{{To: "+447400123456", DedupeKey: "short"}}, time.Hour)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Enqueue with a 100ms deadline: %v, want DeadlineExceeded", err)
		}
		if d := time.Since(start); d > hold/2 {
			t.Errorf("Enqueue with a 100ms deadline returned after %v", d)
		}
	})
	wg.Go(func() {
		short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		if err := s.Ping(short); err == nil {
			t.Error("Ping while another connection holds the lock: no error")
		}
	})
	res, err := s.Enqueue(ctx, []store.Job{{To: "+447400123456", DedupeKey: "long"}}, time.Hour)
	if err != nil {
		t.Fatalf("Enqueue waiting for the lock: %v", err)
	}
	if d := time.Since(start); d < hold {
		t.Errorf("Enqueue returned after %v, before the other writer let go", d)
	}
	wg.Wait()
	js, err := s.ListJobs(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(js) != 1 || js[0].ID != res.IDs[0] {
		t.Errorf("jobs %+v: want only the one that waited (the timed-out one withdrawn)", js)
	}
}
