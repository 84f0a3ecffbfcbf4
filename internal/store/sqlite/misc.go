package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/smsmilter/smsmilter/internal/store"
)

// ---- AutoCLIP ----

// RecordSent implements store.AutoCLIP. A zero At means now.
func (s *Store) RecordSent(ctx context.Context, r store.Sent) error {
	if r.At.IsZero() {
		r.At = time.Now()
	}
	err := s.write(ctx, func(w *wtx) error {
		_, err := w.exec(`INSERT INTO sent (number, transport, sender_id, sender, message_id, subject, at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
			r.Number, r.Transport, r.SenderID, r.Sender, r.MessageID, r.Subject, ts(r.At))
		return err
	})
	if err != nil {
		return fmt.Errorf("record sent to %s: %w", r.Number, err)
	}
	return nil
}

// LastSent implements store.AutoCLIP.
func (s *Store) LastSent(ctx context.Context, number, transport string, since time.Time) (store.Sent, error) {
	const cols = `number, transport, sender_id, sender, message_id, subject, at`
	var row rowScanner
	if transport == "" {
		row = s.rqueryRow(ctx, `SELECT `+cols+` FROM sent WHERE number = ? AND at > ? ORDER BY at DESC, id DESC LIMIT 1`,
			number, ts(since))
	} else {
		row = s.rqueryRow(ctx, `SELECT `+cols+` FROM sent WHERE number = ? AND transport = ? AND at > ? ORDER BY at DESC, id DESC LIMIT 1`,
			number, transport, ts(since))
	}
	var r store.Sent
	var at int64
	err := row.Scan(&r.Number, &r.Transport, &r.SenderID, &r.Sender, &r.MessageID, &r.Subject, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Sent{}, fmt.Errorf("sent to %s (transport %q): %w", number, transport, store.ErrNotFound)
	}
	if err != nil {
		return store.Sent{}, fmt.Errorf("last sent to %s: %w", number, err)
	}
	r.At = tm(at)
	return r, nil
}

// PurgeSent implements store.AutoCLIP.
func (s *Store) PurgeSent(ctx context.Context, before time.Time) (int, error) {
	var n int64
	err := s.write(ctx, func(w *wtx) error {
		res, err := w.exec(`DELETE FROM sent WHERE at < ?`, ts(before))
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("purge sent: %w", err)
	}
	return int(n), nil
}

// Purge implements store.Store.
func (s *Store) Purge(ctx context.Context, before time.Time) (int, error) {
	var n int
	err := s.write(ctx, func(w *wtx) (err error) {
		n, err = w.execAll([]string{
			`DELETE FROM jobs WHERE state IN ('sent', 'delivered', 'failed') AND updated < ?`,
			`DELETE FROM events WHERE at < ?`,
			`DELETE FROM mails WHERE state = 'failed' AND created < ?`,
		}, ts(before))
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("purge history: %w", err)
	}
	return n, nil
}

// ---- events ----

// LogEvent implements store.Events. A zero Time means now.
func (s *Store) LogEvent(ctx context.Context, e store.Event) error {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	fields, err := jsonMap(e.Fields)
	if err != nil {
		return fmt.Errorf("log %s event: %w", e.Kind, err)
	}
	err = s.write(ctx, func(w *wtx) error {
		_, err := w.exec(`INSERT INTO events (at, kind, message, fields) VALUES (?, ?, ?, ?)`, ts(e.Time), e.Kind, e.Message, fields)
		return err
	})
	if err != nil {
		return fmt.Errorf("log %s event: %w", e.Kind, err)
	}
	return nil
}

// ListEvents implements store.Events.
func (s *Store) ListEvents(ctx context.Context, kind string, since time.Time, limit int) ([]store.Event, error) {
	if limit <= 0 {
		limit = -1
	}
	// Newest first to apply the limit; reversed below.
	const cols = `id, at, kind, message, fields`
	var rows *sql.Rows
	var err error
	if kind == "" {
		rows, err = s.rquery(ctx, `SELECT `+cols+` FROM events WHERE at >= ? ORDER BY at DESC, id DESC LIMIT ?`, ts(since), limit)
	} else {
		rows, err = s.rquery(ctx, `SELECT `+cols+` FROM events WHERE kind = ? AND at >= ? ORDER BY at DESC, id DESC LIMIT ?`, kind, ts(since), limit)
	}
	if err != nil {
		return nil, fmt.Errorf("list events: %w", err)
	}
	defer rows.Close()
	var es []store.Event
	for rows.Next() {
		var e store.Event
		var at int64
		var fields string
		if err := rows.Scan(&e.ID, &at, &e.Kind, &e.Message, &fields); err != nil {
			return nil, fmt.Errorf("list events: %w", err)
		}
		e.Time = tm(at)
		if e.Fields, err = parseMap(fields); err != nil {
			return nil, fmt.Errorf("list events: event %d: fields: %w", e.ID, err)
		}
		es = append(es, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list events: %w", err)
	}
	slices.Reverse(es)
	return es, nil
}

// CountEvents implements store.Events. json_each rather than json_extract
// with a built path: a key may hold characters that mean something in a
// JSON path.
func (s *Store) CountEvents(ctx context.Context, kind, key, value string, since time.Time) (int, error) {
	var n int
	err := s.rqueryRow(ctx, `SELECT COUNT(*) FROM events
		WHERE kind = ? AND at >= ? AND EXISTS (SELECT 1 FROM json_each(events.fields) AS f WHERE f.key = ? AND f.value = ?)`,
		kind, ts(since), key, value).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count %s events: %w", kind, err)
	}
	return n, nil
}

// ---- POP3 mailboxes ----

// SetMailboxPassword implements store.Mailboxes. Addresses compare
// case-insensitively (ASCII), as people type them.
func (s *Store) SetMailboxPassword(ctx context.Context, address, hash string) error {
	if address == "" {
		return errors.New("set mailbox password: empty address")
	}
	err := s.write(ctx, func(w *wtx) error {
		_, err := w.exec(`INSERT INTO mailboxes (address, hash, updated) VALUES (?, ?, ?)
			ON CONFLICT (address) DO UPDATE SET hash = excluded.hash, updated = excluded.updated`,
			address, hash, time.Now().UnixNano())
		return err
	})
	if err != nil {
		return fmt.Errorf("set mailbox password for %s: %w", address, err)
	}
	return nil
}

// MailboxPassword implements store.Mailboxes.
func (s *Store) MailboxPassword(ctx context.Context, address string) (string, error) {
	var hash string
	err := s.rqueryRow(ctx, `SELECT hash FROM mailboxes WHERE address = ?`, address).Scan(&hash)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("mailbox %s: %w", address, store.ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("mailbox %s: %w", address, err)
	}
	return hash, nil
}

// ---- outgoing mail ----

// EnqueueMail implements store.MailQueue. Zero NextTry and Created mean now.
func (s *Store) EnqueueMail(ctx context.Context, m store.Mail) (int64, error) {
	if len(m.To) == 0 {
		return 0, errors.New("enqueue mail: no recipients")
	}
	now := time.Now()
	if m.Created.IsZero() {
		m.Created = now
	}
	if m.NextTry.IsZero() {
		m.NextTry = m.Created
	}
	rcpts, err := jsonList(m.To)
	if err != nil {
		return 0, fmt.Errorf("enqueue mail: %w", err)
	}
	if m.Data == nil {
		m.Data = []byte{} // NOT NULL
	}
	var id int64
	err = s.write(ctx, func(w *wtx) error {
		res, err := w.exec(`INSERT INTO mails (sender, rcpts, data, state, attempts, next_try, created, last_err) VALUES (?, ?, ?, 'queued', ?, ?, ?, ?)`,
			m.From, rcpts, m.Data, m.Attempts, ts(m.NextTry), ts(m.Created), m.LastErr)
		if err != nil {
			return err
		}
		id, err = res.LastInsertId()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("enqueue mail: %w", err)
	}
	return id, nil
}

// ClaimMail implements store.MailQueue, like Claim: due mail in next_try
// order, each claim counted as an attempt, expired leases due again.
func (s *Store) ClaimMail(ctx context.Context, now time.Time, limit int, lease time.Duration) ([]store.Mail, error) {
	if limit <= 0 {
		return nil, nil
	}
	var ms []store.Mail
	err := s.write(ctx, func(w *wtx) error {
		rows, err := w.query(`UPDATE mails SET state = 'sending', attempts = attempts + 1, lease_until = ?1
			WHERE id IN (SELECT id FROM (
				SELECT id, next_try FROM mails WHERE state = 'queued' AND next_try <= ?2
				UNION ALL
				SELECT id, next_try FROM mails WHERE state = 'sending' AND lease_until <= ?2
				ORDER BY next_try, id LIMIT ?3))
			RETURNING id, sender, rcpts, data, attempts, next_try, created, last_err`,
			ts(now.Add(lease)), ts(now), limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		ms = nil
		for rows.Next() {
			var m store.Mail
			var rcpts string
			var next, created int64
			if err := rows.Scan(&m.ID, &m.From, &rcpts, &m.Data, &m.Attempts, &next, &created, &m.LastErr); err != nil {
				return err
			}
			if m.To, err = parseList(rcpts); err != nil {
				return fmt.Errorf("mail %d: recipients: %w", m.ID, err)
			}
			m.NextTry, m.Created = tm(next), tm(created)
			ms = append(ms, m)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("claim mail: %w", err)
	}
	slices.SortFunc(ms, func(a, b store.Mail) int {
		if c := a.NextTry.Compare(b.NextTry); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
	return ms, nil
}

func mailNotFound(id int64) error { return fmt.Errorf("mail %d: %w", id, store.ErrNotFound) }

// mailWrite runs one UPDATE/DELETE that must find the mail.
func (s *Store) mailWrite(ctx context.Context, what string, id int64, query string, args ...any) error {
	err := s.write(ctx, func(w *wtx) error { return w.execOne(mailNotFound(id), query, args...) })
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%s mail %d: %w", what, id, err)
	}
	return err
}

// MailDone implements store.MailQueue: the MTA has the mail, so it is
// deleted (its data is the bulk of the table).
func (s *Store) MailDone(ctx context.Context, id int64) error {
	return s.mailWrite(ctx, "done", id, `DELETE FROM mails WHERE id = ?`, id)
}

// MailRetry implements store.MailQueue.
func (s *Store) MailRetry(ctx context.Context, id int64, next time.Time, errText string) error {
	return s.mailWrite(ctx, "retry", id, `UPDATE mails SET state = 'queued', next_try = ?, last_err = ?, lease_until = 0 WHERE id = ?`,
		ts(next), errText, id)
}

// MailFail implements store.MailQueue. The mail is kept, never claimed
// again, for an admin to look at.
func (s *Store) MailFail(ctx context.Context, id int64, errText string) error {
	return s.mailWrite(ctx, "fail", id, `UPDATE mails SET state = 'failed', last_err = ?, lease_until = 0 WHERE id = ?`, errText, id)
}
