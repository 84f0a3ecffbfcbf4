package sqlite

import (
	"context"
	"database/sql"
	"fmt"
)

// migrations returns the schema as an ordered list: migration i (0-based)
// brings the database from version i to version i+1. Released entries are
// never edited, only appended to, since databases in the field are at every
// version. (A function rather than a package variable: nothing can modify it.)
func migrations() []string {
	return []string{
		// 1: initial schema.
		`
CREATE TABLE users (
	name      TEXT PRIMARY KEY CHECK (name <> ''),
	sender_id TEXT NOT NULL,
	tps       REAL NOT NULL DEFAULT 0,
	daily     INTEGER NOT NULL DEFAULT 0,
	route     TEXT NOT NULL DEFAULT '',
	created   INTEGER NOT NULL
) STRICT;

CREATE TABLE rules (
	id          INTEGER PRIMARY KEY AUTOINCREMENT,
	kind        TEXT NOT NULL CHECK (kind IN ('address', 'domain', 'ip')),
	pattern     TEXT NOT NULL CHECK (pattern <> ''),
	user_name   TEXT NOT NULL REFERENCES users (name) ON UPDATE CASCADE,
	security    TEXT NOT NULL DEFAULT '',
	ips         TEXT NOT NULL DEFAULT '[]', -- JSON list of CIDRs
	dkim        TEXT NOT NULL DEFAULT '',
	spf         TEXT NOT NULL DEFAULT '',
	dmarc       TEXT NOT NULL DEFAULT '',
	token       TEXT NOT NULL DEFAULT '',
	verified    INTEGER NOT NULL DEFAULT 0,
	verified_at INTEGER NOT NULL DEFAULT 0,
	created     INTEGER NOT NULL,
	UNIQUE (kind, pattern)
) STRICT;
CREATE INDEX rules_user ON rules (user_name);

-- A counter in the database, not in memory, so that every process notices
-- the CLI's edits. Triggers keep it current for any statement, including
-- ones later versions add.
CREATE TABLE registry_version (
	id      INTEGER PRIMARY KEY CHECK (id = 1),
	version INTEGER NOT NULL
) STRICT;
INSERT INTO registry_version (id, version) VALUES (1, 1);
CREATE TRIGGER users_ins AFTER INSERT ON users BEGIN UPDATE registry_version SET version = version + 1; END;
CREATE TRIGGER users_upd AFTER UPDATE ON users BEGIN UPDATE registry_version SET version = version + 1; END;
CREATE TRIGGER users_del AFTER DELETE ON users BEGIN UPDATE registry_version SET version = version + 1; END;
CREATE TRIGGER rules_ins AFTER INSERT ON rules BEGIN UPDATE registry_version SET version = version + 1; END;
CREATE TRIGGER rules_upd AFTER UPDATE ON rules BEGIN UPDATE registry_version SET version = version + 1; END;
CREATE TRIGGER rules_del AFTER DELETE ON rules BEGIN UPDATE registry_version SET version = version + 1; END;

CREATE TABLE seen_ips (
	rule_id    INTEGER NOT NULL REFERENCES rules (id) ON DELETE CASCADE,
	ip         TEXT NOT NULL,
	first_seen INTEGER NOT NULL,
	PRIMARY KEY (rule_id, ip)
) STRICT, WITHOUT ROWID;

CREATE TABLE jobs (
	id          INTEGER PRIMARY KEY AUTOINCREMENT,
	dedupe_key  TEXT NOT NULL DEFAULT '',
	message_id  TEXT NOT NULL DEFAULT '',
	queue_id    TEXT NOT NULL DEFAULT '',
	sender      TEXT NOT NULL DEFAULT '',
	notify_ok   INTEGER NOT NULL DEFAULT 0,
	subject     TEXT NOT NULL DEFAULT '',
	user_name   TEXT NOT NULL DEFAULT '',
	sender_id   TEXT NOT NULL DEFAULT '',
	to_number   TEXT NOT NULL CHECK (to_number <> ''),
	text        TEXT NOT NULL DEFAULT '',
	encoding    TEXT NOT NULL DEFAULT '',
	parts       INTEGER NOT NULL DEFAULT 1,
	state       TEXT NOT NULL CHECK (state IN ('queued', 'sending', 'sent', 'delivered', 'failed')),
	attempts    INTEGER NOT NULL DEFAULT 0,
	transport   TEXT NOT NULL DEFAULT '',
	last_error  TEXT NOT NULL DEFAULT '',
	created     INTEGER NOT NULL,
	next_try    INTEGER NOT NULL,
	updated     INTEGER NOT NULL,
	lease_until INTEGER NOT NULL DEFAULT 0
) STRICT;
-- Claim (state = queued, by next_try), ListJobs by state, Depth.
CREATE INDEX jobs_state ON jobs (state, next_try);
CREATE INDEX jobs_dedupe ON jobs (dedupe_key, created) WHERE dedupe_key <> '';
CREATE INDEX jobs_user ON jobs (user_name, created);

CREATE TABLE parts (
	job_id    INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
	idx       INTEGER NOT NULL,
	transport TEXT NOT NULL,
	ref       TEXT NOT NULL,
	state     TEXT NOT NULL,
	error     TEXT NOT NULL DEFAULT '',
	PRIMARY KEY (job_id, idx)
) STRICT, WITHOUT ROWID;
CREATE INDEX parts_ref ON parts (transport, ref);

CREATE TABLE sent (
	id         INTEGER PRIMARY KEY,
	number     TEXT NOT NULL,
	transport  TEXT NOT NULL,
	sender_id  TEXT NOT NULL DEFAULT '',
	sender     TEXT NOT NULL DEFAULT '',
	message_id TEXT NOT NULL DEFAULT '',
	subject    TEXT NOT NULL DEFAULT '',
	at         INTEGER NOT NULL
) STRICT;
CREATE INDEX sent_number ON sent (number, at);
CREATE INDEX sent_at ON sent (at);

CREATE TABLE events (
	id      INTEGER PRIMARY KEY AUTOINCREMENT,
	at      INTEGER NOT NULL,
	kind    TEXT NOT NULL CHECK (kind <> ''),
	message TEXT NOT NULL DEFAULT '',
	fields  TEXT NOT NULL DEFAULT '{}' -- JSON object of strings
) STRICT;
CREATE INDEX events_at ON events (at);
CREATE INDEX events_kind ON events (kind, at);

CREATE TABLE mailboxes (
	address TEXT PRIMARY KEY COLLATE NOCASE CHECK (address <> ''),
	hash    TEXT NOT NULL,
	updated INTEGER NOT NULL
) STRICT;

CREATE TABLE mails (
	id          INTEGER PRIMARY KEY AUTOINCREMENT,
	sender      TEXT NOT NULL,
	rcpts       TEXT NOT NULL CHECK (rcpts <> '[]'), -- JSON list
	data        BLOB NOT NULL,
	state       TEXT NOT NULL CHECK (state IN ('queued', 'sending', 'failed')),
	attempts    INTEGER NOT NULL DEFAULT 0,
	next_try    INTEGER NOT NULL,
	lease_until INTEGER NOT NULL DEFAULT 0,
	created     INTEGER NOT NULL,
	last_err    TEXT NOT NULL DEFAULT ''
) STRICT;
CREATE INDEX mails_state ON mails (state, next_try);

-- Ping writes here to prove the database is writable.
CREATE TABLE heartbeat (
	id INTEGER PRIMARY KEY CHECK (id = 1),
	at INTEGER NOT NULL
) STRICT;
`,
	}
}

