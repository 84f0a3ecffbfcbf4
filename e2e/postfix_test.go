package e2e

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/smsmilter/smsmilter/e2e/internal/harness"
)

// TestPostfix runs the mail and SMS flows through Postfix with smsmilter
// attached as examples/postfix/main.cf attaches it.
func TestPostfix(t *testing.T) {
	t.Parallel()
	e := newPostfixEnv(t, envOptions{bypass: true})

	t.Run("OrdinaryMailUntouched", e.testOrdinaryMail)
	t.Run("SMSAlphanumericSender", e.testSMSAlphanumeric)
	t.Run("SMSJapaneseNumericSender", func(t *testing.T) { e.SMSJapanese(t, "会議") })
	t.Run("SMSLongConcatenated", e.TestSMSLong)
	t.Run("MixedRecipients", e.testMixed)
	t.Run("RecipientRejected", e.testRcptRejected)
	t.Run("MixedWithRejectedRecipient", e.testMixedRcptRejected)
	t.Run("SenderNotAuthorized", e.testUnauthorized)
	t.Run("SPFFail", e.TestSPFFail)
	t.Run("MixedRefusedSMSPartNotice", e.testMixedRefused)
	t.Run("VerdictAddress", e.testVerdict)
	t.Run("ReplyByMailAndPOP3", e.testReply)
	t.Run("SameMessageTwiceOneSMS", e.TestDedupe)
	t.Run("LocalSubmissionSendmail", e.testSendmail)
	t.Run("BypassedSMSRecipientDiscarded", e.testBypass)
	t.Run("Metrics", e.testMetrics)
	t.Run("EventLog", e.testEventLog)
	t.Run("NoPostfixWarnings", e.testNoWarnings)
}

func (e *postfixEnv) testOrdinaryMail(t *testing.T) {
	before := len(e.Peer.Submits())
	m := harness.OrdinaryMail()
	qid := e.MustSend(t, m)
	got := e.Sink.Wait(t, wait, "the ordinary mail", harness.MessageID(m.MessageID))
	harness.CheckUntouched(t, got, m)
	if !bytes.Equal(got.Body, []byte(m.Body)) {
		t.Errorf("body changed on the way:\ngot  %q\nwant %q", got.Body, m.Body)
	}
	if !strings.Contains(got.Header.Get("Received"), qid) && !strings.Contains(string(got.Raw), "id "+qid) {
		t.Errorf("no Received line of Postfix queue ID %s", qid)
	}
	if n := len(e.Peer.Submits()); n != before {
		t.Errorf("ordinary mail made %d submit_sm", n-before)
	}
}

func (e *postfixEnv) testSMSAlphanumeric(t *testing.T) {
	const number = "+447400123401"
	text := "Server room temperature is 31C, please check the air conditioning."
	id := e.MustSend(t, message{From: alice, To: number + "@" + domain, Subject: "Alert", Body: text + "\n"})
	e.WaitSMS(t, number, text, harness.AcmeSource, 0)
	// Postfix: consumed by the milter, nothing relayed.
	harness.Eventually(t, wait, "Postfix to log the milter's discard", func() bool {
		return len(e.pf.LogLines(id+": milter-discard: END-OF-MESSAGE")) == 1
	})
	e.CheckTaken(t, id, number)
}

func (e *postfixEnv) testMixed(t *testing.T) {
	const number = harness.MixedNumber
	qid, got, body := e.SendMixed(t)
	if string(got.Body) != body {
		t.Errorf("body %q", got.Body)
	}
	// Postfix logs one delivery, to dave only.
	harness.Eventually(t, wait, "Postfix to log the delivery", func() bool {
		return len(e.pf.LogLines(qid+": to=<"+dave+">", "status=sent")) == 1
	})
	if l := e.pf.LogLines(qid + ": to=<" + number); len(l) != 0 {
		t.Errorf("Postfix delivered to the SMS recipient: %q", l)
	}
}

