package dispatch

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smsmilter/smsmilter/internal/config"
	"github.com/smsmilter/smsmilter/internal/store"
	"github.com/smsmilter/smsmilter/internal/store/sqlite"
	"github.com/smsmilter/smsmilter/plugins/sdk"
)

// fakeTransport stands in for a transport plugin (the plugin host has its
// own tests with real plugin processes): it records what it was asked to
// send and answers with what the test scripted per number.
type fakeTransport struct {
	mu    sync.Mutex
	sent  []sdk.Message
	calls map[string]int
	fail  func(to string, call int) error
}

func (f *fakeTransport) Send(ctx context.Context, m sdk.Message) ([]sdk.PartResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.calls == nil {
		f.calls = map[string]int{}
	}
	f.calls[m.To]++
	if f.fail != nil {
		if err := f.fail(m.To, f.calls[m.To]); err != nil {
			return nil, err
		}
	}
	f.sent = append(f.sent, m)
	res := make([]sdk.PartResult, m.Parts)
	for i := range res {
		res[i] = sdk.PartResult{Index: i, Ref: fmt.Sprintf("%s-%d", m.ID, i)}
	}
	return res, nil
}

func (f *fakeTransport) sentTo(to string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, m := range f.sent {
		if m.To == to {
			n++
		}
	}
	return n
}

type harness struct {
	st      *sqlite.Store
	cfg     *config.Config
	trans   map[string]*fakeTransport
	d       *Dispatcher
	mu      sync.Mutex
	now     time.Time
	failed  map[int64]string
	sentCB  map[int64]string
	running map[string]bool
}

func newHarness(t *testing.T, routes []config.Route, names ...string) *harness {
	t.Helper()
	st, err := sqlite.OpenDir(context.Background(), t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cfg := config.Defaults()
	cfg.Transports = map[string]config.Transport{}
	h := &harness{st: st, cfg: cfg, trans: map[string]*fakeTransport{}, now: time.Now(), failed: map[int64]string{}, sentCB: map[int64]string{}, running: map[string]bool{}}
	for _, n := range names {
		cfg.Transports[n] = config.Transport{Plugin: "outbox", TPS: 1000}
		h.trans[n] = &fakeTransport{}
		h.running[n] = true
	}
	cfg.Routes = routes
	h.d = New(Options{
		Store: st,
		Transport: func(name string) (Sender, bool) {
			h.mu.Lock()
			defer h.mu.Unlock()
			if !h.running[name] {
				return nil, false
			}
			return h.trans[name], true
		},
		Config: func() *config.Config { return cfg },
		Failed: func(ctx context.Context, j store.Job, reason string) {
			h.mu.Lock()
			defer h.mu.Unlock()
			if _, dup := h.failed[j.ID]; dup {
				t.Errorf("job %d failed twice", j.ID)
			}
			h.failed[j.ID] = reason
		},
		Sent: func(ctx context.Context, j store.Job, transport string) {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.sentCB[j.ID] = transport
		},
		Now: h.clock,
	})
	return h
}

func (h *harness) clock() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.now
}

func (h *harness) advance(d time.Duration) {
	h.mu.Lock()
	h.now = h.now.Add(d)
	h.mu.Unlock()
}

func (h *harness) enqueue(t *testing.T, user string, to ...string) []int64 {
	t.Helper()
	var jobs []store.Job
	for _, n := range to {
		jobs = append(jobs, store.Job{DedupeKey: fmt.Sprintf("k%d|%s", time.Now().UnixNano(), n), User: user, SenderID: "ACME", To: n, Text: "hi", Encoding: "gsm7", Parts: 1, Sender: "alice@example.com", NotifyOK: true, Created: h.clock()})
	}
	res, err := h.st.Enqueue(context.Background(), jobs, 0)
	if err != nil {
		t.Fatal(err)
	}
	return res.IDs
}

