package sendmail

import (
	"bytes"
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
	t.Run("SMSJapaneseNumericSender", func(t *testing.T) { e.SMSJapanese(t, "=?UTF-8?B?5Lya6K2w?=") }) // 会議, RFC 2047
	t.Run("SMSLongConcatenated", e.TestSMSLong)
	t.Run("MixedRecipients", e.testMixed)
	t.Run("RecipientRejected", e.testRcptRejected)
	t.Run("SenderNotAuthorized", e.testUnauthorized)
	t.Run("SPFFail", e.TestSPFFail)
	t.Run("ForgedAuthResultsIgnored", e.testForgedAuthResults)
	t.Run("MixedRefusedSMSPartNotice", e.testMixedRefused)
	t.Run("InternetClientSMSDomainOnly", e.testInternetClient)
	t.Run("VerdictAddress", e.testVerdict)
	t.Run("ReplyByMailThroughSendmail", e.testReply)
	t.Run("SameMessageTwiceOneSMS", e.TestDedupe)
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
	before := len(e.Peer.Submits())
	m := harness.OrdinaryMail()
	qid := e.MustSend(t, m)
	got := e.Sink.Wait(t, wait, "the ordinary mail", harness.MessageID(m.MessageID))
	harness.CheckUntouched(t, got, m)
	// swaks sends an empty line of its own before the final dot; Sendmail
	// passes the body on exactly as it came.
	if want := m.Body + "\n"; !bytes.Equal(got.Body, []byte(want)) {
		t.Errorf("body changed on the way:\ngot  %q\nwant %q", got.Body, want)
	}
	if !strings.Contains(string(got.Raw), "by mx.e2e.test") || !strings.Contains(string(got.Raw), "id "+qid) {
		t.Errorf("no Received line of Sendmail's queue ID %s:\n%s", qid, got.Raw[:min(len(got.Raw), 800)])
	}
	// smsmilter let it go at the first header: no body was sent to it.
	e.mta.WaitLog(t, wait, qid+": milter=smsmilter, action=header, accepted")
	e.mta.WaitLog(t, wait, qid+": to=<"+dave+">", "stat=Sent")
	if n := len(e.Peer.Submits()); n != before {
		t.Errorf("ordinary mail made %d submit_sm", n-before)
	}
}

func (e *env) testSMSAlphanumeric(t *testing.T) {
	const number = "+447400123401"
	text := "Server room temperature is 31C, please check the air conditioning."
	qid := e.MustSend(t, message{From: alice, To: number + "@" + domain, Subject: "Alert", Body: text + "\n"})
	e.WaitSMS(t, number, text, harness.AcmeSource, 0)
	// Consumed by the milter: recipient removed, message discarded, nothing
	// delivered.
	e.mta.WaitLog(t, wait, qid+": Milter (smsmilter) delete: rcpt <"+number+"@"+domain+">")
	e.mta.WaitLog(t, wait, qid+": Milter: data, discard")
	// The queue ID reached smsmilter (the i macro of examples/sendmail).
	e.CheckTaken(t, qid, number)
	if l := e.mta.LogLines(qid+": to=<"+number, "stat=Sent"); len(l) != 0 {
		t.Errorf("Sendmail delivered to the SMS recipient: %q", l)
	}
}