func (e *postfixEnv) testRcptRejected(t *testing.T) {
	for _, c := range []struct{ local, want string }{
		{"+8180123", "550 5.1.3 +8180123: too short for Japan (JP)"},
		{"+442079460000", "550 5.1.3 +442079460000: "},
		{"07400123456", "550 5.1.3 "},
	} {
		r := e.Send(message{From: alice, To: c.local + "@" + domain, Subject: "x", Body: "hi\n"})
		if r.Exit == 0 || r.QueueID() != "" {
			t.Errorf("%s: accepted:\n%s", c.local, r.Output)
			continue
		}
		errs := r.Errors()
		if len(errs) == 0 || !strings.HasPrefix(errs[0], c.want) {
			t.Errorf("%s: server said %q, want %q...", c.local, errs, c.want)
		} else {
			t.Logf("%s: %s", c.local, errs[0])
		}
	}
}

func (e *postfixEnv) testMixedRcptRejected(t *testing.T) {
	const good = "+447400123410"
	id := harness.NewMessageID("mixed-bad")
	r := e.Send(message{From: alice, To: "several", Subject: "Mixed", MessageID: id, Body: "One bad number.\n"},
		dave, "+8180123@"+domain, good+"@"+domain)
	if !r.Accepted() {
		t.Fatalf("one bad SMS recipient refused the whole message:\n%s", r.Output)
	}
	if errs := r.Errors(); len(errs) != 1 || !strings.HasPrefix(errs[0], "550 5.1.3 +8180123: too short for Japan (JP)") {
		t.Errorf("server errors %q, want one 550 5.1.3 for the bad number", errs)
	}
	e.WaitSubmits(t, good, 1, wait)
	got := e.Sink.Wait(t, wait, "the mail for "+dave, harness.MessageID(id))
	harness.CheckRelayedTo(t, got, dave)
}

func (e *postfixEnv) testMixedRefused(t *testing.T) {
	const number = "+447400123411"
	id := harness.NewMessageID("mixed-refused")
	r := e.Send(message{From: mallory, To: "several", Subject: "Offer", MessageID: id, Body: "Mail yes, SMS no.\n"},
		dave, number+"@"+domain)
	if !r.Accepted() {
		t.Fatalf("mixed mail with a refused SMS part was not accepted for the other recipient:\n%s", r.Output)
	}
	got := e.Sink.Wait(t, wait, "the mail for "+dave, harness.MessageID(id))
	harness.CheckRelayedTo(t, got, dave)
	// mallory's SPF passes, so the notice is no backscatter: it goes out.
	e.WaitNotice(t, mallory, "Offer", number, "no rule authorizes this sender")
	e.CheckNoSMS(t, number, "a refused sender", 0)
}

func (e *postfixEnv) testUnauthorized(t *testing.T) {
	const number = "+447400123404"
	r := e.Send(message{From: mallory, To: number + "@" + domain, Subject: "Hi", Body: "Send me money.\n"})
	last := harness.CheckRefused(t, "unauthorized sender", r, r.QueueID())
	if !strings.Contains(last, "mallory@evil.example") && !strings.Contains(last, "evil.example") {
		t.Errorf("the refusal does not name the sender: %q", last)
	}
	e.CheckNoSMS(t, number, "an unauthorized sender", 200*time.Millisecond)
}

func (e *postfixEnv) testVerdict(t *testing.T) {
	before := len(e.Peer.Submits())
	id := harness.NewMessageID("verdict")
	text := "Does this reach the phone?"
	qid := e.MustSend(t, message{From: alice, To: "verdict@" + domain, Subject: "Check me", MessageID: id, Body: text + "\n"})
	e.WaitVerdict(t, alice, "Check me", id, "SPF:   pass", "DKIM:  none", "DMARC: none", "Rule: address "+alice+" (user acme",
		"Decision: WOULD SEND as user acme (sender ID ACME)",
		fmt.Sprintf("SMS preview: encoding GSM 7-bit (gsm7), %d characters, 1 part(s)", len(text)), "----\n"+text+"\n----")
	harness.Eventually(t, wait, "Postfix to log the verdict mail's discard", func() bool {
		return len(e.pf.LogLines(qid+": milter-discard")) == 1
	})
	if n := len(e.Peer.Submits()); n != before {
		t.Errorf("the verdict address sent %d SMS", n-before)
	}
}

