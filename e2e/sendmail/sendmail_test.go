package sendmail

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/smsmilter/smsmilter/e2e/internal/harness"
)

// TestSendmail runs the mail and SMS flows through Sendmail with smsmilter
// attached as examples/sendmail/smsmilter.mc attaches it. The subtests
// share one installation and run in order; the last one stops smsmilter.
func TestSendmail(t *testing.T) {
	e := newEnv(t)

	t.Run("OrdinaryMailUntouched", e.testOrdinaryMail)
	t.Run("SMSAlphanumericSender", e.testSMSAlphanumeric)
	t.Run("SMSJapaneseNumericSender", e.testSMSJapanese)
	t.Run("SMSLongConcatenated", e.testSMSLong)
	t.Run("MixedRecipients", e.testMixed)
	t.Run("RecipientRejected", e.testRcptRejected)
	t.Run("SenderNotAuthorized", e.testUnauthorized)
	t.Run("SPFFail", e.testSPFFail)
	t.Run("ForgedAuthResultsIgnored", e.testForgedAuthResults)
	t.Run("MixedRefusedSMSPartNotice", e.testMixedRefused)
	t.Run("InternetClientSMSDomainOnly", e.testInternetClient)
	t.Run("VerdictAddress", e.testVerdict)
	t.Run("ReplyByMailThroughSendmail", e.testReply)
	t.Run("SameMessageTwiceOneSMS", e.testDedupe)
	t.Run("LocalSubmissionMSP", e.testMSP)
	t.Run("BypassedSMSRecipientDiscarded", e.testBypass)
	t.Run("MilterDownTempfailNothingLost", e.testMilterDown)
	t.Run("NoSendmailErrors", e.testNoErrors)
}

// testNoErrors: the set-up of examples/sendmail makes Sendmail log no
// system error (a bad map, an unknown mailer, an unsafe file) and no
// milter trouble over the whole run, except "connection refused" while
// smsmilter was not running (testMilterDown, and the suite's own probe of
// the port before smsmilter started).
func (e *env) testNoErrors(t *testing.T) {
	refused := map[string]bool{}
	for _, l := range e.mta.LogLines("Milter (smsmilter): open 127.0.0.1 failed: Connection refused") {
		refused[logQueueID(l)] = true
	}
	for _, bad := range []string{"SYSERR", "Milter (smsmilter): ", "milter=smsmilter, reject=4", "Milter: data, reject=4"} {
		for _, l := range e.mta.LogLines(bad) {
			if strings.Contains(l, "init success to negotiate") || strings.Contains(l, "delete: rcpt") {
				continue
			}
			if refused[logQueueID(l)] {
				continue
			}
			t.Errorf("Sendmail logged: %s", l)
		}
	}
	if len(refused) == 0 {
		t.Error("no milter connection refused was logged: did testMilterDown run?")
	}
}

// logQueueID is the queue ID of a mail log line ("... sendmail[PID]: ID: ...").
func logQueueID(line string) string {
	if _, rest, ok := strings.Cut(line, "]: "); ok {
		if id, _, ok := strings.Cut(rest, ": "); ok {
			return id
		}
	}
	return ""
}

