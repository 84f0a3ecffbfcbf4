package harness

import (
	"fmt"
	"net/mail"
	"strings"
	"testing"
	"time"
)

// This file holds the checks and flows the MTA suites share: what must
// hold of smsmilter's work whichever MTA it is attached to. The checks of
// the MTA's own part (its log, its queue, what it does to a body) stay in
// each suite.

// MessageID matches the captured messages whose Message-ID is <id>.
func MessageID(id string) func(*SinkMessage) bool {
	return func(m *SinkMessage) bool { return m.Header.Get("Message-Id") == "<"+id+">" }
}

// CheckRelayedTo checks that m was relayed to rcpt alone.
func CheckRelayedTo(t testing.TB, m *SinkMessage, rcpt string) {
	t.Helper()
	if len(m.Rcpts) != 1 || m.Rcpts[0] != rcpt {
		t.Errorf("mail relayed to %v, want only %s", m.Rcpts, rcpt)
	}
}

// OrdinaryMail is a mail from Alice to Dave with what an MTA or a milter
// could mangle: lines starting with dots, a tab, runs of spaces, a
// trailing space, UTF-8, a 900-octet line (Sendmail wraps above 990), an
// encoded Subject and header fields of its own.
func OrdinaryMail() Message {
	return Message{
		From: "Alice Example <" + Alice + ">", To: "Dave <" + Dave + ">", MessageID: NewMessageID("plain"),
		Subject: "=?UTF-8?Q?Quarterly_r=C3=A9sum=C3=A9?=",
		Header:  []string{"X-Custom: kept as is", "Reply-To: alice+replies@example.org"},
		Body: "Hello Dave,\n\n" +
			". a line starting with a dot\n" +
			"..two dots\n" +
			"Tabs\tand  double  spaces,   trailing space \n" +
			"Ünïcödé: 日本語のテキスト\n" +
			strings.Repeat("0123456789", 90) + "\n" +
			"\n-- \nAlice\n",
	}
}

// CheckUntouched checks m as the sink got it: its envelope (from m.From
// to m.To alone) and its header fields (From, To, Subject, Header, the
// MIME fields String adds).
func CheckUntouched(t testing.TB, got *SinkMessage, m Message) {
	t.Helper()
	from, to := AddrOnly(m.From), AddrOnly(m.To)
	if len(got.Rcpts) != 1 || got.Rcpts[0] != to || got.MailFrom != from {
		t.Errorf("envelope at the sink: from <%s> to %v, want <%s> to [%s]", got.MailFrom, got.Rcpts, from, to)
	}
	want := map[string]string{"From": m.From, "To": m.To, "Subject": m.Subject,
		"Content-Type": "text/plain; charset=UTF-8", "Content-Transfer-Encoding": "8bit"}
	for _, h := range m.Header {
		name, value, _ := strings.Cut(h, ":")
		want[name] = strings.TrimSpace(value)
	}
	for name, v := range want {
		if g := got.Header.Get(name); g != v {
			t.Errorf("header %s at the sink: %q, want %q", name, g, v)
		}
	}
}

// CheckRefused checks that the MTA refused a message with smsmilter's
// 550 5.7.1 after DATA (queueID is "" then), and returns that reply.
func CheckRefused(t testing.TB, what string, r SwaksResult, queueID string) string {
	t.Helper()
	errs := r.Errors()
	if queueID != "" || len(errs) == 0 || !strings.HasPrefix(errs[len(errs)-1], "550 5.7.1 ") {
		t.Fatalf("%s: exit %d, errors %q, want 550 5.7.1 after DATA:\n%s", what, r.Exit, errs, r.Output)
	}
	last := errs[len(errs)-1]
	t.Logf("refusal: %s", last)
	return last
}

// WaitNotice waits for smsmilter's non-delivery notice to `to` about the
// SMS part of a mail with subject, and checks it: its Subject, the null
// envelope sender, Auto-Submitted, and that its body has each of wants.
func (e *Env) WaitNotice(t *testing.T, to, subject string, wants ...string) *SinkMessage {
	t.Helper()
	n := e.Sink.Wait(t, Wait, "the non-delivery notice to "+to, func(s *SinkMessage) bool {
		return s.HasRcpt(to) && strings.HasPrefix(s.Get("Subject"), "SMS not sent")
	})
	if n.Get("Subject") != "SMS not sent: "+subject || n.MailFrom != "" || n.Header.Get("Auto-Submitted") != "auto-replied" {
		t.Errorf("notice: Subject %q, envelope sender <%s>, Auto-Submitted %q", n.Get("Subject"), n.MailFrom, n.Header.Get("Auto-Submitted"))
	}
	for _, want := range wants {
		if !strings.Contains(string(n.Body), want) {
			t.Errorf("notice lacks %q:\n%s", want, n.Body)
		}
	}
	return n
}

