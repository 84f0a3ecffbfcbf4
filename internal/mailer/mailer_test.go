package mailer

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smsmilter/smsmilter/internal/store"
	"github.com/smsmilter/smsmilter/internal/testutil"
)

func TestMessageHeadersAreSafe(t *testing.T) {
	m := &Message{
		From:       "smsmilter@example.com",
		To:         "alice@example.com",
		Subject:    "Re: hello\r\nBcc: victim@example.com\x00 日本語",
		InReplyTo:  "<abc@example.com>\r\nX-Evil: 1",
		References: []string{"abc@example.com", "bad id with spaces"},
		Date:       time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC),
		Body:       "line one\n.\nline three\r\n\x00",
		Extra:      map[string]string{"Auto-Submitted": "auto-replied\r\nX-Injected: yes", "Bad Name": "x"},
	}
	data, err := m.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	msg, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("not a parseable message: %v\n%s", err, data)
	}
	for _, h := range []string{"Bcc", "X-Evil", "X-Injected", "Bad Name"} {
		if msg.Header.Get(h) != "" {
			t.Errorf("header %s was injected:\n%s", h, data)
		}
	}
	dec := new(mimeDecoder)
	subj, _ := dec.DecodeHeader(msg.Header.Get("Subject"))
	if !strings.Contains(subj, "日本語") || strings.ContainsAny(subj, "\r\n\x00") {
		t.Errorf("Subject = %q", subj)
	}
	if got := msg.Header.Get("In-Reply-To"); got != "" {
		t.Errorf("In-Reply-To with an injected line kept: %q", got)
	}
	if got := msg.Header.Get("References"); got != "<abc@example.com>" {
		t.Errorf("References = %q", got)
	}
	if !strings.HasPrefix(msg.Header.Get("Message-ID"), "<") || !strings.HasSuffix(msg.Header.Get("Message-ID"), "@example.com>") {
		t.Errorf("Message-ID = %q", msg.Header.Get("Message-ID"))
	}
	if bytes.Contains(data, []byte("\x00")) || bytes.Contains(bytes.ReplaceAll(data, []byte("\r\n"), nil), []byte("\n")) {
		t.Errorf("NUL or bare LF in output:\n%q", data)
	}
	if !bytes.HasSuffix(data, []byte("line three\r\n")) {
		t.Errorf("body does not end with CRLF: %q", data)
	}
}

func TestBadAddressesAreErrors(t *testing.T) {
	for _, to := range []string{"", "not an address", "a@b\r\nBcc: c@d"} {
		m := &Message{From: "smsmilter@example.com", To: to, Subject: "x", Body: "x"}
		if _, err := m.Bytes(); err == nil && !strings.Contains(to, "\r") {
			t.Errorf("To %q accepted", to)
		}
	}
}

// memQueue is a store.MailQueue in memory: the spool's own logic is under
// test here; the SQLite queue has its own conformance tests.
type memQueue struct {
	mu    sync.Mutex
	mails map[int64]*store.Mail
	state map[int64]string
	next  int64
}

func newMemQueue() *memQueue {
	return &memQueue{mails: map[int64]*store.Mail{}, state: map[int64]string{}}
}

func (q *memQueue) EnqueueMail(ctx context.Context, m store.Mail) (int64, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.next++
	m.ID = q.next
	q.mails[m.ID] = &m
	q.state[m.ID] = "queued"
	return m.ID, nil
}

func (q *memQueue) ClaimMail(ctx context.Context, now time.Time, limit int, lease time.Duration) ([]store.Mail, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []store.Mail
	for id := int64(1); id <= q.next && len(out) < limit; id++ {
		m := q.mails[id]
		if q.state[id] == "queued" && !m.NextTry.After(now) {
			q.state[id] = "sending"
			out = append(out, *m)
		}
	}
	return out, nil
}

func (q *memQueue) MailDone(ctx context.Context, id int64) error { return q.set(id, "done", "") }
func (q *memQueue) MailFail(ctx context.Context, id int64, e string) error {
	return q.set(id, "failed", e)
}
func (q *memQueue) MailRetry(ctx context.Context, id int64, next time.Time, e string) error {
	q.mu.Lock()
	q.mails[id].NextTry = next
	q.mails[id].Attempts++
	q.mu.Unlock()
	return q.set(id, "queued", e)
}

func (q *memQueue) set(id int64, st, e string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.state[id] = st
	q.mails[id].LastErr = e
	return nil
}

func (q *memQueue) stateOf(id int64) string {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.state[id]
}

