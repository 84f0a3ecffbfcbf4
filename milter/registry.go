package milter

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/smsmilter/smsmilter/internal/store"
)

// regCache answers the registry lookups of end of message (the rules the
// policy consults, the forwarding user, the sending IPs already seen) from
// memory while the store's RegistryVersion stays the same. Every message
// asks the version first (one read instead of five or six), so an edit
// made with the CLI applies from the next message on, as without a cache.
//
// An entry is kept only if the version did not move while it was read:
// otherwise a lookup that started before an edit could put the old rule
// back after another message emptied the cache for the new version.
type regCache struct {
	st store.Store

	mu      sync.Mutex
	version int64 // of the entries; noVersion: cache nothing
	rules   map[ruleKey]cachedRule
	ipRules []store.Rule // nil: not loaded
	users   map[string]store.User
	seen    map[seenKey]bool // (rule, IP) pairs the store has recorded
}

const noVersion = -1

// Bounds, so that mail from many senders without a rule cannot grow the
// cache without limit; when full, a map starts over.
const (
	maxCachedRules = 10000
	maxCachedSeen  = 10000
)

type ruleKey struct{ kind, pattern string }

type cachedRule struct {
	r     store.Rule
	found bool
}

type seenKey struct {
	rule int64
	ip   string
}

func newRegCache(st store.Store) *regCache {
	return &regCache{st: st, version: noVersion}
}

// sync reads the registry version and drops everything cached for an
// older one. A failing store turns the cache off until it answers again.
func (c *regCache) sync(ctx context.Context) {
	v, err := c.st.RegistryVersion(ctx)
	if err != nil {
		v = noVersion
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if v != c.version || v == noVersion {
		c.version = v
		c.rules, c.ipRules, c.users = nil, nil, nil
	}
}

// FindRule implements policy.Rules.
func (c *regCache) FindRule(ctx context.Context, kind, pattern string) (store.Rule, error) {
	k := ruleKey{kind, pattern}
	c.mu.Lock()
	v := c.version
	e, ok := c.rules[k]
	c.mu.Unlock()
	if ok {
		if !e.found {
			return store.Rule{}, store.ErrNotFound
		}
		return e.r, nil
	}
	r, err := c.st.FindRule(ctx, kind, pattern)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return r, err
	}
	c.mu.Lock()
	if c.version == v && v != noVersion {
		if c.rules == nil || len(c.rules) >= maxCachedRules {
			c.rules = make(map[ruleKey]cachedRule)
		}
		c.rules[k] = cachedRule{r: r, found: err == nil}
	}
	c.mu.Unlock()
	return r, err
}

// IPRules implements policy.Rules.
func (c *regCache) IPRules(ctx context.Context) ([]store.Rule, error) {
	c.mu.Lock()
	v, rs := c.version, c.ipRules
	c.mu.Unlock()
	if rs != nil {
		return slices.Clone(rs), nil
	}
	rs, err := c.st.IPRules(ctx)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.version == v && v != noVersion {
		c.ipRules = append(make([]store.Rule, 0, len(rs)), rs...) // non-nil even when empty
	}
	c.mu.Unlock()
	return rs, nil
}

// GetUser is the store's, cached.
func (c *regCache) GetUser(ctx context.Context, name string) (store.User, error) {
	c.mu.Lock()
	v := c.version
	u, ok := c.users[name]
	c.mu.Unlock()
	if ok {
		return u, nil
	}
	u, err := c.st.GetUser(ctx, name)
	if err != nil {
		return u, err
	}
	c.mu.Lock()
	if c.version == v && v != noVersion {
		if c.users == nil || len(c.users) >= maxCachedRules {
			c.users = make(map[string]store.User)
		}
		c.users[name] = u
	}
	c.mu.Unlock()
	return u, nil
}

// SeeClientIP is the store's, skipping pairs it has already recorded: a
// recorded pair stays recorded (rule IDs are never reused), whatever the
// registry version.
func (c *regCache) SeeClientIP(ctx context.Context, ruleID int64, ip string, at time.Time) (bool, error) {
	k := seenKey{ruleID, ip}
	c.mu.Lock()
	known := c.seen[k]
	c.mu.Unlock()
	if known {
		return false, nil
	}
	isNew, err := c.st.SeeClientIP(ctx, ruleID, ip, at)
	if err != nil {
		return false, err
	}
	c.mu.Lock()
	if c.seen == nil || len(c.seen) >= maxCachedSeen {
		c.seen = make(map[seenKey]bool)
	}
	c.seen[k] = true
	c.mu.Unlock()
	return isNew, nil
}