// WaitVerdict waits for smsmilter's answer to `to`, who asked the verdict
// address about a mail with subject and Message-ID id, and checks it: its
// Subject, In-Reply-To, and that its body has each of wants.
func (e *Env) WaitVerdict(t *testing.T, to, subject, id string, wants ...string) *SinkMessage {
	t.Helper()
	got := e.Sink.Wait(t, Wait, "the verdict answer", func(s *SinkMessage) bool {
		return s.HasRcpt(to) && strings.Contains(s.Get("Subject"), "verdict")
	})
	if got.Get("Subject") != "SMS verdict: "+subject {
		t.Errorf("Subject %q", got.Get("Subject"))
	}
	if got.Header.Get("In-Reply-To") != "<"+id+">" {
		t.Errorf("In-Reply-To %q, want <%s>", got.Header.Get("In-Reply-To"), id)
	}
	for _, want := range wants {
		if !strings.Contains(string(got.Body), want) {
			t.Errorf("verdict answer lacks %q:\n%s", want, got.Body)
		}
	}
	return got
}

// Reply is what smsmilter's mail for an SMS reply must say.
type Reply struct {
	From      string // the phone's address in the SMS domain
	InReplyTo string // the Message-ID (without <>) of the mail the SMS was sent for
	Subject   string // decoded
	Text      string // the SMS text, somewhere in the body
}

// CheckReply checks a reply mail, read from where (the sink, a mailbox),
// against want.
func CheckReply(t testing.TB, where string, h mail.Header, body []byte, want Reply) {
	t.Helper()
	if from := AddrOnly(h.Get("From")); from != want.From {
		t.Errorf("%s: From %q, want %s", where, from, want.From)
	}
	if h.Get("In-Reply-To") != "<"+want.InReplyTo+">" {
		t.Errorf("%s: In-Reply-To %q, want <%s>", where, h.Get("In-Reply-To"), want.InReplyTo)
	}
	if s := decodeHeader(h.Get("Subject")); s != want.Subject {
		t.Errorf("%s: Subject %q", where, s)
	}
	if !strings.Contains(string(body), want.Text) {
		t.Errorf("%s: body %q lacks the SMS text", where, body)
	}
}

// SMSReply sends Bob's mail to number, answers the SMS it became from the
// phone, and waits for smsmilter's reply mail to Bob at the sink. It
// checks that mail (CheckReply, envelope sender mail.from) and returns it
// with what it must say, for the suite's own checks.
func (e *Env) SMSReply(t *testing.T, number string) (*SinkMessage, Reply) {
	t.Helper()
	id := NewMessageID("dinner")
	e.MustSend(t, Message{From: "Bob <" + Bob + ">", To: number + "@" + SMSDomain, Subject: "Dinner tonight?", MessageID: id,
		Body: "Dinner at 8?\n"})
	e.WaitSubmits(t, number, 1, Wait)
	e.Settle(t)

	want := Reply{From: number + "@" + SMSDomain, InReplyTo: id, Subject: "Re: Dinner tonight?", Text: "Yes, 8pm works. See you there!"}
	e.Peer.InjectMO(number, DeskID, want.Text)
	got := e.Sink.Wait(t, Wait, "the reply mail to "+Bob, func(s *SinkMessage) bool {
		return s.HasRcpt(Bob) && strings.HasPrefix(s.Get("Subject"), "Re: ")
	})
	CheckReply(t, "mail", got.Header, got.Body, want)
	if got.MailFrom != "smsmilter@mx.e2e.test" {
		t.Errorf("reply envelope sender <%s>, want mail.from", got.MailFrom)
	}
	return got, want
}

