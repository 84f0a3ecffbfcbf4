package e2e

import (
	"fmt"
	"testing"

	"github.com/smsmilter/smsmilter/e2e/internal/harness"
	"github.com/smsmilter/smsmilter/internal/testutil"
)

// The senders of the suite and what the registry says about them: the
// cast of harness.Env.
const (
	alice, bob, mallory, dave = harness.Alice, harness.Bob, harness.Mallory, harness.Dave
	domain, wait              = harness.SMSDomain, harness.Wait
)

type message = harness.Message

// postfixEnv is one complete installation: harness.Env (DNS, SMPP peer,
// smtp-sink, smsmilter) with Postfix set up with examples/postfix/main.cf
// and smsmilter attached.
type postfixEnv struct {
	*harness.Env
	pf   *harness.Postfix
	pop3 string // POP3 listener
	// bypass is an smtpd without milters (a misconfigured service), ""
	// unless asked for.
	bypass string
}

type envOptions struct {
	bypass bool // add an smtpd service that runs no milter
}

func newPostfixEnv(t *testing.T, o envOptions) *postfixEnv {
	t.Helper()
	testutil.NeedCmd(t, "postfix")
	testutil.NeedCmd(t, "swaks")
	harness.NeedRoot(t)
	e := &postfixEnv{Env: harness.StartEnv(t)}

	var master string
	if o.bypass {
		port := testutil.FreePort(t)
		e.bypass = fmt.Sprintf("127.0.0.1:%d", port)
		master = e.bypass + " inet n - n - - smtpd\n  -o smtpd_milters=\n  -o syslog_name=postfix/bypass"
	}
	e.pf = harness.StartPostfix(t, harness.PostfixOptions{
		RelayTo:  e.Sink.Addr,
		MainCF:   harness.Example(t, "main.cf", e.SM.MilterAddr),
		MasterCF: master,
	})
	e.Send = func(m message, rcpts ...string) harness.SwaksResult { return e.sendTo(e.pf.Addr, m, rcpts...) }
	e.QueueID = harness.SwaksResult.QueueID

	e.pop3 = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	e.Start(e.pf.Addr, harness.Config{
		"replies": map[string]any{"deliver": []string{"email", "pop3"}},
		"pop3":    map[string]any{"enabled": true, "listen": e.pop3},
	})
	return e
}

// sendTo sends m with swaks to server (host:port), envelope from m.From
// to rcpts (default: m.To).
func (e *postfixEnv) sendTo(server string, m message, rcpts ...string) harness.SwaksResult {
	e.T.Helper()
	if len(rcpts) == 0 {
		rcpts = []string{m.To}
	}
	m = m.WithID()
	return harness.SwaksMessage(e.T, server, harness.AddrOnly(m.From), rcpts, m.Unterminated())
}
