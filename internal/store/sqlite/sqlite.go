// Package sqlite is the embedded implementation of store.Store: one SQLite
// file in WAL mode under the state directory (DESIGN.md §8), written by
// modernc.org/sqlite (no cgo).
//
// Durability and concurrency, because an accepted mail's SMS must survive a
// power cut and the daemon, the CLI and the POP3 plugin all write the same
// file:
//
//   - synchronous=FULL: a write has been fsynced when its method returns.
//   - Each process has exactly one write connection, owned by a writer
//     goroutine that batches concurrent writes into one transaction (group
//     commit, see writer.go), with a SAVEPOINT per write so one failing write
//     does not fail the others. Reads use a separate pool of connections and
//     never wait for writes (WAL).
//   - Transactions start with BEGIN IMMEDIATE, so two processes never both
//     read and then try to upgrade to a write lock (the deadlock SQLite
//     answers with "database is locked" however long busy_timeout is);
//     they queue on the lock for up to busy_timeout instead.
//   - The schema is versioned in the schema_version table; a database newer
//     than this binary is refused rather than misread.
//
// Conventions the interface leaves open: times are kept to the nanosecond;
// Claim and ClaimMail count an attempt when they lease (so a crashed
// dispatcher's attempts count too); Enqueue takes a job's Created as its
// enqueue time when set (now otherwise), and the dedupe window is measured
// between enqueue times; ListJobs orders newest first by ID.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/smsmilter/smsmilter/internal/store"

	_ "modernc.org/sqlite" // registers driver "sqlite"
)

// FileName is the database file OpenDir uses inside the state directory.
const FileName = "smsmilter.db"

// busyTimeout bounds how long a write waits for another process's write
// transaction. Writes are short, so a wait this long means something is
// wrong, and the milter's own step timeout (30s by default) is longer.
const busyTimeout = 10 * time.Second

// minFree is the free disk space below which Ping reports the store
// unhealthy.
const minFree = 1 << 20

var _ store.Store = (*Store)(nil)

// Store is a store.Store on one SQLite file. It is safe for concurrent use,
// and several processes may open the same file.
type Store struct {
	path string
	log  *slog.Logger
	opt  options
	info os.FileInfo // the file as opened, to notice it being replaced

	wdb *sql.DB // exactly one connection, held by the writer goroutine
	rdb *sql.DB // readers

	rstmts sync.Map // query -> *sql.Stmt on rdb

	ops        chan *op
	mu         sync.RWMutex // closed vs. sends on ops
	closed     bool
	writerDone chan struct{}
	closeOnce  sync.Once
	closeErr   error

	commits atomic.Int64 // transactions committed by the writer
	writes  atomic.Int64 // writes those transactions carried
}

// Stats counts the writer's work since Open, for metrics: Writes/Commits is
// the mean group-commit batch size.
type Stats struct {
	Commits int64
	Writes  int64
}

// Stats returns the counters since Open.
func (s *Store) Stats() Stats {
	return Stats{Commits: s.commits.Load(), Writes: s.writes.Load()}
}

// options are knobs for tests and benchmarks; Open uses the defaults.
type options struct {
	maxBatch    int    // writes per transaction; 1 disables group commit
	synchronous string // PRAGMA synchronous
	readers     int    // read connections
}

func defaultOptions() options {
	return options{maxBatch: 256, synchronous: "FULL", readers: 4}
}

// OpenDir opens (creating if needed) FileName inside dir, creating dir with
// mode 0750 if it does not exist.
func OpenDir(ctx context.Context, dir string, log *slog.Logger) (*Store, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("sqlite store: state directory: %w", err)
	}
	return Open(ctx, filepath.Join(dir, FileName), log)
}

// Open opens (creating if needed) the database at path and brings its
// schema up to date. A nil log discards.
func Open(ctx context.Context, path string, log *slog.Logger) (*Store, error) {
	return open(ctx, path, log, defaultOptions())
}

func open(ctx context.Context, path string, log *slog.Logger, opt options) (*Store, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if path == "" {
		return nil, errors.New("sqlite store: empty path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sqlite store: %w", err)
	}
	s := &Store{
		path:       abs,
		log:        log,
		opt:        opt,
		ops:        make(chan *op, 4*opt.maxBatch),
		writerDone: make(chan struct{}),
	}

	// A file: URI, so that '?' or '#' in a path cannot be read as
	// parameters. _pragma values run on every new connection.
	uri := "file:" + (&url.URL{Path: abs}).EscapedPath()
	common := url.Values{}
	common.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds()))
	common.Add("_pragma", "foreign_keys(1)")
	wq := cloneValues(common)
	wq.Add("_pragma", "journal_mode(WAL)")
	wq.Add("_pragma", "synchronous("+opt.synchronous+")")
	// The WAL file is reused, not shrunk, after a checkpoint; cap what stays
	// on disk after a burst.
	wq.Add("_pragma", "journal_size_limit(67108864)")
	wq.Set("_txlock", "immediate")
	rq := cloneValues(common)
	rq.Add("_pragma", "query_only(1)")

	if s.wdb, err = sql.Open("sqlite", uri+"?"+wq.Encode()); err != nil {
		return nil, fmt.Errorf("sqlite store %s: %w", abs, err)
	}
	s.wdb.SetMaxOpenConns(1)
	s.wdb.SetMaxIdleConns(1)
	s.wdb.SetConnMaxLifetime(0)
	s.wdb.SetConnMaxIdleTime(0)

	conn, err := firstConn(ctx, s.wdb, log)
	if err != nil {
		s.wdb.Close()
		return nil, fmt.Errorf("sqlite store %s: open: %w", abs, err)
	}
	fail := func(err error) (*Store, error) {
		conn.Close()
		s.wdb.Close()
		if s.rdb != nil {
			s.rdb.Close()
		}
		return nil, fmt.Errorf("sqlite store %s: %w", abs, err)
	}
	var mode string
	if err := conn.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return fail(fmt.Errorf("journal mode: %w", err))
	}
	if mode != "wal" {
		return fail(fmt.Errorf("journal mode is %q, not wal (is the file on a filesystem without shared memory?)", mode))
	}
	from, to, err := migrate(ctx, conn, abs, migrations())
	if err != nil {
		return fail(err)
	}
	if from != to {
		log.Info("sqlite store: schema migrated", "path", abs, "from", from, "to", to)
	}
	if s.info, err = os.Stat(abs); err != nil {
		return fail(err)
	}

	if s.rdb, err = sql.Open("sqlite", uri+"?"+rq.Encode()); err != nil {
		return fail(err)
	}
	s.rdb.SetMaxOpenConns(opt.readers)
	s.rdb.SetMaxIdleConns(opt.readers)
	if err := s.rdb.PingContext(ctx); err != nil {
		return fail(err)
	}

	go s.run(conn)
	log.Debug("sqlite store: open", "path", abs, "schema", to)
	return s, nil
}