// TestSMSLong sends a GSM 7-bit text of three parts and checks them
// (WaitConcatenated).
func (e *Env) TestSMSLong(t *testing.T) {
	const number = "+447400123402"
	var words []string
	for i := 1; len(strings.Join(words, " ")) < 400; i++ {
		words = append(words, fmt.Sprintf("word%03d", i))
	}
	text := strings.Join(words, " ") // one line, GSM 7-bit: 3 parts of at most 153
	e.MustSend(t, Message{From: Alice, To: number + "@" + SMSDomain, Subject: "Long", Body: text + "\n"})
	e.WaitConcatenated(t, number, text, 3, AcmeSource)
}

// TestSPFFail sends as Carol, whose SPF fails: smsmilter refuses the mail
// and says why.
func (e *Env) TestSPFFail(t *testing.T) {
	r := e.Send(Message{From: Carol, To: "+447400123409@" + SMSDomain, Subject: "Hi", Body: "Forged?\n"})
	last := CheckRefused(t, "SPF fail", r, e.QueueID(r))
	if !strings.Contains(strings.ToLower(last), "spf") {
		t.Errorf("the refusal does not say SPF: %q", last)
	}
}

// TestDedupe sends the same message twice, as a client that lost the
// MTA's answer does: one SMS goes out.
func (e *Env) TestDedupe(t *testing.T) {
	const number = "+447400123406"
	m := Message{From: Alice, To: number + "@" + SMSDomain, Subject: "Once", MessageID: NewMessageID("twice"), Body: "Only once, please.\n"}
	e.MustSend(t, m)
	e.WaitSubmits(t, number, 1, Wait)
	e.MustSend(t, m)
	e.SM.WaitLog("duplicates=1", Wait)
	e.Settle(t)
	if n := len(e.SubmitsTo(number)); n != 1 {
		t.Errorf("the same message sent twice made %d SMS, want 1", n)
	}
}

// CheckNoSMS waits a moment and checks that no SMS went to number.
func (e *Env) CheckNoSMS(t testing.TB, number, why string, pause time.Duration) {
	t.Helper()
	time.Sleep(pause)
	if n := len(e.SubmitsTo(number)); n != 0 {
		t.Errorf("%d SMS sent for %s", n, why)
	}
}

// CheckTaken checks that smsmilter took the SMS recipient number of
// Alice's one-part GSM 7-bit mail the MTA queued as queueID: its job (user
// acme, sender ID ACME, the MTA's queue ID), and no mail for the
// recipient at the sink.
func (e *Env) CheckTaken(t *testing.T, queueID, number string) {
	t.Helper()
	j := e.Job(t, queueID, number)
	if j.From != "ACME" || j.User != "acme" || j.Sender != Alice || j.Encoding != "gsm7" || j.Parts != 1 {
		t.Errorf("job %+v", j)
	}
	if n := len(e.Sink.Find(To(number + "@" + SMSDomain))); n != 0 {
		t.Errorf("%d mails for the SMS recipient reached the sink", n)
	}
}

// SMSJapanese sends Bob's mail (with subject as the suite writes it) in
// Japanese: it goes out in UCS-2 from the desk's numeric sender ID.
func (e *Env) SMSJapanese(t *testing.T, subject string) {
	t.Helper()
	const number = "+819012345678"
	text := "明日の会議は10時からです。資料を忘れずに。"
	e.MustSend(t, Message{From: Bob, To: number + "@" + SMSDomain, Subject: subject, Body: text + "\n"})
	e.WaitSMS(t, number, text, DeskSource, 8)
}

// MixedNumber is the SMS recipient of SendMixed.
const MixedNumber = "+447400123403"

// SendMixed sends Alice's mail to Dave and MixedNumber, and waits for the
// SMS (WaitSMS) and for the mail at the sink, relayed to Dave alone. It
// returns the MTA's queue ID, the mail as the sink got it, and the body
// sent.
func (e *Env) SendMixed(t *testing.T) (queueID string, got *SinkMessage, body string) {
	t.Helper()
	id := NewMessageID("mixed")
	body = "Lunch at 12:30 in the usual place.\n"
	queueID = e.MustSend(t, Message{From: Alice, To: Dave + ", " + MixedNumber + "@" + SMSDomain, Subject: "Lunch", MessageID: id, Body: body},
		Dave, MixedNumber+"@"+SMSDomain)
	e.WaitSMS(t, MixedNumber, strings.TrimSpace(body), AcmeSource, 0)
	got = e.Sink.Wait(t, Wait, "the mixed mail for "+Dave, MessageID(id))
	CheckRelayedTo(t, got, Dave) // the SMS recipient removed
	return queueID, got, body
}
