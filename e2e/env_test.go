package e2e

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smsmilter/smsmilter/e2e/internal/harness"
	"github.com/smsmilter/smsmilter/internal/dnsresolver/dnstest"
	"github.com/smsmilter/smsmilter/internal/testpeer/smpppeer"
	"github.com/smsmilter/smsmilter/internal/testutil"
)

// The senders of the suite and what the registry says about them.
const (
	alice   = "alice@example.org"    // address rule, user acme (sender ID ACME), SPF passes
	bob     = "bob@example.org"      // address rule, user desk (numeric sender ID), SPF passes
	carol   = "carol@forged.example" // address rule, but SPF fails from 127.0.0.1
	mallory = "mallory@evil.example" // no rule at all (SPF would pass)
	dave    = "dave@example.net"     // an ordinary mail recipient
	deskID  = "+447400000001"        // user desk's sender ID
	domain  = "sms.example.com"
)

// postfixEnv is one complete installation: DNS, SMPP peer, smtp-sink,
// Postfix set up with examples/postfix/main.cf, and smsmilter attached.
type postfixEnv struct {
	t    *testing.T
	dns  *dnstest.Server
	peer *smpppeer.Peer
	sink *harness.Sink
	pf   *harness.Postfix
	sm   *harness.Smsmilter
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
	e := &postfixEnv{t: t}

	e.dns = dnstest.NewServer(t)
	e.dns.Add(
		`example.org. 60 IN TXT "v=spf1 ip4:127.0.0.0/8 -all"`,
		`forged.example. 60 IN TXT "v=spf1 ip4:192.0.2.0/24 -all"`,
		`evil.example. 60 IN TXT "v=spf1 ip4:127.0.0.1 -all"`,
	)
	e.peer = smpppeer.Start(t, smpppeer.Options{})
	e.sink = harness.StartSink(t)
	e.sm = harness.NewSmsmilter(t)

	var master string
	if o.bypass {
		port := testutil.FreePort(t)
		e.bypass = fmt.Sprintf("127.0.0.1:%d", port)
		master = e.bypass + " inet n - n - - smtpd\n  -o smtpd_milters=\n  -o syslog_name=postfix/bypass"
	}
	e.pf = harness.StartPostfix(t, harness.PostfixOptions{
		RelayTo:  e.sink.Addr,
		MainCF:   harness.Example(t, "main.cf", e.sm.MilterAddr),
		MasterCF: master,
	})

	e.pop3 = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	e.sm.Configure(harness.Config{
		"milter": map[string]any{"timeout": "10s"},
		"dns":    map[string]any{"resolver": e.dns.Addr, "timeout": "2s"},
		"mail":   map[string]any{"smtp": e.pf.Addr, "from": "smsmilter@mx.e2e.test"},
		"notify": map[string]any{"admin": "postmaster@e2e.test"},
		"transports": map[string]any{
			"smsc": map[string]any{
				"plugin": "smpp",
				"tps":    100,
				"settings": map[string]any{
					"address":   e.peer.Addr(),
					"system_id": "smsmilter",
					"password":  "secret",
				},
			},
		},
		"replies": map[string]any{"deliver": []string{"email", "pop3"}},
		"pop3":    map[string]any{"enabled": true, "listen": e.pop3},
	})
	if out, code := e.sm.CLI("", "check-config"); code != 0 {
		t.Fatalf("check-config: %d\n%s", code, out)
	}
	e.sm.MustCLI("user", "add", "acme", "--sender-id", "ACME")
	e.sm.MustCLI("user", "add", "desk", "--sender-id", deskID)
	e.sm.MustCLI("address", "add", alice, "--user", "acme")
	e.sm.MustCLI("address", "add", bob, "--user", "desk")
	e.sm.MustCLI("address", "add", carol, "--user", "acme")
	e.sm.Start()
	e.peer.WaitBinds(1, 20*time.Second)
	return e
}

var msgSeq atomic.Int64

// newMessageID returns a Message-ID (without <>) no other test uses.
func newMessageID(tag string) string {
	return fmt.Sprintf("%s.%d.%d@client.e2e.test", tag, time.Now().UnixNano(), msgSeq.Add(1))
}

