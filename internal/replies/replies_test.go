package replies

import (
	"bytes"
	"context"
	"errors"
	"mime"
	"net/mail"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smsmilter/smsmilter/internal/config"
	"github.com/smsmilter/smsmilter/internal/store"
	"github.com/smsmilter/smsmilter/internal/store/sqlite"
	"github.com/smsmilter/smsmilter/plugins/sdk"
)

// captured is a mail handed to the MTA. The spool that really submits it
// has its own tests against a real SMTP server.
type captured struct {
	from string
	to   []string
	msg  *mail.Message
	body string
}

type fakeMail struct {
	mu   sync.Mutex
	got  []captured
	fail error
}

func (f *fakeMail) Submit(ctx context.Context, envFrom string, rcpts []string, data []byte) error {
	if f.fail != nil {
		return f.fail
	}
	m, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		return err
	}
	var b bytes.Buffer
	b.ReadFrom(m.Body)
	f.mu.Lock()
	f.got = append(f.got, captured{envFrom, rcpts, m, b.String()})
	f.mu.Unlock()
	return nil
}

type fakeBox struct {
	got map[string][][]byte
}

func (f *fakeBox) Deliver(ctx context.Context, mailbox string, msg []byte) (string, error) {
	if f.got == nil {
		f.got = map[string][][]byte{}
	}
	f.got[mailbox] = append(f.got[mailbox], msg)
	return "id", nil
}

