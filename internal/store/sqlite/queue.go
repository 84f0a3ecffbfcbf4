package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/smsmilter/smsmilter/internal/store"
)

// Part states (store.Part.State).
const (
	partSubmitted = "submitted"
	partDelivered = "delivered"
	partFailed    = "failed"
)

// Enqueue implements store.Queue. All jobs of the call are one write: with
// group commit, concurrent calls share a transaction, each in its own
// savepoint, and all return after its COMMIT.
func (s *Store) Enqueue(ctx context.Context, jobs []store.Job, window time.Duration) (store.EnqueueResult, error) {
	if len(jobs) == 0 {
		return store.EnqueueResult{}, nil
	}
	now := time.Now()
	var res store.EnqueueResult
	err := s.write(ctx, func(w *wtx) error {
		res = store.EnqueueResult{IDs: make([]int64, len(jobs))}
		for i, j := range jobs {
			created := j.Created
			if created.IsZero() {
				created = now
			}
			// Against jobs, not a separate key table: a duplicate is a job
			// that exists, so a rolled-back enqueue leaves no key by
			// construction, and a job earlier in the same call counts too.
			if window > 0 && j.DedupeKey != "" {
				var one int
				// "dedupe_key <> ''" lets SQLite use the partial index.
				err := w.queryRow(`SELECT 1 FROM jobs WHERE dedupe_key = ? AND dedupe_key <> '' AND created > ? LIMIT 1`,
					j.DedupeKey, ts(created.Add(-window))).Scan(&one)
				if err == nil {
					res.Duplicates++
					continue
				}
				if !errors.Is(err, sql.ErrNoRows) {
					return fmt.Errorf("enqueue job %d of %d: dedupe: %w", i+1, len(jobs), err)
				}
			}
			next := j.NextTry
			if next.IsZero() {
				next = created
			}
			r, err := w.exec(`INSERT INTO jobs (dedupe_key, message_id, queue_id, sender, notify_ok, subject, user_name, sender_id,
					to_number, text, encoding, parts, state, attempts, transport, last_error, created, next_try, updated)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', 0, '', '', ?, ?, ?)`,
				j.DedupeKey, j.MessageID, j.QueueID, j.Sender, b2i(j.NotifyOK), j.Subject, j.User, j.SenderID,
				j.To, j.Text, j.Encoding, j.Parts, ts(created), ts(next), ts(now))
			if err != nil {
				return fmt.Errorf("enqueue job %d of %d (to %q): %w", i+1, len(jobs), j.To, err)
			}
			if res.IDs[i], err = r.LastInsertId(); err != nil {
				return fmt.Errorf("enqueue job %d of %d: %w", i+1, len(jobs), err)
			}
		}
		return nil
	})
	if err != nil {
		return store.EnqueueResult{}, err
	}
	return res, nil
}

const jobCols = `id, dedupe_key, message_id, queue_id, sender, notify_ok, subject, user_name, sender_id, to_number,
	text, encoding, parts, state, attempts, transport, last_error, created, next_try, updated`

func scanJob(r rowScanner) (store.Job, error) {
	var j store.Job
	var created, next, updated int64
	if err := r.Scan(&j.ID, &j.DedupeKey, &j.MessageID, &j.QueueID, &j.Sender, &j.NotifyOK, &j.Subject, &j.User, &j.SenderID,
		&j.To, &j.Text, &j.Encoding, &j.Parts, &j.State, &j.Attempts, &j.Transport, &j.LastError,
		&created, &next, &updated); err != nil {
		return store.Job{}, err
	}
	j.Created, j.NextTry, j.Updated = tm(created), tm(next), tm(updated)
	return j, nil
}

func scanJobs(rows *sql.Rows) ([]store.Job, error) {
	defer rows.Close()
	var js []store.Job
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			return nil, err
		}
		js = append(js, j)
	}
	return js, rows.Err()
}

// partsQuery loads the parts of a set of jobs given as a JSON list of IDs
// (one statement for any number of jobs).
const partsQuery = `SELECT job_id, idx, ref, state, error FROM parts
	WHERE job_id IN (SELECT value FROM json_each(?)) ORDER BY job_id, idx`

