package milter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/smsmilter/smsmilter/internal/config"
	"github.com/smsmilter/smsmilter/internal/dnsresolver"
	"github.com/smsmilter/smsmilter/internal/phone"
	"github.com/smsmilter/smsmilter/internal/store"
	"github.com/smsmilter/smsmilter/policy"
)

// MailSubmitter queues mail smsmilter sends itself (notices, verdict
// answers); internal/mailer.Spool implements it durably.
type MailSubmitter interface {
	Submit(ctx context.Context, envFrom string, rcpts []string, data []byte) error
}

// Options are the Handler's dependencies.
type Options struct {
	Config  *config.Config
	Store   store.Store
	Mail    MailSubmitter // nil: notices are logged, not sent
	Log     *slog.Logger
	Metrics *Metrics // nil: a private registry
	Now     func() time.Time
	// Queued is called after jobs were committed (wakes the dispatcher).
	Queued func()
}

// Handler decides, per message, which SMS to queue and what to answer. It
// is shared by every milter session; its config can be swapped by Reload.
type Handler struct {
	store   store.Store
	mail    MailSubmitter
	log     *slog.Logger
	metrics *Metrics
	now     func() time.Time
	queued  func()
	rt      atomic.Pointer[runtime]
	bg      sync.WaitGroup // eventLater writes
	reg     *regCache
}

// runtime is everything derived from one config: built whole before it is
// swapped in, so a bad reload never leaves a half-applied config.
type runtime struct {
	cfg        *config.Config
	smsDomains map[string]bool
	strip      []*regexp.Regexp
	eval       *policy.Evaluator
	numbers    numberCache
}

// numberCache remembers ParseRecipient's verdicts: libphonenumber costs
// tens of microseconds a number, and mail goes to the same few numbers
// over and over. It lives in the runtime because the verdicts depend on
// numbers.default_region and allowed_regions.
type numberCache struct {
	mu sync.Mutex
	m  map[string]parsedNumber
}

type parsedNumber struct {
	n   phone.Number
	err error
}

// numberCacheSize bounds the cache; when full it starts over, which is
// cheaper than tracking use and good enough for a working set this small.
const numberCacheSize = 4096

func (rt *runtime) parseRecipient(local string) (phone.Number, error) {
	c := &rt.numbers
	c.mu.Lock()
	p, ok := c.m[local]
	c.mu.Unlock()
	if ok {
		return p.n, p.err
	}
	n, err := phone.ParseRecipient(local, rt.cfg.Numbers.DefaultRegion, rt.cfg.Numbers.AllowedRegions)
	c.mu.Lock()
	if c.m == nil || len(c.m) >= numberCacheSize {
		c.m = make(map[string]parsedNumber)
	}
	c.m[local] = parsedNumber{n, err}
	c.mu.Unlock()
	return n, err
}

// New builds a Handler; the config must already be validated.
func New(o Options) (*Handler, error) {
	h := &Handler{store: o.Store, mail: o.Mail, log: o.Log, metrics: o.Metrics, now: o.Now, queued: o.Queued}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.metrics == nil {
		h.metrics = NewMetrics(nil)
	}
	if h.now == nil {
		h.now = time.Now
	}
	if o.Store == nil {
		return nil, errors.New("milter: no store")
	}
	h.reg = newRegCache(o.Store)
	if err := h.Reload(o.Config); err != nil {
		return nil, err
	}
	return h, nil
}

// Reload builds everything the new config needs, then swaps it in.
// Sessions already running keep the config they started with.
func (h *Handler) Reload(cfg *config.Config) error {
	if cfg == nil {
		return errors.New("milter: no config")
	}
	rt, err := h.newRuntime(cfg)
	if err != nil {
		return err
	}
	h.rt.Store(rt)
	return nil
}

// Config returns the config in force.
func (h *Handler) Config() *config.Config { return h.rt.Load().cfg }

func (h *Handler) runtime() *runtime { return h.rt.Load() }

func (h *Handler) newRuntime(cfg *config.Config) (*runtime, error) {
	if len(cfg.SMSDomains) == 0 {
		return nil, errors.New("milter: sms_domains is empty")
	}
	rt := &runtime{cfg: cfg, smsDomains: make(map[string]bool)}
	for _, d := range cfg.SMSDomains {
		rt.smsDomains[strings.TrimSuffix(strings.ToLower(d), ".")] = true
	}
	for _, p := range cfg.Body.StripPatterns {
		re, err := regexp.Compile(p)
		if err != nil {
			return nil, fmt.Errorf("body.strip_patterns: %w", err)
		}
		rt.strip = append(rt.strip, re)
	}
	rt.eval = policy.New(policy.Options{
		Resolver:             dnsresolver.New(cfg.DNS.Resolver, cfg.DNS.Timeout),
		TrustedAuthservIDs:   cfg.Auth.TrustedAuthservIDs,
		UpstreamStripsForged: cfg.Auth.UpstreamStripsForged,
		Registry:             h.reg,
		Log:                  h.log,
	})
	return rt, nil
}

func (rt *runtime) isSMSDomain(d string) bool {
	return rt.smsDomains[strings.TrimSuffix(strings.ToLower(d), ".")]
}

func (h *Handler) newSession(cs *connState) *session {
	return &session{h: h, cs: cs, rt: h.runtime()}
}