func setup(t *testing.T) (*Router, *sqlite.Store, *config.Config, *fakeMail, *fakeBox) {
	t.Helper()
	st, err := sqlite.OpenDir(context.Background(), t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cfg := config.Defaults()
	cfg.SMSDomains = []string{"sms.example.com"}
	cfg.Mail.From = "smsmilter@example.com"
	cfg.Replies.Deliver = []string{"email", "pop3"}
	fm, fb := &fakeMail{}, &fakeBox{}
	r := New(Options{Store: st, Config: func() *config.Config { return cfg }, Mail: fm, POP3: fb})
	return r, st, cfg, fm, fb
}

func TestDecideRules(t *testing.T) {
	r, st, cfg, _, _ := setup(t)
	ctx := context.Background()
	now := time.Now()
	st.RecordSent(ctx, store.Sent{Number: "+447400123456", Transport: "smsc", Sender: "alice@example.com", MessageID: "m1@example.com", Subject: "Hi", At: now.Add(-time.Hour)})
	st.RecordSent(ctx, store.Sent{Number: "+447400123456", Transport: "smsc", Sender: "bob@example.com", MessageID: "m2@example.com", At: now.Add(-time.Minute)})
	st.RecordSent(ctx, store.Sent{Number: "+819012345678", Transport: "smsc", Sender: "carol@example.com", At: now.Add(-200 * time.Hour)})
	cfg.Replies.Rules = []config.ReplyRule{
		{Transport: "modem", Action: "deliver", To: "modem-inbox@example.com"},
		{FromPrefix: "+33", Action: "drop"},
		{FromPrefix: "+81", Action: "autoclip", To: "jp-desk@example.com"},
		{Action: "autoclip"},
	}
	tests := []struct {
		transport, from string
		action, to      string
	}{
		{"smsc", "+447400123456", "autoclip", "bob@example.com"},         // most recent record wins
		{"modem", "+447400123456", "deliver", "modem-inbox@example.com"}, // transport rule first
		{"smsc", "+33612345678", "drop", ""},                             // prefix drop
		{"smsc", "+819012345678", "autoclip", "jp-desk@example.com"},     // record older than the TTL: fallback
		{"smsc", "+447400999999", "drop", ""},                            // no record, no fallback
		{"other", "+447400123456", "drop", ""},                           // records are per transport
	}
	for _, tt := range tests {
		d, err := r.Decide(ctx, cfg, tt.transport, tt.from)
		if err != nil {
			t.Fatal(err)
		}
		if d.Action != tt.action || d.To != tt.to {
			t.Errorf("Decide(%s, %s) = %s %q (%s); want %s %q", tt.transport, tt.from, d.Action, d.To, d.Why, tt.action, tt.to)
		}
	}
}

func TestIncomingBecomesThreadedReply(t *testing.T) {
	r, st, _, fm, fb := setup(t)
	ctx := context.Background()
	st.RecordSent(ctx, store.Sent{Number: "+447400123456", Transport: "smsc", SenderID: "+447400000000", Sender: "alice@example.com", MessageID: "orig@example.com", Subject: "Meeting", At: time.Now()})
	if err := r.Incoming(ctx, "smsc", sdk.Incoming{From: "+447400123456", Text: "OK, 3pm 👍\r\nBcc: x@example.com"}); err != nil {
		t.Fatal(err)
	}
	if len(fm.got) != 1 {
		t.Fatalf("%d mails", len(fm.got))
	}
	m := fm.got[0]
	if m.from != "smsmilter@example.com" || len(m.to) != 1 || m.to[0] != "alice@example.com" {
		t.Errorf("envelope %q -> %v", m.from, m.to)
	}
	h := m.msg.Header
	want := map[string]string{
		"From":        "<+447400123456@sms.example.com>",
		"To":          "<alice@example.com>",
		"Subject":     "Re: Meeting",
		"In-Reply-To": "<orig@example.com>",
		"References":  "<orig@example.com>",
	}
	for k, v := range want {
		if got := h.Get(k); got != v {
			t.Errorf("%s: %q; want %q", k, got, v)
		}
	}
	if h.Get("Bcc") != "" || h.Get("Date") == "" || h.Get("Message-Id") == "" {
		t.Errorf("headers: %v", h)
	}
	if !strings.Contains(m.body, "OK, 3pm 👍") {
		t.Errorf("body %q", m.body)
	}
	if len(fb.got["alice@example.com"]) != 1 {
		t.Errorf("POP3 mailbox got %d", len(fb.got["alice@example.com"]))
	}
	evs, _ := st.ListEvents(ctx, store.EventReply, time.Time{}, 0)
	if len(evs) != 1 || evs[0].Fields["to"] != "alice@example.com" || evs[0].Fields["delivered"] != "email,pop3" {
		t.Errorf("events %+v", evs)
	}
}

func TestIncomingWithoutSubjectOrRecord(t *testing.T) {
	r, st, cfg, fm, _ := setup(t)
	ctx := context.Background()
	cfg.Replies.Deliver = []string{"email"}
	cfg.Replies.Rules = []config.ReplyRule{{Action: "deliver", To: "ops@example.com"}}
	r.Incoming(ctx, "smsc", sdk.Incoming{From: "+447400123456", Text: "hello"})
	if len(fm.got) != 1 {
		t.Fatalf("%d mails", len(fm.got))
	}
	dec := new(mime.WordDecoder)
	subj, _ := dec.DecodeHeader(fm.got[0].msg.Header.Get("Subject"))
	if subj != "SMS from +447400123456" || fm.got[0].msg.Header.Get("In-Reply-To") != "" {
		t.Errorf("subject %q, in-reply-to %q", subj, fm.got[0].msg.Header.Get("In-Reply-To"))
	}
	// Dropped SMS are logged too.
	cfg.Replies.Rules = []config.ReplyRule{{Action: "drop"}}
	r.Incoming(ctx, "smsc", sdk.Incoming{From: "+447400123456", Text: "spam"})
	evs, _ := st.ListEvents(ctx, store.EventReply, time.Time{}, 0)
	if len(evs) != 2 || evs[1].Fields["action"] != "drop" {
		t.Errorf("events %+v", evs)
	}
}

func TestIncomingMTAFailureIsReported(t *testing.T) {
	r, _, cfg, fm, _ := setup(t)
	cfg.Replies.Deliver = []string{"email"}
	cfg.Replies.Rules = []config.ReplyRule{{Action: "deliver", To: "ops@example.com"}}
	fm.fail = errors.New("store unavailable")
	if err := r.Incoming(context.Background(), "smsc", sdk.Incoming{From: "+447400123456", Text: "x"}); err == nil {
		t.Fatal("no error when the reply could not be queued")
	}
}

func enqueueSent(t *testing.T, st *sqlite.Store, notifyOK bool, refs ...string) store.Job {
	t.Helper()
	ctx := context.Background()
	res, err := st.Enqueue(ctx, []store.Job{{DedupeKey: "k|" + refs[0], MessageID: "orig@example.com", Sender: "alice@example.com", NotifyOK: notifyOK, Subject: "Hi", User: "ops", SenderID: "ACME", To: "+447400123456", Text: "hello", Encoding: "gsm7", Parts: len(refs)}}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Claim(ctx, time.Now(), 10, time.Minute); err != nil {
		t.Fatal(err)
	}
	var parts []store.Part
	for i, r := range refs {
		parts = append(parts, store.Part{Index: i, Ref: r, State: "submitted"})
	}
	if err := st.MarkSent(ctx, res.IDs[0], "smsc", parts); err != nil {
		t.Fatal(err)
	}
	j, _ := st.GetJob(ctx, res.IDs[0])
	return j
}

func TestReceipts(t *testing.T) {
	tests := []struct {
		receipts string
		states   []string // reports for parts r1, r2
		notifyOK bool
		want     string // subject prefix of the one receipt mail, "" for none
	}{
		{"failed", []string{"delivered", "delivered"}, true, ""},
		{"failed", []string{"failed", "failed"}, true, "SMS not delivered"},
		{"all", []string{"delivered", "delivered"}, true, "SMS delivered"},
		{"all", []string{"delivered"}, true, ""}, // one part still out
		{"none", []string{"failed", "failed"}, true, ""},
		{"all", []string{"failed"}, false, ""}, // sender not authenticated: no backscatter
	}
	for _, tt := range tests {
		r, st, cfg, fm, _ := setup(t)
		cfg.Replies.Receipts = tt.receipts
		enqueueSent(t, st, tt.notifyOK, "r1", "r2")
		for i, s := range tt.states {
			if err := r.Report(context.Background(), "smsc", sdk.Report{Ref: []string{"r1", "r2"}[i], State: s, Error: "absent subscriber"}); err != nil {
				t.Fatal(err)
			}
		}
		// A repeated report does not mail twice.
		r.Report(context.Background(), "smsc", sdk.Report{Ref: "r1", State: tt.states[0]})
		switch {
		case tt.want == "" && len(fm.got) != 0:
			t.Errorf("%s %v: %d mails; want none", tt.receipts, tt.states, len(fm.got))
		case tt.want != "" && len(fm.got) != 1:
			t.Errorf("%s %v: %d mails; want 1", tt.receipts, tt.states, len(fm.got))
		case tt.want != "":
			m := fm.got[0]
			if !strings.HasPrefix(m.msg.Header.Get("Subject"), tt.want) || m.from != "" || m.msg.Header.Get("In-Reply-To") != "<orig@example.com>" {
				t.Errorf("%s %v: mail from <%s> subject %q in-reply-to %q", tt.receipts, tt.states, m.from, m.msg.Header.Get("Subject"), m.msg.Header.Get("In-Reply-To"))
			}
		}
	}
}

func TestReportForUnknownPart(t *testing.T) {
	r, _, _, _, _ := setup(t)
	err := r.Report(context.Background(), "smsc", sdk.Report{Ref: "nope", State: "delivered"})
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("err %v; want ErrNotFound so the caller can retry", err)
	}
}

func TestJobSentAndFailed(t *testing.T) {
	r, st, _, fm, _ := setup(t)
	ctx := context.Background()
	j := store.Job{ID: 7, To: "+447400123456", SenderID: "+447400000000", Sender: "alice@example.com", MessageID: "m@example.com", Subject: "Hi", NotifyOK: true, Text: "hello"}
	r.JobSent(ctx, j, "smsc")
	s, err := st.LastSent(ctx, "+447400123456", "smsc", time.Now().Add(-time.Minute))
	if err != nil || s.Sender != "alice@example.com" || s.MessageID != "m@example.com" {
		t.Fatalf("AutoCLIP record %+v, %v", s, err)
	}
	r.JobFailed(ctx, j, "invalid number")
	j.NotifyOK = false
	r.JobFailed(ctx, j, "invalid number")
	j.NotifyOK, j.Sender = true, ""
	r.JobFailed(ctx, j, "invalid number")
	if len(fm.got) != 1 || !strings.Contains(fm.got[0].body, "invalid number") || fm.got[0].from != "" {
		t.Fatalf("notices: %+v", fm.got)
	}
}
