// Package dispatch sends queued SMS jobs through transports (DESIGN.md §6),
// outside the SMTP session: it routes each number to its transports (first
// matching prefix, failover in order), paces every forwarding user and
// every transport to its rate (bursts wait, they never fail), retries
// temporary failures with backoff and jitter until sms.max_age, and then
// gives the job up and tells the sender. Each job is handled on its own, so
// one bad number never delays the others.
package dispatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/smsmilter/smsmilter/internal/config"
	"github.com/smsmilter/smsmilter/internal/store"
	"github.com/smsmilter/smsmilter/plugins/sdk"
)

// Sender is a transport as the dispatcher sees it; *pluginhost.Plugin is one.
type Sender interface {
	Send(ctx context.Context, m sdk.Message) ([]sdk.PartResult, error)
}

// Options are the dispatcher's dependencies.
type Options struct {
	Store store.Store
	// Transport returns a running transport by name; false while it is
	// not running (its jobs are retried, not failed).
	Transport func(name string) (Sender, bool)
	// Config returns the config in force, so routes, rates and ages follow
	// a reload.
	Config func() *config.Config
	// Failed is called once when a job is given up (sender notice).
	Failed func(ctx context.Context, j store.Job, reason string)
	// Sent is called after a transport accepted a job (AutoCLIP record).
	Sent func(ctx context.Context, j store.Job, transport string)
	Log  *slog.Logger
	Now  func() time.Time
	// MaxInFlight bounds jobs being handled at once (default 512).
	MaxInFlight int
	// SendTimeout bounds one Send call (default 2m).
	SendTimeout time.Duration
	// Poll is how often the queue is read when nobody calls Wake (default 1s).
	Poll time.Duration
	// Backoff is the wait before the next attempt after n attempts
	// (default Backoff).
	Backoff func(attempts int) time.Duration
}

// Dispatcher moves jobs from the queue to transports.
type Dispatcher struct {
	o    Options
	wake chan struct{}
	sem  chan struct{}

	mu         sync.Mutex
	userLim    map[string]*rate.Limiter
	userTPS    map[string]userInfo
	transLim   map[string]*rate.Limiter
	transSlots map[string]chan struct{}
	wg         sync.WaitGroup
}

type userInfo struct {
	tps     float64
	fetched time.Time
}

// lease is how long a claimed job stays ours; a crashed daemon's jobs are
// due again after it.
const lease = 10 * time.Minute

// notRunningWait is how often a job whose transports are all down is
// looked at again; Wake (a transport came up) brings it sooner.
const notRunningWait = 5 * time.Second

// maxWait is the longest a job waits in memory for its rate slot; jobs
// further out go back to the queue so that they hold no lease and no slot.
const maxWait = 2 * time.Minute

// New returns a dispatcher; Run starts it.
func New(o Options) *Dispatcher {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = 512
	}
	if o.SendTimeout <= 0 {
		o.SendTimeout = 2 * time.Minute
	}
	if o.Poll <= 0 {
		o.Poll = time.Second
	}
	if o.Backoff == nil {
		o.Backoff = Backoff
	}
	return &Dispatcher{
		o:          o,
		wake:       make(chan struct{}, 1),
		sem:        make(chan struct{}, o.MaxInFlight),
		userLim:    map[string]*rate.Limiter{},
		userTPS:    map[string]userInfo{},
		transLim:   map[string]*rate.Limiter{},
		transSlots: map[string]chan struct{}{},
	}
}

// Wake tells the dispatcher that jobs were queued.
func (d *Dispatcher) Wake() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// Run dispatches until ctx ends, then waits for jobs in hand to finish
// their current attempt (their results are recorded; nothing is lost).
func (d *Dispatcher) Run(ctx context.Context) {
	t := time.NewTicker(d.o.Poll)
	defer t.Stop()
	for {
		d.fill(ctx)
		select {
		case <-ctx.Done():
			d.wg.Wait()
			return
		case <-t.C:
		case <-d.wake:
		}
	}
}

// fill claims as many due jobs as there are free slots.
func (d *Dispatcher) fill(ctx context.Context) {
	for ctx.Err() == nil {
		free := cap(d.sem) - len(d.sem)
		if free <= 0 {
			return
		}
		jobs, err := d.o.Store.Claim(ctx, d.o.Now(), min(free, 100), lease)
		if err != nil {
			d.o.Log.Warn("cannot read the SMS queue", "err", err)
			return
		}
		for _, j := range jobs {
			d.sem <- struct{}{}
			d.wg.Add(1)
			go func(j store.Job) {
				defer func() { <-d.sem; d.wg.Done() }()
				d.handle(context.WithoutCancel(ctx), ctx, j)
			}(j)
		}
		if len(jobs) < min(free, 100) {
			return
		}
	}
}