// message is a mail as a mail client writes it.
type message struct {
	From, To, Subject, MessageID string
	Header                       []string // more "Name: value" lines
	Body                         string   // LF line ends; may be raw MIME
}

func (m message) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Date: %s\n", time.Now().Format(time.RFC1123Z))
	fmt.Fprintf(&b, "From: %s\nTo: %s\nSubject: %s\nMessage-ID: <%s>\n", m.From, m.To, m.Subject, m.MessageID)
	hasCT := false
	for _, h := range m.Header {
		if strings.HasPrefix(strings.ToLower(h), "content-type:") {
			hasCT = true
		}
	}
	if !hasCT {
		b.WriteString("MIME-Version: 1.0\nContent-Type: text/plain; charset=UTF-8\nContent-Transfer-Encoding: 8bit\n")
	}
	for _, h := range m.Header {
		b.WriteString(h + "\n")
	}
	b.WriteString("\n")
	// swaks ends the data with a line end of its own: leave the body's
	// last one out so that what Postfix receives is exactly Body.
	b.WriteString(strings.TrimSuffix(m.Body, "\n"))
	return b.String()
}

// send sends m through Postfix's smtpd with swaks, envelope from m.From to
// rcpts (default: m.To).
func (e *postfixEnv) send(m message, rcpts ...string) harness.SwaksResult {
	e.t.Helper()
	return e.sendTo(e.pf.Addr, m, rcpts...)
}

func (e *postfixEnv) sendTo(server string, m message, rcpts ...string) harness.SwaksResult {
	e.t.Helper()
	if len(rcpts) == 0 {
		rcpts = []string{m.To}
	}
	if m.MessageID == "" {
		m.MessageID = newMessageID("m")
	}
	return harness.SwaksMessage(e.t, server, addrOnly(m.From), rcpts, m.String())
}

// mustSend sends m and fails unless Postfix took it (250 after DATA).
func (e *postfixEnv) mustSend(t *testing.T, m message, rcpts ...string) harness.SwaksResult {
	t.Helper()
	r := e.send(m, rcpts...)
	if !r.Accepted() {
		t.Fatalf("swaks %v: exit %d, want the message accepted:\n%s", r.Args, r.Exit, r.Output)
	}
	return r
}

func addrOnly(s string) string {
	if i := strings.LastIndexByte(s, '<'); i >= 0 {
		return strings.TrimSuffix(s[i+1:], ">")
	}
	return s
}

// submitsTo returns the submit_sm the peer accepted for a number (E.164).
func (e *postfixEnv) submitsTo(number string) []smpppeer.Submit {
	var out []smpppeer.Submit
	for _, s := range e.peer.Submits() {
		if s.DestAddr == strings.TrimPrefix(number, "+") && s.Status == 0 && !s.Dropped {
			out = append(out, s)
		}
	}
	return out
}

// waitSubmits waits until the peer accepted n submit_sm for number.
func (e *postfixEnv) waitSubmits(t *testing.T, number string, n int, timeout time.Duration) []smpppeer.Submit {
	t.Helper()
	var got []smpppeer.Submit
	harness.Eventually(t, timeout, fmt.Sprintf("%d submit_sm to %s", n, number), func() bool {
		got = e.submitsTo(number)
		return len(got) >= n
	})
	return got
}

// settle waits until smsmilter has no job left to send, so that a count
// of submits taken afterwards is final.
func (e *postfixEnv) settle(t *testing.T) {
	t.Helper()
	harness.Eventually(t, 20*time.Second, "every SMS job sent", func() bool {
		for _, j := range e.sm.Queue() {
			if j.State == "queued" || j.State == "sending" {
				return false
			}
		}
		return true
	})
}

// job returns smsmilter's job for a Postfix queue ID and number.
func (e *postfixEnv) job(t *testing.T, queueID, number string) harness.Job {
	t.Helper()
	for _, j := range e.sm.Queue() {
		if j.QueueID == queueID && j.To == number {
			return j
		}
	}
	t.Fatalf("no SMS job for queue ID %s and %s in smsmilter queue", queueID, number)
	return harness.Job{}
}
