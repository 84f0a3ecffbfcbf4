package milter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/smsmilter/smsmilter/internal/config"
	"github.com/smsmilter/smsmilter/internal/dnsresolver/dnstest"
	"github.com/smsmilter/smsmilter/internal/mailer"
	"github.com/smsmilter/smsmilter/internal/registry"
	"github.com/smsmilter/smsmilter/internal/store"
	"github.com/smsmilter/smsmilter/internal/store/sqlite"
	"github.com/smsmilter/smsmilter/internal/testutil"
)

// The test world: an SMS domain sms.test, a sending domain example.test
// whose SPF allows goodIP only and whose DMARC policy is reject, and the
// forwarding user ops.
const (
	goodIP = "192.0.2.10"
	badIP  = "198.51.100.7"

	gbMobile = "+447400123456"
	jpMobile = "+819012345678"
)

const baseConfig = `
milter:
  listen: inet:127.0.0.1:0
  max_message_size: 8KiB
  timeout: 5s
  max_connections: 40
http:
  listen: ""
sms_domains: [sms.test, sms2.test]
state_dir: %s
dns:
  resolver: %s
  timeout: 2s
auth:
  trusted_authserv_ids: [mx.test]
mail:
  smtp: 127.0.0.1:1
  from: smsmilter@mx.test
notify:
  admin: postmaster@mx.test
`

// env is one running milter with its real store, DNS and mail spool.
type env struct {
	t     testing.TB
	cfg   *config.Config
	dns   *dnstest.Server
	sq    *sqlite.Store
	st    *faultStore
	h     *Handler
	srv   *Server
	addr  string
	log   *testutil.Buffer
	queue atomic.Int64 // Queued calls
	serve chan error

	mailMu  sync.Mutex
	claimed []store.Mail
}

type envOption func(*config.Config)

func newEnv(t testing.TB, opts ...envOption) *env {
	t.Helper()
	return newEnvReg(t, nil, opts...)
}