// attachParts fills PartState of js from rows of partsQuery.
func attachParts(js []store.Job, rows *sql.Rows) error {
	defer rows.Close()
	byID := make(map[int64]*store.Job, len(js))
	for i := range js {
		byID[js[i].ID] = &js[i]
	}
	for rows.Next() {
		var id int64
		var p store.Part
		if err := rows.Scan(&id, &p.Index, &p.Ref, &p.State, &p.Error); err != nil {
			return err
		}
		if j := byID[id]; j != nil {
			j.PartState = append(j.PartState, p)
		}
	}
	return rows.Err()
}

func jobIDs(js []store.Job) string {
	ids := make([]int64, len(js))
	for i, j := range js {
		ids[i] = j.ID
	}
	b, _ := json.Marshal(ids) // cannot fail for []int64
	return string(b)
}

// Claim implements store.Queue. Due jobs are taken in next_try order; a job
// waiting for a later retry is simply not due, so it never holds back
// others. Each claim counts as an attempt.
func (s *Store) Claim(ctx context.Context, now time.Time, limit int, lease time.Duration) ([]store.Job, error) {
	if limit <= 0 {
		return nil, nil
	}
	var js []store.Job
	err := s.write(ctx, func(w *wtx) error {
		// The compound SELECT is ordered by a merge of two index scans:
		// queued jobs by (state, next_try), and expired leases.
		rows, err := w.query(`UPDATE jobs SET state = 'sending', attempts = attempts + 1, lease_until = ?1, updated = ?2
			WHERE id IN (SELECT id FROM (
				SELECT id, next_try FROM jobs WHERE state = 'queued' AND next_try <= ?3
				UNION ALL
				SELECT id, next_try FROM jobs WHERE state = 'sending' AND lease_until <= ?3
				ORDER BY next_try, id LIMIT ?4))
			RETURNING `+jobCols,
			ts(now.Add(lease)), time.Now().UnixNano(), ts(now), limit)
		if err != nil {
			return err
		}
		if js, err = scanJobs(rows); err != nil || len(js) == 0 {
			return err
		}
		rows, err = w.query(partsQuery, jobIDs(js))
		if err != nil {
			return err
		}
		return attachParts(js, rows)
	})
	if err != nil {
		return nil, fmt.Errorf("claim jobs: %w", err)
	}
	// RETURNING gives no order.
	slices.SortFunc(js, func(a, b store.Job) int {
		if c := a.NextTry.Compare(b.NextTry); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
	return js, nil
}

func jobNotFound(id int64) error { return fmt.Errorf("job %d: %w", id, store.ErrNotFound) }

// MarkSent implements store.Queue. The parts replace any recorded before
// (a job sent again after a lost lease gets the new references).
func (s *Store) MarkSent(ctx context.Context, id int64, transport string, parts []store.Part) error {
	now := time.Now().UnixNano()
	err := s.write(ctx, func(w *wtx) error {
		state := jobState(store.JobSent, parts)
		if err := w.execOne(jobNotFound(id), `UPDATE jobs SET state = ?, transport = ?, lease_until = 0, updated = ? WHERE id = ?`,
			state, transport, now, id); err != nil {
			return err
		}
		if _, err := w.exec(`DELETE FROM parts WHERE job_id = ?`, id); err != nil {
			return err
		}
		for _, p := range parts {
			if p.State == "" {
				p.State = partSubmitted
			}
			if _, err := w.exec(`INSERT INTO parts (job_id, idx, transport, ref, state, error) VALUES (?, ?, ?, ?, ?, ?)`,
				id, p.Index, transport, p.Ref, p.State, p.Error); err != nil {
				return fmt.Errorf("part %d: %w", p.Index, err)
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("mark job %d sent: %w", id, err)
	}
	return err
}

// jobState is the state of a sent job given its parts: delivered when every
// part is, failed when any part failed, else current.
func jobState(current string, parts []store.Part) string {
	if len(parts) == 0 {
		return current
	}
	delivered := 0
	for _, p := range parts {
		switch p.State {
		case partFailed:
			return store.JobFailed
		case partDelivered:
			delivered++
		}
	}
	if delivered == len(parts) {
		return store.JobDelivered
	}
	return current
}

// Retry implements store.Queue.
func (s *Store) Retry(ctx context.Context, id int64, next time.Time, errText string) error {
	err := s.write(ctx, func(w *wtx) error {
		return w.execOne(jobNotFound(id), `UPDATE jobs SET state = 'queued', next_try = ?, last_error = ?, lease_until = 0, updated = ? WHERE id = ?`,
			ts(next), errText, time.Now().UnixNano(), id)
	})
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("retry job %d: %w", id, err)
	}
	return err
}

// Fail implements store.Queue.
func (s *Store) Fail(ctx context.Context, id int64, errText string) error {
	err := s.write(ctx, func(w *wtx) error {
		return w.execOne(jobNotFound(id), `UPDATE jobs SET state = 'failed', last_error = ?, lease_until = 0, updated = ? WHERE id = ?`,
			errText, time.Now().UnixNano(), id)
	})
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("fail job %d: %w", id, err)
	}
	return err
}

// Defer implements store.Queue.
func (s *Store) Defer(ctx context.Context, id int64, next time.Time) error {
	err := s.write(ctx, func(w *wtx) error {
		res, err := w.exec(`UPDATE jobs SET state = 'queued', next_try = ?, attempts = MAX(attempts - 1, 0), lease_until = 0, updated = ?
			WHERE id = ? AND state IN ('queued', 'sending')`, ts(next), time.Now().UnixNano(), id)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 1 {
			return err
		}
		var state string
		switch err := w.queryRow(`SELECT state FROM jobs WHERE id = ?`, id).Scan(&state); {
		case errors.Is(err, sql.ErrNoRows):
			return jobNotFound(id)
		case err != nil:
			return err
		}
		return fmt.Errorf("job %d is %s already", id, state)
	})
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("defer job %d: %w", id, err)
	}
	return err
}

// UpdatePart implements store.Queue. SMSC message IDs may be reused over
// time, so a reference maps to the newest job that has it.
func (s *Store) UpdatePart(ctx context.Context, transport, ref, state, errText string) (store.Job, error) {
	var j store.Job
	now := time.Now().UnixNano()
	err := s.write(ctx, func(w *wtx) error {
		var id int64
		var idx int
		err := w.queryRow(`SELECT job_id, idx FROM parts WHERE transport = ? AND ref = ? ORDER BY job_id DESC, idx LIMIT 1`,
			transport, ref).Scan(&id, &idx)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("part %q on transport %q: %w", ref, transport, store.ErrNotFound)
		}
		if err != nil {
			return err
		}
		if _, err := w.exec(`UPDATE parts SET state = ?, error = ? WHERE job_id = ? AND idx = ?`, state, errText, id, idx); err != nil {
			return err
		}
		if j, err = loadJob(w.queryRow, w.query, id); err != nil {
			return err
		}
		newState := jobState(j.State, j.PartState)
		if newState == j.State {
			return nil
		}
		lastErr := j.LastError
		if newState == store.JobFailed && errText != "" {
			lastErr = errText
		}
		if _, err := w.exec(`UPDATE jobs SET state = ?, last_error = ?, updated = ? WHERE id = ?`, newState, lastErr, now, id); err != nil {
			return err
		}
		j.State, j.LastError, j.Updated = newState, lastErr, tm(now)
		return nil
	})
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return store.Job{}, fmt.Errorf("update part %q on transport %q: %w", ref, transport, err)
	}
	return j, err
}

