package sendmail

import (
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smsmilter/smsmilter/e2e/internal/harness"
	"github.com/smsmilter/smsmilter/internal/dnsresolver/dnstest"
	"github.com/smsmilter/smsmilter/internal/testpeer/smpppeer"
	"github.com/smsmilter/smsmilter/internal/testutil"
)

func TestMain(m *testing.M) { harness.Main(m) }

// The senders of the suite and what the registry says about them (the
// same cast as the Postfix suite's).
const (
	alice   = "alice@example.org"    // address rule, user acme (sender ID ACME), SPF passes
	bob     = "bob@example.org"      // address rule, user desk (numeric sender ID), SPF passes
	carol   = "carol@forged.example" // address rule, but SPF fails from 127.0.0.1
	mallory = "mallory@evil.example" // no rule at all (SPF would pass)
	dave    = "dave@example.net"     // an ordinary mail recipient
	deskID  = "+447400000001"        // user desk's sender ID
	domain  = "sms.example.com"
	wait    = 30 * time.Second
)

// env is one complete installation: DNS, SMPP peer, smtp-sink, Sendmail
// set up with examples/sendmail, and smsmilter attached.
type env struct {
	t    *testing.T
	dns  *dnstest.Server
	peer *smpppeer.Peer
	sink *harness.Sink
	mta  *Sendmail
	sm   *harness.Smsmilter
}

func newEnv(t *testing.T) *env {
	t.Helper()
	in := needSendmail(t)
	testutil.NeedCmd(t, "swaks")
	e := &env{t: t}
	e.dns = dnstest.NewServer(t)
	e.dns.Add(
		`example.org. 60 IN TXT "v=spf1 ip4:127.0.0.0/8 -all"`,
		`forged.example. 60 IN TXT "v=spf1 ip4:192.0.2.0/24 -all"`,
		`evil.example. 60 IN TXT "v=spf1 ip4:127.0.0.0/8 -all"`,
	)
	e.peer = smpppeer.Start(t, smpppeer.Options{})
	e.sink = harness.StartSink(t)
	e.sm = harness.NewSmsmilter(t)
	e.mta = startSendmail(t, in, mtaOptions{
		RelayTo: e.sink.Addr,
		MC:      exampleMC(t, e.sm.MilterPort),
		Access:  example(t, "access"),
	})
	t.Logf("Sendmail %s in %s: MTA on %s, bypass on %s", in.Version, e.mta.Dir, e.mta.Addr, e.mta.BypassAddr)

	e.sm.Configure(harness.Config{
		"milter": map[string]any{"timeout": "10s"},
		"dns":    map[string]any{"resolver": e.dns.Addr, "timeout": "2s"},
		// Believed only as mx.e2e.test/QUEUEID (the milter before
		// smsmilter, e.g. OpenDKIM with AuthservIDWithJobID).
		"auth": map[string]any{"trusted_authserv_ids": []string{"mx.e2e.test"}},
		// Replies, verdicts and notices are submitted to Sendmail.
		"mail":   map[string]any{"smtp": e.mta.Addr, "from": "smsmilter@mx.e2e.test"},
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
		"replies": map[string]any{"deliver": []string{"email"}},
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
	Body                         string   // LF line ends
}

func (m message) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Date: %s\n", time.Now().Format(time.RFC1123Z))
	fmt.Fprintf(&b, "From: %s\nTo: %s\nSubject: %s\nMessage-ID: <%s>\n", m.From, m.To, m.Subject, m.MessageID)
	b.WriteString("MIME-Version: 1.0\nContent-Type: text/plain; charset=UTF-8\nContent-Transfer-Encoding: 8bit\n")
	for _, h := range m.Header {
		b.WriteString(h + "\n")
	}
	b.WriteString("\n")
	b.WriteString(m.Body)
	if !strings.HasSuffix(m.Body, "\n") {
		b.WriteString("\n")
	}
	return b.String()
}

func (m message) withID() message {
	if m.MessageID == "" {
		m.MessageID = newMessageID("m")
	}
	return m
}

// sendTo sends m with swaks to server (host:port), envelope from m.From
// to rcpts (default: m.To), with extra swaks args (e.g. the source
// address).
func (e *env) sendTo(server string, extra []string, m message, rcpts ...string) harness.SwaksResult {
	e.t.Helper()
	if len(rcpts) == 0 {
		rcpts = []string{addrOnly(m.To)}
	}
	m = m.withID()
	f, err := os.CreateTemp(e.t.TempDir(), "msg-*.eml")
	if err != nil {
		e.t.Fatal(err)
	}
	f.WriteString(m.String())
	f.Close()
	args := append([]string{"--from", addrOnly(m.From), "--to", strings.Join(rcpts, ","), "--data", "@" + f.Name()}, extra...)
	return harness.Swaks(e.t, server, args...)
}

// send sends m through Sendmail's MTA daemon from 127.0.0.1.
func (e *env) send(m message, rcpts ...string) harness.SwaksResult {
	e.t.Helper()
	return e.sendTo(e.mta.Addr, nil, m, rcpts...)
}

// mustSend sends m and fails unless Sendmail took it (250 after DATA); it
// returns Sendmail's queue ID.
func (e *env) mustSend(t *testing.T, m message, rcpts ...string) string {
	t.Helper()
	r := e.send(m, rcpts...)
	id := queueID(r)
	if r.Exit != 0 || id == "" {
		t.Fatalf("swaks %v: exit %d, want the message accepted:\n%s", r.Args, r.Exit, r.Output)
	}
	return id
}

func addrOnly(s string) string {
	if i := strings.LastIndexByte(s, '<'); i >= 0 {
		return strings.TrimSuffix(s[i+1:], ">")
	}
	return s
}

// submitsTo returns the submit_sm the peer accepted for a number (E.164).
func (e *env) submitsTo(number string) []smpppeer.Submit {
	var out []smpppeer.Submit
	for _, s := range e.peer.Submits() {
		if s.DestAddr == strings.TrimPrefix(number, "+") && s.Status == 0 && !s.Dropped {
			out = append(out, s)
		}
	}
	return out
}

// waitSubmits waits until the peer accepted n submit_sm for number.
func (e *env) waitSubmits(t *testing.T, number string, n int, timeout time.Duration) []smpppeer.Submit {
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
func (e *env) settle(t *testing.T) {
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

// job returns smsmilter's job for a Sendmail queue ID and number.
func (e *env) job(t *testing.T, queueID, number string) harness.Job {
	t.Helper()
	var jobs []harness.Job
	for _, j := range e.sm.Queue() {
		if j.QueueID == queueID && j.To == number {
			return j
		}
		if j.To == number {
			jobs = append(jobs, j)
		}
	}
	t.Fatalf("no SMS job for queue ID %s and %s in smsmilter's queue (jobs for that number: %+v)", queueID, number, jobs)
	return harness.Job{}
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