func (e *env) testMixed(t *testing.T) {
	const number = harness.MixedNumber
	qid, got, body := e.SendMixed(t)
	// swaks's empty line, as in testOrdinaryMail.
	if string(got.Body) != body+"\n" {
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
		r := e.Send(message{From: alice, To: rcpt, Subject: "x", Body: "hi\n"})
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
	qid := e.MustSend(t, message{From: alice, To: good + "@" + domain, Subject: "x", Body: "Only the good one.\n"},
		"+8180123@"+domain, good+"@"+domain)
	e.WaitSubmits(t, good, 1, wait)
	e.mta.WaitLog(t, wait, qid+": Milter: to=<+8180123@"+domain+">, reject=550 5.1.3 +8180123: too short for Japan (JP)")
}

func (e *env) testUnauthorized(t *testing.T) {
	const number = "+447400123404"
	r := e.Send(message{From: mallory, To: number + "@" + domain, Subject: "Hi", Body: "Send me money.\n"})
	last := harness.CheckRefused(t, "unauthorized sender", r, queueID(r))
	if !strings.Contains(last, mallory) {
		t.Errorf("the refusal does not name the sender: %q", last)
	}
	e.mta.WaitLog(t, wait, "milter=smsmilter, reject=550 5.7.1 ", mallory)
	e.CheckNoSMS(t, number, "an unauthorized sender", 200*time.Millisecond)
}

// testForgedAuthResults: Sendmail shows the milter the headers the client
// sent, so an Authentication-Results header with the trusted authserv-id
// that is not bound to this message's queue ID (mx.e2e.test/QUEUEID) must
// not be believed.
func (e *env) testForgedAuthResults(t *testing.T) {
	r := e.Send(message{From: carol, To: "+447400123413@" + domain, Subject: "Trust me", Body: "Forged results.\n",
		Header: []string{"Authentication-Results: mx.e2e.test; spf=pass smtp.mailfrom=carol@forged.example; dkim=pass header.d=forged.example; dmarc=pass header.from=forged.example"}})
	errs := r.Errors()
	if queueID(r) != "" || len(errs) == 0 || !strings.HasPrefix(errs[len(errs)-1], "550 5.7.1 ") ||
		!strings.Contains(errs[len(errs)-1], "SPF for the envelope sender's domain forged.example is fail") {
		t.Fatalf("forged Authentication-Results: exit %d, errors %q, want 550 5.7.1 for SPF fail:\n%s", r.Exit, errs, r.Output)
	}
}

func (e *env) testMixedRefused(t *testing.T) {
	const number = "+447400123414"
	id := harness.NewMessageID("mixed-refused")
	qid := e.MustSend(t, message{From: mallory, To: "several", Subject: "Offer", MessageID: id, Body: "Mail yes, SMS no.\n"},
		dave, number+"@"+domain)
	got := e.Sink.Wait(t, wait, "the mail for "+dave, harness.MessageID(id))
	harness.CheckRelayedTo(t, got, dave)
	e.mta.WaitLog(t, wait, qid+": Milter (smsmilter) delete: rcpt <"+number+"@"+domain+">")
	// mallory's SPF passes, so the notice is no backscatter: it goes out,
	// with the null sender, through Sendmail.
	e.WaitNotice(t, mallory, "Offer", number, "no rule authorizes this sender")
	e.mta.WaitLog(t, wait, "from=<>", "relay=mx.e2e.test [127.0.0.1]")
	e.CheckNoSMS(t, number, "a refused sender", 0)
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
	if s := e.WaitSubmits(t, number, 1, wait)[0]; s.Text != text {
		t.Errorf("SMS text %q", s.Text)
	}
	e.mta.WaitLog(t, wait, queueID(r)+": from=<"+alice+">", "relay=client.e2e.test [127.0.0.2]")
}

func (e *env) testVerdict(t *testing.T) {
	before := len(e.Peer.Submits())
	id := harness.NewMessageID("verdict")
	text := "Does this reach the phone?"
	qid := e.MustSend(t, message{From: alice, To: "verdict@" + domain, Subject: "Check me", MessageID: id, Body: text + "\n"})
	got := e.WaitVerdict(t, alice, "Check me", id, "SPF:   pass", "Rule: address "+alice, "Decision: WOULD SEND as user acme (sender ID ACME)",
		"SMS preview: encoding GSM 7-bit (gsm7)", "1 part(s)", text)
	// The answer went out through Sendmail (mail.smtp), the question was
	// consumed.
	if !strings.Contains(string(got.Raw), "by mx.e2e.test") {
		t.Errorf("the verdict answer did not pass Sendmail:\n%s", got.Raw)
	}
	e.mta.WaitLog(t, wait, qid+": Milter: data, discard")
	if n := len(e.Peer.Submits()); n != before {
		t.Errorf("the verdict address sent %d SMS", n-before)
	}
}

func (e *env) testReply(t *testing.T) {
	got, _ := e.SMSReply(t, "+447400123405")
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
	msg := message{From: alice, To: number + "@" + domain, Subject: "cron", MessageID: harness.NewMessageID("cron"), Body: text + "\n"}
	if out, code := e.mta.Submit(alice, []string{number + "@" + domain}, []byte(msg.String())); code != 0 {
		t.Fatalf("sendmail (MSP): exit %d\n%s", code, out)
	}
	s := e.WaitSubmits(t, number, 1, wait)[0]
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
	id := harness.NewMessageID("bypass")
	rcpt := number + "@SMS.Example.COM"
	r := e.sendTo(e.mta.BypassAddr, nil, message{From: alice, To: dave, Subject: "bypass", MessageID: id, Body: "unchecked\n"}, rcpt, dave)
	qid := queueID(r)
	if qid == "" {
		t.Fatalf("the bypass daemon refused the mail:\n%s", r.Output)
	}
	e.mta.WaitLog(t, wait, qid+": ruleset=check_compat", "arg2=<"+rcpt+">", "discard")
	e.mta.WaitLog(t, wait, qid+": to=<"+dave+">", "stat=Sent")
	got := e.Sink.Wait(t, wait, "the bypassed mail for "+dave, harness.MessageID(id))
	harness.CheckRelayedTo(t, got, dave)
	e.CheckNoSMS(t, number, "bypassed mail", 500*time.Millisecond)
	for _, m := range e.Sink.Find(harness.To(alice)) {
		if strings.Contains(string(m.Raw), id) && m.Header.Get("Message-Id") != "<"+id+">" {
			t.Errorf("a notice or bounce about the bypassed mail went to the sender: %s\n%s", m, m.Raw)
		}
	}
	// Only recipients are dropped: mail from an address in the SMS domain
	// (as smsmilter's replies have in From:) to anyone else is delivered.
	id2 := harness.NewMessageID("bypass-from-sms")
	r = e.sendTo(e.mta.BypassAddr, nil, message{From: "+447400123499@" + domain, To: dave, Subject: "from the SMS domain", MessageID: id2, Body: "x\n"})
	if queueID(r) == "" {
		t.Fatalf("the bypass daemon refused the mail:\n%s", r.Output)
	}
	e.Sink.Wait(t, wait, "the mail from the SMS domain for "+dave, func(s *harness.SinkMessage) bool {
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
	msg := message{From: alice, To: number + "@" + domain, Subject: "down", MessageID: harness.NewMessageID("down"), Body: text + "\n"}

	e.SM.Stop()
	r := e.Send(msg)
	errs := r.Errors()
	if queueID(r) != "" || len(errs) == 0 || !strings.HasPrefix(errs[0], "451 4.3.2 ") {
		t.Fatalf("smsmilter down: exit %d, errors %q, want 451 4.3.2 (F=T):\n%s", r.Exit, errs, r.Output)
	}
	t.Logf("SMTP client: %s", errs[0])
	if r := e.Send(message{From: alice, To: dave, Subject: "ordinary, down", Body: "x\n"}); queueID(r) != "" {
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
	if n := len(e.SubmitsTo(number)); n != 0 {
		t.Fatalf("%d SMS sent while smsmilter was down", n)
	}

	binds := len(e.Peer.Binds())
	e.SM.Start()
	harness.Eventually(t, wait, "smsmilter to bind again", func() bool { return len(e.Peer.Binds()) > binds })
	out := e.mta.RunClientQueue()
	s := e.WaitSubmits(t, number, 1, wait)[0]
	if s.Text != text {
		t.Errorf("SMS text %q", s.Text)
	}
	if q := e.mta.ClientQueue(); len(q) != 0 {
		t.Errorf("client queue after the run: %v\n%s", q, out)
	}
	// A second queue run, and the SMTP client trying again with the same
	// message, send nothing more.
	e.mta.RunClientQueue()
	if r := e.Send(msg); queueID(r) == "" {
		t.Errorf("the client's retry was refused:\n%s", r.Output)
	}
	e.Settle(t)
	time.Sleep(300 * time.Millisecond)
	if n := len(e.SubmitsTo(number)); n != 1 {
		t.Errorf("%d SMS for one message sent while smsmilter was down, want 1", n)
	}
}
