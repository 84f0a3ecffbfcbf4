// Package store defines the one interface through which smsmilter keeps its
// state (DESIGN.md §8): the registry of forwarding users and rules, the SMS
// queue, AutoCLIP records, first-seen sending IPs, the event log, POP3
// credentials and the queue of mail smsmilter itself sends. The embedded
// SQLite implementation lives in store/sqlite; a PostgreSQL one can serve
// several MTA hosts sharing one state by implementing the same interface.
package store

import (
	"context"
	"errors"
	"time"
)

// Errors every implementation returns (wrapped with %w) so callers can tell
// them apart without knowing the backend.
var (
	ErrNotFound  = errors.New("not found")
	ErrDuplicate = errors.New("already exists")
)

// Store is everything smsmilter persists. Implementations are safe for
// concurrent use by many goroutines and by several processes (the daemon and
// the CLI) at once.
type Store interface {
	Registry
	Queue
	AutoCLIP
	Events
	Mailboxes
	MailQueue
	// ReleaseLeases makes every leased SMS job and outgoing mail due at now
	// again and returns how many. The daemon calls it at start: a daemon
	// that died left its jobs in hand leased to nobody, and they must not
	// wait out the lease. (A store shared by several hosts would release
	// only the calling host's leases.)
	ReleaseLeases(ctx context.Context, now time.Time) (int, error)
	// Purge deletes history older than before: SMS jobs that reached a
	// final state (sent, delivered, failed) and were last updated before
	// it, with their parts; events; outgoing mail that was given up. Jobs
	// still queued or in flight are never touched. It returns how many
	// records went.
	Purge(ctx context.Context, before time.Time) (int, error)
	// Ping reports whether the store is reachable and writable; /healthz uses it.
	Ping(ctx context.Context) error
	Close() error
}

// ---- registry ----

// User is a forwarding user: the SMS identity mail is sent as.
type User struct {
	Name     string
	SenderID string  // alphanumeric up to 11 characters, or a number
	TPS      float64 // SMS per second; 0 = transport's pace only
	Daily    int     // SMS per UTC day; 0 = unlimited
	Route    string  // optional route name / transport override
	Created  time.Time
}

// Rule kinds, in the order they are consulted.
const (
	KindAddress = "address"
	KindDomain  = "domain"
	KindIP      = "ip"
)

// Rule is an authorized source (DESIGN.md §4).
type Rule struct {
	ID       int64
	Kind     string // KindAddress, KindDomain, KindIP
	Pattern  string // lower-case address, lower-case domain, or canonical CIDR
	User     string // forwarding user name
	Security string // spf | google | office365 | ip | auth | none
	IPs      []string
	DKIM     string // pass | gray | fail
	SPF      string
	DMARC    string
	// Token is the domain verification token (32 hex digits); domain rules only.
	Token      string
	Verified   bool
	VerifiedAt time.Time
	Created    time.Time
}

// Registry holds forwarding users and rules.
type Registry interface {
	AddUser(ctx context.Context, u User) error // ErrDuplicate if the name exists
	GetUser(ctx context.Context, name string) (User, error)
	ListUsers(ctx context.Context) ([]User, error)

	// AddRule stores a new rule and returns it with ID and Created set.
	// ErrDuplicate if a rule of the same kind and pattern exists; ErrNotFound
	// (wrapped) if the user does not exist.
	AddRule(ctx context.Context, r Rule) (Rule, error)
	// AddRules adds all rules in one transaction, or none.
	AddRules(ctx context.Context, rs []Rule) error
	ListRules(ctx context.Context) ([]Rule, error)
	// FindRule returns the rule of a kind with exactly this pattern.
	FindRule(ctx context.Context, kind, pattern string) (Rule, error)
	// IPRules returns every ip rule (matching a client IP needs a CIDR scan).
	IPRules(ctx context.Context) ([]Rule, error)
	SetDomainVerified(ctx context.Context, domain string, at time.Time) error
	// RegistryVersion changes whenever users or rules change, so callers may
	// cache lookups and notice edits made by another process.
	RegistryVersion(ctx context.Context) (int64, error)

	// SeeClientIP records that an accepted message for a rule came from an IP
	// and reports whether that pair was new (the admin is told once, ever).
	SeeClientIP(ctx context.Context, ruleID int64, ip string, at time.Time) (isNew bool, err error)
}

// ---- SMS queue ----

// Job states.
const (
	JobQueued    = "queued"    // waiting for its next attempt
	JobSending   = "sending"   // leased by a dispatcher
	JobSent      = "sent"      // accepted by the transport
	JobDelivered = "delivered" // every part reported delivered
	JobFailed    = "failed"    // given up; sender notified
)

// Job is one SMS to one recipient.
type Job struct {
	ID        int64
	DedupeKey string // (Message-ID or body hash) + recipient
	MessageID string // of the original mail
	QueueID   string // MTA queue ID
	Sender    string // address notices and replies go to
	NotifyOK  bool   // the sender passed SPF or aligned DKIM: notices may go to it
	Subject   string
	User      string // forwarding user
	SenderID  string
	To        string // E.164 with '+'
	Text      string
	Encoding  string // gsm7 | ucs2
	Parts     int
	State     string
	Attempts  int
	Transport string // the one that accepted it
	LastError string
	Created   time.Time
	NextTry   time.Time
	Updated   time.Time
	PartState []Part
}

