package harness

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smsmilter/smsmilter/internal/dnsresolver/dnstest"
	"github.com/smsmilter/smsmilter/internal/testpeer/smpppeer"
)

// The cast of the MTA suites: the senders, what smsmilter's registry says
// about them and what SPF says about them from 127.0.0.0/8 (the loopback
// clients the suites send from). StartEnv and Env.Start set both up.
const (
	Alice     = "alice@example.org"    // address rule, user acme (sender ID ACME), SPF passes
	Bob       = "bob@example.org"      // address rule, user desk (numeric sender ID), SPF passes
	Carol     = "carol@forged.example" // address rule, but SPF fails
	Mallory   = "mallory@evil.example" // no rule at all (SPF would pass)
	Dave      = "dave@example.net"     // an ordinary mail recipient
	DeskID    = "+447400000001"        // user desk's sender ID
	SMSDomain = "sms.example.com"      // smsmilter's sms_domains

	// Wait is how long the suites wait for mail and SMS to arrive.
	Wait = 30 * time.Second
)

// Source is an SMS's source address as the SMSC sees it.
type Source struct {
	Addr     string
	TON, NPI int
}

// The cast's sender IDs as they reach the SMSC: an alphanumeric one, and
// a numeric one, which goes out as an international number.
var (
	AcmeSource = Source{Addr: "ACME", TON: 5, NPI: 0}
	DeskSource = Source{Addr: strings.TrimPrefix(DeskID, "+"), TON: 1, NPI: 1}
)

// Env is the installation an MTA suite runs its MTA in: a DNS server
// knowing the cast's SPF records, an SMPP peer, the Sink the MTA relays
// to, and smsmilter. StartEnv starts all but smsmilter, which needs the
// MTA's address; Start runs it once the MTA is up.
type Env struct {
	T    *testing.T
	DNS  *dnstest.Server
	Peer *smpppeer.Peer
	Sink *Sink
	SM   *Smsmilter

	// Send sends m with swaks to the MTA's SMTP server, envelope from
	// m.From to rcpts (by default m.To). The MTA suite sets it.
	Send func(m Message, rcpts ...string) SwaksResult
	// QueueID is the MTA's queue ID from a swaks transcript, "" if the
	// message was not accepted. The MTA suite sets it.
	QueueID func(r SwaksResult) string
}

// StartEnv starts the DNS server, the SMPP peer and the Sink, and
// prepares smsmilter (its MilterAddr and MilterPort are known from here
// on, to configure the MTA with).
func StartEnv(t *testing.T) *Env {
	t.Helper()
	e := &Env{T: t}
	e.DNS = dnstest.NewServer(t)
	e.DNS.Add(
		`example.org. 60 IN TXT "v=spf1 ip4:127.0.0.0/8 -all"`,
		`forged.example. 60 IN TXT "v=spf1 ip4:192.0.2.0/24 -all"`,
		`evil.example. 60 IN TXT "v=spf1 ip4:127.0.0.0/8 -all"`,
	)
	e.Peer = smpppeer.Start(t, smpppeer.Options{})
	e.Sink = StartSink(t)
	e.SM = NewSmsmilter(t)
	return e
}

// Start configures smsmilter (the DNS server, the SMPP peer as transport
// smsc, replies, verdicts and notices submitted to the MTA at mailSMTP)
// with more's top-level keys added over that, checks the config,
// registers the cast, starts the daemon and waits for its bind.
func (e *Env) Start(mailSMTP string, more Config) {
	t := e.T
	t.Helper()
	cfg := Config{
		"milter": map[string]any{"timeout": "10s"},
		"dns":    map[string]any{"resolver": e.DNS.Addr, "timeout": "2s"},
		"mail":   map[string]any{"smtp": mailSMTP, "from": "smsmilter@mx.e2e.test"},
		"notify": map[string]any{"admin": "postmaster@e2e.test"},
		"transports": map[string]any{
			"smsc": map[string]any{
				"plugin": "smpp",
				"tps":    100,
				"settings": map[string]any{
					"address":   e.Peer.Addr(),
					"system_id": "smsmilter",
					"password":  "secret",
				},
			},
		},
	}
	for k, v := range more {
		cfg[k] = v
	}
	e.SM.Configure(cfg)
	if out, code := e.SM.CLI("", "check-config"); code != 0 {
		t.Fatalf("check-config: %d\n%s", code, out)
	}
	e.SM.MustCLI("user", "add", "acme", "--sender-id", "ACME")
	e.SM.MustCLI("user", "add", "desk", "--sender-id", DeskID)
	e.SM.MustCLI("address", "add", Alice, "--user", "acme")
	e.SM.MustCLI("address", "add", Bob, "--user", "desk")
	e.SM.MustCLI("address", "add", Carol, "--user", "acme")
	e.SM.Start()
	e.Peer.WaitBinds(1, 20*time.Second)
}