// loadJob reads one job with its parts through either connection kind.
func loadJob(queryRow func(string, ...any) rowScanner, query func(string, ...any) (*sql.Rows, error), id int64) (store.Job, error) {
	j, err := scanJob(queryRow(`SELECT `+jobCols+` FROM jobs WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Job{}, jobNotFound(id)
	}
	if err != nil {
		return store.Job{}, err
	}
	rows, err := query(`SELECT ?1, idx, ref, state, error FROM parts WHERE job_id = ?1 ORDER BY idx`, id)
	if err != nil {
		return store.Job{}, err
	}
	js := []store.Job{j}
	if err := attachParts(js, rows); err != nil {
		return store.Job{}, err
	}
	return js[0], nil
}

// GetJob implements store.Queue.
func (s *Store) GetJob(ctx context.Context, id int64) (store.Job, error) {
	j, err := loadJob(
		func(q string, args ...any) rowScanner { return s.rqueryRow(ctx, q, args...) },
		func(q string, args ...any) (*sql.Rows, error) { return s.rquery(ctx, q, args...) },
		id)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return store.Job{}, fmt.Errorf("get job %d: %w", id, err)
	}
	return j, err
}

// ListJobs implements store.Queue: newest (highest ID) first, with parts.
func (s *Store) ListJobs(ctx context.Context, state string, limit int) ([]store.Job, error) {
	if limit <= 0 {
		limit = -1 // SQLite: no limit
	}
	var rows *sql.Rows
	var err error
	if state == "" {
		rows, err = s.rquery(ctx, `SELECT `+jobCols+` FROM jobs ORDER BY id DESC LIMIT ?`, limit)
	} else {
		rows, err = s.rquery(ctx, `SELECT `+jobCols+` FROM jobs WHERE state = ? ORDER BY id DESC LIMIT ?`, state, limit)
	}
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	js, err := scanJobs(rows)
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	if len(js) == 0 {
		return nil, nil
	}
	if rows, err = s.rquery(ctx, partsQuery, jobIDs(js)); err != nil {
		return nil, fmt.Errorf("list jobs: parts: %w", err)
	}
	if err := attachParts(js, rows); err != nil {
		return nil, fmt.Errorf("list jobs: parts: %w", err)
	}
	return js, nil
}

// Depth implements store.Queue. Every state is present, zero included, so
// a gauge per state drops back to 0 instead of vanishing.
func (s *Store) Depth(ctx context.Context) (map[string]int, error) {
	rows, err := s.rquery(ctx, `SELECT state, COUNT(*) FROM jobs GROUP BY state`)
	if err != nil {
		return nil, fmt.Errorf("queue depth: %w", err)
	}
	defer rows.Close()
	d := map[string]int{store.JobQueued: 0, store.JobSending: 0, store.JobSent: 0, store.JobDelivered: 0, store.JobFailed: 0}
	for rows.Next() {
		var st string
		var n int
		if err := rows.Scan(&st, &n); err != nil {
			return nil, fmt.Errorf("queue depth: %w", err)
		}
		d[st] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("queue depth: %w", err)
	}
	return d, nil
}

// CountUserSince implements store.Queue: SMS parts (a job counts at least
// one) of jobs enqueued since, whatever became of them.
func (s *Store) CountUserSince(ctx context.Context, user string, since time.Time) (int, error) {
	var n int
	if err := s.rqueryRow(ctx, `SELECT COALESCE(SUM(MAX(parts, 1)), 0) FROM jobs WHERE user_name = ? AND created >= ?`,
		user, ts(since)).Scan(&n); err != nil {
		return 0, fmt.Errorf("count parts for user %q: %w", user, err)
	}
	return n, nil
}

// ReleaseLeases implements store.Store. The embedded store serves one host,
// whose one daemon calls it at start: every lease is that daemon's.
func (s *Store) ReleaseLeases(ctx context.Context, now time.Time) (int, error) {
	var n int
	err := s.write(ctx, func(w *wtx) (err error) {
		n, err = w.execAll([]string{
			`UPDATE jobs SET state = 'queued', next_try = ?1, lease_until = 0, updated = ?2 WHERE state = 'sending'`,
			`UPDATE mails SET state = 'queued', next_try = ?1, lease_until = 0 WHERE state = 'sending'`,
		}, ts(now), time.Now().UnixNano())
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("release leases: %w", err)
	}
	return n, nil
}
