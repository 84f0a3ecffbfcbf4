// Package storetest is the conformance suite for store.Store backends: every
// method and the edge cases callers rely on (not-found and duplicate errors,
// the dedupe window, all-or-nothing enqueue, leases, part reports, event
// filters, the mail queue). A backend's test calls Run with a function that
// opens a fresh, empty store.
//
// Besides the interface's doc comments, the suite holds backends to these
// conventions, which callers may rely on:
//   - ListUsers is ordered by name, ListRules and IPRules by ID;
//   - Enqueue rejects a job without a recipient (To == ""), failing the
//     whole call;
//   - Claim and ClaimMail count an attempt per lease;
//   - ListJobs returns jobs with their parts;
//   - Depth reports every job state, zeros included;
//   - times round-trip to the millisecond at least.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/smsmilter/smsmilter/internal/store"
)

// Run runs the suite. open must return a new, empty store each call; it is
// closed by the caller's cleanup (t.Cleanup in open is the usual way).
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"Users", testUsers},
		{"Rules", testRules},
		{"AddRules", testAddRules},
		{"DomainVerified", testDomainVerified},
		{"RegistryVersion", testRegistryVersion},
		{"SeeClientIP", testSeeClientIP},
		{"Enqueue", testEnqueue},
		{"Dedupe", testDedupe},
		{"EnqueueFailureRecordsNothing", testEnqueueFailure},
		{"EnqueueConcurrent", testEnqueueConcurrent},
		{"Claim", testClaim},
		{"ClaimNoHeadOfLineBlocking", testClaimNoHOL},
		{"LeaseExpiry", testLeaseExpiry},
		{"ReleaseLeases", testReleaseLeases},
		{"Purge", testPurge},
		{"RetryAndFail", testRetryFail},
		{"Defer", testDefer},
		{"Parts", testParts},
		{"ListJobsDepth", testListJobsDepth},
		{"CountUserSince", testCountUserSince},
		{"AutoCLIP", testAutoCLIP},
		{"Events", testEvents},
		{"CountEvents", testCountEvents},
		{"Mailboxes", testMailboxes},
		{"MailQueue", testMailQueue},
		{"Ping", func(t *testing.T, s store.Store) {
			if err := s.Ping(t.Context()); err != nil {
				t.Fatalf("Ping: %v", err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, open(t))
		})
	}
}

// ---- helpers ----

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Errorf("%s: error %v, want one wrapping %v", what, err, target)
	}
}

// sameTime allows backends that keep only micro- or milliseconds.
func sameTime(a, b time.Time) bool {
	d := a.Sub(b)
	return d > -time.Millisecond && d < time.Millisecond
}