// startSink runs Postfix's smtp-sink, a real SMTP server, capturing each
// mail to a file in dir. extra are smtp-sink options (e.g. -r rcpt to
// answer RCPT with a 4xx).
func startSink(t *testing.T, dir string, extra ...string) string {
	t.Helper()
	bin := testutil.NeedCmd(t, "smtp-sink")
	port := testutil.FreePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	args := append([]string{"-u", "nobody", "-d", filepath.Join(dir, "%M.")}, extra...)
	args = append(args, addr, "10")
	os.Chmod(dir, 0o777)
	cmd := exec.Command(bin, args...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for i := 0; i < 100; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return addr
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("smtp-sink did not start on %s", addr)
	return ""
}

func sinkFiles(t *testing.T, dir string) []string {
	t.Helper()
	fs, _ := filepath.Glob(filepath.Join(dir, "*"))
	return fs
}

func TestSpoolDeliversThroughRealSMTP(t *testing.T) {
	dir := testutil.OpenDir(t)
	addr := startSink(t, dir)
	q := newMemQueue()
	sp := NewSpool(q, func() string { return addr }, nil)
	m := &Message{From: "smsmilter@example.com", To: "alice@example.com", Subject: "Re: dots", Body: "first\n.\n..two\nlast"}
	data, err := m.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	if err := sp.Submit(context.Background(), "", []string{"alice@example.com"}, data); err != nil {
		t.Fatal(err)
	}
	sp.Flush(context.Background())
	if st := q.stateOf(1); st != "done" {
		t.Fatalf("mail state %q (%s)", st, q.mails[1].LastErr)
	}
	files := sinkFiles(t, dir)
	if len(files) != 1 {
		t.Fatalf("smtp-sink captured %d mails", len(files))
	}
	got, _ := os.ReadFile(files[0])
	got = bytes.ReplaceAll(got, []byte("\r\n"), []byte("\n")) // smtp-sink stores LF
	// The body arrives unchanged: dot-stuffing was applied on the wire
	// and undone by the server.
	if !bytes.Contains(got, []byte("\n\nfirst\n.\n..two\nlast\n")) {
		t.Errorf("body not preserved:\n%s", got)
	}
	if !bytes.Contains(got, []byte("X-Mail-Args: <>")) {
		t.Errorf("not sent from the null sender:\n%s", got)
	}
}

func TestSpoolKeepsMailWhileMTAIsDown(t *testing.T) {
	dir := testutil.OpenDir(t)
	port := testutil.FreePort(t) // nothing listens yet
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	q := newMemQueue()
	now := time.Now()
	sp := NewSpool(q, func() string { return addr }, nil)
	sp.Now = func() time.Time { return now }
	sp.Timeout = 2 * time.Second
	sp.Submit(context.Background(), "smsmilter@example.com", []string{"bob@example.com"}, []byte("Subject: x\r\n\r\nbody\r\n"))
	sp.Flush(context.Background())
	if st := q.stateOf(1); st != "queued" || q.mails[1].Attempts != 1 {
		t.Fatalf("after a refused connection: state %q attempts %d; want queued for retry", st, q.mails[1].Attempts)
	}
	// The MTA comes back on the same port; once the backoff has passed
	// the mail goes out.
	startSinkOn(t, dir, addr)
	now = now.Add(2 * time.Hour)
	sp.Flush(context.Background())
	if st := q.stateOf(1); st != "done" {
		t.Fatalf("state %q after the MTA came back (%s)", st, q.mails[1].LastErr)
	}
	if n := len(sinkFiles(t, dir)); n != 1 {
		t.Fatalf("captured %d mails", n)
	}
}

func TestSpoolTempAndPermanentRejections(t *testing.T) {
	tests := []struct {
		opt  string
		want string
	}{
		{"-r", "queued"}, // 4xx at RCPT: retry later
		{"-f", "failed"}, // 5xx at RCPT: give up
	}
	for _, tt := range tests {
		dir := testutil.OpenDir(t)
		addr := startSink(t, dir, tt.opt, "rcpt")
		q := newMemQueue()
		sp := NewSpool(q, func() string { return addr }, nil)
		sp.Submit(context.Background(), "", []string{"bob@example.com"}, []byte("Subject: x\r\n\r\nbody\r\n"))
		sp.Flush(context.Background())
		if st := q.stateOf(1); st != tt.want {
			t.Errorf("smtp-sink %s rcpt: state %q (%s); want %s", tt.opt, st, q.mails[1].LastErr, tt.want)
		}
	}
}

func startSinkOn(t *testing.T, dir, addr string) {
	t.Helper()
	bin := testutil.NeedCmd(t, "smtp-sink")
	os.Chmod(dir, 0o777)
	cmd := exec.Command(bin, "-u", "nobody", "-d", filepath.Join(dir, "%M."), addr, "10")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for i := 0; i < 100; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("smtp-sink did not start on %s", addr)
}

type mimeDecoder = mimeWordDecoder