// MustSend sends m (Send) and fails the test unless the MTA took it (250
// after DATA); it returns the MTA's queue ID.
func (e *Env) MustSend(t *testing.T, m Message, rcpts ...string) string {
	t.Helper()
	r := e.Send(m, rcpts...)
	id := e.QueueID(r)
	if r.Exit != 0 || id == "" {
		t.Fatalf("swaks %v: exit %d, want the message accepted:\n%s", r.Args, r.Exit, r.Output)
	}
	return id
}

var msgSeq atomic.Int64

// NewMessageID returns a Message-ID (without <>) no other test uses.
func NewMessageID(tag string) string {
	return fmt.Sprintf("%s.%d.%d@client.e2e.test", tag, time.Now().UnixNano(), msgSeq.Add(1))
}

// Message is a mail as a mail client writes it.
type Message struct {
	From, To, Subject, MessageID string
	Header                       []string // more "Name: value" lines
	Body                         string   // LF line ends; may be raw MIME
}

// WithID returns m with a new Message-ID unless it has one.
func (m Message) WithID() Message {
	if m.MessageID == "" {
		m.MessageID = NewMessageID("m")
	}
	return m
}

// String is the message's text: Date, From, To, Subject, Message-ID, the
// MIME fields of UTF-8 plain text unless Header has a Content-Type, Header,
// a blank line and Body, ending in a line end.
func (m Message) String() string {
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
	b.WriteString(m.Body)
	if !strings.HasSuffix(m.Body, "\n") {
		b.WriteString("\n")
	}
	return b.String()
}

// Unterminated is String without its last line end. swaks ends the data
// with a line end of its own: sent so, the MTA receives exactly Body.
func (m Message) Unterminated() string {
	return strings.TrimSuffix(m.String(), "\n")
}

// AddrOnly is the address of "Name <addr>", or s itself.
func AddrOnly(s string) string {
	if i := strings.LastIndexByte(s, '<'); i >= 0 {
		return strings.TrimSuffix(s[i+1:], ">")
	}
	return s
}

// SubmitsTo returns the submit_sm the peer accepted for a number (E.164).
func (e *Env) SubmitsTo(number string) []smpppeer.Submit {
	var out []smpppeer.Submit
	for _, s := range e.Peer.Submits() {
		if s.DestAddr == strings.TrimPrefix(number, "+") && s.Status == 0 && !s.Dropped {
			out = append(out, s)
		}
	}
	return out
}

// WaitSubmits waits until the peer accepted n submit_sm for number.
func (e *Env) WaitSubmits(t *testing.T, number string, n int, timeout time.Duration) []smpppeer.Submit {
	t.Helper()
	var got []smpppeer.Submit
	Eventually(t, timeout, fmt.Sprintf("%d submit_sm to %s", n, number), func() bool {
		got = e.SubmitsTo(number)
		return len(got) >= n
	})
	return got
}

// Settle waits until smsmilter has no job left to send, so that a count
// of submits taken afterwards is final.
func (e *Env) Settle(t *testing.T) {
	t.Helper()
	Eventually(t, 20*time.Second, "every SMS job sent", func() bool {
		for _, j := range e.SM.Queue() {
			if j.State == "queued" || j.State == "sending" {
				return false
			}
		}
		return true
	})
}