func checkTime(t *testing.T, what string, got, want time.Time) {
	t.Helper()
	if !sameTime(got, want) {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

func addUser(t *testing.T, s store.Store, name string) {
	t.Helper()
	must(t, s.AddUser(t.Context(), store.User{Name: name, SenderID: "ACME"}))
}

// job returns a valid one-part job to a recipient with a dedupe key.
func job(to, key string) store.Job {
	return store.Job{
		DedupeKey: key, MessageID: "<m@example.com>", QueueID: "4Q1", Sender: "alice@example.com",
		User: "ops", SenderID: "ACME", To: to, Text: "hello", Encoding: "gsm7", Parts: 1,
	}
}

func enqueue(t *testing.T, s store.Store, jobs ...store.Job) []int64 {
	t.Helper()
	res, err := s.Enqueue(t.Context(), jobs, 0)
	must(t, err)
	return res.IDs
}

func ids(js []store.Job) []int64 {
	var l []int64
	for _, j := range js {
		l = append(l, j.ID)
	}
	return l
}

func countJobs(t *testing.T, s store.Store) int {
	t.Helper()
	js, err := s.ListJobs(t.Context(), "", 0)
	must(t, err)
	return len(js)
}

// ---- registry ----

func testUsers(t *testing.T, s store.Store) {
	ctx := t.Context()
	created := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	u := store.User{Name: "ops", SenderID: "ACME", TPS: 2.5, Daily: 100, Route: "smpp1", Created: created}
	must(t, s.AddUser(ctx, u))
	must(t, s.AddUser(ctx, store.User{Name: "alerts", SenderID: "+447400123456"}))

	got, err := s.GetUser(ctx, "ops")
	must(t, err)
	if got.Name != u.Name || got.SenderID != u.SenderID || got.TPS != u.TPS || got.Daily != u.Daily || got.Route != u.Route {
		t.Errorf("GetUser = %+v, want %+v", got, u)
	}
	checkTime(t, "Created", got.Created, created)
	a, err := s.GetUser(ctx, "alerts")
	must(t, err)
	if a.Created.IsZero() {
		t.Error("Created not set by AddUser")
	}

	wantErr(t, "AddUser twice", s.AddUser(ctx, store.User{Name: "ops", SenderID: "X"}), store.ErrDuplicate)
	_, err = s.GetUser(ctx, "nobody")
	wantErr(t, "GetUser(nobody)", err, store.ErrNotFound)
	if err := s.AddUser(ctx, store.User{SenderID: "X"}); err == nil {
		t.Error("AddUser with empty name: no error")
	}

	us, err := s.ListUsers(ctx)
	must(t, err)
	var names []string
	for _, u := range us {
		names = append(names, u.Name)
	}
	if !slices.Equal(names, []string{"alerts", "ops"}) {
		t.Errorf("ListUsers names = %q, want [alerts ops]", names)
	}
	// The failed AddUser changed nothing.
	if got, _ := s.GetUser(ctx, "ops"); got.SenderID != "ACME" {
		t.Errorf("after duplicate AddUser, SenderID = %q", got.SenderID)
	}
}

func testRules(t *testing.T, s store.Store) {
	ctx := t.Context()
	addUser(t, s, "ops")
	in := []store.Rule{
		{Kind: store.KindAddress, Pattern: "alice@example.com", User: "ops", Security: "spf", DKIM: "gray", SPF: "gray", DMARC: "gray"},
		{Kind: store.KindDomain, Pattern: "example.com", User: "ops", Security: "ip", IPs: []string{"192.0.2.0/24", "2001:db8::/32"},
			DKIM: "pass", SPF: "gray", DMARC: "fail", Token: "0123456789abcdef0123456789abcdef"},
		{Kind: store.KindIP, Pattern: "198.51.100.0/24", User: "ops", Security: "ip", DKIM: "fail", SPF: "fail", DMARC: "fail"},
		{Kind: store.KindIP, Pattern: "2001:db8:1::/48", User: "ops", Security: "none", DKIM: "fail", SPF: "fail", DMARC: "fail"},
		// Same pattern as a domain rule, other kind: allowed.
		{Kind: store.KindAddress, Pattern: "example.com", User: "ops", Security: "auth"},
	}
	var added []store.Rule
	for _, r := range in {
		got, err := s.AddRule(ctx, r)
		must(t, err)
		if got.ID == 0 || got.Created.IsZero() {
			t.Errorf("AddRule(%s %s) = ID %d Created %v: want both set", r.Kind, r.Pattern, got.ID, got.Created)
		}
		added = append(added, got)
	}
	for i := 1; i < len(added); i++ {
		if added[i].ID <= added[i-1].ID {
			t.Errorf("rule IDs not increasing: %d then %d", added[i-1].ID, added[i].ID)
		}
	}

	_, err := s.AddRule(ctx, store.Rule{Kind: store.KindAddress, Pattern: "alice@example.com", User: "ops"})
	wantErr(t, "AddRule duplicate", err, store.ErrDuplicate)
	_, err = s.AddRule(ctx, store.Rule{Kind: store.KindAddress, Pattern: "bob@example.com", User: "nobody"})
	wantErr(t, "AddRule unknown user", err, store.ErrNotFound)
	if _, err := s.FindRule(ctx, store.KindAddress, "bob@example.com"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("rule of a refused AddRule was stored (FindRule err %v)", err)
	}

	d, err := s.FindRule(ctx, store.KindDomain, "example.com")
	must(t, err)
	want := added[1]
	if d.ID != want.ID || d.User != "ops" || d.Security != "ip" || !slices.Equal(d.IPs, want.IPs) ||
		d.DKIM != "pass" || d.SPF != "gray" || d.DMARC != "fail" || d.Token != want.Token || d.Verified {
		t.Errorf("FindRule(domain) = %+v, want %+v", d, want)
	}
	checkTime(t, "rule Created", d.Created, want.Created)
	a, err := s.FindRule(ctx, store.KindAddress, "example.com")
	must(t, err)
	if a.ID != added[4].ID || a.Security != "auth" || len(a.IPs) != 0 {
		t.Errorf("FindRule(address example.com) = %+v", a)
	}
	_, err = s.FindRule(ctx, store.KindDomain, "other.example")
	wantErr(t, "FindRule missing", err, store.ErrNotFound)
	_, err = s.FindRule(ctx, store.KindIP, "example.com")
	wantErr(t, "FindRule wrong kind", err, store.ErrNotFound)

	all, err := s.ListRules(ctx)
	must(t, err)
	var gotIDs, wantIDs []int64
	for _, r := range all {
		gotIDs = append(gotIDs, r.ID)
	}
	for _, r := range added {
		wantIDs = append(wantIDs, r.ID)
	}
	if !slices.Equal(gotIDs, wantIDs) {
		t.Errorf("ListRules IDs = %v, want %v", gotIDs, wantIDs)
	}
	ipr, err := s.IPRules(ctx)
	must(t, err)
	if len(ipr) != 2 || ipr[0].Pattern != "198.51.100.0/24" || ipr[1].Pattern != "2001:db8:1::/48" {
		t.Errorf("IPRules = %+v, want the two ip rules in order", ipr)
	}
}

func testAddRules(t *testing.T, s store.Store) {
	ctx := t.Context()
	addUser(t, s, "ops")
	ok := []store.Rule{
		{Kind: store.KindAddress, Pattern: "a@example.com", User: "ops", Security: "spf"},
		{Kind: store.KindAddress, Pattern: "b@example.com", User: "ops", Security: "spf"},
	}
	must(t, s.AddRules(ctx, ok))
	must(t, s.AddRules(ctx, nil))

	bad := []struct {
		name   string
		rules  []store.Rule
		target error
	}{
		{"duplicate of a stored rule", []store.Rule{
			{Kind: store.KindAddress, Pattern: "c@example.com", User: "ops"},
			{Kind: store.KindAddress, Pattern: "a@example.com", User: "ops"},
		}, store.ErrDuplicate},
		{"duplicate inside the batch", []store.Rule{
			{Kind: store.KindAddress, Pattern: "d@example.com", User: "ops"},
			{Kind: store.KindAddress, Pattern: "d@example.com", User: "ops"},
		}, store.ErrDuplicate},
		{"unknown user", []store.Rule{
			{Kind: store.KindAddress, Pattern: "e@example.com", User: "ops"},
			{Kind: store.KindAddress, Pattern: "f@example.com", User: "nobody"},
		}, store.ErrNotFound},
	}
	for _, tc := range bad {
		wantErr(t, "AddRules "+tc.name, s.AddRules(ctx, tc.rules), tc.target)
	}
	rs, err := s.ListRules(ctx)
	must(t, err)
	var pats []string
	for _, r := range rs {
		pats = append(pats, r.Pattern)
	}
	if !slices.Equal(pats, []string{"a@example.com", "b@example.com"}) {
		t.Errorf("after failed AddRules, rules = %q, want only a@ and b@ (all or none)", pats)
	}
}

func testDomainVerified(t *testing.T, s store.Store) {
	ctx := t.Context()
	addUser(t, s, "ops")
	_, err := s.AddRule(ctx, store.Rule{Kind: store.KindDomain, Pattern: "example.com", User: "ops", Token: "00112233445566778899aabbccddeeff"})
	must(t, err)
	at := time.Date(2025, 6, 1, 8, 30, 0, 0, time.UTC)
	must(t, s.SetDomainVerified(ctx, "example.com", at))
	r, err := s.FindRule(ctx, store.KindDomain, "example.com")
	must(t, err)
	if !r.Verified || r.Token != "00112233445566778899aabbccddeeff" {
		t.Errorf("after SetDomainVerified: Verified %v Token %q", r.Verified, r.Token)
	}
	checkTime(t, "VerifiedAt", r.VerifiedAt, at)
	wantErr(t, "SetDomainVerified unknown", s.SetDomainVerified(ctx, "other.example", at), store.ErrNotFound)
}

func testRegistryVersion(t *testing.T, s store.Store) {
	ctx := t.Context()
	last, err := s.RegistryVersion(ctx)
	must(t, err)
	steps := []struct {
		name    string
		fn      func() error
		changes bool
	}{
		{"AddUser", func() error { return s.AddUser(ctx, store.User{Name: "ops", SenderID: "A"}) }, true},
		{"failed AddUser", func() error { s.AddUser(ctx, store.User{Name: "ops", SenderID: "A"}); return nil }, false},
		{"AddRule", func() error {
			_, err := s.AddRule(ctx, store.Rule{Kind: store.KindDomain, Pattern: "example.com", User: "ops"})
			return err
		}, true},
		{"AddRules", func() error {
			return s.AddRules(ctx, []store.Rule{{Kind: store.KindIP, Pattern: "192.0.2.0/24", User: "ops"}})
		}, true},
		{"SetDomainVerified", func() error { return s.SetDomainVerified(ctx, "example.com", time.Now()) }, true},
		{"reads", func() error {
			_, err := s.ListRules(ctx)
			return err
		}, false},
		{"Enqueue", func() error { _, err := s.Enqueue(ctx, []store.Job{job("+447400123456", "")}, 0); return err }, false},
	}
	for _, st := range steps {
		must(t, st.fn())
		v, err := s.RegistryVersion(ctx)
		must(t, err)
		if st.changes && v <= last {
			t.Errorf("after %s: version %d, want > %d", st.name, v, last)
		}
		if !st.changes && v != last {
			t.Errorf("after %s: version %d, want unchanged %d", st.name, v, last)
		}
		last = v
	}
}

func testSeeClientIP(t *testing.T, s store.Store) {
	ctx := t.Context()
	addUser(t, s, "ops")
	r1, err := s.AddRule(ctx, store.Rule{Kind: store.KindDomain, Pattern: "example.com", User: "ops"})
	must(t, err)
	r2, err := s.AddRule(ctx, store.Rule{Kind: store.KindDomain, Pattern: "example.org", User: "ops"})
	must(t, err)
	now := time.Now()
	steps := []struct {
		rule  int64
		ip    string
		isNew bool
	}{
		{r1.ID, "192.0.2.1", true},
		{r1.ID, "192.0.2.1", false},
		{r1.ID, "192.0.2.2", true},
		{r2.ID, "192.0.2.1", true},
		{r1.ID, "2001:db8::1", true},
		{r1.ID, "2001:db8::1", false},
	}
	for _, st := range steps {
		got, err := s.SeeClientIP(ctx, st.rule, st.ip, now)
		must(t, err)
		if got != st.isNew {
			t.Errorf("SeeClientIP(%d, %s) = %v, want %v", st.rule, st.ip, got, st.isNew)
		}
	}
	if _, err := s.SeeClientIP(ctx, r2.ID+1000, "192.0.2.1", now); err == nil {
		t.Error("SeeClientIP for an unknown rule: no error")
	}

	// Racing callers: exactly one hears "new".
	var wg sync.WaitGroup
	var mu sync.Mutex
	news := 0
	for range 8 {
		wg.Go(func() {
			isNew, err := s.SeeClientIP(ctx, r2.ID, "198.51.100.7", now)
			if err != nil {
				t.Error(err)
				return
			}
			if isNew {
				mu.Lock()
				news++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if news != 1 {
		t.Errorf("8 racing SeeClientIP: %d said new, want 1", news)
	}
}

// ---- queue ----

func testEnqueue(t *testing.T, s store.Store) {
	ctx := t.Context()
	before := time.Now()
	j := store.Job{
		DedupeKey: "<m1@example.com>|+447400123456", MessageID: "<m1@example.com>", QueueID: "4QABC",
		Sender: "alice@example.com", NotifyOK: true, Subject: "Hi", User: "ops", SenderID: "ACME",
		To: "+447400123456", Text: "hello €", Encoding: "ucs2", Parts: 2,
	}
	j2 := j
	j2.DedupeKey, j2.To = "<m1@example.com>|+819012345678", "+819012345678"
	res, err := s.Enqueue(ctx, []store.Job{j, j2}, time.Hour)
	must(t, err)
	if len(res.IDs) != 2 || res.IDs[0] == 0 || res.IDs[1] == 0 || res.IDs[0] == res.IDs[1] || res.Duplicates != 0 {
		t.Fatalf("Enqueue = %+v, want two distinct IDs, no duplicates", res)
	}
	got, err := s.GetJob(ctx, res.IDs[0])
	must(t, err)
	if got.ID != res.IDs[0] || got.DedupeKey != j.DedupeKey || got.MessageID != j.MessageID || got.QueueID != j.QueueID ||
		got.Sender != j.Sender || !got.NotifyOK || got.Subject != j.Subject || got.User != j.User ||
		got.SenderID != j.SenderID || got.To != j.To || got.Text != j.Text || got.Encoding != j.Encoding || got.Parts != 2 {
		t.Errorf("GetJob = %+v, want the fields of %+v", got, j)
	}
	if got.State != store.JobQueued || got.Attempts != 0 || got.Transport != "" || got.LastError != "" || len(got.PartState) != 0 {
		t.Errorf("new job: State %q Attempts %d Transport %q LastError %q Parts %v", got.State, got.Attempts, got.Transport, got.LastError, got.PartState)
	}
	if got.Created.Before(before.Add(-time.Second)) || got.Created.After(time.Now().Add(time.Second)) {
		t.Errorf("Created = %v, want about now", got.Created)
	}
	if got.NextTry.After(time.Now().Add(time.Second)) {
		t.Errorf("NextTry = %v: a new job is due at once", got.NextTry)
	}
	g2, err := s.GetJob(ctx, res.IDs[1])
	must(t, err)
	if g2.To != "+819012345678" || g2.NotifyOK != true {
		t.Errorf("second job = %+v", g2)
	}
	_, err = s.GetJob(ctx, res.IDs[1]+1000)
	wantErr(t, "GetJob unknown", err, store.ErrNotFound)

	// An empty call is fine and stores nothing.
	res, err = s.Enqueue(ctx, nil, time.Hour)
	must(t, err)
	if len(res.IDs) != 0 || countJobs(t, s) != 2 {
		t.Errorf("empty Enqueue = %+v, jobs %d", res, countJobs(t, s))
	}
}

func testDedupe(t *testing.T, s store.Store) {
	ctx := t.Context()
	// Each case runs against the same store, in order; keys are distinct
	// per case unless said otherwise.
	first, err := s.Enqueue(ctx, []store.Job{job("+447400123456", "k1")}, time.Hour)
	must(t, err)
	if first.IDs[0] == 0 {
		t.Fatal("first enqueue of k1 got ID 0")
	}
	cases := []struct {
		name   string
		jobs   []store.Job
		window time.Duration
		want   []bool // queued (true) or duplicate (false), per job
	}{
		{"same key in window", []store.Job{job("+447400123456", "k1")}, time.Hour, []bool{false}},
		{"same key, window off", []store.Job{job("+447400123456", "k1")}, 0, []bool{true}},
		{"other key", []store.Job{job("+447400123456", "k2")}, time.Hour, []bool{true}},
		{"mixed message", []store.Job{job("+447400123456", "k1"), job("+819012345678", "k3")}, time.Hour, []bool{false, true}},
		{"twice in one call", []store.Job{job("+447400123457", "k4"), job("+447400123457", "k4")}, time.Hour, []bool{true, false}},
		{"empty key never deduped", []store.Job{job("+447400123456", ""), job("+447400123456", "")}, time.Hour, []bool{true, true}},
	}
	for _, tc := range cases {
		n := countJobs(t, s)
		res, err := s.Enqueue(ctx, tc.jobs, tc.window)
		must(t, err)
		dups, queued := 0, 0
		for i, want := range tc.want {
			if got := res.IDs[i] != 0; got != want {
				t.Errorf("%s: job %d queued = %v, want %v (IDs %v)", tc.name, i, got, want, res.IDs)
			}
			if want {
				queued++
			} else {
				dups++
			}
		}
		if res.Duplicates != dups {
			t.Errorf("%s: Duplicates = %d, want %d", tc.name, res.Duplicates, dups)
		}
		if got := countJobs(t, s) - n; got != queued {
			t.Errorf("%s: %d jobs stored, want %d", tc.name, got, queued)
		}
	}

	// Out of the window: the key was last enqueued more than window ago.
	_, err = s.Enqueue(ctx, []store.Job{job("+447400123456", "k9")}, time.Hour)
	must(t, err)
	time.Sleep(30 * time.Millisecond)
	res, err := s.Enqueue(ctx, []store.Job{job("+447400123456", "k9")}, 10*time.Millisecond)
	must(t, err)
	if res.Duplicates != 0 || res.IDs[0] == 0 {
		t.Errorf("key enqueued 30ms ago, window 10ms: %+v, want queued", res)
	}
	res, err = s.Enqueue(ctx, []store.Job{job("+447400123456", "k9")}, time.Hour)
	must(t, err)
	if res.Duplicates != 1 {
		t.Errorf("right after, window 1h: %+v, want duplicate", res)
	}
}

func testEnqueueFailure(t *testing.T, s store.Store) {
	ctx := t.Context()
	good := job("+447400123456", "kgood")
	bad := job("", "kbad") // no recipient: the backend must refuse the call
	if _, err := s.Enqueue(ctx, []store.Job{good, bad}, time.Hour); err == nil {
		t.Fatal("Enqueue with a job without recipient: no error")
	}
	if n := countJobs(t, s); n != 0 {
		t.Errorf("failed Enqueue stored %d jobs, want 0 (all or nothing)", n)
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.Enqueue(cctx, []store.Job{job("+447400123456", "kctx")}, time.Hour); err == nil {
		t.Error("Enqueue with a cancelled context: no error")
	}

	// Neither failure recorded a key: the MTA's retry goes through.
	res, err := s.Enqueue(ctx, []store.Job{good, job("+447400123456", "kctx")}, time.Hour)
	must(t, err)
	if res.Duplicates != 0 || res.IDs[0] == 0 || res.IDs[1] == 0 {
		t.Errorf("retry after failed Enqueue = %+v, want both queued", res)
	}
	if n := countJobs(t, s); n != 2 {
		t.Errorf("%d jobs, want 2", n)
	}
}

// testEnqueueConcurrent checks that messages enqueued at the same time
// (which a backend may commit together) keep their own results and errors.
func testEnqueueConcurrent(t *testing.T, s store.Store) {
	ctx := t.Context()
	const n = 64
	type result struct {
		res store.EnqueueResult
		err error
	}
	results := make([]result, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			jobs := []store.Job{job("+447400123456", fmt.Sprintf("c%d-a", i)), job("+819012345678", fmt.Sprintf("c%d-b", i))}
			if i%8 == 3 {
				jobs[1].To = "" // this message fails
			}
			res, err := s.Enqueue(ctx, jobs, time.Hour)
			results[i] = result{res, err}
		})
	}
	wg.Wait()
	seen := map[int64]bool{}
	want := 0
	for i, r := range results {
		if i%8 == 3 {
			if r.err == nil {
				t.Errorf("message %d (bad job): no error", i)
			}
			continue
		}
		want += 2
		if r.err != nil {
			t.Errorf("message %d: %v (a failing neighbour must not fail it)", i, r.err)
			continue
		}
		for _, id := range r.res.IDs {
			if id == 0 || seen[id] {
				t.Errorf("message %d: ID %d zero or reused", i, id)
			}
			seen[id] = true
			j, err := s.GetJob(ctx, id)
			if err != nil {
				t.Errorf("message %d: GetJob(%d): %v", i, id, err)
			} else if j.DedupeKey[:len(fmt.Sprintf("c%d-", i))] != fmt.Sprintf("c%d-", i) {
				t.Errorf("message %d: job %d has key %q: results crossed", i, id, j.DedupeKey)
			}
		}
	}
	if got := countJobs(t, s); got != want {
		t.Errorf("%d jobs stored, want %d", got, want)
	}
	// The failed messages' good jobs left no key.
	res, err := s.Enqueue(ctx, []store.Job{job("+447400123456", "c3-a")}, time.Hour)
	must(t, err)
	if res.Duplicates != 0 {
		t.Error("key of a failed concurrent message was recorded")
	}
}

func testClaim(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := time.Now()
	var jobs []store.Job
	// Enqueued in one order, due in another.
	for i, off := range []time.Duration{-1 * time.Second, -3 * time.Second, -2 * time.Second, time.Hour} {
		j := job("+447400123456", fmt.Sprintf("claim%d", i))
		j.NextTry = now.Add(off)
		jobs = append(jobs, j)
	}
	id := enqueue(t, s, jobs...)

	got, err := s.Claim(ctx, now, 2, 3*time.Hour)
	must(t, err)
	if !slices.Equal(ids(got), []int64{id[1], id[2]}) {
		t.Fatalf("Claim(limit 2) = %v, want %v (by next try)", ids(got), []int64{id[1], id[2]})
	}
	for _, j := range got {
		if j.State != store.JobSending || j.Attempts != 1 || j.To != "+447400123456" || j.Text != "hello" {
			t.Errorf("claimed job %+v: want state sending, attempt 1, fields kept", j)
		}
	}
	got, err = s.Claim(ctx, now, 10, 3*time.Hour)
	must(t, err)
	if !slices.Equal(ids(got), []int64{id[0]}) {
		t.Errorf("second Claim = %v, want %v (leased jobs not again, future job not yet)", ids(got), []int64{id[0]})
	}
	got, err = s.Claim(ctx, now, 10, 3*time.Hour)
	must(t, err)
	if len(got) != 0 {
		t.Errorf("third Claim = %v, want none", ids(got))
	}
	if got, err := s.Claim(ctx, now, 0, 3*time.Hour); err != nil || len(got) != 0 {
		t.Errorf("Claim(limit 0) = %v, %v", ids(got), err)
	}
	j, err := s.GetJob(ctx, id[3])
	must(t, err)
	if j.State != store.JobQueued {
		t.Errorf("future job state %q, want queued", j.State)
	}
	got, err = s.Claim(ctx, now.Add(2*time.Hour), 10, 3*time.Hour)
	must(t, err)
	if !slices.Equal(ids(got), []int64{id[3]}) {
		t.Errorf("Claim two hours later = %v, want %v", ids(got), []int64{id[3]})
	}
}

func testClaimNoHOL(t *testing.T, s store.Store) {
	ctx := t.Context()
	id := enqueue(t, s, job("+447400000001", "h1"), job("+447400000002", "h2"), job("+447400000003", "h3"))
	now := time.Now()
	got, err := s.Claim(ctx, now, 1, time.Minute)
	must(t, err)
	if len(got) != 1 || got[0].ID != id[0] {
		t.Fatalf("Claim = %v, want [%d]", ids(got), id[0])
	}
	// The first number fails temporarily: it backs off, the others go on.
	must(t, s.Retry(ctx, id[0], now.Add(10*time.Minute), "451 try later"))
	got, err = s.Claim(ctx, now, 10, time.Minute)
	must(t, err)
	if !slices.Equal(ids(got), []int64{id[1], id[2]}) {
		t.Errorf("Claim with job %d backing off = %v, want %v", id[0], ids(got), []int64{id[1], id[2]})
	}
}

func testLeaseExpiry(t *testing.T, s store.Store) {
	ctx := t.Context()
	id := enqueue(t, s, job("+447400123456", "lease"))
	now := time.Now()
	got, err := s.Claim(ctx, now, 10, time.Minute)
	must(t, err)
	if len(got) != 1 {
		t.Fatalf("Claim = %v", ids(got))
	}
	// The dispatcher crashes. Before the lease ends nobody gets the job...
	got, err = s.Claim(ctx, now.Add(59*time.Second), 10, time.Minute)
	must(t, err)
	if len(got) != 0 {
		t.Errorf("Claim inside the lease = %v, want none", ids(got))
	}
	// ...after it, the next dispatcher does.
	got, err = s.Claim(ctx, now.Add(61*time.Second), 10, time.Minute)
	must(t, err)
	if !slices.Equal(ids(got), id) || got[0].Attempts != 2 || got[0].State != store.JobSending {
		t.Fatalf("Claim after lease expiry = %+v, want job %v again with attempt 2", got, id)
	}
	// A job that was sent is not taken back by an old lease.
	must(t, s.MarkSent(ctx, id[0], "smpp1", []store.Part{{Index: 0, Ref: "r1"}}))
	got, err = s.Claim(ctx, now.Add(time.Hour), 10, time.Minute)
	must(t, err)
	if len(got) != 0 {
		t.Errorf("Claim after MarkSent = %v, want none", ids(got))
	}
}

func testReleaseLeases(t *testing.T, s store.Store) {
	ctx := t.Context()
	leased := enqueue(t, s, job("+447400123451", "rl1"), job("+447400123452", "rl2"))
	now := time.Now()
	if got, err := s.Claim(ctx, now, 10, time.Hour); err != nil || len(got) != 2 {
		t.Fatalf("Claim = %v, %v", ids(got), err)
	}
	sent := enqueue(t, s, job("+447400123453", "rl3"))
	now = time.Now()
	got, err := s.Claim(ctx, now, 10, time.Hour)
	must(t, err)
	must(t, s.MarkSent(ctx, got[0].ID, "smpp1", []store.Part{{Index: 0, Ref: "rl3"}}))
	_, err = s.EnqueueMail(ctx, store.Mail{From: "", To: []string{"a@example.com"}, Data: []byte("x"), NextTry: now, Created: now})
	must(t, err)
	ms, err := s.ClaimMail(ctx, now, 10, time.Hour)
	must(t, err)
	if len(ms) != 1 {
		t.Fatalf("ClaimMail = %d", len(ms))
	}
	// The daemon died with all of it in hand; at its next start:
	n, err := s.ReleaseLeases(ctx, now.Add(time.Second))
	must(t, err)
	if n != 3 {
		t.Errorf("ReleaseLeases = %d, want 3 (2 jobs, 1 mail)", n)
	}
	got, err = s.Claim(ctx, now.Add(2*time.Second), 10, time.Hour)
	must(t, err)
	if !slices.Equal(ids(got), leased) {
		t.Errorf("Claim after ReleaseLeases = %v, want %v (not the sent %v)", ids(got), leased, sent)
	}
	ms, err = s.ClaimMail(ctx, now.Add(2*time.Second), 10, time.Hour)
	must(t, err)
	if len(ms) != 1 {
		t.Errorf("ClaimMail after ReleaseLeases = %d, want 1", len(ms))
	}
}

func testPurge(t *testing.T, s store.Store) {
	ctx := t.Context()
	ids0 := enqueue(t, s, job("+447400123461", "p1"), job("+447400123462", "p2"), job("+447400123463", "p3"))
	got, err := s.Claim(ctx, time.Now(), 10, time.Hour)
	must(t, err)
	if len(got) != 3 {
		t.Fatalf("Claim = %v", ids(got))
	}
	must(t, s.MarkSent(ctx, ids0[0], "smpp1", []store.Part{{Index: 0, Ref: "p1"}}))
	must(t, s.Fail(ctx, ids0[1], "invalid number"))
	must(t, s.Retry(ctx, ids0[2], time.Now().Add(time.Hour), "throttled")) // still to be sent
	must(t, s.LogEvent(ctx, store.Event{Time: time.Now(), Kind: store.EventSent, Message: "old"}))
	cut := time.Now().Add(time.Second)
	n, err := s.Purge(ctx, cut)
	must(t, err)
	if n != 3 {
		t.Errorf("Purge = %d, want 3 (a sent job, a failed job, an event)", n)
	}
	if _, err := s.GetJob(ctx, ids0[0]); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("sent job after purge: %v", err)
	}
	if j, err := s.GetJob(ctx, ids0[2]); err != nil || j.State != store.JobQueued {
		t.Errorf("queued job after purge: %+v %v; want it kept", j, err)
	}
	if _, err := s.UpdatePart(ctx, "smpp1", "p1", "delivered", ""); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("parts of a purged job remain: %v", err)
	}
	evs, err := s.ListEvents(ctx, "", time.Time{}, 0)
	must(t, err)
	if len(evs) != 0 {
		t.Errorf("%d events after purge", len(evs))
	}
}

func testRetryFail(t *testing.T, s store.Store) {
	ctx := t.Context()
	id := enqueue(t, s, job("+447400123456", "r1"), job("+447400123457", "r2"))
	now := time.Now()
	_, err := s.Claim(ctx, now, 10, time.Hour)
	must(t, err)

	next := now.Add(5 * time.Minute)
	must(t, s.Retry(ctx, id[0], next, "throttled"))
	j, err := s.GetJob(ctx, id[0])
	must(t, err)
	if j.State != store.JobQueued || j.LastError != "throttled" || j.Attempts != 1 {
		t.Errorf("after Retry: state %q error %q attempts %d", j.State, j.LastError, j.Attempts)
	}
	checkTime(t, "NextTry", j.NextTry, next)
	if got, _ := s.Claim(ctx, now.Add(4*time.Minute), 10, time.Hour); len(got) != 0 {
		t.Errorf("Claim before the retry time = %v", ids(got))
	}
	got, err := s.Claim(ctx, now.Add(6*time.Minute), 10, time.Hour)
	must(t, err)
	if !slices.Equal(ids(got), id[:1]) || got[0].Attempts != 2 || got[0].LastError != "throttled" {
		t.Errorf("Claim after the retry time = %+v", got)
	}

	must(t, s.Fail(ctx, id[1], "unknown subscriber"))
	j, err = s.GetJob(ctx, id[1])
	must(t, err)
	if j.State != store.JobFailed || j.LastError != "unknown subscriber" {
		t.Errorf("after Fail: state %q error %q", j.State, j.LastError)
	}
	if got, _ := s.Claim(ctx, now.Add(48*time.Hour), 10, time.Minute); slices.Contains(ids(got), id[1]) {
		t.Error("failed job claimed again")
	}

	missing := id[1] + 1000
	wantErr(t, "Retry unknown", s.Retry(ctx, missing, next, "x"), store.ErrNotFound)
	wantErr(t, "Fail unknown", s.Fail(ctx, missing, "x"), store.ErrNotFound)
	wantErr(t, "MarkSent unknown", s.MarkSent(ctx, missing, "smpp1", nil), store.ErrNotFound)
}

func testDefer(t *testing.T, s store.Store) {
	ctx := t.Context()
	id := enqueue(t, s, job("+447400123456", "d1"), job("+447400123457", "d2"))
	now := time.Now()
	got, err := s.Claim(ctx, now, 10, time.Hour)
	must(t, err)
	if len(got) != 2 {
		t.Fatalf("Claim = %v", ids(got))
	}
	must(t, s.Retry(ctx, id[1], now, "busy")) // one real attempt on job 1
	_, err = s.Claim(ctx, now, 10, time.Hour)
	must(t, err)

	// Paced: back to the queue, attempt not counted, error kept.
	later := now.Add(30 * time.Second)
	for _, i := range id {
		must(t, s.Defer(ctx, i, later))
	}
	for n, want := range []struct {
		attempts int
		lastErr  string
	}{{0, ""}, {1, "busy"}} {
		j, err := s.GetJob(ctx, id[n])
		must(t, err)
		if j.State != store.JobQueued || j.Attempts != want.attempts || j.LastError != want.lastErr {
			t.Errorf("deferred job %d: state %q attempts %d error %q; want queued, %d, %q", n, j.State, j.Attempts, j.LastError, want.attempts, want.lastErr)
		}
		checkTime(t, "deferred NextTry", j.NextTry, later)
	}
	if got, _ := s.Claim(ctx, now.Add(10*time.Second), 10, time.Hour); len(got) != 0 {
		t.Errorf("Claim before the deferred time = %v", ids(got))
	}
	got, err = s.Claim(ctx, later, 10, time.Hour)
	must(t, err)
	if !slices.Equal(ids(got), id) {
		t.Errorf("Claim at the deferred time = %v, want %v", ids(got), id)
	}

	must(t, s.MarkSent(ctx, id[0], "smpp1", []store.Part{{Index: 0, Ref: "d"}}))
	if err := s.Defer(ctx, id[0], later); err == nil {
		t.Error("Defer of a sent job: no error")
	}
	if j, _ := s.GetJob(ctx, id[0]); j.State != store.JobSent {
		t.Errorf("Defer changed a sent job to %q", j.State)
	}
	wantErr(t, "Defer unknown", s.Defer(ctx, id[1]+1000, later), store.ErrNotFound)
}

func testParts(t *testing.T, s store.Store) {
	ctx := t.Context()
	long := job("+447400123456", "p1")
	long.Parts = 2
	id := enqueue(t, s, long, job("+447400123457", "p2"), job("+447400123458", "p3"))
	now := time.Now()
	_, err := s.Claim(ctx, now, 10, time.Minute)
	must(t, err)

	must(t, s.MarkSent(ctx, id[0], "smpp1", []store.Part{{Index: 0, Ref: "A0", State: "submitted"}, {Index: 1, Ref: "A1"}}))
	must(t, s.MarkSent(ctx, id[1], "smpp1", []store.Part{{Index: 0, Ref: "B0"}}))
	// The same SMSC reference on another transport is another part.
	must(t, s.MarkSent(ctx, id[2], "modem", []store.Part{{Index: 0, Ref: "A0"}}))

	j, err := s.GetJob(ctx, id[0])
	must(t, err)
	if j.State != store.JobSent || j.Transport != "smpp1" || len(j.PartState) != 2 ||
		j.PartState[0].Ref != "A0" || j.PartState[1].Ref != "A1" || j.PartState[1].Index != 1 {
		t.Fatalf("after MarkSent: %+v", j)
	}

	steps := []struct {
		transport, ref, state, errText string
		wantJob                        int64
		wantState                      string
	}{
		{"smpp1", "A1", "delivered", "", id[0], store.JobSent}, // one of two parts
		{"smpp1", "A0", "delivered", "", id[0], store.JobDelivered},
		{"smpp1", "B0", "failed", "err:001 absent subscriber", id[1], store.JobFailed},
		{"modem", "A0", "delivered", "", id[2], store.JobDelivered},
	}
	for _, st := range steps {
		j, err := s.UpdatePart(ctx, st.transport, st.ref, st.state, st.errText)
		must(t, err)
		if j.ID != st.wantJob || j.State != st.wantState {
			t.Errorf("UpdatePart(%s, %s, %s) = job %d state %q, want job %d state %q", st.transport, st.ref, st.state, j.ID, j.State, st.wantJob, st.wantState)
		}
		var p *store.Part
		for i := range j.PartState {
			if j.PartState[i].Ref == st.ref {
				p = &j.PartState[i]
			}
		}
		if p == nil || p.State != st.state || p.Error != st.errText {
			t.Errorf("UpdatePart(%s, %s): returned parts %+v", st.transport, st.ref, j.PartState)
		}
		got, err := s.GetJob(ctx, st.wantJob)
		must(t, err)
		if got.State != st.wantState {
			t.Errorf("GetJob after UpdatePart(%s, %s): state %q, want %q", st.transport, st.ref, got.State, st.wantState)
		}
	}
	if j, _ := s.GetJob(ctx, id[1]); j.LastError != "err:001 absent subscriber" {
		t.Errorf("failed part's job LastError = %q", j.LastError)
	}
	_, err = s.UpdatePart(ctx, "smpp1", "nope", "delivered", "")
	wantErr(t, "UpdatePart unknown ref", err, store.ErrNotFound)
	_, err = s.UpdatePart(ctx, "other", "B0", "delivered", "")
	wantErr(t, "UpdatePart ref on another transport", err, store.ErrNotFound)
}

func testListJobsDepth(t *testing.T, s store.Store) {
	ctx := t.Context()
	d, err := s.Depth(ctx)
	must(t, err)
	for _, st := range []string{store.JobQueued, store.JobSending, store.JobSent, store.JobDelivered, store.JobFailed} {
		if n, ok := d[st]; !ok || n != 0 {
			t.Errorf("empty Depth[%s] = %d, %v; want 0, present", st, n, ok)
		}
	}
	var id []int64
	for i := range 5 {
		id = append(id, enqueue(t, s, job("+44740012345"+fmt.Sprint(i), fmt.Sprintf("l%d", i)))...)
	}
	now := time.Now()
	// Jobs 0,1 sending; 0 then sent; 2 failed; 3,4 queued.
	_, err = s.Claim(ctx, now, 2, time.Minute)
	must(t, err)
	must(t, s.MarkSent(ctx, id[0], "smpp1", []store.Part{{Index: 0, Ref: "x"}}))
	must(t, s.Fail(ctx, id[2], "bad"))

	all, err := s.ListJobs(ctx, "", 0)
	must(t, err)
	if !slices.Equal(ids(all), []int64{id[4], id[3], id[2], id[1], id[0]}) {
		t.Errorf("ListJobs = %v, want newest first", ids(all))
	}
	if len(all[4].PartState) != 1 || all[4].PartState[0].Ref != "x" {
		t.Errorf("ListJobs: sent job's parts = %+v", all[4].PartState)
	}
	cases := []struct {
		state string
		limit int
		want  []int64
	}{
		{"", 2, []int64{id[4], id[3]}},
		{store.JobQueued, 0, []int64{id[4], id[3]}},
		{store.JobQueued, 1, []int64{id[4]}},
		{store.JobSending, 0, []int64{id[1]}},
		{store.JobSent, 0, []int64{id[0]}},
		{store.JobFailed, 0, []int64{id[2]}},
		{store.JobDelivered, 0, nil},
	}
	for _, tc := range cases {
		got, err := s.ListJobs(ctx, tc.state, tc.limit)
		must(t, err)
		if !slices.Equal(ids(got), tc.want) {
			t.Errorf("ListJobs(%q, %d) = %v, want %v", tc.state, tc.limit, ids(got), tc.want)
		}
	}
	d, err = s.Depth(ctx)
	must(t, err)
	want := map[string]int{store.JobQueued: 2, store.JobSending: 1, store.JobSent: 1, store.JobDelivered: 0, store.JobFailed: 1}
	for k, v := range want {
		if d[k] != v {
			t.Errorf("Depth = %v, want %v", d, want)
			break
		}
	}
}

func testCountUserSince(t *testing.T, s store.Store) {
	ctx := t.Context()
	start := time.Now().Add(-time.Second)
	a1 := job("+447400123456", "u1")
	a1.Parts = 3
	a2 := job("+447400123457", "u2")
	a2.Parts = 1
	b := job("+447400123458", "u3")
	b.User, b.Parts = "other", 4
	id := enqueue(t, s, a1, a2, b)
	// Failing a job does not give the quota back: the parts were spent
	// or at least attempted.
	must(t, s.Fail(ctx, id[1], "x"))
	cases := []struct {
		user  string
		since time.Time
		want  int
	}{
		{"ops", start, 4},
		{"ops", time.Time{}, 4},
		{"other", start, 4},
		{"nobody", start, 0},
		{"ops", time.Now().Add(time.Hour), 0},
	}
	for _, tc := range cases {
		n, err := s.CountUserSince(ctx, tc.user, tc.since)
		must(t, err)
		if n != tc.want {
			t.Errorf("CountUserSince(%s, %v) = %d, want %d", tc.user, tc.since, n, tc.want)
		}
	}
}

// ---- AutoCLIP ----

func testAutoCLIP(t *testing.T, s store.Store) {
	ctx := t.Context()
	base := time.Now().Add(-time.Hour)
	recs := []store.Sent{
		{Number: "+447400123456", Transport: "smpp1", SenderID: "+447700000001", Sender: "old@example.com", MessageID: "<1@x>", Subject: "one", At: base},
		{Number: "+447400123456", Transport: "smpp1", SenderID: "+447700000001", Sender: "new@example.com", MessageID: "<2@x>", Subject: "two", At: base.Add(10 * time.Minute)},
		{Number: "+447400123456", Transport: "modem", SenderID: "+447700000002", Sender: "modem@example.com", MessageID: "<3@x>", At: base.Add(5 * time.Minute)},
		{Number: "+819012345678", Transport: "smpp1", Sender: "jp@example.com", At: base.Add(20 * time.Minute)},
	}
	for _, r := range recs {
		must(t, s.RecordSent(ctx, r))
	}
	cases := []struct {
		number, transport string
		since             time.Time
		want              string // sender, "" = not found
	}{
		{"+447400123456", "smpp1", base.Add(-time.Hour), "new@example.com"},
		{"+447400123456", "modem", base.Add(-time.Hour), "modem@example.com"},
		{"+447400123456", "", base.Add(-time.Hour), "new@example.com"},
		{"+447400123456", "smpp1", base.Add(11 * time.Minute), ""},
		{"+447400123456", "other", base.Add(-time.Hour), ""},
		{"+819012345678", "", base, "jp@example.com"},
		{"+10000000000", "", time.Time{}, ""},
	}
	for _, tc := range cases {
		got, err := s.LastSent(ctx, tc.number, tc.transport, tc.since)
		if tc.want == "" {
			wantErr(t, fmt.Sprintf("LastSent(%s, %q)", tc.number, tc.transport), err, store.ErrNotFound)
			continue
		}
		must(t, err)
		if got.Sender != tc.want {
			t.Errorf("LastSent(%s, %q, %v) sender = %q, want %q", tc.number, tc.transport, tc.since, got.Sender, tc.want)
		}
	}
	got, err := s.LastSent(ctx, "+447400123456", "smpp1", time.Time{})
	must(t, err)
	want := recs[1]
	if got.Number != want.Number || got.Transport != want.Transport || got.SenderID != want.SenderID ||
		got.MessageID != want.MessageID || got.Subject != want.Subject {
		t.Errorf("LastSent = %+v, want %+v", got, want)
	}
	checkTime(t, "Sent.At", got.At, want.At)

	n, err := s.PurgeSent(ctx, base.Add(7*time.Minute))
	must(t, err)
	if n != 2 {
		t.Errorf("PurgeSent = %d, want 2", n)
	}
	_, err = s.LastSent(ctx, "+447400123456", "modem", time.Time{})
	wantErr(t, "LastSent after purge", err, store.ErrNotFound)
	if _, err := s.LastSent(ctx, "+447400123456", "smpp1", time.Time{}); err != nil {
		t.Errorf("newer record purged: %v", err)
	}
}

// ---- events ----

func testEvents(t *testing.T, s store.Store) {
	ctx := t.Context()
	base := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	evs := []store.Event{
		{Time: base, Kind: store.EventAccepted, Message: "accepted 1", Fields: map[string]string{"sender": "a@example.com", "job": "1"}},
		{Time: base.Add(time.Minute), Kind: store.EventRefused, Message: "refused", Fields: map[string]string{"reason": "spf fail"}},
		{Time: base.Add(2 * time.Minute), Kind: store.EventAccepted, Message: "accepted 2"},
		{Time: base.Add(3 * time.Minute), Kind: store.EventSent, Message: "sent \"quoted\" ünïcode"},
		{Time: base.Add(4 * time.Minute), Kind: store.EventAccepted, Message: "accepted 3"},
	}
	for _, e := range evs {
		must(t, s.LogEvent(ctx, e))
	}
	must(t, s.LogEvent(ctx, store.Event{Kind: store.EventConfig, Message: "now"}))

	msgs := func(es []store.Event) []string {
		var l []string
		for _, e := range es {
			l = append(l, e.Message)
		}
		return l
	}
	cases := []struct {
		kind  string
		since time.Time
		limit int
		want  []string
	}{
		{"", time.Time{}, 0, []string{"accepted 1", "refused", "accepted 2", `sent "quoted" ünïcode`, "accepted 3", "now"}},
		{store.EventAccepted, time.Time{}, 0, []string{"accepted 1", "accepted 2", "accepted 3"}},
		{store.EventAccepted, time.Time{}, 2, []string{"accepted 2", "accepted 3"}},
		{"", base.Add(3 * time.Minute), 0, []string{`sent "quoted" ünïcode`, "accepted 3", "now"}},
		{"", time.Time{}, 1, []string{"now"}},
		{store.EventAccepted, base.Add(time.Second), 1, []string{"accepted 3"}},
		{store.EventReply, time.Time{}, 0, nil},
	}
	for _, tc := range cases {
		got, err := s.ListEvents(ctx, tc.kind, tc.since, tc.limit)
		must(t, err)
		if !slices.Equal(msgs(got), tc.want) {
			t.Errorf("ListEvents(%q, %v, %d) = %q, want %q", tc.kind, tc.since, tc.limit, msgs(got), tc.want)
		}
	}
	all, err := s.ListEvents(ctx, "", time.Time{}, 0)
	must(t, err)
	first := all[0]
	if first.ID == 0 || first.Kind != store.EventAccepted || first.Fields["sender"] != "a@example.com" || first.Fields["job"] != "1" || len(first.Fields) != 2 {
		t.Errorf("first event = %+v", first)
	}
	checkTime(t, "event Time", first.Time, base)
	if all[5].Time.IsZero() || time.Since(all[5].Time) > time.Minute {
		t.Errorf("event without Time got %v, want now", all[5].Time)
	}
	for i := 1; i < len(all); i++ {
		if all[i].ID == all[i-1].ID {
			t.Errorf("event IDs repeat: %d", all[i].ID)
		}
	}
}

func testCountEvents(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := time.Now()
	for i, e := range []struct {
		kind   string
		ago    time.Duration
		fields map[string]string
	}{
		{store.EventVerdict, 10 * time.Minute, map[string]string{"to": "a@example.com"}},
		{store.EventVerdict, 20 * time.Minute, map[string]string{"to": "a@example.com", "x": "y"}},
		{store.EventVerdict, 2 * time.Hour, map[string]string{"to": "a@example.com"}},
		{store.EventVerdict, 5 * time.Minute, map[string]string{"to": "b@example.com"}},
		{store.EventAccepted, 5 * time.Minute, map[string]string{"to": "a@example.com"}},
		{store.EventVerdict, 5 * time.Minute, map[string]string{"sender": "a@example.com"}},
		{store.EventVerdict, 5 * time.Minute, map[string]string{"odd.key \"$[0]": "v"}},
		{store.EventVerdict, 5 * time.Minute, nil},
	} {
		must(t, s.LogEvent(ctx, store.Event{Time: now.Add(-e.ago), Kind: e.kind, Message: fmt.Sprint(i), Fields: e.fields}))
	}
	cases := []struct {
		kind, key, value string
		since            time.Time
		want             int
	}{
		{store.EventVerdict, "to", "a@example.com", now.Add(-time.Hour), 2},
		{store.EventVerdict, "to", "a@example.com", now.Add(-3 * time.Hour), 3},
		{store.EventVerdict, "to", "b@example.com", now.Add(-time.Hour), 1},
		{store.EventVerdict, "to", "c@example.com", now.Add(-time.Hour), 0},
		{store.EventAccepted, "to", "a@example.com", now.Add(-time.Hour), 1},
		{store.EventVerdict, "sender", "a@example.com", now.Add(-time.Hour), 1},
		{store.EventVerdict, `odd.key "$[0]`, "v", now.Add(-time.Hour), 1},
		{store.EventVerdict, "to", "a@example.com", now.Add(time.Minute), 0},
	}
	for _, tc := range cases {
		n, err := s.CountEvents(ctx, tc.kind, tc.key, tc.value, tc.since)
		must(t, err)
		if n != tc.want {
			t.Errorf("CountEvents(%s, %q, %q, %v) = %d, want %d", tc.kind, tc.key, tc.value, tc.since, n, tc.want)
		}
	}
}

// ---- mailboxes ----

func testMailboxes(t *testing.T, s store.Store) {
	ctx := t.Context()
	_, err := s.MailboxPassword(ctx, "alice@example.com")
	wantErr(t, "MailboxPassword before set", err, store.ErrNotFound)
	must(t, s.SetMailboxPassword(ctx, "alice@example.com", "$argon2id$v=19$one"))
	must(t, s.SetMailboxPassword(ctx, "bob@example.com", "$argon2id$v=19$bob"))
	h, err := s.MailboxPassword(ctx, "alice@example.com")
	must(t, err)
	if h != "$argon2id$v=19$one" {
		t.Errorf("hash = %q", h)
	}
	must(t, s.SetMailboxPassword(ctx, "alice@example.com", "$argon2id$v=19$two"))
	if h, _ := s.MailboxPassword(ctx, "alice@example.com"); h != "$argon2id$v=19$two" {
		t.Errorf("after reset, hash = %q", h)
	}
	if h, _ := s.MailboxPassword(ctx, "bob@example.com"); h != "$argon2id$v=19$bob" {
		t.Errorf("other mailbox hash = %q", h)
	}
}

// ---- mail queue ----

func testMailQueue(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := time.Now()
	data := []byte("From: smsmilter@example.com\r\nTo: a@example.com\r\nSubject: x\r\n\r\nbody\x00\xff\r\n.\r\n")
	id1, err := s.EnqueueMail(ctx, store.Mail{From: "smsmilter@example.com", To: []string{"a@example.com", "b@example.com"}, Data: data, NextTry: now.Add(-time.Minute)})
	must(t, err)
	id2, err := s.EnqueueMail(ctx, store.Mail{From: "", To: []string{"c@example.com"}, Data: []byte("x"), NextTry: now.Add(-2 * time.Minute)})
	must(t, err)
	id3, err := s.EnqueueMail(ctx, store.Mail{From: "x@example.com", To: []string{"d@example.com"}, Data: []byte("y"), NextTry: now.Add(time.Hour)})
	must(t, err)
	if id1 == 0 || id2 == 0 || id3 == 0 || id1 == id2 || id2 == id3 {
		t.Fatalf("EnqueueMail IDs %d %d %d", id1, id2, id3)
	}
	if _, err := s.EnqueueMail(ctx, store.Mail{From: "x@example.com", Data: []byte("z")}); err == nil {
		t.Error("EnqueueMail without recipients: no error")
	}

	ms, err := s.ClaimMail(ctx, now, 10, time.Minute)
	must(t, err)
	if len(ms) != 2 || ms[0].ID != id2 || ms[1].ID != id1 {
		t.Fatalf("ClaimMail = %+v, want mails %d, %d", ms, id2, id1)
	}
	m := ms[1]
	if m.From != "smsmilter@example.com" || !slices.Equal(m.To, []string{"a@example.com", "b@example.com"}) ||
		string(m.Data) != string(data) || m.Attempts != 1 || m.Created.IsZero() {
		t.Errorf("claimed mail = %+v", m)
	}
	if ms[0].From != "" {
		t.Errorf("null sender came back as %q", ms[0].From)
	}
	if got, _ := s.ClaimMail(ctx, now, 10, time.Minute); len(got) != 0 {
		t.Errorf("ClaimMail while leased = %d mails", len(got))
	}

	must(t, s.MailDone(ctx, id1))
	must(t, s.MailRetry(ctx, id2, now.Add(10*time.Minute), "421 busy"))
	wantErr(t, "MailDone twice", s.MailDone(ctx, id1), store.ErrNotFound)
	wantErr(t, "MailRetry unknown", s.MailRetry(ctx, id1, now, "x"), store.ErrNotFound)
	wantErr(t, "MailFail unknown", s.MailFail(ctx, id1+1000, "x"), store.ErrNotFound)

	ms, err = s.ClaimMail(ctx, now.Add(11*time.Minute), 10, time.Minute)
	must(t, err)
	if len(ms) != 1 || ms[0].ID != id2 || ms[0].LastErr != "421 busy" || ms[0].Attempts != 2 {
		t.Fatalf("ClaimMail after retry time = %+v", ms)
	}
	// Lease expiry brings it back.
	ms, err = s.ClaimMail(ctx, now.Add(13*time.Minute), 10, time.Minute)
	must(t, err)
	if len(ms) != 1 || ms[0].ID != id2 || ms[0].Attempts != 3 {
		t.Fatalf("ClaimMail after lease expiry = %+v", ms)
	}
	must(t, s.MailFail(ctx, id2, "550 no such user"))
	ms, err = s.ClaimMail(ctx, now.Add(2*time.Hour), 10, time.Minute)
	must(t, err)
	if len(ms) != 1 || ms[0].ID != id3 {
		t.Errorf("ClaimMail two hours later = %+v, want only mail %d (done and failed mail never again)", ms, id3)
	}
}
