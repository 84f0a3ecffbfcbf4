package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/smsmilter/smsmilter/internal/store"
)

// AddUser implements store.Registry.
func (s *Store) AddUser(ctx context.Context, u store.User) error {
	if u.Name == "" {
		return errors.New("add user: empty name")
	}
	created := u.Created
	if created.IsZero() {
		created = time.Now()
	}
	err := s.write(ctx, func(w *wtx) error {
		_, err := w.exec(`INSERT INTO users (name, sender_id, tps, daily, route, created) VALUES (?, ?, ?, ?, ?, ?)`,
			u.Name, u.SenderID, u.TPS, u.Daily, u.Route, ts(created))
		return err
	})
	if isUnique(err) {
		return fmt.Errorf("user %q: %w", u.Name, store.ErrDuplicate)
	}
	if err != nil {
		return fmt.Errorf("add user %q: %w", u.Name, err)
	}
	return nil
}

const userCols = `name, sender_id, tps, daily, route, created`

func scanUser(r rowScanner) (store.User, error) {
	var u store.User
	var created int64
	if err := r.Scan(&u.Name, &u.SenderID, &u.TPS, &u.Daily, &u.Route, &created); err != nil {
		return store.User{}, err
	}
	u.Created = tm(created)
	return u, nil
}

// GetUser implements store.Registry.
func (s *Store) GetUser(ctx context.Context, name string) (store.User, error) {
	u, err := scanUser(s.rqueryRow(ctx, `SELECT `+userCols+` FROM users WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return store.User{}, fmt.Errorf("user %q: %w", name, store.ErrNotFound)
	}
	if err != nil {
		return store.User{}, fmt.Errorf("get user %q: %w", name, err)
	}
	return u, nil
}

// ListUsers implements store.Registry, ordered by name.
func (s *Store) ListUsers(ctx context.Context) ([]store.User, error) {
	rows, err := s.rquery(ctx, `SELECT `+userCols+` FROM users ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	defer rows.Close()
	var us []store.User
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, fmt.Errorf("list users: %w", err)
		}
		us = append(us, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	return us, nil
}

// AddRule implements store.Registry.
func (s *Store) AddRule(ctx context.Context, r store.Rule) (store.Rule, error) {
	var out store.Rule
	err := s.write(ctx, func(w *wtx) error {
		var err error
		out, err = addRule(w, r, time.Now())
		return err
	})
	if err != nil {
		return store.Rule{}, err
	}
	return out, nil
}

// AddRules implements store.Registry: all rules in one transaction, or none.
func (s *Store) AddRules(ctx context.Context, rs []store.Rule) error {
	if len(rs) == 0 {
		return nil
	}
	now := time.Now()
	return s.write(ctx, func(w *wtx) error {
		for i, r := range rs {
			if _, err := addRule(w, r, now); err != nil {
				return fmt.Errorf("rule %d of %d: %w", i+1, len(rs), err)
			}
		}
		return nil
	})
}

func addRule(w *wtx, r store.Rule, now time.Time) (store.Rule, error) {
	what := fmt.Sprintf("%s rule %q", r.Kind, r.Pattern)
	// Checked first, for an error that names the user rather than "FOREIGN
	// KEY constraint failed" (the foreign key still guards the data).
	var one int
	switch err := w.queryRow(`SELECT 1 FROM users WHERE name = ?`, r.User).Scan(&one); {
	case errors.Is(err, sql.ErrNoRows):
		return store.Rule{}, fmt.Errorf("%s: user %q: %w", what, r.User, store.ErrNotFound)
	case err != nil:
		return store.Rule{}, fmt.Errorf("add %s: %w", what, err)
	}
	if r.Created.IsZero() {
		r.Created = now
	}
	ips, err := jsonList(r.IPs)
	if err != nil {
		return store.Rule{}, fmt.Errorf("add %s: %w", what, err)
	}
	res, err := w.exec(`INSERT INTO rules (kind, pattern, user_name, security, ips, dkim, spf, dmarc, token, verified, verified_at, created)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		r.Kind, r.Pattern, r.User, r.Security, ips, r.DKIM, r.SPF, r.DMARC, r.Token, b2i(r.Verified), ts(r.VerifiedAt), ts(r.Created))
	if isUnique(err) {
		return store.Rule{}, fmt.Errorf("%s: %w", what, store.ErrDuplicate)
	}
	if err != nil {
		return store.Rule{}, fmt.Errorf("add %s: %w", what, err)
	}
	if r.ID, err = res.LastInsertId(); err != nil {
		return store.Rule{}, fmt.Errorf("add %s: %w", what, err)
	}
	r.Created = tm(ts(r.Created)) // as a later read returns it
	r.VerifiedAt = tm(ts(r.VerifiedAt))
	return r, nil
}

const ruleCols = `id, kind, pattern, user_name, security, ips, dkim, spf, dmarc, token, verified, verified_at, created`

func scanRule(row rowScanner) (store.Rule, error) {
	var r store.Rule
	var ips string
	var verifiedAt, created int64
	if err := row.Scan(&r.ID, &r.Kind, &r.Pattern, &r.User, &r.Security, &ips, &r.DKIM, &r.SPF, &r.DMARC,
		&r.Token, &r.Verified, &verifiedAt, &created); err != nil {
		return store.Rule{}, err
	}
	var err error
	if r.IPs, err = parseList(ips); err != nil {
		return store.Rule{}, fmt.Errorf("rule %d: ips: %w", r.ID, err)
	}
	r.VerifiedAt, r.Created = tm(verifiedAt), tm(created)
	return r, nil
}

func (s *Store) listRules(ctx context.Context, what, query string, args ...any) ([]store.Rule, error) {
	rows, err := s.rquery(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer rows.Close()
	var rs []store.Rule
	for rows.Next() {
		r, err := scanRule(rows)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		rs = append(rs, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return rs, nil
}

// ListRules implements store.Registry, ordered by ID.
func (s *Store) ListRules(ctx context.Context) ([]store.Rule, error) {
	return s.listRules(ctx, "list rules", `SELECT `+ruleCols+` FROM rules ORDER BY id`)
}

// IPRules implements store.Registry, ordered by ID.
func (s *Store) IPRules(ctx context.Context) ([]store.Rule, error) {
	return s.listRules(ctx, "ip rules", `SELECT `+ruleCols+` FROM rules WHERE kind = 'ip' ORDER BY id`)
}

// FindRule implements store.Registry. The pattern is compared exactly:
// callers lower-case addresses and domains and canonicalise CIDRs.
func (s *Store) FindRule(ctx context.Context, kind, pattern string) (store.Rule, error) {
	r, err := scanRule(s.rqueryRow(ctx, `SELECT `+ruleCols+` FROM rules WHERE kind = ? AND pattern = ?`, kind, pattern))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Rule{}, fmt.Errorf("%s rule %q: %w", kind, pattern, store.ErrNotFound)
	}
	if err != nil {
		return store.Rule{}, fmt.Errorf("find %s rule %q: %w", kind, pattern, err)
	}
	return r, nil
}

// SetDomainVerified implements store.Registry.
func (s *Store) SetDomainVerified(ctx context.Context, domain string, at time.Time) error {
	notFound := fmt.Errorf("domain rule %q: %w", domain, store.ErrNotFound)
	err := s.write(ctx, func(w *wtx) error {
		return w.execOne(notFound, `UPDATE rules SET verified = 1, verified_at = ? WHERE kind = 'domain' AND pattern = ?`, ts(at), domain)
	})
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("verify domain %q: %w", domain, err)
	}
	return err
}

// RegistryVersion implements store.Registry. The counter lives in the
// database (kept by triggers), so edits by another process show.
func (s *Store) RegistryVersion(ctx context.Context) (int64, error) {
	var v int64
	if err := s.rqueryRow(ctx, `SELECT version FROM registry_version WHERE id = 1`).Scan(&v); err != nil {
		return 0, fmt.Errorf("registry version: %w", err)
	}
	return v, nil
}

// SeeClientIP implements store.Registry.
func (s *Store) SeeClientIP(ctx context.Context, ruleID int64, ip string, at time.Time) (bool, error) {
	// Nearly every message comes from a known server: answer those from the
	// read pool without queueing a write (and an fsync) per message.
	var one int
	switch err := s.rqueryRow(ctx, `SELECT 1 FROM seen_ips WHERE rule_id = ? AND ip = ?`, ruleID, ip).Scan(&one); {
	case err == nil:
		return false, nil
	case !errors.Is(err, sql.ErrNoRows):
		return false, fmt.Errorf("seen ip %s for rule %d: %w", ip, ruleID, err)
	}
	if at.IsZero() {
		at = time.Now()
	}
	var isNew bool
	err := s.write(ctx, func(w *wtx) error {
		// Atomic between processes: of two racing inserts, one changes a row.
		res, err := w.exec(`INSERT OR IGNORE INTO seen_ips (rule_id, ip, first_seen) VALUES (?, ?, ?)`, ruleID, ip, ts(at))
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		isNew = n == 1
		return err
	})
	if isForeignKey(err) {
		return false, fmt.Errorf("seen ip %s: rule %d: %w", ip, ruleID, store.ErrNotFound)
	}
	if err != nil {
		return false, fmt.Errorf("seen ip %s for rule %d: %w", ip, ruleID, err)
	}
	return isNew, nil
}