func cloneValues(v url.Values) url.Values {
	c := url.Values{}
	for k, l := range v {
		c[k] = append([]string(nil), l...)
	}
	return c
}

// Path returns the database file's absolute path.
func (s *Store) Path() string { return s.path }

// Close waits for pending writes, then closes the database. Later calls
// return errors.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		close(s.ops)
		s.mu.Unlock()
		<-s.writerDone
		// The writer released the connection on exit; let SQLite refresh
		// its planner statistics, as it recommends before closing.
		if _, err := s.wdb.ExecContext(bg, "PRAGMA optimize"); err != nil {
			s.log.Debug("sqlite store: optimize", "err", err)
		}
		s.rstmts.Range(func(_, st any) bool {
			st.(*sql.Stmt).Close()
			return true
		})
		s.closeErr = errors.Join(s.rdb.Close(), s.wdb.Close())
	})
	return s.closeErr
}

// Ping proves the store writable: it commits a heartbeat row through the
// same path every write takes (so a read-only file, an I/O error or a lock
// held too long by another process all show), checks that the file at the
// path is still the one open (a replaced or deleted file would take writes
// nobody reads), and that at least minFree bytes of disk are left.
func (s *Store) Ping(ctx context.Context) error {
	o := &op{abandon: true, fn: func(w *wtx) error {
		_, err := w.exec(`INSERT INTO heartbeat (id, at) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET at = excluded.at`, time.Now().UnixNano())
		return err
	}}
	if err := s.submit(ctx, o); err != nil {
		return fmt.Errorf("sqlite store %s: not writable: %w", s.path, err)
	}
	fi, err := os.Stat(s.path)
	if err != nil {
		return fmt.Errorf("sqlite store %s: %w", s.path, err)
	}
	if !os.SameFile(fi, s.info) {
		return fmt.Errorf("sqlite store %s: the file was replaced while open: restart to use the new one", s.path)
	}
	// The heartbeat may fit in WAL space already allocated even on a full
	// disk, while an enqueue of a few jobs would not: report low space too.
	if free, known, err := freeBytes(s.path); err != nil {
		return fmt.Errorf("sqlite store %s: free space: %w", s.path, err)
	} else if known && free < minFree {
		return fmt.Errorf("sqlite store %s: disk full (%d bytes free, need %d)", s.path, free, minFree)
	}
	return nil
}

// rstmt returns a prepared statement on the read pool. Queries are
// constants, so the cache stays small; database/sql re-prepares per
// connection as needed.
func (s *Store) rstmt(ctx context.Context, query string) (*sql.Stmt, error) {
	if st, ok := s.rstmts.Load(query); ok {
		return st.(*sql.Stmt), nil
	}
	st, err := s.rdb.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	if prev, loaded := s.rstmts.LoadOrStore(query, st); loaded {
		st.Close()
		return prev.(*sql.Stmt), nil
	}
	return st, nil
}

func (s *Store) rquery(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	st, err := s.rstmt(ctx, query)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}

func (s *Store) rqueryRow(ctx context.Context, query string, args ...any) rowScanner {
	st, err := s.rstmt(ctx, query)
	if err != nil {
		return errRow{err}
	}
	return st.QueryRowContext(ctx, args...)
}

// firstConn opens the writer connection. Its pragmas switch a new file to
// WAL, and SQLite answers that switch with SQLITE_BUSY at once, without its
// busy handler, while another process opens the same new file (the daemon
// and a CLI command started together): retry for up to busyTimeout, as
// retryBusy does for BEGIN and COMMIT.
func firstConn(ctx context.Context, db *sql.DB, log *slog.Logger) (*sql.Conn, error) {
	start := time.Now()
	delay := 5 * time.Millisecond
	for attempt := 1; ; attempt++ {
		conn, err := db.Conn(ctx)
		if err == nil || !isBusy(err) || time.Since(start)+delay > busyTimeout {
			return conn, err
		}
		log.Debug("sqlite store: busy at open, retrying", "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, time.Second)
	}
}
