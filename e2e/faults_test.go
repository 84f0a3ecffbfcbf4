package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/smsmilter/smsmilter/e2e/internal/harness"
	"github.com/smsmilter/smsmilter/internal/testpeer/smpppeer"
)

// TestPostfixFaults stops and kills smsmilter under a running Postfix: mail
// is tempfailed or kept queued while it is down, never lost, and every SMS
// goes out exactly once afterwards.
func TestPostfixFaults(t *testing.T) {
	t.Parallel()
	e := newPostfixEnv(t, envOptions{})
	t.Run("StoppedMilterTempfails", e.testMilterDown)
	t.Run("KillAfter250", e.testKillAfter250)
}

func (e *postfixEnv) testMilterDown(t *testing.T) {
	const viaSMTP, viaSendmail = "+447400123501", "+447400123502"
	smtpMsg := message{From: alice, To: viaSMTP + "@" + domain, Subject: "down", MessageID: harness.NewMessageID("down-smtp"),
		Body: "Sent while smsmilter was stopped.\n"}
	localMsg := message{From: alice, To: viaSendmail + "@" + domain, Subject: "down", MessageID: harness.NewMessageID("down-local"),
		Body: "Queued while smsmilter was stopped.\n"}

	e.SM.Stop() // SIGTERM: drains, exits 0

	// SMTP: Postfix cannot reach the milter; milter_default_action =
	// tempfail answers 4xx and the client keeps the message.
	r := e.Send(smtpMsg)
	if r.QueueID() != "" {
		t.Fatalf("Postfix accepted mail while smsmilter was down:\n%s", r.Output)
	}
	errs := r.Errors()
	if len(errs) == 0 || !strings.HasPrefix(errs[0], "451 4.7.1 ") {
		t.Fatalf("want 451 4.7.1 while smsmilter is down, got %q:\n%s", errs, r.Output)
	}
	t.Logf("while down, swaks saw: %s", errs[0])

	// sendmail: the message stays in Postfix's maildrop queue.
	e.pf.Sendmail(alice, []string{viaSendmail + "@" + domain}, []byte(localMsg.Unterminated()))
	harness.Eventually(t, wait, "Postfix to tempfail the local submission", func() bool {
		return len(e.pf.LogLines("milter-reject", "4.7.1 Service unavailable", "from=<"+alice+">")) >= 2
	})
	q := e.pf.Queue()
	if len(q) != 1 || q[0].QueueName != "maildrop" || len(q[0].Recipients) != 1 || q[0].Recipients[0].Address != viaSendmail+"@"+domain {
		t.Fatalf("Postfix queue while smsmilter is down: %+v, want the local message in maildrop", q)
	}
	if n := len(e.SubmitsTo(viaSMTP)) + len(e.SubmitsTo(viaSendmail)); n != 0 {
		t.Fatalf("%d SMS sent while smsmilter was down", n)
	}

	e.SM.Start()
	e.Peer.WaitBinds(2, wait)
	// The client retries; Postfix retries its queue.
	e.MustSend(t, smtpMsg)
	e.pf.Flush()
	e.WaitSubmits(t, viaSMTP, 1, wait)
	e.WaitSubmits(t, viaSendmail, 1, wait)
	e.pf.WaitQueueEmpty(wait)
	e.Settle(t)
	// A second flush finds nothing: still one SMS each.
	e.pf.Flush()
	time.Sleep(500 * time.Millisecond)
	for _, n := range []string{viaSMTP, viaSendmail} {
		if got := len(e.SubmitsTo(n)); got != 1 {
			t.Errorf("%s: %d SMS after the retry, want exactly 1", n, got)
		}
	}
}

func (e *postfixEnv) testKillAfter250(t *testing.T) {
	const number = "+447400123503"
	// The SMSC answers this number with a temporary error, so the job is
	// still in smsmilter's queue (not yet sent) when the daemon dies.
	e.Peer.FailNumber(number, smpppeer.StatusSysErr)
	qid := e.MustSend(t, message{From: alice, To: number + "@" + domain, Subject: "durable", MessageID: harness.NewMessageID("kill"),
		Body: "This SMS survives a crash.\n"})
	// Postfix has given its 250 and discarded the message: from here on
	// the SMS exists only in smsmilter's store. Kill the daemon once its
	// first attempt is recorded as failed (a kill while the submit is in
	// flight leaves the job leased to the dead daemon for the dispatcher's
	// lease, 10 minutes: too long for a test).
	harness.Eventually(t, wait, "the first attempt to fail", func() bool {
		for _, j := range e.SM.Queue() {
			if j.QueueID == qid && j.State == "queued" && j.Attempts >= 1 {
				return true
			}
		}
		return false
	})
	e.SM.Kill()
	harness.Eventually(t, wait, "Postfix to log the milter's discard", func() bool {
		return len(e.pf.LogLines(qid+": milter-discard")) == 1
	})
	if n := len(e.SubmitsTo(number)); n != 0 {
		t.Fatalf("the SMSC accepted %d submits for a failing number", n)
	}
	e.Peer.FailNumber(number, 0)

	binds := len(e.Peer.Binds())
	e.SM.Start()
	e.Peer.WaitBinds(binds+1, wait)
	// The job waits for its retry (the dispatcher backs off 30s ±25% after
	// a first failed attempt).
	s := e.WaitSubmits(t, number, 1, time.Minute)[0]
	if s.Text != "This SMS survives a crash." {
		t.Errorf("SMS after the restart: %q", s.Text)
	}
	e.Settle(t)
	if n := len(e.SubmitsTo(number)); n != 1 {
		t.Errorf("%d SMS accepted after the restart, want 1", n)
	}
	j := e.Job(t, qid, number)
	if j.State != "sent" && j.State != "delivered" {
		t.Errorf("job after the restart: %+v", j)
	}
}
