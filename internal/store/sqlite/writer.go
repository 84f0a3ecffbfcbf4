package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"
)

// Every write of this process goes through one goroutine that owns the only
// write connection. It takes whatever writes are waiting, runs them in one
// BEGIN IMMEDIATE transaction (each inside its own SAVEPOINT, so one failing
// write is undone alone) and answers all of them after the single COMMIT.
// With synchronous=FULL a commit costs an fsync (milliseconds on a VM
// disk); sharing it between concurrent callers (group commit) multiplies
// enqueue throughput by the batch size, while nobody is answered before
// their data is on disk.

// errClosed is returned by writes submitted after Close.
var errClosed = errors.New("sqlite store: closed")

// Op states: a caller whose context ends may withdraw its op only while it
// is still pending; once the writer took it, the caller waits for the
// outcome, so that an error always means "nothing was written".
const (
	opPending int32 = iota
	opTaken
	opWithdrawn
)

type op struct {
	fn    func(w *wtx) error
	done  chan error // buffered: the writer never blocks on a caller
	state atomic.Int32
	// raw ops run outside any transaction (connection settings, tests).
	raw bool
	// abandon lets the caller stop waiting even after the writer took the
	// op: for writes whose outcome nobody depends on (the Ping heartbeat).
	abandon bool
}

// write runs fn in the writer goroutine inside a transaction and returns
// once that transaction committed (nil) or was rolled back (the error).
func (s *Store) write(ctx context.Context, fn func(w *wtx) error) error {
	return s.submit(ctx, &op{fn: fn})
}

func (s *Store) submit(ctx context.Context, o *op) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	o.done = make(chan error, 1)
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return errClosed
	}
	select {
	case s.ops <- o:
		s.mu.RUnlock()
	case <-ctx.Done():
		s.mu.RUnlock()
		return ctx.Err()
	}
	select {
	case err := <-o.done:
		return err
	case <-ctx.Done():
		if o.abandon || o.state.CompareAndSwap(opPending, opWithdrawn) {
			return ctx.Err()
		}
		return <-o.done
	}
}

// run is the writer goroutine. It exits when ops is closed and drained.
func (s *Store) run(conn *sql.Conn) {
	defer close(s.writerDone)
	defer conn.Close() // back to the pool, for Close's PRAGMA optimize
	w := &wtx{conn: conn, stmts: make(map[string]*sql.Stmt)}
	defer w.closeStmts()
	batch := make([]*op, 0, s.opt.maxBatch)
	for {
		o, ok := <-s.ops
		if !ok {
			return
		}
		batch = append(batch[:0], o)
	drain:
		for len(batch) < s.opt.maxBatch {
			select {
			case o, ok := <-s.ops:
				if !ok {
					break drain
				}
				batch = append(batch, o)
			default:
				break drain
			}
		}
		// Raw ops split the batch: they must not run inside a transaction.
		start := 0
		for i, o := range batch {
			if o.raw {
				s.runBatch(w, batch[start:i])
				s.runRaw(w, o)
				start = i + 1
			}
		}
		s.runBatch(w, batch[start:])
		clear(batch) // drop references to finished ops and their closures
	}
}

func (s *Store) runRaw(w *wtx, o *op) {
	if !o.state.CompareAndSwap(opPending, opTaken) {
		return
	}
	o.done <- callOp(w, o)
}

