package e2e

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/smsmilter/smsmilter/e2e/internal/harness"
	"github.com/smsmilter/smsmilter/internal/testpeer/smpppeer"
)

const wait = 30 * time.Second

// TestPostfix runs the mail and SMS flows through Postfix with smsmilter
// attached as examples/postfix/main.cf attaches it.
func TestPostfix(t *testing.T) {
	t.Parallel()
	e := newPostfixEnv(t, envOptions{bypass: true})

	t.Run("OrdinaryMailUntouched", e.testOrdinaryMail)
	t.Run("SMSAlphanumericSender", e.testSMSAlphanumeric)
	t.Run("SMSJapaneseNumericSender", e.testSMSJapanese)
	t.Run("SMSLongConcatenated", e.testSMSLong)
	t.Run("MixedRecipients", e.testMixed)
	t.Run("RecipientRejected", e.testRcptRejected)
	t.Run("MixedWithRejectedRecipient", e.testMixedRcptRejected)
	t.Run("SenderNotAuthorized", e.testUnauthorized)
	t.Run("SPFFail", e.testSPFFail)
	t.Run("MixedRefusedSMSPartNotice", e.testMixedRefused)
	t.Run("VerdictAddress", e.testVerdict)
	t.Run("ReplyByMailAndPOP3", e.testReply)
	t.Run("SameMessageTwiceOneSMS", e.testDedupe)
	t.Run("LocalSubmissionSendmail", e.testSendmail)
	t.Run("BypassedSMSRecipientDiscarded", e.testBypass)
	t.Run("Metrics", e.testMetrics)
	t.Run("EventLog", e.testEventLog)
	t.Run("NoPostfixWarnings", e.testNoWarnings)
}

func (e *postfixEnv) testOrdinaryMail(t *testing.T) {
	before := len(e.peer.Submits())
	id := newMessageID("plain")
	body := "Hello Dave,\n\n" +
		". a line starting with a dot\n" +
		"..two dots\n" +
		"Tabs\tand  double  spaces,   trailing space \n" +
		"Ünïcödé: 日本語のテキスト\n" +
		strings.Repeat("0123456789", 90) + "\n" + // a 900-octet line
		"\n-- \nAlice\n"
	m := message{
		From: "Alice Example <" + alice + ">", To: "Dave <" + dave + ">", MessageID: id,
		Subject: "=?UTF-8?Q?Quarterly_r=C3=A9sum=C3=A9?=",
		Header:  []string{"X-Custom: kept as is", "Reply-To: alice+replies@example.org"},
		Body:    body,
	}
	r := e.mustSend(t, m)
	got := e.sink.Wait(t, wait, "the ordinary mail", func(s *harness.SinkMessage) bool {
		return s.Header.Get("Message-Id") == "<"+id+">"
	})
	if len(got.Rcpts) != 1 || got.Rcpts[0] != dave || got.MailFrom != alice {
		t.Errorf("envelope at the sink: from <%s> to %v, want <%s> to [%s]", got.MailFrom, got.Rcpts, alice, dave)
	}
	if !bytes.Equal(got.Body, []byte(body)) {
		t.Errorf("body changed on the way:\ngot  %q\nwant %q", got.Body, body)
	}
	for name, want := range map[string]string{
		"From": m.From, "To": m.To, "Subject": m.Subject, "X-Custom": "kept as is",
		"Reply-To": "alice+replies@example.org", "Content-Type": "text/plain; charset=UTF-8",
		"Content-Transfer-Encoding": "8bit",
	} {
		if v := got.Header.Get(name); v != want {
			t.Errorf("header %s at the sink: %q, want %q", name, v, want)
		}
	}
	if !strings.Contains(got.Header.Get("Received"), r.QueueID()) && !strings.Contains(string(got.Raw), "id "+r.QueueID()) {
		t.Errorf("no Received line of Postfix queue ID %s", r.QueueID())
	}
	if n := len(e.peer.Submits()); n != before {
		t.Errorf("ordinary mail made %d submit_sm", n-before)
	}
}