// pass runs the dispatcher over what is due now and waits for every
// attempt to finish.
func (h *harness) pass() {
	ctx, cancel := context.WithCancel(context.Background())
	h.d.fill(ctx)
	h.d.wg.Wait()
	cancel()
}

func (h *harness) job(t *testing.T, id int64) store.Job {
	t.Helper()
	j, err := h.st.GetJob(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func TestRoutesByPrefixFirstMatch(t *testing.T) {
	h := newHarness(t, []config.Route{{Prefix: "+81", Transports: []string{"jp"}}, {Transports: []string{"world"}}}, "jp", "world")
	ids := h.enqueue(t, "ops", "+819012345678", "+447400123456")
	h.pass()
	if h.trans["jp"].sentTo("+819012345678") != 1 || h.trans["world"].sentTo("+447400123456") != 1 || h.trans["jp"].sentTo("+447400123456") != 0 {
		t.Fatalf("routing wrong: jp %v, world %v", h.trans["jp"].sent, h.trans["world"].sent)
	}
	for _, id := range ids {
		j := h.job(t, id)
		if j.State != store.JobSent || len(j.PartState) != 1 || j.PartState[0].Ref == "" {
			t.Errorf("job %d: %+v", id, j)
		}
		if h.sentCB[id] == "" {
			t.Errorf("job %d: Sent callback not called", id)
		}
	}
}

func TestFailoverOnTemporaryError(t *testing.T) {
	h := newHarness(t, []config.Route{{Transports: []string{"a", "b"}}}, "a", "b")
	h.trans["a"].fail = func(string, int) error { return errors.New("SMSC link down") }
	id := h.enqueue(t, "ops", "+447400123456")[0]
	h.pass()
	if j := h.job(t, id); j.State != store.JobSent || j.Transport != "b" {
		t.Fatalf("job %+v; want sent through b", j)
	}
}

func TestPermanentErrorFailsAndNotifiesOnce(t *testing.T) {
	h := newHarness(t, []config.Route{{Transports: []string{"a", "b"}}}, "a", "b")
	h.trans["a"].fail = func(string, int) error { return sdk.Permanent(errors.New("invalid destination address")) }
	id := h.enqueue(t, "ops", "+447400123456")[0]
	h.pass()
	j := h.job(t, id)
	if j.State != store.JobFailed || !strings.Contains(j.LastError, "invalid destination") {
		t.Fatalf("job %+v; want failed", j)
	}
	if h.trans["b"].sentTo("+447400123456") != 0 {
		t.Error("a permanent error was retried on another transport")
	}
	if !strings.Contains(h.failed[id], "invalid destination") {
		t.Errorf("Failed callback reason %q", h.failed[id])
	}
	evs, _ := h.st.ListEvents(context.Background(), store.EventFailed, time.Time{}, 0)
	if len(evs) != 1 {
		t.Errorf("%d failed events", len(evs))
	}
}

func TestRetryWithBackoffThenSuccess(t *testing.T) {
	h := newHarness(t, []config.Route{{Transports: []string{"a"}}}, "a")
	h.trans["a"].fail = func(_ string, call int) error {
		if call < 3 {
			return errors.New("throttled")
		}
		return nil
	}
	id := h.enqueue(t, "ops", "+447400123456")[0]
	for i := 1; i <= 2; i++ {
		h.pass()
		j := h.job(t, id)
		if j.State != store.JobQueued || j.Attempts != i || !j.NextTry.After(h.clock()) || j.LastError == "" {
			t.Fatalf("after attempt %d: %+v; want queued for a later retry", i, j)
		}
		// Not due yet: nothing happens.
		h.pass()
		if h.job(t, id).Attempts != i {
			t.Fatalf("retried before its backoff passed")
		}
		h.advance(time.Hour)
	}
	h.pass()
	if j := h.job(t, id); j.State != store.JobSent || j.Attempts != 3 {
		t.Fatalf("after the third attempt: %+v", j)
	}
}

func TestMaxAgeGivesUp(t *testing.T) {
	h := newHarness(t, []config.Route{{Transports: []string{"a"}}}, "a")
	h.cfg.SMS.MaxAge = time.Hour
	h.trans["a"].fail = func(string, int) error { return errors.New("no signal") }
	id := h.enqueue(t, "ops", "+447400123456")[0]
	for i := 0; i < 20 && h.job(t, id).State != store.JobFailed; i++ {
		h.pass()
		h.advance(10 * time.Minute)
	}
	j := h.job(t, id)
	if j.State != store.JobFailed || !strings.Contains(j.LastError, "sms.max_age") {
		t.Fatalf("job %+v; want failed for max age", j)
	}
	if !strings.Contains(h.failed[id], "no signal") {
		t.Errorf("notice reason %q does not say what went wrong", h.failed[id])
	}
}

func TestNoHeadOfLineBlocking(t *testing.T) {
	h := newHarness(t, []config.Route{{Transports: []string{"a"}}}, "a")
	h.trans["a"].fail = func(to string, _ int) error {
		if to == "+447400000001" {
			return errors.New("handset unreachable")
		}
		return nil
	}
	bad := h.enqueue(t, "ops", "+447400000001")
	good := h.enqueue(t, "ops", "+447400000002", "+447400000003", "+447400000004")
	h.pass()
	for _, id := range good {
		if st := h.job(t, id).State; st != store.JobSent {
			t.Errorf("job %d behind a failing number: %s", id, st)
		}
	}
	if st := h.job(t, bad[0]).State; st != store.JobQueued {
		t.Errorf("failing job: %s; want queued for retry", st)
	}
	// More mail for others while the bad one waits in backoff.
	later := h.enqueue(t, "ops", "+447400000005")
	h.pass()
	if st := h.job(t, later[0]).State; st != store.JobSent {
		t.Errorf("later job %s", st)
	}
}

func TestTransportNotRunningIsRetried(t *testing.T) {
	h := newHarness(t, []config.Route{{Transports: []string{"a"}}}, "a")
	h.running["a"] = false
	id := h.enqueue(t, "ops", "+447400123456")[0]
	h.pass()
	if j := h.job(t, id); j.State != store.JobQueued || j.Attempts != 0 || !j.NextTry.After(h.clock()) {
		t.Fatalf("job %+v; want it back in the queue, no attempt counted", j)
	}
	h.mu.Lock()
	h.running["a"] = true
	h.mu.Unlock()
	h.advance(time.Hour)
	h.pass()
	if j := h.job(t, id); j.State != store.JobSent {
		t.Fatalf("job %+v after the transport came up", j)
	}
}

func TestNoRouteFails(t *testing.T) {
	h := newHarness(t, []config.Route{{Prefix: "+81", Transports: []string{"a"}}}, "a")
	id := h.enqueue(t, "ops", "+447400123456")[0]
	h.pass()
	if j := h.job(t, id); j.State != store.JobFailed || !strings.Contains(j.LastError, "no route") {
		t.Fatalf("job %+v", j)
	}
}

// A forwarding user over its rate does not fail and does not hold a
// dispatcher slot: its later jobs go back to the queue, uncounted, while
// other users' jobs go out.
func TestUserPacingDefersWithoutFailing(t *testing.T) {
	h := newHarness(t, []config.Route{{Transports: []string{"a"}}}, "a")
	ctx := context.Background()
	if err := h.st.AddUser(ctx, store.User{Name: "slow", SenderID: "SLOW", TPS: 0.001}); err != nil {
		t.Fatal(err)
	}
	if err := h.st.AddUser(ctx, store.User{Name: "fast", SenderID: "FAST"}); err != nil {
		t.Fatal(err)
	}
	slow := h.enqueue(t, "slow", "+447400000001", "+447400000002", "+447400000003")
	fast := h.enqueue(t, "fast", "+447400000009")
	h.pass()
	sent, deferred := 0, 0
	for _, id := range slow {
		j := h.job(t, id)
		switch {
		case j.State == store.JobSent:
			sent++
		case j.State == store.JobQueued && j.Attempts == 0 && j.LastError == "" && j.NextTry.After(h.clock()):
			deferred++
		default:
			t.Errorf("slow job %d: %+v", id, j)
		}
	}
	if sent != 1 || deferred != 2 {
		t.Errorf("slow user: %d sent, %d deferred; want 1 and 2", sent, deferred)
	}
	if st := h.job(t, fast[0]).State; st != store.JobSent {
		t.Errorf("other user's job: %s", st)
	}
}

// Bursts wait for the transport's rate; none fails.
func TestTransportPacingBurstsWait(t *testing.T) {
	h := newHarness(t, []config.Route{{Transports: []string{"a"}}}, "a")
	h.cfg.Transports["a"] = config.Transport{Plugin: "outbox", TPS: 50}
	var to []string
	for i := 0; i < 40; i++ {
		to = append(to, fmt.Sprintf("+4474000000%02d", i))
	}
	ids := h.enqueue(t, "ops", to...)
	h.pass()
	for _, id := range ids {
		if st := h.job(t, id).State; st != store.JobSent {
			t.Fatalf("job %d: %s", id, st)
		}
	}
}

func TestBackoffGrowsWithJitter(t *testing.T) {
	prev := time.Duration(0)
	for n := 0; n < 12; n++ {
		b := Backoff(n)
		base := min(15*time.Second<<min(n, 7), 30*time.Minute)
		if b < base*3/4 || b > base*5/4 {
			t.Errorf("Backoff(%d) = %s; want within 25%% of %s", n, b, base)
		}
		if n < 7 && base <= prev {
			t.Errorf("base does not grow at %d", n)
		}
		prev = base
	}
}

// Run stops when its context ends, after the attempts in hand finish.
func TestRunStops(t *testing.T) {
	h := newHarness(t, []config.Route{{Transports: []string{"a"}}}, "a")
	h.d.o.Poll = 10 * time.Millisecond
	ids := h.enqueue(t, "ops", "+447400123456")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.d.Run(ctx); close(done) }()
	h.d.Wake()
	deadline := time.Now().Add(10 * time.Second)
	for h.job(t, ids[0]).State != store.JobSent && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if st := h.job(t, ids[0]).State; st != store.JobSent {
		t.Fatalf("job %s", st)
	}
}

// slowTransport counts the Sends it holds at once.
type slowTransport struct {
	fakeTransport
	mu       sync.Mutex
	now, max int
}

func (s *slowTransport) Send(ctx context.Context, m sdk.Message) ([]sdk.PartResult, error) {
	s.mu.Lock()
	s.now++
	s.max = max(s.max, s.now)
	s.mu.Unlock()
	time.Sleep(20 * time.Millisecond)
	s.mu.Lock()
	s.now--
	s.mu.Unlock()
	return s.fakeTransport.Send(ctx, m)
}

// No more Sends are outstanding on an SMPP transport than its window: what
// a plugin crash can leave unreported stays within it.
func TestOutstandingSendsWithinWindow(t *testing.T) {
	h := newHarness(t, []config.Route{{Transports: []string{"smsc"}}}, "smsc")
	h.cfg.Transports["smsc"] = config.Transport{Plugin: "smpp", TPS: 1e6, Settings: map[string]any{"window": 3}}
	slow := &slowTransport{}
	h.d.o.Transport = func(string) (Sender, bool) { return slow, true }
	var to []string
	for i := 0; i < 30; i++ {
		to = append(to, fmt.Sprintf("+4474000001%02d", i))
	}
	h.enqueue(t, "ops", to...)
	h.pass()
	if slow.max > 3 || slow.max < 2 {
		t.Errorf("%d Sends outstanding at once; want up to the window, 3", slow.max)
	}
	if n := len(slow.sent); n != 30 {
		t.Errorf("%d sent", n)
	}
}