func (s *Store) runBatch(w *wtx, batch []*op) {
	if !slices.ContainsFunc(batch, func(o *op) bool { return o.state.Load() == opPending }) {
		return // every caller gave up: no transaction
	}
	// BEGIN before taking the ops: waiting for another process's lock can
	// take seconds, and a caller whose context ends meanwhile may still
	// withdraw (and get its error at once).
	if err := w.retryBusy(s, "BEGIN IMMEDIATE"); err != nil {
		err = fmt.Errorf("sqlite store: begin: %w", err)
		for _, o := range batch {
			if o.state.CompareAndSwap(opPending, opTaken) {
				o.done <- err
			}
		}
		return
	}
	live := batch[:0:0]
	for _, o := range batch {
		if o.state.CompareAndSwap(opPending, opTaken) {
			live = append(live, o)
		}
	}
	if len(live) == 0 {
		w.rollback(s)
		return
	}
	errs := make([]error, len(live))
	fail := func(err error) {
		for i, o := range live {
			if errs[i] == nil {
				o.done <- err
			} else {
				o.done <- errs[i]
			}
		}
	}
	single := len(live) == 1
	for i, o := range live {
		if single {
			// One op: the transaction itself is its savepoint.
			errs[i] = callOp(w, o)
			continue
		}
		if _, err := w.exec("SAVEPOINT op"); err != nil {
			w.rollback(s)
			fail(fmt.Errorf("sqlite store: savepoint: %w", err))
			return
		}
		if errs[i] = callOp(w, o); errs[i] != nil {
			// ROLLBACK TO fails when SQLite already rolled the whole
			// transaction back (disk full, I/O error): then every op of the
			// batch is lost and must hear so.
			if _, err := w.exec("ROLLBACK TO op"); err != nil {
				w.rollback(s)
				fail(fmt.Errorf("sqlite store: transaction aborted: %w (after: %w)", err, errs[i]))
				return
			}
		}
		if _, err := w.exec("RELEASE op"); err != nil {
			w.rollback(s)
			fail(fmt.Errorf("sqlite store: release savepoint: %w", err))
			return
		}
	}
	if single && errs[0] != nil {
		w.rollback(s)
		live[0].done <- errs[0]
		return
	}
	if err := w.retryBusy(s, "COMMIT"); err != nil {
		w.rollback(s)
		s.log.Warn("sqlite store: commit failed", "path", s.path, "ops", len(live), "err", err)
		fail(fmt.Errorf("sqlite store: commit: %w", err))
		return
	}
	s.commits.Add(1)
	s.writes.Add(int64(len(live)))
	for i, o := range live {
		o.done <- errs[i]
	}
}

// callOp runs one op, turning a panic into an error: a panicking closure
// must not take the writer (and with it every later write) down.
func callOp(w *wtx, o *op) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("sqlite store: panic in write: %v", r)
		}
	}()
	return o.fn(w)
}

// bg is the context of statements on the write connection. Callers' contexts
// are deliberately not used there: modernc interrupts a statement whose
// context ends, and SQLite then rolls back the whole transaction, that is,
// other callers' writes too.
var bg = context.Background()

// wtx is the write connection as ops see it, with a cache of prepared
// statements (only the writer goroutine touches it).
type wtx struct {
	conn  *sql.Conn
	stmts map[string]*sql.Stmt
}

func (w *wtx) stmt(query string) (*sql.Stmt, error) {
	if st, ok := w.stmts[query]; ok {
		return st, nil
	}
	st, err := w.conn.PrepareContext(bg, query)
	if err != nil {
		return nil, err
	}
	w.stmts[query] = st
	return st, nil
}

func (w *wtx) exec(query string, args ...any) (sql.Result, error) {
	st, err := w.stmt(query)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(bg, args...)
}

func (w *wtx) query(query string, args ...any) (*sql.Rows, error) {
	st, err := w.stmt(query)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(bg, args...)
}

// queryRow is QueryRow with a prepared statement; a prepare error comes
// back from Scan.
func (w *wtx) queryRow(query string, args ...any) rowScanner {
	st, err := w.stmt(query)
	if err != nil {
		return errRow{err}
	}
	return st.QueryRowContext(bg, args...)
}

// execOne runs an UPDATE or DELETE that must touch a row, else notFound.
func (w *wtx) execOne(notFound error, query string, args ...any) error {
	res, err := w.exec(query, args...)
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return notFound
	}
	return nil
}

// execAll runs each of queries with args and returns the rows they
// touched, all told.
func (w *wtx) execAll(queries []string, args ...any) (int, error) {
	n := 0
	for _, q := range queries {
		res, err := w.exec(q, args...)
		if err != nil {
			return n, err
		}
		k, err := res.RowsAffected()
		if err != nil {
			return n, err
		}
		n += int(k)
	}
	return n, nil
}

func (w *wtx) closeStmts() {
	for _, st := range w.stmts {
		st.Close()
	}
}

// retryBusy runs BEGIN or COMMIT, retrying SQLITE_BUSY for up to
// busyTimeout in all: busy_timeout covers most waits for another process,
// but some busy cases (WAL recovery by another connection) return at once.
func (w *wtx) retryBusy(s *Store, stmt string) error {
	start := time.Now()
	delay := 5 * time.Millisecond
	for attempt := 1; ; attempt++ {
		_, err := w.exec(stmt)
		if err == nil || !isBusy(err) || time.Since(start)+delay > busyTimeout {
			return err
		}
		s.log.Debug("sqlite store: busy, retrying", "stmt", stmt, "attempt", attempt, "err", err)
		time.Sleep(delay)
		delay = min(2*delay, time.Second)
	}
}

func (w *wtx) rollback(s *Store) {
	if _, err := w.exec("ROLLBACK"); err != nil && !isNoTx(err) {
		s.log.Warn("sqlite store: rollback failed", "path", s.path, "err", err)
	}
}

type rowScanner interface{ Scan(dest ...any) error }

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }
