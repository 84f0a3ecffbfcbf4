package sendmail

import (
	"testing"

	"github.com/smsmilter/smsmilter/e2e/internal/harness"
	"github.com/smsmilter/smsmilter/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// The senders of the suite and what the registry says about them: the
// cast of harness.Env, the Postfix suite's too.
const (
	alice, bob, carol, mallory, dave = harness.Alice, harness.Bob, harness.Carol, harness.Mallory, harness.Dave
	domain, wait                     = harness.SMSDomain, harness.Wait
)

type message = harness.Message

// env is one complete installation: harness.Env (DNS, SMPP peer,
// smtp-sink, smsmilter) with Sendmail set up with examples/sendmail and
// smsmilter attached.
type env struct {
	*harness.Env
	mta *Sendmail
}

func newEnv(t *testing.T) *env {
	t.Helper()
	in := needSendmail(t)
	testutil.NeedCmd(t, "swaks")
	e := &env{Env: harness.StartEnv(t)}
	e.mta = startSendmail(t, in, mtaOptions{
		RelayTo: e.Sink.Addr,
		MC:      exampleMC(t, e.SM.MilterPort),
		Access:  example(t, "access"),
	})
	t.Logf("Sendmail %s in %s: MTA on %s, bypass on %s", in.Version, e.mta.Dir, e.mta.Addr, e.mta.BypassAddr)
	// From 127.0.0.1, Sendmail's MTA daemon.
	e.Send = func(m message, rcpts ...string) harness.SwaksResult { return e.sendTo(e.mta.Addr, nil, m, rcpts...) }
	e.QueueID = queueID

	// Replies, verdicts and notices are submitted to Sendmail.
	e.Start(e.mta.Addr, harness.Config{
		// Believed only as mx.e2e.test/QUEUEID (the milter before
		// smsmilter, e.g. OpenDKIM with AuthservIDWithJobID).
		"auth":    map[string]any{"trusted_authserv_ids": []string{"mx.e2e.test"}},
		"replies": map[string]any{"deliver": []string{"email"}},
	})
	return e
}

// sendTo sends m with swaks to server (host:port), envelope from m.From
// to rcpts (default: m.To), with extra swaks args (e.g. the source
// address).
func (e *env) sendTo(server string, extra []string, m message, rcpts ...string) harness.SwaksResult {
	e.T.Helper()
	if len(rcpts) == 0 {
		rcpts = []string{harness.AddrOnly(m.To)}
	}
	m = m.WithID()
	return harness.SwaksMessage(e.T, server, harness.AddrOnly(m.From), rcpts, m.String(), extra...)
}