// newEnvReg is newEnv with the milter's metrics registered on reg.
func newEnvReg(t testing.TB, reg prometheus.Registerer, opts ...envOption) *env {
	t.Helper()
	e := &env{t: t, log: &testutil.Buffer{}}
	e.dns = dnstest.NewServer(t)
	e.dns.TXT("example.test", "v=spf1 ip4:"+goodIP+" -all")
	e.dns.TXT("_dmarc.example.test", "v=DMARC1; p=reject")
	e.dns.TXT("soft.test", "v=spf1 ~all")

	dir := t.TempDir()
	cfg, err := config.Parse("test.yaml", fmt.Appendf(nil, baseConfig, dir, e.dns.Addr))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	for _, o := range opts {
		o(cfg)
	}
	e.cfg = cfg

	logger := slog.New(slog.NewJSONHandler(e.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx := context.Background()
	e.sq, err = sqlite.OpenDir(ctx, dir, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.sq.Close() })
	e.st = &faultStore{Store: e.sq}
	e.seedRegistry()

	spool := mailer.NewSpool(e.st, func() string { return cfg.Mail.SMTP }, logger)
	e.h, err = New(Options{Config: cfg, Store: e.st, Mail: spool, Log: logger, Metrics: NewMetrics(reg), Queued: func() { e.queue.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	e.srv = NewServer(e.h, logger)
	ln, err := Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = ln.Addr().String()
	e.serve = make(chan error, 1)
	go func() { e.serve <- e.srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		e.srv.Shutdown(ctx)
		if t.Failed() {
			t.Logf("milter log:\n%s", e.log.String())
		}
	})
	return e
}

// sqliteReopen opens the env's store a second time, as the CLI does while
// the daemon runs.
func sqliteReopen(e *env) (*sqlite.Store, error) {
	st, err := sqlite.Open(context.Background(), e.sq.Path(), nil)
	if err == nil {
		e.t.Cleanup(func() { st.Close() })
	}
	return st, err
}

// reload swaps in a changed copy of the config, as SIGHUP does.
func (e *env) reload(change func(*config.Config)) {
	e.t.Helper()
	next := *e.cfg
	change(&next)
	if err := e.h.Reload(&next); err != nil {
		e.t.Fatal(err)
	}
	e.cfg = &next
}

func (e *env) seedRegistry() {
	t := e.t
	ctx := context.Background()
	for _, u := range []store.User{
		{Name: "ops", SenderID: "ACME", Daily: 200},
		{Name: "tiny", SenderID: "4479000", Daily: 2},
	} {
		if err := e.sq.AddUser(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	for _, spec := range []registry.RuleSpec{
		{Kind: store.KindAddress, Pattern: "alice@example.test", User: "ops"},
		{Kind: store.KindAddress, Pattern: "bob@example.test", User: "tiny"},
		{Kind: store.KindAddress, Pattern: "carol@soft.test", User: "ops"},
	} {
		e.addRule(spec)
	}
}

func (e *env) addRule(spec registry.RuleSpec) store.Rule {
	e.t.Helper()
	r, err := registry.Rule(spec)
	if err != nil {
		e.t.Fatal(err)
	}
	r, err = e.sq.AddRule(context.Background(), r)
	if err != nil {
		e.t.Fatal(err)
	}
	if r.Kind == store.KindDomain {
		if err := e.sq.SetDomainVerified(context.Background(), r.Pattern, time.Now()); err != nil {
			e.t.Fatal(err)
		}
	}
	return r
}

// jobs returns every job in the queue, oldest first.
func (e *env) jobs() []store.Job {
	e.t.Helper()
	js, err := e.sq.ListJobs(context.Background(), "", 1000)
	if err != nil {
		e.t.Fatal(err)
	}
	for i, j := 0, len(js)-1; i < j; i, j = i+1, j-1 {
		js[i], js[j] = js[j], js[i]
	}
	return js
}

// mails returns all mail smsmilter queued to send (notices, verdicts) so
// far, oldest first. Claiming leases them, so they are kept here.
func (e *env) mails() []store.Mail {
	e.t.Helper()
	ms, err := e.sq.ClaimMail(context.Background(), time.Now().Add(time.Hour), 1000, time.Hour)
	if err != nil {
		e.t.Fatal(err)
	}
	e.mailMu.Lock()
	defer e.mailMu.Unlock()
	e.claimed = append(e.claimed, ms...)
	return slices.Clone(e.claimed)
}

func (e *env) events(kind string) []store.Event {
	e.t.Helper()
	e.h.Wait()
	evs, err := e.sq.ListEvents(context.Background(), kind, time.Time{}, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	return evs
}

// faultStore is the real store with switchable failures: the one unit
// fake the tests use, for a store that stops taking writes.
type faultStore struct {
	store.Store
	failEnqueue atomic.Bool
	enqueueHook func() // called inside Enqueue, for timing tests
}

var errDiskFull = errors.New("sqlite: database or disk is full")

func (f *faultStore) Enqueue(ctx context.Context, jobs []store.Job, window time.Duration) (store.EnqueueResult, error) {
	if f.enqueueHook != nil {
		f.enqueueHook()
	}
	if f.failEnqueue.Load() {
		return store.EnqueueResult{}, errDiskFull
	}
	return f.Store.Enqueue(ctx, jobs, window)
}

func (f *faultStore) Ping(ctx context.Context) error {
	if f.failEnqueue.Load() {
		return errDiskFull
	}
	return f.Store.Ping(ctx)
}

// ---- the MTA side, with go-milter's client ----

func clientOptions() gomilter.ClientOptions {
	return gomilter.ClientOptions{
		Dialer:       &net.Dialer{Timeout: 5 * time.Second},
		ReadTimeout:  10 * time.Second,
		WriteTimeout: 10 * time.Second,
		// Within 0x3f / 0x7f: go-milter's client then accepts the
		// server's protocol version 2.
		ActionMask:   gomilter.OptAddHeader | gomilter.OptChangeBody | gomilter.OptAddRcpt | gomilter.OptRemoveRcpt | gomilter.OptChangeHeader | gomilter.OptQuarantine,
		ProtocolMask: 0,
	}
}

// mta is one milter connection, as Postfix's smtpd holds it for one
// SMTP session.
type mta struct {
	t testing.TB
	s *gomilter.ClientSession
}

// dial opens a milter connection and sends CONNECT and HELO for a client
// at ip.
func (e *env) dial(ip string) *mta { return e.dialFor(e.t, ip) }

// dialFor is dial for a test other than the env's own (a fuzz target's).
func (e *env) dialFor(t testing.TB, ip string) *mta {
	t.Helper()
	s, err := gomilter.NewClientWithOptions("tcp", e.addr, clientOptions()).Session()
	if err != nil {
		t.Fatalf("milter session: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	m := &mta{t: t, s: s}
	m.connect(ip)
	return m
}

func (m *mta) connect(ip string) {
	m.t.Helper()
	must(m.t, m.s.Macros(gomilter.CodeConn, "j", "mx.test", "{daemon_name}", "smtpd"))
	act, err := m.s.Conn("client.example.test", gomilter.FamilyInet, 25, ip)
	if err != nil || act.Code != gomilter.ActContinue {
		m.t.Fatalf("CONNECT: %v %+v", err, act)
	}
	act, err = m.s.Helo("client.example.test")
	if err != nil || act.Code != gomilter.ActContinue {
		m.t.Fatalf("HELO: %v %+v", err, act)
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// mail is one message as the MTA hands it over.
type mail struct {
	From    string // envelope sender
	Auth    string // {auth_authen}
	Rcpts   []string
	Raw     string // header and body, LF or CRLF
	QueueID string // i at end of message; "" = a fresh one
	// NoMacros sends no macros at all, as an MTA configured without them:
	// whatever go-milter kept from the previous message stays around.
	NoMacros bool
}

// outcome is what the milter answered.
type outcome struct {
	Rcpt  []*gomilter.Action // per recipient
	Stage string             // where the final answer came: mail, rcpt, header, eoh, body, eom
	Act   *gomilter.Action
	Mods  []gomilter.ModifyAction
	Err   error // the connection failed
}

// reply is the final answer as a line: "550 5.7.1 ...", or the action
// letter for the simple ones ("discard", "accept", ...).
func (o outcome) reply() string { return actText(o.Act) }

func actText(a *gomilter.Action) string {
	if a == nil {
		return "<none>"
	}
	switch a.Code {
	case gomilter.ActReplyCode:
		return fmt.Sprintf("%d %s", a.SMTPCode, unescapeReply(a.SMTPText))
	case gomilter.ActAccept:
		return "accept"
	case gomilter.ActContinue:
		return "continue"
	case gomilter.ActDiscard:
		return "discard"
	case gomilter.ActReject:
		return "reject"
	case gomilter.ActTempFail:
		return "tempfail"
	}
	return fmt.Sprintf("action %q", a.Code)
}

// unescapeReply undoes the "%%" the milter writes, as Postfix does.
func unescapeReply(s string) string { return strings.ReplaceAll(s, "%%", "%") }

func (o outcome) deleted() []string {
	var d []string
	for _, m := range o.Mods {
		if m.Code == gomilter.ActDelRcpt {
			d = append(d, strings.Trim(m.Rcpt, "<>"))
		}
	}
	return d
}

var queueSeq atomic.Int64

// send runs one message through the connection as Postfix does.
func (m *mta) send(ml mail) outcome {
	m.t.Helper()
	var o outcome
	s := m.s
	fail := func(stage string, err error) outcome {
		o.Stage, o.Err = stage, err
		return o
	}
	qid := ml.QueueID
	if qid == "" {
		qid = fmt.Sprintf("4Q%06X", queueSeq.Add(1))
	}
	kv := []string{"{mail_addr}", ml.From}
	if ml.Auth != "" {
		kv = append(kv, "{auth_authen}", ml.Auth, "{auth_type}", "PLAIN")
	}
	macros := func(code gomilter.Code, kv ...string) error {
		if ml.NoMacros {
			return nil
		}
		return s.Macros(code, kv...)
	}
	if err := macros(gomilter.CodeMail, kv...); err != nil {
		return fail("mail", err)
	}
	act, err := s.Mail(ml.From, nil)
	if err != nil {
		return fail("mail", err)
	}
	if act.Code != gomilter.ActContinue {
		o.Stage, o.Act = "mail", act
		return o
	}
	accepted := 0
	for _, r := range ml.Rcpts {
		if err := macros(gomilter.CodeRcpt, "i", qid, "{rcpt_addr}", r); err != nil {
			return fail("rcpt", err)
		}
		act, err := s.Rcpt(r, nil)
		if err != nil {
			return fail("rcpt", err)
		}
		o.Rcpt = append(o.Rcpt, act)
		switch act.Code {
		case gomilter.ActContinue:
			accepted++
		case gomilter.ActReplyCode: // this recipient only
		default:
			o.Stage, o.Act = "rcpt", act
			return o
		}
	}
	if accepted == 0 {
		// Postfix sends no DATA without recipients; it aborts.
		o.Stage = "rcpt"
		if err := s.Abort(); err != nil {
			o.Err = err
		}
		return o
	}
	fields, body := splitRaw(ml.Raw)
	for _, f := range fields {
		act, err := s.HeaderField(f.Name, f.Value)
		if err != nil {
			return fail("header", err)
		}
		if act.Code != gomilter.ActContinue {
			o.Stage, o.Act = "header", act
			return o
		}
	}
	act, err = s.HeaderEnd()
	if err != nil {
		return fail("eoh", err)
	}
	if act.Code != gomilter.ActContinue {
		o.Stage, o.Act = "eoh", act
		return o
	}
	for len(body) > 0 {
		n := min(len(body), gomilter.MaxBodyChunk)
		act, err := s.BodyChunk(body[:n])
		if err != nil {
			return fail("body", err)
		}
		if act.Code != gomilter.ActContinue {
			o.Stage, o.Act = "body", act
			return o
		}
		body = body[n:]
	}
	if err := macros(gomilter.CodeEOB, "i", qid); err != nil {
		return fail("eom", err)
	}
	mods, act, err := s.End()
	if err != nil {
		return fail("eom", err)
	}
	o.Stage, o.Act, o.Mods = "eom", act, mods
	return o
}

// field is a header field as Postfix gives it to a milter that asked for
// the leading space: the value is everything after the colon, folds kept
// (as LF, like Postfix).
type field struct{ Name, Value string }

// splitRaw splits a message into header fields and a CRLF body.
func splitRaw(raw string) ([]field, []byte) {
	raw = strings.ReplaceAll(raw, "\r\n", "\n")
	head, body, _ := strings.Cut(raw, "\n\n")
	if !strings.Contains(raw, "\n\n") && !strings.Contains(head, ":") {
		head, body = "", raw
	}
	var fs []field
	for _, line := range strings.Split(head, "\n") {
		if line == "" {
			continue
		}
		if (line[0] == ' ' || line[0] == '\t') && len(fs) > 0 {
			fs[len(fs)-1].Value += "\n" + line
			continue
		}
		name, value, _ := strings.Cut(line, ":")
		fs = append(fs, field{name, value})
	}
	return fs, []byte(strings.ReplaceAll(body, "\n", "\r\n"))
}

// textMail is a plain message from alice.
func textMail(from, msgID, body string) string {
	return "From: Alice <" + from + ">\nTo: someone\nSubject: server alert\nMessage-ID: <" + msgID + ">\n" +
		"Date: Mon, 1 Dec 2025 10:00:00 +0000\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n" + body
}

var msgSeq atomic.Int64

func newMsgID() string {
	return fmt.Sprintf("%d.%d@example.test", time.Now().UnixNano(), msgSeq.Add(1))
}

// writeFile writes a file for an external program.
func writeFile(t testing.TB, dir, name, data string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
