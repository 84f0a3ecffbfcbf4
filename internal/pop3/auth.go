package pop3

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Credentials looks up a mailbox's password hash (as made by HashPassword).
// store.Store satisfies it. A mailbox without a password returns an error
// wrapping store.ErrNotFound; any other error is treated as temporary.
type Credentials interface {
	MailboxPassword(ctx context.Context, address string) (hash string, err error)
}

// maxPassword is bcrypt's limit: it ignores everything past 72 bytes, so a
// longer password is refused rather than silently truncated.
const maxPassword = 72

// HashPassword hashes a POP3 password with bcrypt. Passwords that could
// never be typed into a login (empty, NUL, CR or LF, over 72 bytes) are
// refused.
func HashPassword(pw string) (string, error) {
	return hashPassword(pw, bcrypt.DefaultCost)
}

func hashPassword(pw string, cost int) (string, error) {
	switch {
	case pw == "":
		return "", errors.New("pop3: empty password")
	case strings.ContainsAny(pw, "\x00\r\n"):
		return "", errors.New("pop3: password contains NUL, CR or LF")
	case len(pw) > maxPassword:
		return "", fmt.Errorf("pop3: password longer than %d bytes", maxPassword)
	}
	h, err := bcrypt.GenerateFromPassword([]byte(pw), cost)
	if err != nil {
		return "", fmt.Errorf("pop3: hash password: %w", err)
	}
	return string(h), nil
}

// CheckPassword reports whether pw matches a hash made by HashPassword.
func CheckPassword(hash, pw string) bool {
	if len(pw) > maxPassword || strings.IndexByte(pw, 0) >= 0 {
		return false
	}
	return bcrypt.CompareHashAndPassword([]byte(hash), []byte(pw)) == nil
}

// dummyHashes makes a failed lookup (unknown mailbox) cost as much as a
// wrong password, so response times do not tell which mailboxes exist. It
// uses the cost of the hashes the store really holds.
type dummyHashes struct {
	mu     sync.Mutex
	cost   int
	hashes map[int][]byte
}

func (d *dummyHashes) seen(hash string) {
	if c, err := bcrypt.Cost([]byte(hash)); err == nil {
		d.mu.Lock()
		d.cost = c
		d.mu.Unlock()
	}
}

func (d *dummyHashes) compare(pw string) {
	d.mu.Lock()
	cost := d.cost
	if cost == 0 {
		cost = bcrypt.DefaultCost
	}
	h, ok := d.hashes[cost]
	if !ok {
		var err error
		h, err = bcrypt.GenerateFromPassword([]byte("no such mailbox"), cost)
		if err != nil {
			d.mu.Unlock()
			return
		}
		if d.hashes == nil {
			d.hashes = map[int][]byte{}
		}
		d.hashes[cost] = h
	}
	d.mu.Unlock()
	if len(pw) > maxPassword {
		pw = pw[:maxPassword]
	}
	_ = bcrypt.CompareHashAndPassword(h, []byte(pw))
}

// throttle slows down password guessing (DESIGN.md §13): after FreeFailures
// failed logins from an address or for a mailbox, every further attempt
// first waits, longer each time, up to a bound. There is no lockout: the
// right password works at any time (after the wait), and failures older
// than the memory are forgotten, so once attempts stop everything is back
// to normal.
type throttle struct {
	free       int
	base, max  time.Duration
	memory     time.Duration
	maxEntries int

	mu sync.Mutex
	m  map[string]*failures
}

type failures struct {
	n    int
	last time.Time
}

// delay is how long the next attempt for any of keys waits.
func (t *throttle) delay(now time.Time, keys ...string) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, k := range keys {
		f := t.m[k]
		if f == nil {
			continue
		}
		if now.Sub(f.last) > t.memory {
			delete(t.m, k)
			continue
		}
		n = max(n, f.n)
	}
	return t.delayFor(n)
}

// delayFor: nothing for the first free failures, then base, doubling per
// failure, capped at max.
func (t *throttle) delayFor(n int) time.Duration {
	if n < t.free {
		return 0
	}
	d := t.base
	for i := t.free; i < n && d < t.max; i++ {
		d *= 2
	}
	return min(d, t.max)
}

// fail records a failed attempt for keys and returns the highest count.
func (t *throttle) fail(now time.Time, keys ...string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, k := range keys {
		f := t.m[k]
		if f == nil || now.Sub(f.last) > t.memory {
			f = &failures{}
			t.m[k] = f
		}
		f.n++
		f.last = now
		n = max(n, f.n)
	}
	if len(t.m) > t.maxEntries {
		t.prune(now)
	}
	return n
}

// reset forgets key (a mailbox after its right password).
func (t *throttle) reset(key string) {
	t.mu.Lock()
	delete(t.m, key)
	t.mu.Unlock()
}

// prune bounds the memory a flood of made-up mailbox names can take: drop
// what has expired, then the oldest tenth. The attacker's own address is
// refreshed by every failure, so it is never the oldest.
func (t *throttle) prune(now time.Time) {
	for k, f := range t.m {
		if now.Sub(f.last) > t.memory {
			delete(t.m, k)
		}
	}
	if len(t.m) <= t.maxEntries {
		return
	}
	type kv struct {
		k    string
		last time.Time
	}
	all := make([]kv, 0, len(t.m))
	for k, f := range t.m {
		all = append(all, kv{k, f.last})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].last.Before(all[j].last) })
	for _, e := range all[:len(all)-t.maxEntries*9/10] {
		delete(t.m, e.k)
	}
}