func (e *env) testOrdinaryMail(t *testing.T) {
	before := len(e.peer.Submits())
	id := newMessageID("plain")
	body := "Hello Dave,\n\n" +
		". a line starting with a dot\n" +
		"..two dots\n" +
		"Tabs\tand  double  spaces,   trailing space \n" +
		"Ünïcödé: 日本語のテキスト\n" +
		strings.Repeat("0123456789", 90) + "\n" + // a 900-octet line (Sendmail wraps above 990)
		"\n-- \nAlice\n"
	m := message{
		From: "Alice Example <" + alice + ">", To: "Dave <" + dave + ">", MessageID: id,
		Subject: "=?UTF-8?Q?Quarterly_r=C3=A9sum=C3=A9?=",
		Header:  []string{"X-Custom: kept as is", "Reply-To: alice+replies@example.org"},
		Body:    body,
	}
	qid := e.mustSend(t, m)
	got := e.sink.Wait(t, wait, "the ordinary mail", func(s *harness.SinkMessage) bool {
		return s.Header.Get("Message-Id") == "<"+id+">"
	})
	if len(got.Rcpts) != 1 || got.Rcpts[0] != dave || got.MailFrom != alice {
		t.Errorf("envelope at the sink: from <%s> to %v, want <%s> to [%s]", got.MailFrom, got.Rcpts, alice, dave)
	}
	// swaks sends an empty line of its own before the final dot; Sendmail
	// passes the body on exactly as it came.
	if want := body + "\n"; !bytes.Equal(got.Body, []byte(want)) {
		t.Errorf("body changed on the way:\ngot  %q\nwant %q", got.Body, want)
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
	if !strings.Contains(string(got.Raw), "by mx.e2e.test") || !strings.Contains(string(got.Raw), "id "+qid) {
		t.Errorf("no Received line of Sendmail's queue ID %s:\n%s", qid, got.Raw[:min(len(got.Raw), 800)])
	}
	// smsmilter let it go at the first header: no body was sent to it.
	e.mta.WaitLog(t, wait, qid+": milter=smsmilter, action=header, accepted")
	e.mta.WaitLog(t, wait, qid+": to=<"+dave+">", "stat=Sent")
	if n := len(e.peer.Submits()); n != before {
		t.Errorf("ordinary mail made %d submit_sm", n-before)
	}
}

func (e *env) testSMSAlphanumeric(t *testing.T) {
	const number = "+447400123401"
	text := "Server room temperature is 31C, please check the air conditioning."
	qid := e.mustSend(t, message{From: alice, To: number + "@" + domain, Subject: "Alert", Body: text + "\n"})
	s := e.waitSubmits(t, number, 1, wait)[0]
	checkSubmit(t, s, "447400123401", "ACME", 5, 0, 0)
	if s.Text != text {
		t.Errorf("SMS text %q, want %q", s.Text, text)
	}
	if s.Concat != nil || s.UDHHex != "" {
		t.Errorf("a one-part SMS has a UDH: %s %+v", s.UDHHex, s.Concat)
	}
	// Consumed by the milter: recipient removed, message discarded, nothing
	// delivered.
	e.mta.WaitLog(t, wait, qid+": Milter (smsmilter) delete: rcpt <"+number+"@"+domain+">")
	e.mta.WaitLog(t, wait, qid+": Milter: data, discard")
	// The queue ID reached smsmilter (the i macro of examples/sendmail).
	j := e.job(t, qid, number)
	if j.From != "ACME" || j.User != "acme" || j.Sender != alice || j.Encoding != "gsm7" || j.Parts != 1 {
		t.Errorf("job %+v", j)
	}
	if l := e.mta.LogLines(qid+": to=<"+number, "stat=Sent"); len(l) != 0 {
		t.Errorf("Sendmail delivered to the SMS recipient: %q", l)
	}
	if n := len(e.sink.Find(harness.To(number + "@" + domain))); n != 0 {
		t.Errorf("%d mails for the SMS recipient reached the sink", n)
	}
}

func (e *env) testSMSJapanese(t *testing.T) {
	const number = "+819012345678"
	text := "明日の会議は10時からです。資料を忘れずに。"
	e.mustSend(t, message{From: bob, To: number + "@" + domain, Subject: "=?UTF-8?B?5Lya6K2w?=", Body: text + "\n"})
	s := e.waitSubmits(t, number, 1, wait)[0]
	// A numeric sender ID goes out as an international number.
	checkSubmit(t, s, "819012345678", strings.TrimPrefix(deskID, "+"), 1, 1, 8)
	if s.Text != text {
		t.Errorf("SMS text %q, want %q", s.Text, text)
	}
}

func (e *env) testSMSLong(t *testing.T) {
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
		if s.Concat.Total != 3 || s.Concat.Part != i+1 {
			t.Errorf("part %d: concat %+v, want part %d of 3", i+1, *s.Concat, i+1)
		}
		if ref == -1 {
			ref = s.Concat.Ref
		} else if s.Concat.Ref != ref {
			t.Errorf("part %d: reference %d, part 1 had %d", i+1, s.Concat.Ref, ref)
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

func (e *env) testMixed(t *testing.T) {
	const number = "+447400123403"
	id := newMessageID("mixed")
	body := "Lunch at 12:30 in the usual place.\n"
	qid := e.mustSend(t, message{From: alice, To: dave + ", " + number + "@" + domain, Subject: "Lunch", MessageID: id, Body: body},
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
	if string(got.Body) != body+"\n" { // swaks's empty line, as in testOrdinaryMail
		t.Errorf("body %q", got.Body)
	}
	// The header keeps both (only the envelope changes).
	if !strings.Contains(got.Header.Get("To"), number+"@"+domain) {
		t.Errorf("To header changed: %q", got.Header.Get("To"))
	}
	e.mta.WaitLog(t, wait, qid+": Milter (smsmilter) delete: rcpt <"+number+"@"+domain+">")
	e.mta.WaitLog(t, wait, qid+": to=<"+dave+">", "stat=Sent")
	if l := e.mta.LogLines(qid + ": to=<" + number); len(l) != 0 {
		t.Errorf("Sendmail tried to deliver to the SMS recipient: %q", l)
	}
	if l := e.mta.LogLines(qid + ": Milter: data, discard"); len(l) != 0 {
		t.Errorf("the mixed message was discarded: %q", l)
	}
}

func (e *env) testRcptRejected(t *testing.T) {
	// Sendmail puts the address before the milter's text:
	// "550 5.1.3 <ADDR>... TEXT".
	for _, c := range []struct{ local, want string }{
		{"+8180123", "+8180123: too short for Japan (JP)"},
		{"+442079460000", "+442079460000: "},
		{"07400123456", ""},
		{"+44 7400 123456", ""},
	} {
		rcpt := c.local + "@" + domain
		if strings.Contains(c.local, " ") {
			rcpt = `"` + c.local + `"@` + domain
		}
		r := e.send(message{From: alice, To: rcpt, Subject: "x", Body: "hi\n"})
		if r.Exit == 0 || queueID(r) != "" {
			t.Errorf("%s: accepted:\n%s", rcpt, r.Output)
			continue
		}
		errs := r.Errors()
		if len(errs) == 0 || !strings.HasPrefix(errs[0], "550 5.1.3 ") || !strings.Contains(errs[0], c.want) {
			t.Errorf("%s: server said %q, want 550 5.1.3 ...%s", rcpt, errs, c.want)
		} else {
			t.Logf("%s: %s", rcpt, errs[0])
		}
	}
	// One bad recipient does not cost the others.
	const good = "+447400123410"
	qid := e.mustSend(t, message{From: alice, To: good + "@" + domain, Subject: "x", Body: "Only the good one.\n"},
		"+8180123@"+domain, good+"@"+domain)
	e.waitSubmits(t, good, 1, wait)
	e.mta.WaitLog(t, wait, qid+": Milter: to=<+8180123@"+domain+">, reject=550 5.1.3 +8180123: too short for Japan (JP)")
}

func (e *env) testUnauthorized(t *testing.T) {
	const number = "+447400123404"
	r := e.send(message{From: mallory, To: number + "@" + domain, Subject: "Hi", Body: "Send me money.\n"})
	errs := r.Errors()
	if queueID(r) != "" || len(errs) == 0 || !strings.HasPrefix(errs[len(errs)-1], "550 5.7.1 ") {
		t.Fatalf("unauthorized sender: exit %d, errors %q, want 550 5.7.1 after DATA:\n%s", r.Exit, errs, r.Output)
	}
	last := errs[len(errs)-1]
	t.Logf("refusal: %s", last)
	if !strings.Contains(last, mallory) {
		t.Errorf("the refusal does not name the sender: %q", last)
	}
	e.mta.WaitLog(t, wait, "milter=smsmilter, reject=550 5.7.1 ", mallory)
	time.Sleep(200 * time.Millisecond)
	if n := len(e.submitsTo(number)); n != 0 {
		t.Errorf("%d SMS sent for an unauthorized sender", n)
	}
}

func (e *env) testSPFFail(t *testing.T) {
	r := e.send(message{From: carol, To: "+447400123409@" + domain, Subject: "Hi", Body: "Forged?\n"})
	errs := r.Errors()
	if queueID(r) != "" || len(errs) == 0 || !strings.HasPrefix(errs[len(errs)-1], "550 5.7.1 ") {
		t.Fatalf("SPF fail: exit %d, errors %q, want 550 5.7.1:\n%s", r.Exit, errs, r.Output)
	}
	t.Logf("refusal: %s", errs[len(errs)-1])
	if !strings.Contains(strings.ToLower(errs[len(errs)-1]), "spf") {
		t.Errorf("the refusal does not say SPF: %q", errs[len(errs)-1])
	}
}

// testForgedAuthResults: Sendmail shows the milter the headers the client
// sent, so an Authentication-Results header with the trusted authserv-id
// that is not bound to this message's queue ID (mx.e2e.test/QUEUEID) must
// not be believed.
func (e *env) testForgedAuthResults(t *testing.T) {
	r := e.send(message{From: carol, To: "+447400123413@" + domain, Subject: "Trust me", Body: "Forged results.\n",
		Header: []string{"Authentication-Results: mx.e2e.test; spf=pass smtp.mailfrom=carol@forged.example; dkim=pass header.d=forged.example; dmarc=pass header.from=forged.example"}})
	errs := r.Errors()
	if queueID(r) != "" || len(errs) == 0 || !strings.HasPrefix(errs[len(errs)-1], "550 5.7.1 ") ||
		!strings.Contains(errs[len(errs)-1], "SPF for the envelope sender's domain forged.example is fail") {
		t.Fatalf("forged Authentication-Results: exit %d, errors %q, want 550 5.7.1 for SPF fail:\n%s", r.Exit, errs, r.Output)
	}
}

func (e *env) testMixedRefused(t *testing.T) {
	const number = "+447400123414"
	id := newMessageID("mixed-refused")
	qid := e.mustSend(t, message{From: mallory, To: "several", Subject: "Offer", MessageID: id, Body: "Mail yes, SMS no.\n"},
		dave, number+"@"+domain)
	got := e.sink.Wait(t, wait, "the mail for "+dave, func(s *harness.SinkMessage) bool {
		return s.Header.Get("Message-Id") == "<"+id+">"
	})
	if len(got.Rcpts) != 1 || got.Rcpts[0] != dave {
		t.Errorf("relayed to %v, want [%s]", got.Rcpts, dave)
	}
	e.mta.WaitLog(t, wait, qid+": Milter (smsmilter) delete: rcpt <"+number+"@"+domain+">")
	// mallory's SPF passes, so the notice is no backscatter: it goes out,
	// with the null sender, through Sendmail.
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
	e.mta.WaitLog(t, wait, "from=<>", "relay=mx.e2e.test [127.0.0.1]")
	if k := len(e.submitsTo(number)); k != 0 {
		t.Errorf("%d SMS sent for a refused sender", k)
	}
}

func (e *env) testDedupe(t *testing.T) {
	const number = "+447400123406"
	m := message{From: alice, To: number + "@" + domain, Subject: "Once", MessageID: newMessageID("twice"), Body: "Only once, please.\n"}
	e.mustSend(t, m)
	e.waitSubmits(t, number, 1, wait)
	// A client that lost Sendmail's answer sends the same message again.
	e.mustSend(t, m)
	e.sm.WaitLog("duplicates=1", wait)
	e.settle(t)
	if n := len(e.submitsTo(number)); n != 1 {
		t.Errorf("the same message sent twice made %d SMS, want 1", n)
	}
}

// testInternetClient sends from 127.0.0.2, a client Sendmail does not
// relay for (127.0.0.1 is always "originated locally"): the access entry
// of examples/sendmail/access lets it reach the SMS domain, and nothing
// else.
func (e *env) testInternetClient(t *testing.T) {
	const number = "+447400123411"
	from := []string{"--local-interface", "127.0.0.2"}
	r := e.sendTo(e.mta.Addr, from, message{From: alice, To: dave, Subject: "relay?", Body: "x\n"})
	if errs := r.Errors(); queueID(r) != "" || len(errs) == 0 || !strings.Contains(errs[0], "Relaying denied") {
		t.Fatalf("relaying for an outside client: exit %d, errors %q, want Relaying denied:\n%s", r.Exit, errs, r.Output)
	}
	text := "Sent from outside."
	r = e.sendTo(e.mta.Addr, from, message{From: alice, To: number + "@" + domain, Subject: "outside", Body: text + "\n"})
	if queueID(r) == "" {
		t.Fatalf("SMS mail from an outside client refused:\n%s", r.Output)
	}
	if s := e.waitSubmits(t, number, 1, wait)[0]; s.Text != text {
		t.Errorf("SMS text %q", s.Text)
	}
	e.mta.WaitLog(t, wait, queueID(r)+": from=<"+alice+">", "relay=client.e2e.test [127.0.0.2]")
}

func (e *env) testVerdict(t *testing.T) {
	before := len(e.peer.Submits())
	id := newMessageID("verdict")
	text := "Does this reach the phone?"
	qid := e.mustSend(t, message{From: alice, To: "verdict@" + domain, Subject: "Check me", MessageID: id, Body: text + "\n"})
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
	for _, want := range []string{"SPF:   pass", "Rule: address " + alice, "Decision: WOULD SEND as user acme (sender ID ACME)",
		"SMS preview: encoding GSM 7-bit (gsm7)", "1 part(s)", text} {
		if !strings.Contains(body, want) {
			t.Errorf("verdict answer lacks %q:\n%s", want, body)
		}
	}
	// The answer went out through Sendmail (mail.smtp), the question was
	// consumed.
	if !strings.Contains(string(got.Raw), "by mx.e2e.test") {
		t.Errorf("the verdict answer did not pass Sendmail:\n%s", got.Raw)
	}
	e.mta.WaitLog(t, wait, qid+": Milter: data, discard")
	if n := len(e.peer.Submits()); n != before {
		t.Errorf("the verdict address sent %d SMS", n-before)
	}
}

func (e *env) testReply(t *testing.T) {
	const number = "+447400123405"
	id := newMessageID("dinner")
	e.mustSend(t, message{From: "Bob <" + bob + ">", To: number + "@" + domain, Subject: "Dinner tonight?", MessageID: id,
		Body: "Dinner at 8?\n"})
	e.waitSubmits(t, number, 1, wait)
	e.settle(t)

	reply := "Yes, 8pm works. See you there!"
	e.peer.InjectMO(number, deskID, reply)

	got := e.sink.Wait(t, wait, "the reply mail to "+bob, func(s *harness.SinkMessage) bool {
		return s.HasRcpt(bob) && strings.HasPrefix(s.Get("Subject"), "Re: ")
	})
	if from := addrOnly(got.Header.Get("From")); from != number+"@"+domain {
		t.Errorf("From %q, want %s@%s", from, number, domain)
	}
	if got.Header.Get("In-Reply-To") != "<"+id+">" {
		t.Errorf("In-Reply-To %q, want <%s>", got.Header.Get("In-Reply-To"), id)
	}
	if got.Get("Subject") != "Re: Dinner tonight?" {
		t.Errorf("Subject %q", got.Get("Subject"))
	}
	if !strings.Contains(string(got.Body), reply) {
		t.Errorf("body %q lacks the SMS text", got.Body)
	}
	if got.MailFrom != "smsmilter@mx.e2e.test" {
		t.Errorf("reply envelope sender <%s>, want mail.from", got.MailFrom)
	}
	// Through Sendmail, past the milter (which lets it go: no SMS
	// recipient).
	if !strings.Contains(string(got.Raw), "by mx.e2e.test") {
		t.Errorf("the reply did not pass Sendmail:\n%s", got.Raw)
	}
	line := e.mta.WaitLog(t, wait, "from=<smsmilter@mx.e2e.test>", "msgid=<", "relay=mx.e2e.test [127.0.0.1]")
	t.Logf("Sendmail: %s", line)
	e.mta.WaitLog(t, wait, "to=<"+bob+">", "stat=Sent")
}

// testMSP submits with sendmail(8) as a local program (cron, a web
// application) would: the MSP relays it to the MTA over SMTP, where the
// milter sees it.
func (e *env) testMSP(t *testing.T) {
	const number = "+447400123408"
	text := "Nightly backup finished without errors."
	msg := message{From: alice, To: number + "@" + domain, Subject: "cron", MessageID: newMessageID("cron"), Body: text + "\n"}
	if out, code := e.mta.Submit(alice, []string{number + "@" + domain}, []byte(msg.String())); code != 0 {
		t.Fatalf("sendmail (MSP): exit %d\n%s", code, out)
	}
	s := e.waitSubmits(t, number, 1, wait)[0]
	if s.Text != text || s.SourceAddr != "ACME" {
		t.Errorf("SMS from the MSP: %+v", s)
	}
	if q := e.mta.ClientQueue(); len(q) != 0 {
		t.Errorf("client queue holds %v", q)
	}
}

// testBypass sends through the daemon that runs no milter: the SMS
// recipient must be dropped by examples/sendmail's check_compat rules (any
// case of the domain), the other recipient gets the mail, no SMS goes out
// and no bounce goes to the unchecked sender.
func (e *env) testBypass(t *testing.T) {
	const number = "+447400123407"
	id := newMessageID("bypass")
	rcpt := number + "@SMS.Example.COM"
	r := e.sendTo(e.mta.BypassAddr, nil, message{From: alice, To: dave, Subject: "bypass", MessageID: id, Body: "unchecked\n"}, rcpt, dave)
	qid := queueID(r)
	if qid == "" {
		t.Fatalf("the bypass daemon refused the mail:\n%s", r.Output)
	}
	e.mta.WaitLog(t, wait, qid+": ruleset=check_compat", "arg2=<"+rcpt+">", "discard")
	e.mta.WaitLog(t, wait, qid+": to=<"+dave+">", "stat=Sent")
	got := e.sink.Wait(t, wait, "the bypassed mail for "+dave, func(s *harness.SinkMessage) bool {
		return s.Header.Get("Message-Id") == "<"+id+">"
	})
	if len(got.Rcpts) != 1 || got.Rcpts[0] != dave {
		t.Errorf("bypassed mail relayed to %v, want only %s", got.Rcpts, dave)
	}
	time.Sleep(500 * time.Millisecond)
	if n := len(e.submitsTo(number)); n != 0 {
		t.Errorf("bypassed mail was sent as SMS (%d)", n)
	}
	for _, m := range e.sink.Find(harness.To(alice)) {
		if strings.Contains(string(m.Raw), id) && m.Header.Get("Message-Id") != "<"+id+">" {
			t.Errorf("a notice or bounce about the bypassed mail went to the sender: %s\n%s", m, m.Raw)
		}
	}
	// Only recipients are dropped: mail from an address in the SMS domain
	// (as smsmilter's replies have in From:) to anyone else is delivered.
	id2 := newMessageID("bypass-from-sms")
	r = e.sendTo(e.mta.BypassAddr, nil, message{From: "+447400123499@" + domain, To: dave, Subject: "from the SMS domain", MessageID: id2, Body: "x\n"})
	if queueID(r) == "" {
		t.Fatalf("the bypass daemon refused the mail:\n%s", r.Output)
	}
	e.sink.Wait(t, wait, "the mail from the SMS domain for "+dave, func(s *harness.SinkMessage) bool {
		return s.Header.Get("Message-Id") == "<"+id2+">" && s.HasRcpt(dave)
	})
	if q := e.mta.Queue(); len(q) != 0 {
		t.Errorf("Sendmail's queue holds %v", q)
	}
}

// testMilterDown stops smsmilter. With F=T Sendmail tempfails every mail
// (the SMTP client keeps it), mail from local programs waits in the MSP's
// client queue, and once smsmilter is back the queued SMS goes out exactly
// once.
func (e *env) testMilterDown(t *testing.T) {
	const number = "+447400123412"
	text := "Sent while smsmilter was down."
	msg := message{From: alice, To: number + "@" + domain, Subject: "down", MessageID: newMessageID("down"), Body: text + "\n"}

	e.sm.Stop()
	r := e.send(msg)
	errs := r.Errors()
	if queueID(r) != "" || len(errs) == 0 || !strings.HasPrefix(errs[0], "451 4.3.2 ") {
		t.Fatalf("smsmilter down: exit %d, errors %q, want 451 4.3.2 (F=T):\n%s", r.Exit, errs, r.Output)
	}
	t.Logf("SMTP client: %s", errs[0])
	if r := e.send(message{From: alice, To: dave, Subject: "ordinary, down", Body: "x\n"}); queueID(r) != "" {
		t.Errorf("ordinary mail accepted while smsmilter was down (F=T tempfails all):\n%s", r.Output)
	}
	e.mta.WaitLog(t, wait, "Milter (smsmilter): error connecting to filter")

	if out, code := e.mta.Submit(alice, []string{number + "@" + domain}, []byte(msg.String())); code != 0 {
		t.Fatalf("sendmail (MSP) while smsmilter is down: exit %d\n%s", code, out)
	}
	if q := e.mta.ClientQueue(); len(q) != 1 {
		t.Fatalf("client queue %v, want the message waiting there", q)
	}
	e.mta.WaitLog(t, wait, number+"@"+domain, "stat=Deferred: 451 4.3.2")
	if n := len(e.submitsTo(number)); n != 0 {
		t.Fatalf("%d SMS sent while smsmilter was down", n)
	}

	binds := len(e.peer.Binds())
	e.sm.Start()
	harness.Eventually(t, wait, "smsmilter to bind again", func() bool { return len(e.peer.Binds()) > binds })
	out := e.mta.RunClientQueue()
	s := e.waitSubmits(t, number, 1, wait)[0]
	if s.Text != text {
		t.Errorf("SMS text %q", s.Text)
	}
	if q := e.mta.ClientQueue(); len(q) != 0 {
		t.Errorf("client queue after the run: %v\n%s", q, out)
	}
	// A second queue run, and the SMTP client trying again with the same
	// message, send nothing more.
	e.mta.RunClientQueue()
	if r := e.send(msg); queueID(r) == "" {
		t.Errorf("the client's retry was refused:\n%s", r.Output)
	}
	e.settle(t)
	time.Sleep(300 * time.Millisecond)
	if n := len(e.submitsTo(number)); n != 1 {
		t.Errorf("%d SMS for one message sent while smsmilter was down, want 1", n)
	}
}