// handle makes one attempt at a job. ctx is not cancelled by shutdown, so
// that the outcome of a send in progress is always recorded; stop is.
func (d *Dispatcher) handle(ctx, stop context.Context, j store.Job) {
	cfg := d.o.Config()
	now := d.o.Now()
	log := d.o.Log.With("job", j.ID, "to", j.To, "user", j.User)
	if now.Sub(j.Created) > cfg.SMS.MaxAge {
		d.fail(ctx, j, fmt.Sprintf("not sent within sms.max_age (%s): %s", cfg.SMS.MaxAge, orNone(j.LastError)))
		return
	}
	route := routeFor(cfg, j.To)
	if len(route) == 0 {
		d.fail(ctx, j, "no route in the config sends to "+j.To)
		return
	}

	// Pace the forwarding user. A slot far in the future goes back to the
	// queue instead of waiting here, so a busy user cannot fill the
	// dispatcher and delay everyone else.
	if lim := d.userLimiter(ctx, j.User); lim != nil {
		r := lim.ReserveN(now, 1)
		if delay := r.DelayFrom(now); delay > maxWait {
			r.CancelAt(now)
			d.deferJob(ctx, j, now.Add(maxWait), "waiting for the user's rate (tps)")
			return
		} else if !sleep(stop, delay) {
			r.CancelAt(d.o.Now())
			d.deferJob(ctx, j, d.o.Now(), "")
			return
		}
	}

	var errs []string
	permanent, tried := false, false
	for _, name := range route {
		tr, ok := d.o.Transport(name)
		if !ok {
			errs = append(errs, name+": transport not running")
			continue
		}
		tried = true
		if lim := d.transportLimiter(cfg, name); lim != nil {
			if err := lim.Wait(stop); err != nil {
				d.deferJob(ctx, j, d.o.Now(), "")
				return
			}
		}
		slots := d.windowSlots(cfg, name)
		if slots != nil {
			select {
			case slots <- struct{}{}:
			case <-stop.Done():
				d.deferJob(ctx, j, d.o.Now(), "")
				return
			}
		}
		sctx, cancel := context.WithTimeout(ctx, d.o.SendTimeout)
		parts, err := tr.Send(sctx, sdk.Message{ID: fmt.Sprint(j.ID), To: j.To, From: j.SenderID, Text: j.Text, Encoding: j.Encoding, Parts: j.Parts})
		cancel()
		if slots != nil {
			<-slots
		}
		if err == nil {
			ps := make([]store.Part, len(parts))
			for i, p := range parts {
				ps[i] = store.Part{Index: p.Index, Ref: p.Ref, State: "submitted"}
			}
			if err := d.o.Store.MarkSent(ctx, j.ID, name, ps); err != nil {
				// The SMS went out; if this record is lost the lease
				// expires and it may go out again (at least once).
				log.Error("SMS sent but not recorded", "transport", name, "err", err)
				return
			}
			j.Transport, j.PartState, j.State = name, ps, store.JobSent
			log.Info("SMS sent", "transport", name, "parts", len(ps), "attempt", j.Attempts)
			d.event(ctx, store.EventSent, fmt.Sprintf("SMS %d to %s sent through %s (%d part(s))", j.ID, j.To, name, len(ps)), j, name)
			if d.o.Sent != nil {
				d.o.Sent(ctx, j, name)
			}
			return
		}
		errs = append(errs, name+": "+err.Error())
		if sdk.IsPermanent(err) {
			// The transport says this SMS can never go (invalid number,
			// rejected text): another transport would say the same.
			permanent = true
			break
		}
		log.Info("transport failed; trying the next one", "transport", name, "err", err)
	}
	reason := strings.Join(errs, "; ")
	if !tried {
		// Nothing was attempted: the transports are starting (the daemon
		// just started) or restarting. That costs the job no attempt and
		// no backoff; sms.max_age still bounds the wait.
		log.Debug("no transport running for the job yet", "err", reason)
		d.deferJob(ctx, j, d.o.Now().Add(notRunningWait), "")
		return
	}
	if permanent {
		d.fail(ctx, j, reason)
		return
	}
	next := d.o.Now().Add(d.o.Backoff(j.Attempts))
	if next.Sub(j.Created) > cfg.SMS.MaxAge {
		d.fail(ctx, j, fmt.Sprintf("not sent within sms.max_age (%s): %s", cfg.SMS.MaxAge, reason))
		return
	}
	log.Warn("SMS not sent; will retry", "err", reason, "next_try", next.Format(time.RFC3339), "attempt", j.Attempts)
	if err := d.o.Store.Retry(ctx, j.ID, next, reason); err != nil {
		log.Error("cannot record the retry; the job comes back when its lease expires", "err", err)
	}
}