func (e *postfixEnv) testSMSAlphanumeric(t *testing.T) {
	const number = "+447400123401"
	text := "Server room temperature is 31C, please check the air conditioning."
	r := e.mustSend(t, message{From: alice, To: number + "@" + domain, Subject: "Alert", Body: text + "\n"})
	s := e.waitSubmits(t, number, 1, wait)[0]
	checkSubmit(t, s, "447400123401", "ACME", 5, 0, 0)
	if s.Text != text {
		t.Errorf("SMS text %q, want %q", s.Text, text)
	}
	if s.Concat != nil || s.UDHHex != "" {
		t.Errorf("a one-part SMS has a UDH: %s %+v", s.UDHHex, s.Concat)
	}
	// Postfix: consumed by the milter, nothing relayed.
	id := r.QueueID()
	harness.Eventually(t, wait, "Postfix to log the milter's discard", func() bool {
		return len(e.pf.LogLines(id+": milter-discard: END-OF-MESSAGE")) == 1
	})
	j := e.job(t, id, number)
	if j.From != "ACME" || j.User != "acme" || j.Sender != alice || j.Encoding != "gsm7" || j.Parts != 1 {
		t.Errorf("job %+v", j)
	}
	if n := len(e.sink.Find(harness.To(number + "@" + domain))); n != 0 {
		t.Errorf("%d mails for the SMS recipient reached the sink", n)
	}
}

func (e *postfixEnv) testSMSJapanese(t *testing.T) {
	const number = "+819012345678"
	text := "明日の会議は10時からです。資料を忘れずに。"
	e.mustSend(t, message{From: bob, To: number + "@" + domain, Subject: "会議", Body: text + "\n"})
	s := e.waitSubmits(t, number, 1, wait)[0]
	// A numeric sender ID goes out as an international number.
	checkSubmit(t, s, "819012345678", strings.TrimPrefix(deskID, "+"), 1, 1, 8)
	if s.Text != text {
		t.Errorf("SMS text %q, want %q", s.Text, text)
	}
}

func (e *postfixEnv) testSMSLong(t *testing.T) {
	const number = "+447400123402"
	var words []string
	for i := 1; len(strings.Join(words, " ")) < 400; i++ {
		words = append(words, fmt.Sprintf("word%03d", i))
	}
	text := strings.Join(words, " ") // one line, GSM 7-bit: 3 parts of at most 153
	e.mustSend(t, message{From: alice, To: number + "@" + domain, Subject: "Long", Body: text + "\n"})
	parts := e.waitSubmits(t, number, 3, wait)
	var joined strings.Builder
	ref := -1
	for i, s := range parts {
		checkSubmit(t, s, "447400123402", "ACME", 5, 0, 0)
		if s.Concat == nil {
			t.Fatalf("part %d has no concatenation UDH (udh %q)", i+1, s.UDHHex)
		}
		if s.ESMClass&0x40 == 0 {
			t.Errorf("part %d: esm_class %#x without UDHI", i+1, s.ESMClass)
		}
		if s.Concat.Total != 3 || s.Concat.Part != i+1 {
			t.Errorf("part %d: concat %+v, want part %d of 3", i+1, *s.Concat, i+1)
		}
		if ref == -1 {
			ref = s.Concat.Ref
		} else if s.Concat.Ref != ref {
			t.Errorf("part %d: reference %d, part 1 had %d", i+1, s.Concat.Ref, ref)
		}
		if n := len([]rune(s.Text)); n > 153 {
			t.Errorf("part %d has %d characters", i+1, n)
		}
		joined.WriteString(s.Text)
	}
	if joined.String() != text {
		t.Errorf("parts joined:\n%q\nwant\n%q", joined.String(), text)
	}
	e.settle(t)
	if n := len(e.submitsTo(number)); n != 3 {
		t.Errorf("%d submit_sm for a 3-part SMS", n)
	}
}

func (e *postfixEnv) testMixed(t *testing.T) {
	const number = "+447400123403"
	id := newMessageID("mixed")
	body := "Lunch at 12:30 in the usual place.\n"
	r := e.mustSend(t, message{From: alice, To: dave + ", " + number + "@" + domain, Subject: "Lunch", MessageID: id, Body: body},
		dave, number+"@"+domain)
	s := e.waitSubmits(t, number, 1, wait)[0]
	if s.Text != strings.TrimSpace(body) {
		t.Errorf("SMS text %q", s.Text)
	}
	got := e.sink.Wait(t, wait, "the mixed mail for "+dave, func(s *harness.SinkMessage) bool {
		return s.Header.Get("Message-Id") == "<"+id+">"
	})
	if len(got.Rcpts) != 1 || got.Rcpts[0] != dave {
		t.Errorf("mail relayed to %v, want only %s (the SMS recipient removed)", got.Rcpts, dave)
	}
	if string(got.Body) != body {
		t.Errorf("body %q", got.Body)
	}
	// Postfix logs one delivery, to dave only.
	id2 := r.QueueID()
	harness.Eventually(t, wait, "Postfix to log the delivery", func() bool {
		return len(e.pf.LogLines(id2+": to=<"+dave+">", "status=sent")) == 1
	})
	if l := e.pf.LogLines(id2 + ": to=<" + number); len(l) != 0 {
		t.Errorf("Postfix delivered to the SMS recipient: %q", l)
	}
}