// Part is one SMS part as the transport reported it.
type Part struct {
	Index int
	Ref   string // message ID the transport/SMSC gave the part
	State string // submitted | delivered | failed | unknown
	Error string
}

// EnqueueResult tells, per job, whether it was queued or suppressed as a
// duplicate inside the dedupe window.
type EnqueueResult struct {
	IDs        []int64 // 0 for a duplicate
	Duplicates int
}

// Queue is the durable SMS queue.
type Queue interface {
	// Enqueue commits all jobs of one message in one transaction before it
	// returns (durable on disk). Jobs whose DedupeKey was enqueued within
	// window are skipped. Implementations may group concurrent calls into one
	// commit. On error nothing is recorded, dedupe keys included.
	Enqueue(ctx context.Context, jobs []Job, window time.Duration) (EnqueueResult, error)
	// Claim leases up to limit due jobs (NextTry <= now) for lease, moving them
	// to JobSending; a lease that expires (crashed dispatcher) makes the job due
	// again.
	Claim(ctx context.Context, now time.Time, limit int, lease time.Duration) ([]Job, error)
	// MarkSent records that transport accepted the job with these parts.
	MarkSent(ctx context.Context, id int64, transport string, parts []Part) error
	// Retry puts the job back with an error and its next attempt time.
	Retry(ctx context.Context, id int64, next time.Time, errText string) error
	// Fail gives the job up.
	Fail(ctx context.Context, id int64, errText string) error
	// Defer puts a leased job back to wait until next without it counting
	// as an attempt and without an error (pacing, shutdown): the attempt
	// Claim counted is taken back. A job already sent, delivered or failed
	// is left alone (error).
	Defer(ctx context.Context, id int64, next time.Time) error
	// UpdatePart applies a delivery report for the part a transport knows by
	// ref; it returns the job after the update (its State becomes delivered
	// when every part is, failed when any part failed).
	UpdatePart(ctx context.Context, transport, ref, state, errText string) (Job, error)
	GetJob(ctx context.Context, id int64) (Job, error)
	// ListJobs returns jobs newest first; empty state = all.
	ListJobs(ctx context.Context, state string, limit int) ([]Job, error)
	// Depth counts jobs per state.
	Depth(ctx context.Context) (map[string]int, error)
	// CountUserSince counts SMS parts queued for a forwarding user since t
	// (for the daily quota).
	CountUserSince(ctx context.Context, user string, since time.Time) (int, error)
}

// ---- AutoCLIP ----

// Sent records who last wrote to a number, so replies find their way back.
type Sent struct {
	Number    string // E.164
	Transport string
	SenderID  string
	Sender    string // original sender address
	MessageID string
	Subject   string
	At        time.Time
}

// AutoCLIP keeps reply routing records.
type AutoCLIP interface {
	RecordSent(ctx context.Context, s Sent) error
	// LastSent returns the most recent record for a number on a transport
	// newer than since (any transport when transport is empty).
	LastSent(ctx context.Context, number, transport string, since time.Time) (Sent, error)
	PurgeSent(ctx context.Context, before time.Time) (int, error)
}

// ---- events ----

// Event kinds shown by `smsmilter log`.
const (
	EventAccepted = "accepted"
	EventRefused  = "refused"
	EventSent     = "sent"
	EventFailed   = "failed"
	EventReply    = "reply"
	EventNewIP    = "new_ip"
	EventVerdict  = "verdict"
	EventConfig   = "config"
	EventRegistry = "registry"
	EventReceipt  = "receipt"
)

// Event is one line of the event log.
type Event struct {
	ID      int64
	Time    time.Time
	Kind    string
	Message string            // one line a person reads
	Fields  map[string]string // sender, rule, ip, job, ...
}

// Events is the append-only event log.
type Events interface {
	LogEvent(ctx context.Context, e Event) error
	// ListEvents returns events oldest first, filtered by kind (empty = all)
	// and Time >= since, at most limit (0 = all) of the newest.
	ListEvents(ctx context.Context, kind string, since time.Time, limit int) ([]Event, error)
	// CountEvents counts events of a kind whose field key equals value since t
	// (rate limits such as verdict answers per address per hour).
	CountEvents(ctx context.Context, kind, key, value string, since time.Time) (int, error)
}

// ---- POP3 mailboxes ----

// Mailboxes holds POP3 credentials (password hashes, never passwords).
type Mailboxes interface {
	SetMailboxPassword(ctx context.Context, address, hash string) error
	MailboxPassword(ctx context.Context, address string) (hash string, err error)
}

// ---- outgoing mail ----

// Mail is a message smsmilter submits through the MTA (reply, notice,
// verdict answer), kept until the MTA accepts it.
type Mail struct {
	ID       int64
	From     string // envelope sender ("" = null sender)
	To       []string
	Data     []byte // the whole RFC 5322 message, CRLF line ends
	Attempts int
	NextTry  time.Time
	Created  time.Time
	LastErr  string
}

// MailQueue keeps outgoing mail durable until the MTA accepts it.
type MailQueue interface {
	EnqueueMail(ctx context.Context, m Mail) (int64, error)
	ClaimMail(ctx context.Context, now time.Time, limit int, lease time.Duration) ([]Mail, error)
	MailDone(ctx context.Context, id int64) error
	MailRetry(ctx context.Context, id int64, next time.Time, errText string) error
	// MailFail gives a mail up (permanent SMTP error or too old).
	MailFail(ctx context.Context, id int64, errText string) error
}