func (e *postfixEnv) testReply(t *testing.T) {
	_, want := e.SMSReply(t, "+447400123405")

	// The same reply in bob's POP3 mailbox.
	if out, code := e.SM.CLI("pop3-secret\n", "mailbox", "passwd", bob); code != 0 {
		t.Fatalf("mailbox passwd: %d %s", code, out)
	}
	var msgs []string
	harness.Eventually(t, wait, "the reply in the POP3 mailbox", func() bool {
		var err error
		msgs, err = harness.POP3Fetch(e.pop3, bob, "pop3-secret")
		if err != nil {
			t.Logf("POP3: %v", err)
		}
		return len(msgs) > 0
	})
	pm := parseMail(t, msgs[len(msgs)-1])
	harness.CheckReply(t, "POP3", pm.Header, pm.Body, want)
}

func (e *postfixEnv) testSendmail(t *testing.T) {
	const number = "+447400123408"
	text := "Nightly backup finished without errors."
	msg := message{From: alice, To: number + "@" + domain, Subject: "cron", MessageID: harness.NewMessageID("cron"), Body: text + "\n"}
	e.pf.Sendmail(alice, []string{number + "@" + domain}, []byte(msg.Unterminated()))
	s := e.WaitSubmits(t, number, 1, wait)[0]
	if s.Text != text || s.SourceAddr != "ACME" {
		t.Errorf("SMS from sendmail: %+v", s)
	}
	e.pf.WaitQueueEmpty(wait)
}

func (e *postfixEnv) testBypass(t *testing.T) {
	const number = "+447400123407"
	r := e.sendTo(e.bypass, message{From: alice, To: number + "@" + domain, Subject: "bypass", Body: "unchecked\n"})
	if !r.Accepted() {
		t.Fatalf("bypass service refused the mail:\n%s", r.Output)
	}
	harness.Eventually(t, wait, "Postfix to discard the SMS recipient", func() bool {
		return len(e.pf.LogLines(r.QueueID()+": to=<"+number+"@"+domain+">", "relay=none", "status=sent (SMS recipient not taken by smsmilter)")) == 1
	})
	e.CheckNoSMS(t, number, "bypassed mail", 300*time.Millisecond)
	if ms := e.Sink.Find(harness.To(alice)); len(ms) > 0 {
		for _, m := range ms {
			if strings.Contains(m.Get("Subject"), "Undelivered") {
				t.Errorf("a bounce went to the sender: %s", m)
			}
		}
	}
}

func (e *postfixEnv) testMetrics(t *testing.T) {
	if v := e.SM.Metric(`smsmilter_messages_total{outcome="queued"}`); v < 5 {
		t.Errorf("messages queued: %v", v)
	}
	if v := e.SM.Metric(`smsmilter_messages_total{outcome="passed"}`); v < 1 {
		t.Errorf("messages passed: %v", v)
	}
	if v := e.SM.Metric(`smsmilter_messages_total{outcome="refused"}`); v < 2 {
		t.Errorf("messages refused: %v", v)
	}
	if v := e.SM.Metric("smsmilter_eom_seconds_count"); v < 5 {
		t.Errorf("EOM latency count: %v", v)
	}
}

func (e *postfixEnv) testEventLog(t *testing.T) {
	kinds := map[string]int{}
	for _, ev := range e.SM.Events() {
		kinds[ev.Kind]++
	}
	for _, k := range []string{"accepted", "refused", "sent", "reply", "new_ip", "verdict"} {
		if kinds[k] == 0 {
			t.Errorf("smsmilter log has no %s event (kinds: %v)", k, kinds)
		}
	}
	out := e.SM.MustCLI("queue")
	if !strings.Contains(out, "+447400123401") || !strings.Contains(out, "ACME") {
		t.Errorf("smsmilter queue does not list the first SMS:\n%s", out)
	}
}

// testNoWarnings checks that Postfix had nothing to say about the example
// config or smsmilter's answers (the milter's absence while the instance
// started before smsmilter aside).
func (e *postfixEnv) testNoWarnings(t *testing.T) {
	for _, l := range e.pf.LogLines("warning:") {
		if strings.Contains(l, "connect to Milter service") {
			continue
		}
		t.Errorf("Postfix: %s", l)
	}
	for _, l := range e.pf.LogLines("fatal:") {
		t.Errorf("Postfix: %s", l)
	}
}