func (e *postfixEnv) testRcptRejected(t *testing.T) {
	for _, c := range []struct{ local, want string }{
		{"+8180123", "550 5.1.3 +8180123: too short for Japan (JP)"},
		{"+442079460000", "550 5.1.3 +442079460000: "},
		{"07400123456", "550 5.1.3 "},
	} {
		r := e.send(message{From: alice, To: c.local + "@" + domain, Subject: "x", Body: "hi\n"})
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
	id := newMessageID("mixed-bad")
	r := e.send(message{From: alice, To: "several", Subject: "Mixed", MessageID: id, Body: "One bad number.\n"},
		dave, "+8180123@"+domain, good+"@"+domain)
	if !r.Accepted() {
		t.Fatalf("one bad SMS recipient refused the whole message:\n%s", r.Output)
	}
	if errs := r.Errors(); len(errs) != 1 || !strings.HasPrefix(errs[0], "550 5.1.3 +8180123: too short for Japan (JP)") {
		t.Errorf("server errors %q, want one 550 5.1.3 for the bad number", errs)
	}
	e.waitSubmits(t, good, 1, wait)
	got := e.sink.Wait(t, wait, "the mail for "+dave, func(s *harness.SinkMessage) bool {
		return s.Header.Get("Message-Id") == "<"+id+">"
	})
	if len(got.Rcpts) != 1 || got.Rcpts[0] != dave {
		t.Errorf("relayed to %v, want [%s]", got.Rcpts, dave)
	}
}

func (e *postfixEnv) testMixedRefused(t *testing.T) {
	const number = "+447400123411"
	id := newMessageID("mixed-refused")
	r := e.send(message{From: mallory, To: "several", Subject: "Offer", MessageID: id, Body: "Mail yes, SMS no.\n"},
		dave, number+"@"+domain)
	if !r.Accepted() {
		t.Fatalf("mixed mail with a refused SMS part was not accepted for the other recipient:\n%s", r.Output)
	}
	got := e.sink.Wait(t, wait, "the mail for "+dave, func(s *harness.SinkMessage) bool {
		return s.Header.Get("Message-Id") == "<"+id+">"
	})
	if len(got.Rcpts) != 1 || got.Rcpts[0] != dave {
		t.Errorf("relayed to %v, want [%s]", got.Rcpts, dave)
	}
	// mallory's SPF passes, so the notice is no backscatter: it goes out.
	n := e.sink.Wait(t, wait, "the non-delivery notice to "+mallory, func(s *harness.SinkMessage) bool {
		return s.HasRcpt(mallory) && strings.HasPrefix(s.Get("Subject"), "SMS not sent")
	})
	if n.Get("Subject") != "SMS not sent: Offer" || n.MailFrom != "" || n.Header.Get("Auto-Submitted") != "auto-replied" {
		t.Errorf("notice: Subject %q, envelope sender <%s>, Auto-Submitted %q", n.Get("Subject"), n.MailFrom, n.Header.Get("Auto-Submitted"))
	}
	for _, want := range []string{number, "no rule authorizes this sender"} {
		if !strings.Contains(string(n.Body), want) {
			t.Errorf("notice lacks %q:\n%s", want, n.Body)
		}
	}
	if k := len(e.submitsTo(number)); k != 0 {
		t.Errorf("%d SMS sent for a refused sender", k)
	}
}

func (e *postfixEnv) testUnauthorized(t *testing.T) {
	const number = "+447400123404"
	r := e.send(message{From: mallory, To: number + "@" + domain, Subject: "Hi", Body: "Send me money.\n"})
	errs := r.Errors()
	if r.QueueID() != "" || len(errs) == 0 || !strings.HasPrefix(errs[len(errs)-1], "550 5.7.1 ") {
		t.Fatalf("unauthorized sender: exit %d, errors %q, want 550 5.7.1 after DATA:\n%s", r.Exit, errs, r.Output)
	}
	t.Logf("refusal: %s", errs[len(errs)-1])
	if !strings.Contains(errs[len(errs)-1], "mallory@evil.example") && !strings.Contains(errs[len(errs)-1], "evil.example") {
		t.Errorf("the refusal does not name the sender: %q", errs[len(errs)-1])
	}
	time.Sleep(200 * time.Millisecond)
	if n := len(e.submitsTo(number)); n != 0 {
		t.Errorf("%d SMS sent for an unauthorized sender", n)
	}
}

func (e *postfixEnv) testSPFFail(t *testing.T) {
	r := e.send(message{From: carol, To: "+447400123409@" + domain, Subject: "Hi", Body: "Forged?\n"})
	errs := r.Errors()
	if r.QueueID() != "" || len(errs) == 0 || !strings.HasPrefix(errs[len(errs)-1], "550 5.7.1 ") {
		t.Fatalf("SPF fail: exit %d, errors %q, want 550 5.7.1:\n%s", r.Exit, errs, r.Output)
	}
	t.Logf("refusal: %s", errs[len(errs)-1])
	if !strings.Contains(strings.ToLower(errs[len(errs)-1]), "spf") {
		t.Errorf("the refusal does not say SPF: %q", errs[len(errs)-1])
	}
}

func (e *postfixEnv) testVerdict(t *testing.T) {
	before := len(e.peer.Submits())
	id := newMessageID("verdict")
	text := "Does this reach the phone?"
	r := e.mustSend(t, message{From: alice, To: "verdict@" + domain, Subject: "Check me", MessageID: id, Body: text + "\n"})
	got := e.sink.Wait(t, wait, "the verdict answer", func(s *harness.SinkMessage) bool {
		return s.HasRcpt(alice) && strings.Contains(s.Get("Subject"), "verdict")
	})
	if got.Get("Subject") != "SMS verdict: Check me" {
		t.Errorf("Subject %q", got.Get("Subject"))
	}
	if got.Header.Get("In-Reply-To") != "<"+id+">" {
		t.Errorf("In-Reply-To %q, want <%s>", got.Header.Get("In-Reply-To"), id)
	}
	body := string(got.Body)
	for _, want := range []string{"SPF:   pass", "DKIM:  none", "DMARC: none", "Rule: address " + alice + " (user acme",
		"Decision: WOULD SEND as user acme (sender ID ACME)",
		fmt.Sprintf("SMS preview: encoding GSM 7-bit (gsm7), %d characters, 1 part(s)", len(text)), "----\n" + text + "\n----"} {
		if !strings.Contains(body, want) {
			t.Errorf("verdict answer lacks %q:\n%s", want, body)
		}
	}
	harness.Eventually(t, wait, "Postfix to log the verdict mail's discard", func() bool {
		return len(e.pf.LogLines(r.QueueID()+": milter-discard")) == 1
	})
	if n := len(e.peer.Submits()); n != before {
		t.Errorf("the verdict address sent %d SMS", n-before)
	}
}

func (e *postfixEnv) testReply(t *testing.T) {
	const number = "+447400123405"
	id := newMessageID("dinner")
	e.mustSend(t, message{From: "Bob <" + bob + ">", To: number + "@" + domain, Subject: "Dinner tonight?", MessageID: id,
		Body: "Dinner at 8?\n"})
	e.waitSubmits(t, number, 1, wait)
	e.settle(t)

	reply := "Yes, 8pm works. See you there!"
	e.peer.InjectMO(number, deskID, reply)

	check := func(where, from, inReplyTo, subject, body string) {
		t.Helper()
		if from != number+"@"+domain {
			t.Errorf("%s: From %q, want %s@%s", where, from, number, domain)
		}
		if inReplyTo != "<"+id+">" {
			t.Errorf("%s: In-Reply-To %q, want <%s>", where, inReplyTo, id)
		}
		if subject != "Re: Dinner tonight?" {
			t.Errorf("%s: Subject %q", where, subject)
		}
		if !strings.Contains(body, reply) {
			t.Errorf("%s: body %q lacks the SMS text", where, body)
		}
	}
	got := e.sink.Wait(t, wait, "the reply mail to "+bob, func(s *harness.SinkMessage) bool {
		return s.HasRcpt(bob) && strings.HasPrefix(s.Get("Subject"), "Re: ")
	})
	check("mail", addrOnly(got.Header.Get("From")), got.Header.Get("In-Reply-To"), got.Get("Subject"), string(got.Body))
	if got.MailFrom != "smsmilter@mx.e2e.test" {
		t.Errorf("reply envelope sender <%s>, want mail.from", got.MailFrom)
	}

	// The same reply in bob's POP3 mailbox.
	if out, code := e.sm.CLI("pop3-secret\n", "mailbox", "passwd", bob); code != 0 {
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
	check("POP3", addrOnly(pm.Header.Get("From")), pm.Header.Get("In-Reply-To"), pm.Get("Subject"), string(pm.Body))
}

func (e *postfixEnv) testDedupe(t *testing.T) {
	const number = "+447400123406"
	m := message{From: alice, To: number + "@" + domain, Subject: "Once", MessageID: newMessageID("twice"), Body: "Only once, please.\n"}
	e.mustSend(t, m)
	e.waitSubmits(t, number, 1, wait)
	// A client that lost Postfix's answer sends the same message again.
	e.mustSend(t, m)
	e.sm.WaitLog("duplicates=1", wait)
	e.settle(t)
	if n := len(e.submitsTo(number)); n != 1 {
		t.Errorf("the same message sent twice made %d SMS, want 1", n)
	}
}

func (e *postfixEnv) testSendmail(t *testing.T) {
	const number = "+447400123408"
	text := "Nightly backup finished without errors."
	msg := message{From: alice, To: number + "@" + domain, Subject: "cron", MessageID: newMessageID("cron"), Body: text + "\n"}
	e.pf.Sendmail(alice, []string{number + "@" + domain}, []byte(msg.String()))
	s := e.waitSubmits(t, number, 1, wait)[0]
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
	time.Sleep(300 * time.Millisecond)
	if n := len(e.submitsTo(number)); n != 0 {
		t.Errorf("bypassed mail was sent as SMS (%d)", n)
	}
	if ms := e.sink.Find(harness.To(alice)); len(ms) > 0 {
		for _, m := range ms {
			if strings.Contains(m.Get("Subject"), "Undelivered") {
				t.Errorf("a bounce went to the sender: %s", m)
			}
		}
	}
}

func (e *postfixEnv) testMetrics(t *testing.T) {
	if v := e.sm.Metric(`smsmilter_messages_total{outcome="queued"}`); v < 5 {
		t.Errorf("messages queued: %v", v)
	}
	if v := e.sm.Metric(`smsmilter_messages_total{outcome="passed"}`); v < 1 {
		t.Errorf("messages passed: %v", v)
	}
	if v := e.sm.Metric(`smsmilter_messages_total{outcome="refused"}`); v < 2 {
		t.Errorf("messages refused: %v", v)
	}
	if v := e.sm.Metric("smsmilter_eom_seconds_count"); v < 5 {
		t.Errorf("EOM latency count: %v", v)
	}
}

func (e *postfixEnv) testEventLog(t *testing.T) {
	kinds := map[string]int{}
	for _, ev := range e.sm.Events() {
		kinds[ev.Kind]++
	}
	for _, k := range []string{"accepted", "refused", "sent", "reply", "new_ip", "verdict"} {
		if kinds[k] == 0 {
			t.Errorf("smsmilter log has no %s event (kinds: %v)", k, kinds)
		}
	}
	out := e.sm.MustCLI("queue")
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

// checkSubmit checks a submit_sm's addresses and coding.
func checkSubmit(t *testing.T, s smpppeer.Submit, dest, source string, sourceTON, sourceNPI, coding int) {
	t.Helper()
	if s.DestAddr != dest || s.DestTON != 1 || s.DestNPI != 1 {
		t.Errorf("destination %q TON %d NPI %d, want %q TON 1 NPI 1", s.DestAddr, s.DestTON, s.DestNPI, dest)
	}
	if s.SourceAddr != source || s.SourceTON != sourceTON || s.SourceNPI != sourceNPI {
		t.Errorf("source %q TON %d NPI %d, want %q TON %d NPI %d", s.SourceAddr, s.SourceTON, s.SourceNPI, source, sourceTON, sourceNPI)
	}
	if s.DataCoding != coding {
		t.Errorf("data_coding %d, want %d", s.DataCoding, coding)
	}
}