// Job returns smsmilter's job for an MTA queue ID and number.
func (e *Env) Job(t *testing.T, queueID, number string) Job {
	t.Helper()
	var jobs []Job
	for _, j := range e.SM.Queue() {
		if j.QueueID == queueID && j.To == number {
			return j
		}
		if j.To == number {
			jobs = append(jobs, j)
		}
	}
	t.Fatalf("no SMS job for queue ID %s and %s in smsmilter's queue (jobs for that number: %+v)", queueID, number, jobs)
	return Job{}
}

// CheckSubmit checks a submit_sm's addresses (the destination an
// international number) and data coding.
func CheckSubmit(t testing.TB, s smpppeer.Submit, dest string, src Source, coding int) {
	t.Helper()
	if s.DestAddr != dest || s.DestTON != 1 || s.DestNPI != 1 {
		t.Errorf("destination %q TON %d NPI %d, want %q TON 1 NPI 1", s.DestAddr, s.DestTON, s.DestNPI, dest)
	}
	if s.SourceAddr != src.Addr || s.SourceTON != src.TON || s.SourceNPI != src.NPI {
		t.Errorf("source %q TON %d NPI %d, want %q TON %d NPI %d", s.SourceAddr, s.SourceTON, s.SourceNPI, src.Addr, src.TON, src.NPI)
	}
	if s.DataCoding != coding {
		t.Errorf("data_coding %d, want %d", s.DataCoding, coding)
	}
}

// WaitSMS waits for a one-part SMS to number and checks it: its
// addresses and data coding (CheckSubmit), its text, and no UDH.
func (e *Env) WaitSMS(t *testing.T, number, text string, src Source, coding int) smpppeer.Submit {
	t.Helper()
	s := e.WaitSubmits(t, number, 1, Wait)[0]
	CheckSubmit(t, s, strings.TrimPrefix(number, "+"), src, coding)
	if s.Text != text {
		t.Errorf("SMS text %q, want %q", s.Text, text)
	}
	if s.Concat != nil || s.UDHHex != "" {
		t.Errorf("a one-part SMS has a UDH: %s %+v", s.UDHHex, s.Concat)
	}
	return s
}

// WaitConcatenated waits for the n parts of a GSM 7-bit SMS to number and
// checks them: each one's addresses (CheckSubmit), its concatenation UDH
// (UDHI set, part i of n, one reference for all) and at most 153
// characters; their text joined; and, once smsmilter has settled, that no
// more than n went out.
func (e *Env) WaitConcatenated(t *testing.T, number, text string, n int, src Source) {
	t.Helper()
	parts := e.WaitSubmits(t, number, n, Wait)
	var joined strings.Builder
	ref := -1
	for i, s := range parts {
		CheckSubmit(t, s, strings.TrimPrefix(number, "+"), src, 0)
		if s.Concat == nil {
			t.Fatalf("part %d has no concatenation UDH (udh %q)", i+1, s.UDHHex)
		}
		if s.ESMClass&0x40 == 0 {
			t.Errorf("part %d: esm_class %#x without UDHI", i+1, s.ESMClass)
		}
		if s.Concat.Total != n || s.Concat.Part != i+1 {
			t.Errorf("part %d: concat %+v, want part %d of %d", i+1, *s.Concat, i+1, n)
		}
		if ref == -1 {
			ref = s.Concat.Ref
		} else if s.Concat.Ref != ref {
			t.Errorf("part %d: reference %d, part 1 had %d", i+1, s.Concat.Ref, ref)
		}
		if k := len([]rune(s.Text)); k > 153 {
			t.Errorf("part %d has %d characters", i+1, k)
		}
		joined.WriteString(s.Text)
	}
	if joined.String() != text {
		t.Errorf("parts joined:\n%q\nwant\n%q", joined.String(), text)
	}
	e.Settle(t)
	if k := len(e.SubmitsTo(number)); k != n {
		t.Errorf("%d submit_sm for a %d-part SMS", k, n)
	}
}