// migrate brings the database to the newest schema in one transaction.
// BEGIN IMMEDIATE makes a second process that opens the same new file at the
// same moment wait and then find the work done.
func migrate(ctx context.Context, conn *sql.Conn, path string, list []string) (from, to int, err error) {
	// Usually there is nothing to do: find out without taking the write lock
	// (every CLI command opens the store, also while the daemon writes).
	var cur int
	if conn.QueryRowContext(ctx, `SELECT MAX(version) FROM schema_version`).Scan(&cur) == nil && cur == len(list) {
		return cur, cur, nil
	}
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return 0, 0, fmt.Errorf("begin: %w", err)
	}
	defer func() {
		if err != nil {
			conn.ExecContext(bg, "ROLLBACK")
		}
	}()
	if _, err := conn.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL) STRICT`); err != nil {
		return 0, 0, fmt.Errorf("schema_version table: %w", err)
	}
	if err := conn.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_version`).Scan(&from); err != nil {
		return 0, 0, fmt.Errorf("reading schema version: %w", err)
	}
	to = len(list)
	if from > to {
		return from, to, fmt.Errorf("database %s has schema version %d, newer than this smsmilter knows (%d): run a newer smsmilter or restore a backup", path, from, to)
	}
	for v := from; v < to; v++ {
		if _, err := conn.ExecContext(ctx, list[v]); err != nil {
			return from, to, fmt.Errorf("migration to version %d: %w", v+1, err)
		}
	}
	if from != to {
		if _, err := conn.ExecContext(ctx, `DELETE FROM schema_version`); err != nil {
			return from, to, fmt.Errorf("recording schema version: %w", err)
		}
		if _, err := conn.ExecContext(ctx, `INSERT INTO schema_version (version) VALUES (?)`, to); err != nil {
			return from, to, fmt.Errorf("recording schema version: %w", err)
		}
	}
	if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
		return from, to, fmt.Errorf("commit: %w", err)
	}
	return from, to, nil
}