// Backoff is the wait after a job's n-th attempt (Claim counts them from
// 1): 30s after the first, doubling up to 30m, with ±25% jitter so that
// jobs that failed together do not retry together.
func Backoff(attempts int) time.Duration {
	d := 15 * time.Second << min(attempts, 7)
	d = min(d, 30*time.Minute)
	j := d / 4
	return d - j + rand.N(2*j+1)
}

func (d *Dispatcher) deferJob(ctx context.Context, j store.Job, next time.Time, why string) {
	if err := d.o.Store.Defer(ctx, j.ID, next); err != nil {
		d.o.Log.Warn("cannot put a job back; it comes back when its lease expires", "job", j.ID, "err", err)
	} else if why != "" {
		d.o.Log.Debug("job deferred", "job", j.ID, "until", next.Format(time.RFC3339), "why", why)
	}
}

func (d *Dispatcher) fail(ctx context.Context, j store.Job, reason string) {
	d.o.Log.Warn("SMS given up", "job", j.ID, "to", j.To, "user", j.User, "reason", reason)
	if err := d.o.Store.Fail(ctx, j.ID, reason); err != nil {
		d.o.Log.Error("cannot mark the job failed", "job", j.ID, "err", err)
		return
	}
	j.State, j.LastError = store.JobFailed, reason
	d.event(ctx, store.EventFailed, fmt.Sprintf("SMS %d to %s failed: %s", j.ID, j.To, reason), j, "")
	if d.o.Failed != nil {
		d.o.Failed(ctx, j, reason)
	}
}

func (d *Dispatcher) event(ctx context.Context, kind, msg string, j store.Job, transport string) {
	f := map[string]string{"job": fmt.Sprint(j.ID), "to": j.To, "user": j.User, "sender": j.Sender}
	if transport != "" {
		f["transport"] = transport
	}
	if err := d.o.Store.LogEvent(ctx, store.Event{Time: d.o.Now(), Kind: kind, Message: msg, Fields: f}); err != nil {
		d.o.Log.Warn("cannot write the event log", "err", err)
	}
}

// userLimiter returns the forwarding user's pacer, nil when the user has
// no rate of its own. The rate is re-read now and then, so `user add`
// changes reach a running daemon.
func (d *Dispatcher) userLimiter(ctx context.Context, name string) *rate.Limiter {
	d.mu.Lock()
	info, ok := d.userTPS[name]
	d.mu.Unlock()
	if !ok || d.o.Now().Sub(info.fetched) > 30*time.Second {
		u, err := d.o.Store.GetUser(ctx, name)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			d.o.Log.Warn("cannot read the forwarding user; pacing with the last known rate", "user", name, "err", err)
		} else {
			info = userInfo{tps: u.TPS, fetched: d.o.Now()}
			d.mu.Lock()
			d.userTPS[name] = info
			d.mu.Unlock()
		}
	}
	if info.tps <= 0 {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	lim := d.userLim[name]
	if lim == nil {
		lim = rate.NewLimiter(rate.Limit(info.tps), 1)
		d.userLim[name] = lim
	} else if lim.Limit() != rate.Limit(info.tps) {
		lim.SetLimit(rate.Limit(info.tps))
	}
	return lim
}

func (d *Dispatcher) transportLimiter(cfg *config.Config, name string) *rate.Limiter {
	tps := cfg.Transports[name].TPS
	if tps <= 0 {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	lim := d.transLim[name]
	if lim == nil {
		lim = rate.NewLimiter(rate.Limit(tps), max(1, int(tps/10)))
		d.transLim[name] = lim
	} else if lim.Limit() != rate.Limit(tps) {
		lim.SetLimit(rate.Limit(tps))
	}
	return lim
}

// windowSlots bounds the Sends outstanding on a transport to its window,
// nil when it has none. The transport's own window frees a slot when the
// SMSC answers, before the host hears of it; counting here, from the
// host's side, keeps the SMS a plugin crash can leave unreported within the
// window.
func (d *Dispatcher) windowSlots(cfg *config.Config, name string) chan struct{} {
	w := cfg.Transports[name].Window()
	if w <= 0 {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.transSlots[name]
	if s == nil || cap(s) != w {
		// A new window takes effect with the transport's restart; the old
		// channel drains by itself.
		s = make(chan struct{}, w)
		d.transSlots[name] = s
	}
	return s
}

// routeFor returns the transports for a number: the first route whose
// prefix matches (no prefix matches any number).
func routeFor(cfg *config.Config, number string) []string {
	for _, r := range cfg.Routes {
		if strings.HasPrefix(number, r.Prefix) {
			return r.Transports
		}
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func orNone(s string) string {
	if s == "" {
		return "no attempt succeeded"
	}
	return s
}
