package milter

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	gomilter "github.com/emersion/go-milter"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/smsmilter/smsmilter/internal/config"
	"github.com/smsmilter/smsmilter/internal/dnsresolver/dnstest"
	"github.com/smsmilter/smsmilter/internal/registry"
	"github.com/smsmilter/smsmilter/internal/store"
)

func TestPassThrough(t *testing.T) {
	e := newEnv(t)
	m := e.dial(goodIP)
	big := strings.Repeat("a line of a long mail that no SMS will ever see\n", 2000) // far over max_message_size
	for _, tc := range []struct {
		name  string
		rcpts []string
		raw   string
	}{
		{"plain", []string{"bob@elsewhere.test"}, textMail("alice@example.test", newMsgID(), "hello")},
		{"over max_message_size", []string{"a@elsewhere.test", "b@elsewhere.test"}, textMail("alice@example.test", newMsgID(), big)},
		{"rejected SMS recipient and another", []string{"+8180123@sms.test", "bob@elsewhere.test"}, textMail("x@y.test", newMsgID(), "hi")},
		{"no header at all", []string{"bob@elsewhere.test"}, "\n" + big},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := m.send(mail{From: "alice@example.test", Rcpts: tc.rcpts, Raw: tc.raw})
			// Accepted at the first header (or at the end of an empty
			// header): the MTA sends none of the body, so nothing can be
			// limited or buffered.
			want := "header"
			if strings.HasPrefix(tc.raw, "\n") {
				want = "eoh"
			}
			if o.Err != nil || o.Stage != want || o.reply() != "accept" {
				t.Fatalf("got %s at %s (err %v), want accept at %s", o.reply(), o.Stage, o.Err, want)
			}
		})
	}
	if js := e.jobs(); len(js) != 0 {
		t.Errorf("jobs queued for mail without SMS recipients: %+v", js)
	}
}

func TestQueued(t *testing.T) {
	e := newEnv(t)
	m := e.dial(goodIP)
	for _, tc := range []struct {
		name      string
		body      string
		text      string
		enc       string
		parts     int
		contentTE string
	}{
		{"gsm", "Disk /var is 95% full on db1.\n\n-- \nAlice\nOps team\n", "Disk /var is 95% full on db1.", "gsm7", 1, ""},
		{"ucs2", "Serverraum: 31 °C 🔥 bitte prüfen\n", "Serverraum: 31 °C 🔥 bitte prüfen", "ucs2", 1, ""},
		{"two parts", strings.Repeat("0123456789", 20), strings.Repeat("0123456789", 20), "gsm7", 2, ""},
		{"quoted-printable", "caf=C3=A9 au lait =\nplease\n", "café au lait please", "gsm7", 1, "quoted-printable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := newMsgID()
			raw := textMail("alice@example.test", id, tc.body)
			if tc.contentTE != "" {
				raw = strings.Replace(raw, "MIME-Version: 1.0\n", "MIME-Version: 1.0\nContent-Transfer-Encoding: "+tc.contentTE+"\n", 1)
			}
			rcpt := gbMobile + "@SMS.test" // the domain matches in any case
			before := len(e.jobs())
			o := m.send(mail{From: "alice@example.test", Rcpts: []string{rcpt}, Raw: raw, QueueID: "QID" + tc.name})
			if o.Stage != "eom" || o.reply() != "discard" {
				t.Fatalf("got %s at %s, want discard at eom", o.reply(), o.Stage)
			}
			if d := o.deleted(); !slices.Equal(d, []string{rcpt}) {
				t.Errorf("deleted %q, want %q", d, rcpt)
			}
			js := e.jobs()
			if len(js) != before+1 {
				t.Fatalf("%d jobs, want %d", len(js), before+1)
			}
			j := js[len(js)-1]
			want := store.Job{DedupeKey: id + "|" + gbMobile, MessageID: id, QueueID: "QID" + tc.name, Sender: "alice@example.test",
				NotifyOK: true, Subject: "server alert", User: "ops", SenderID: "ACME", To: gbMobile, Text: tc.text, Encoding: tc.enc, Parts: tc.parts, State: store.JobQueued}
			got := store.Job{DedupeKey: j.DedupeKey, MessageID: j.MessageID, QueueID: j.QueueID, Sender: j.Sender, NotifyOK: j.NotifyOK, Subject: j.Subject,
				User: j.User, SenderID: j.SenderID, To: j.To, Text: j.Text, Encoding: j.Encoding, Parts: j.Parts, State: j.State}
			if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", want) {
				t.Errorf("job\n got %+v\nwant %+v", got, want)
			}
		})
	}
	if e.queue.Load() == 0 {
		t.Error("Queued was never called: the dispatcher would not wake")
	}
	// One decision line per message, naming who, what, rule and outcome.
	var line string
	for _, l := range strings.Split(e.log.String(), "\n") {
		if strings.Contains(l, `"outcome":"queued"`) && strings.Contains(l, "QIDgsm") {
			line = l
		}
	}
	for _, want := range []string{`"queue_id":"QIDgsm"`, `"client_ip":"192.0.2.10"`, `"mail_from":"alice@example.test"`, `"from":"alice@example.test"`,
		`"rule":"address:alice@example.test"`, `"spf":"pass"`, `"jobs":"`, `"to":"+447400123456"`, `"parts":1`} {
		if !strings.Contains(line, want) {
			t.Errorf("decision log line lacks %s: %s", want, line)
		}
	}
	if evs := e.events(store.EventAccepted); len(evs) != 4 || evs[0].Fields["jobs"] == "" {
		t.Errorf("accepted events: %+v", evs)
	}
}

func TestMixedRecipients(t *testing.T) {
	e := newEnv(t)
	m := e.dial(goodIP)
	rcpts := []string{"carol@elsewhere.test", gbMobile + "@sms.test", jpMobile + "@sms2.test", gbMobile + "@sms.test"}
	o := m.send(mail{From: "alice@example.test", Rcpts: rcpts, Raw: textMail("alice@example.test", newMsgID(), "meeting moved to 3pm")})
	if o.Stage != "eom" || o.reply() != "accept" {
		t.Fatalf("got %s at %s, want accept (the others get it)", o.reply(), o.Stage)
	}
	if d := o.deleted(); !slices.Equal(d, rcpts[1:]) {
		t.Errorf("deleted %q, want the SMS recipients %q", d, rcpts[1:])
	}
	var to []string
	for _, j := range e.jobs() {
		to = append(to, j.To)
	}
	if !slices.Equal(to, []string{gbMobile, jpMobile}) { // the same number twice is one SMS
		t.Errorf("jobs to %q", to)
	}
}

func TestRcptRejections(t *testing.T) {
	for _, tc := range []struct {
		name   string
		opt    envOption
		rcpt   string
		reply  string // prefix
		accept string // E.164 when accepted
	}{
		{"too short", nil, "+8180123@sms.test", "550 5.1.3 +8180123: too short for Japan (JP)", ""},
		{"fixed line", nil, "+442071234567@sms.test", "550 5.1.3 +442071234567: a fixed-line number in United Kingdom (GB), not a mobile number", ""},
		{"region not allowed", func(c *config.Config) { c.Numbers.AllowedRegions = []string{"GB"} }, jpMobile + "@sms.test", "550 5.1.3 +819012345678: SMS to Japan (JP) are not allowed here", ""},
		{"percent", nil, "+44%7400123456@sms.test", "550 5.1.3 +44%7400123456: not a phone number", ""},
		{"quoted", nil, `"+44 7400123456"@sms.test`, `550 5.1.3 "+44 7400123456": not a phone number`, ""},
		{"bang", nil, "+44!7400123456@sms.test", "550 5.1.3 +44!7400123456: not a phone number", ""},
		{"non-ASCII digits", nil, "+４４7400123456@sms.test", `550 5.1.3 +\uff14\uff147400123456: not a phone number`, ""},
		{"national without default_region", nil, "09012345678@sms.test", "550 5.1.3 09012345678: write the number in international form", ""},
		{"national with default_region", func(c *config.Config) { c.Numbers.DefaultRegion = "JP" }, "09012345678@sms.test", "", jpMobile},
		{"US may be either", nil, "+12025550123@sms.test", "", "+12025550123"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var opts []envOption
			if tc.opt != nil {
				opts = append(opts, tc.opt)
			}
			e := newEnv(t, opts...)
			m := e.dial(goodIP)
			// The rejection is for that recipient only: the session goes
			// on and the message reaches the valid one.
			o := m.send(mail{From: "alice@example.test", Rcpts: []string{tc.rcpt, gbMobile + "@sms.test"}, Raw: textMail("alice@example.test", newMsgID(), "hi")})
			if len(o.Rcpt) != 2 {
				t.Fatalf("rcpt answers %v (%v)", o.Rcpt, o.Err)
			}
			got := actText(o.Rcpt[0])
			if tc.reply != "" && (!strings.HasPrefix(got, tc.reply) || o.Rcpt[0].Code != gomilter.ActReplyCode) {
				t.Errorf("RCPT %s: got %q, want %q...", tc.rcpt, got, tc.reply)
			}
			if tc.accept != "" && got != "continue" {
				t.Errorf("RCPT %s: got %q, want continue", tc.rcpt, got)
			}
			if o.reply() != "discard" {
				t.Fatalf("message: got %s at %s, want discard", o.reply(), o.Stage)
			}
			var to []string
			for _, j := range e.jobs() {
				to = append(to, j.To)
			}
			want := []string{gbMobile}
			if tc.accept != "" {
				want = []string{tc.accept, gbMobile}
			}
			if !slices.Equal(to, want) {
				t.Errorf("jobs to %q, want %q", to, want)
			}
		})
	}
}

func TestTooManyRecipients(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.SMS.MaxRecipients = 2 })
	m := e.dial(goodIP)
	rcpts := []string{"+447400123451@sms.test", "+447400123452@sms.test", "+447400123453@sms.test", "other@elsewhere.test", "+447400123454@sms.test"}
	o := m.send(mail{From: "alice@example.test", Rcpts: rcpts, Raw: textMail("alice@example.test", newMsgID(), "hi all")})
	var got []string
	for _, a := range o.Rcpt {
		got = append(got, actText(a))
	}
	want := []string{"continue", "continue", "452 4.5.3 too many SMS recipients: at most 2 per message", "continue", "452 4.5.3 too many SMS recipients: at most 2 per message"}
	if !slices.Equal(got, want) {
		t.Errorf("RCPT answers\n got %q\nwant %q", got, want)
	}
	if o.reply() != "accept" || len(e.jobs()) != 2 {
		t.Errorf("got %s with %d jobs, want accept with 2", o.reply(), len(e.jobs()))
	}
}

// sizeOf counts a message as DESIGN.md §13 does: each header field as
// "Name: value" CRLF, the blank line, the body.
func sizeOf(raw string) int {
	fs, body := splitRaw(raw)
	n := 2 + len(body)
	for _, f := range fs {
		n += len(f.Name) + 2 + len(strings.TrimPrefix(f.Value, " ")) + 2
	}
	return n
}

func TestMaxMessageSize(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.SMS.MaxParts = 100 }) // the size is the point here, not the parts
	limit := int(e.cfg.Milter.MaxMessageSize)
	// A body that makes the message exactly limit octets.
	mk := func(extra int) string {
		head := textMail("alice@example.test", newMsgID(), "")
		n := limit - sizeOf(head) + extra
		words := strings.Repeat("word ", n/5+1)[:n-2] + "\r\n"
		return head + words
	}
	m := e.dial(goodIP)
	sms := gbMobile + "@sms.test"

	exact := mk(0)
	if sizeOf(exact) != limit {
		t.Fatalf("test bug: size %d, want %d", sizeOf(exact), limit)
	}
	t.Run("exactly the limit", func(t *testing.T) {
		o := m.send(mail{From: "alice@example.test", Rcpts: []string{sms}, Raw: exact})
		if o.reply() != "discard" {
			t.Fatalf("got %s at %s, want discard", o.reply(), o.Stage)
		}
	})
	t.Run("one octet over, SMS only", func(t *testing.T) {
		o := m.send(mail{From: "alice@example.test", Rcpts: []string{sms}, Raw: mk(1)})
		if !strings.HasPrefix(o.reply(), "552 5.3.4 ") || o.Stage != "body" {
			t.Fatalf("got %s at %s, want 552 5.3.4 during the body", o.reply(), o.Stage)
		}
		m.s.Abort() // as Postfix does after a rejected body
	})
	t.Run("over, mixed", func(t *testing.T) {
		before := len(e.mails())
		o := m.send(mail{From: "alice@example.test", Rcpts: []string{sms, "carol@elsewhere.test"}, Raw: mk(5000)})
		if o.reply() != "accept" || !slices.Equal(o.deleted(), []string{sms}) {
			t.Fatalf("got %s deleting %q, want accept deleting the SMS recipient", o.reply(), o.deleted())
		}
		ms := e.mails()
		if len(ms) != before+1 || !slices.Equal(ms[len(ms)-1].To, []string{"alice@example.test"}) ||
			!strings.Contains(string(ms[len(ms)-1].Data), "552 5.3.4") || ms[len(ms)-1].From != "" {
			t.Errorf("want one notice to alice naming 552 5.3.4 from <>; got %d new: %+v", len(ms)-before, ms)
		}
	})
	if n := len(e.jobs()); n != 1 {
		t.Errorf("%d jobs, want 1 (the message at the limit)", n)
	}
}

func TestBodyToText(t *testing.T) {
	e := newEnv(t)
	m := e.dial(goodIP)
	long := strings.Repeat("All hands meeting today. ", 40) // 1000 characters: 7 parts
	for _, tc := range []struct {
		name  string
		body  string
		reply string
	}{
		{"empty", "\n\n", "550 5.6.0 empty SMS text"},
		{"only a signature", "-- \nAlice\n", "550 5.6.0 empty SMS text"},
		{"too many parts", long, "552 5.3.4 message too long for SMS: 7 SMS parts, limit 4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := m.send(mail{From: "alice@example.test", Rcpts: []string{gbMobile + "@sms.test"}, Raw: textMail("alice@example.test", newMsgID(), tc.body)})
			if o.reply() != tc.reply || o.Stage != "eom" {
				t.Errorf("got %q at %s, want %q", o.reply(), o.Stage, tc.reply)
			}
		})
	}
	if n := len(e.jobs()); n != 0 {
		t.Errorf("%d jobs, want none", n)
	}

	e.reload(func(c *config.Config) { c.SMS.Overflow = "truncate" })
	o := m.send(mail{From: "alice@example.test", Rcpts: []string{gbMobile + "@sms.test"}, Raw: textMail("alice@example.test", newMsgID(), long)})
	if o.reply() != "discard" {
		t.Fatalf("truncate: got %s", o.reply())
	}
	j := e.jobs()[0]
	if j.Parts != 4 || !strings.HasSuffix(j.Text, "...") || !strings.HasPrefix(long, strings.TrimSuffix(j.Text, "...")) {
		t.Errorf("truncated job: %d parts, text %q", j.Parts, j.Text)
	}
}

func TestRefused(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		name, ip, from, hdrFrom string
		reply                   string
	}{
		{"no rule", goodIP, "mallory@example.test", "mallory@example.test", "550 5.7.1 SMS refused for mallory@example.test: no rule authorizes this sender"},
		{"SPF fail", badIP, "alice@example.test", "alice@example.test", "550 5.7.1 SMS refused for alice@example.test: "},
		{"SPF softfail under gray", goodIP, "carol@soft.test", "carol@soft.test", "550 5.7.1 SMS refused for carol@soft.test: SPF for the envelope sender's domain soft.test is softfail"},
		{"no From", goodIP, "alice@example.test", "", "550 5.7.1 SMS refused: the message has no From: header"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := textMail(tc.hdrFrom, newMsgID(), "let me in")
			if tc.hdrFrom == "" {
				raw = strings.Replace(raw, "From: Alice <>\n", "", 1)
			}
			o := e.dial(tc.ip).send(mail{From: tc.from, Rcpts: []string{gbMobile + "@sms.test"}, Raw: raw})
			if !strings.HasPrefix(o.reply(), tc.reply) || o.Stage != "eom" {
				t.Errorf("got %q at %s, want %q...", o.reply(), o.Stage, tc.reply)
			}
		})
	}
	if n := len(e.jobs()); n != 0 {
		t.Errorf("%d jobs, want none", n)
	}
	if n := len(e.events(store.EventRefused)); n != 4 {
		t.Errorf("%d refused events, want 4", n)
	}
}

// Mixed mail whose SMS part is refused: the others get it; the sender
// gets a notice only if authenticated, never the null sender.
func TestRefusedMixedNotice(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		name, ip, from string
		body           string
		notice         bool
	}{
		{"authenticated sender, empty text", goodIP, "alice@example.test", "-- \nsig only\n", true},
		{"forged sender", badIP, "alice@example.test", "hello", false},
		{"null sender", goodIP, "", "hello", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(e.mails())
			rcpts := []string{gbMobile + "@sms.test", "carol@elsewhere.test"}
			o := e.dial(tc.ip).send(mail{From: tc.from, Rcpts: rcpts, Raw: textMail("alice@example.test", newMsgID(), tc.body)})
			if o.reply() != "accept" || !slices.Equal(o.deleted(), rcpts[:1]) {
				t.Fatalf("got %s deleting %q, want accept deleting the SMS recipient", o.reply(), o.deleted())
			}
			ms := e.mails()
			got := len(ms) - before
			if tc.notice {
				if got != 1 || !strings.Contains(string(ms[len(ms)-1].Data), "550 5.6.0") || ms[len(ms)-1].To[0] != tc.from {
					t.Errorf("want one notice naming the reason to %s, got %d: %+v", tc.from, got, ms)
				}
			} else if got != 0 {
				t.Errorf("want no notice, got %d", got)
			}
		})
	}
}

func TestQuota(t *testing.T) {
	e := newEnv(t)
	m := e.dial(goodIP)
	send := func() string {
		return m.send(mail{From: "bob@example.test", Rcpts: []string{gbMobile + "@sms.test"}, Raw: textMail("bob@example.test", newMsgID(), "ping")}).reply()
	}
	for i := range 2 {
		if r := send(); r != "discard" {
			t.Fatalf("message %d: %s", i+1, r)
		}
	}
	if r := send(); r != "550 5.7.1 daily SMS quota of 2 reached for user tiny" {
		t.Errorf("third message: %q", r)
	}
}

func TestDNSTempError(t *testing.T) {
	e := newEnv(t)
	e.dns.Set("example.test", dnstest.ServFail)
	o := e.dial(goodIP).send(mail{From: "alice@example.test", Rcpts: []string{gbMobile + "@sms.test", "x@elsewhere.test"},
		Raw: textMail("alice@example.test", newMsgID(), "hi")})
	if !strings.HasPrefix(o.reply(), "451 4.7.0 ") {
		t.Errorf("got %q, want 451 4.7.0 (the MTA retries the whole message)", o.reply())
	}
	if len(o.deleted()) != 0 || len(e.jobs()) != 0 {
		t.Errorf("a tempfail must change nothing: deleted %q, %d jobs", o.deleted(), len(e.jobs()))
	}
}

func TestStoreFailure(t *testing.T) {
	e := newEnv(t)
	m := e.dial(goodIP)
	msg := mail{From: "alice@example.test", Rcpts: []string{gbMobile + "@sms.test"}, Raw: textMail("alice@example.test", newMsgID(), "disk check")}
	e.st.failEnqueue.Store(true)
	o := m.send(msg)
	if o.reply() != "451 4.3.0 cannot queue the SMS now; try again later" || len(o.deleted()) != 0 {
		t.Fatalf("got %q deleting %q, want 451 4.3.0 deleting nothing", o.reply(), o.deleted())
	}
	if err := e.st.Ping(context.Background()); err == nil {
		t.Error("Ping reports a failing store healthy")
	}
	if n := len(e.jobs()); n != 0 {
		t.Fatalf("%d jobs after a failed enqueue", n)
	}
	// The MTA's retry, once the store works again, goes through: the
	// failed attempt left no dedupe key behind.
	e.st.failEnqueue.Store(false)
	if o := m.send(msg); o.reply() != "discard" {
		t.Fatalf("retry: %s", o.reply())
	}
	if n := len(e.jobs()); n != 1 {
		t.Errorf("%d jobs after the retry, want 1", n)
	}
}

func TestDedupe(t *testing.T) {
	e := newEnv(t)
	m := e.dial(goodIP)
	id := newMsgID()
	for i := range 2 {
		o := m.send(mail{From: "alice@example.test", Rcpts: []string{gbMobile + "@sms.test"}, Raw: textMail("alice@example.test", id, "once only")})
		if o.reply() != "discard" {
			t.Fatalf("message %d: %s", i+1, o.reply())
		}
	}
	// No Message-ID: the body and sender make the key.
	noID := strings.Replace(textMail("alice@example.test", "x", "no id here"), "Message-ID: <x>\n", "", 1)
	for range 2 {
		m.send(mail{From: "alice@example.test", Rcpts: []string{gbMobile + "@sms.test"}, Raw: noID})
	}
	js := e.jobs()
	if len(js) != 2 || js[0].DedupeKey != id+"|"+gbMobile || !strings.HasPrefix(js[1].DedupeKey, "body:") {
		t.Errorf("want 2 jobs (one per distinct mail), got %+v", js)
	}
	if !strings.Contains(e.log.String(), `"duplicates":1`) {
		t.Error("the duplicate is not logged")
	}
}

func TestVerdictAddress(t *testing.T) {
	e := newEnv(t)
	m := e.dial(goodIP)
	body := "Server room at 31 °C, please check\n"
	o := m.send(mail{From: "alice@example.test", Rcpts: []string{"verdict@sms.test"}, Raw: textMail("alice@example.test", newMsgID(), body)})
	if o.reply() != "discard" || !slices.Equal(o.deleted(), []string{"verdict@sms.test"}) {
		t.Fatalf("got %s deleting %q", o.reply(), o.deleted())
	}
	if n := len(e.jobs()); n != 0 {
		t.Errorf("the verdict address sent %d SMS", n)
	}
	ms := e.mails()
	if len(ms) != 1 || ms[0].To[0] != "alice@example.test" || ms[0].From != "" {
		t.Fatalf("want one answer to alice from <>, got %+v", ms)
	}
	data := string(ms[0].Data)
	for _, want := range []string{"Subject: SMS verdict: server alert", "DKIM:", "SPF:   pass", "DMARC:", "Rule: address alice@example.test",
		"Decision: WOULD SEND as user ops (sender ID ACME)", "encoding UCS-2 (ucs2)", "1 part(s)", "Server room at 31 °C, please check"} {
		if !strings.Contains(data, want) {
			t.Errorf("verdict answer lacks %q:\n%s", want, data)
		}
	}

	// With an SMS recipient too: the SMS is queued and the answer sent.
	o = m.send(mail{From: "alice@example.test", Rcpts: []string{"Verdict@sms2.test", gbMobile + "@sms.test"}, Raw: textMail("alice@example.test", newMsgID(), "both")})
	if o.reply() != "discard" || len(e.jobs()) != 1 {
		t.Errorf("verdict with SMS: got %s and %d jobs", o.reply(), len(e.jobs()))
	}

	// A refused sender hears why; at most 10 answers per address per hour.
	for range 12 {
		m.send(mail{From: "mallory@example.test", Rcpts: []string{"verdict@sms.test"}, Raw: textMail("mallory@example.test", newMsgID(), "am I allowed?")})
	}
	var toMallory []string
	for _, ms := range e.mails() {
		if ms.To[0] == "mallory@example.test" {
			toMallory = append(toMallory, string(ms.Data))
		}
	}
	if len(toMallory) != 10 || !strings.Contains(toMallory[0], "Decision: REFUSED: 550 5.7.1") {
		t.Errorf("%d answers to mallory, want 10 saying refused", len(toMallory))
	}
	// Never to the null sender.
	before := len(e.mails())
	m.send(mail{From: "", Rcpts: []string{"verdict@sms.test"}, Raw: textMail("alice@example.test", newMsgID(), "bounce?")})
	if n := len(e.mails()) - before; n != 0 {
		t.Errorf("%d verdict answers to the null sender", n)
	}
}

func TestNewIPNotice(t *testing.T) {
	e := newEnv(t)
	e.dns.TXT("multi.test", "v=spf1 ip4:192.0.2.10 ip4:192.0.2.11 -all")
	e.addRule(ruleSpec("address", "dave@multi.test", "ops"))
	send := func(ip string) {
		t.Helper()
		o := e.dial(ip).send(mail{From: "dave@multi.test", Rcpts: []string{gbMobile + "@sms.test"}, Raw: textMail("dave@multi.test", newMsgID(), "hi "+ip)})
		if o.reply() != "discard" {
			t.Fatalf("from %s: %s", ip, o.reply())
		}
	}
	send("192.0.2.10")
	send("192.0.2.10")
	send("192.0.2.11")
	send("192.0.2.10")
	var notices []string
	for _, m := range e.mails() {
		if m.To[0] == "postmaster@mx.test" {
			notices = append(notices, string(m.Data))
		}
	}
	if len(notices) != 2 || !strings.Contains(notices[0], "192.0.2.10") || !strings.Contains(notices[1], "192.0.2.11") ||
		!strings.Contains(notices[0], "address:dave@multi.test") {
		t.Errorf("want one notice per new IP, got %d:\n%s", len(notices), strings.Join(notices, "\n----\n"))
	}
	if evs := e.events(store.EventNewIP); len(evs) != 2 || evs[1].Fields["ip"] != "192.0.2.11" {
		t.Errorf("new_ip events: %+v", evs)
	}
	if !strings.Contains(e.log.String(), `"msg":"new sending server"`) {
		t.Error("the new IP is not logged")
	}
}

func TestSeveralMessagesPerConnection(t *testing.T) {
	e := newEnv(t)
	m := e.dial(goodIP)
	sms := gbMobile + "@sms.test"
	steps := []struct {
		m    mail
		want string
	}{
		{mail{From: "alice@example.test", Rcpts: []string{"x@elsewhere.test"}, Raw: textMail("alice@example.test", newMsgID(), "a")}, "accept"},
		{mail{From: "alice@example.test", Rcpts: []string{sms}, Raw: textMail("alice@example.test", newMsgID(), "one")}, "discard"},
		{mail{From: "mallory@example.test", Rcpts: []string{sms}, Raw: textMail("mallory@example.test", newMsgID(), "two")}, "550 5.7.1"},
		{mail{From: "alice@example.test", Rcpts: []string{"+8180123@sms.test"}, Raw: "x"}, "<none>"}, // every RCPT rejected: aborted
		{mail{From: "alice@example.test", Rcpts: []string{sms, "y@elsewhere.test"}, Raw: textMail("alice@example.test", newMsgID(), "three")}, "accept"},
		{mail{From: "alice@example.test", Rcpts: []string{sms}, Raw: textMail("alice@example.test", newMsgID(), "four")}, "discard"},
	}
	for i, s := range steps {
		if o := m.send(s.m); !strings.HasPrefix(o.reply(), s.want) {
			t.Errorf("message %d: got %s at %s, want %s", i+1, o.reply(), o.Stage, s.want)
		}
	}
	var texts []string
	for _, j := range e.jobs() {
		texts = append(texts, j.Text)
	}
	if !slices.Equal(texts, []string{"one", "three", "four"}) {
		t.Errorf("jobs %q", texts)
	}
}

// A header list from the previous message must not leak into the next one:
// go-milter's own map is cleared only by ABORT, which its client never sends.
func TestNoHeaderLeak(t *testing.T) {
	e := newEnv(t)
	m := e.dial(goodIP)
	m.send(mail{From: "alice@example.test", Rcpts: []string{gbMobile + "@sms.test"}, Raw: textMail("alice@example.test", newMsgID(), "first")})
	// The second has no From: header of its own.
	o := m.send(mail{From: "alice@example.test", Rcpts: []string{gbMobile + "@sms.test"}, Raw: "Subject: second\nMessage-ID: <" + newMsgID() + ">\n\nsecond"})
	if !strings.Contains(o.reply(), "no From: header") {
		t.Errorf("got %q: the first message's From: was used", o.reply())
	}
}

func ruleSpec(kind, pattern, user string) registry.RuleSpec {
	return registry.RuleSpec{Kind: kind, Pattern: pattern, User: user}
}

func TestReloadMidMessage(t *testing.T) {
	e := newEnv(t)
	m := e.dial(goodIP)
	s := m.s
	// A message in progress when the config changes keeps the old one.
	must(t, s.Macros(gomilter.CodeMail, "{mail_addr}", "alice@example.test"))
	if _, err := s.Mail("alice@example.test", nil); err != nil {
		t.Fatal(err)
	}
	if a, _ := s.Rcpt(gbMobile+"@sms.test", nil); a.Code != gomilter.ActContinue {
		t.Fatal(actText(a))
	}
	next := *e.cfg
	next.SMSDomains = []string{"other.test"}
	next.SMS.MaxParts = 1
	if err := e.h.Reload(&next); err != nil {
		t.Fatal(err)
	}
	if e.h.Config() != &next {
		t.Fatal("Config does not return the reloaded config")
	}
	fields, body := splitRaw(textMail("alice@example.test", newMsgID(), strings.Repeat("two parts ", 20)))
	for _, f := range fields {
		s.HeaderField(f.Name, f.Value)
	}
	s.HeaderEnd()
	s.BodyChunk(body)
	_, act, err := s.End()
	if err != nil || act.Code != gomilter.ActDiscard {
		t.Fatalf("message begun before the reload: %v %s", err, actText(act))
	}
	// The next message on the same connection has the new config.
	o := m.send(mail{From: "alice@example.test", Rcpts: []string{gbMobile + "@sms.test"}, Raw: textMail("alice@example.test", newMsgID(), "x")})
	if o.Stage != "header" || o.reply() != "accept" {
		t.Errorf("after reload sms.test is not an SMS domain: got %s at %s", o.reply(), o.Stage)
	}
	o = m.send(mail{From: "alice@example.test", Rcpts: []string{gbMobile + "@other.test"}, Raw: textMail("alice@example.test", newMsgID(), strings.Repeat("two parts ", 20))})
	if !strings.HasPrefix(o.reply(), "552 5.3.4") {
		t.Errorf("new max_parts not applied: %s", o.reply())
	}
	// A bad config is refused and the old one stays.
	bad := next
	bad.Body.StripPatterns = []string{"("}
	if err := e.h.Reload(&bad); err == nil || e.h.Config() != &next {
		t.Errorf("bad config: err %v, config swapped %v", err, e.h.Config() != &next)
	}
}

// A rule added with the CLI (another process, the same store) applies
// from the next message, although the milter caches the registry.
func TestRegistryEditApplies(t *testing.T) {
	e := newEnv(t)
	m := e.dial(goodIP)
	send := func() string {
		return m.send(mail{From: "erin@example.test", Rcpts: []string{gbMobile + "@sms.test"}, Raw: textMail("erin@example.test", newMsgID(), "hi")}).reply()
	}
	if r := send(); !strings.HasPrefix(r, "550 5.7.1") {
		t.Fatalf("before the rule: %s", r)
	}
	other, err := sqliteReopen(e)
	if err != nil {
		t.Fatal(err)
	}
	r, _ := registry.Rule(ruleSpec("address", "erin@example.test", "ops"))
	if _, err := other.AddRule(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	if r := send(); r != "discard" {
		t.Fatalf("after the rule was added: %s", r)
	}
	if err := other.AddUser(context.Background(), store.User{Name: "limited", SenderID: "X", Daily: 1}); err != nil {
		t.Fatal(err)
	}
	e.dns.TXT("example.test", "v=spf1 -all") // DNS is never cached either
	if r := send(); !strings.HasPrefix(r, "550 5.7.1") {
		t.Fatalf("after SPF changed: %s", r)
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEnvReg(t, reg)
	m := e.dial(goodIP)
	m.send(mail{From: "alice@example.test", Rcpts: []string{"x@elsewhere.test"}, Raw: textMail("alice@example.test", newMsgID(), "a")})
	m.send(mail{From: "alice@example.test", Rcpts: []string{gbMobile + "@sms.test", "+8180123@sms.test"}, Raw: textMail("alice@example.test", newMsgID(), "b")})
	m.send(mail{From: "mallory@example.test", Rcpts: []string{gbMobile + "@sms.test"}, Raw: textMail("mallory@example.test", newMsgID(), "c")})
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range fams {
		for _, mt := range f.GetMetric() {
			key := f.GetName()
			for _, l := range mt.GetLabel() {
				key += "," + l.GetName() + "=" + l.GetValue()
			}
			switch {
			case mt.Counter != nil:
				got[key] = mt.Counter.GetValue()
			case mt.Gauge != nil:
				got[key] = mt.Gauge.GetValue()
			case mt.Histogram != nil:
				got[key] = float64(mt.Histogram.GetSampleCount())
			}
		}
	}
	for key, want := range map[string]float64{
		"smsmilter_messages_total,outcome=passed":       1,
		"smsmilter_messages_total,outcome=queued":       1,
		"smsmilter_messages_total,outcome=refused":      1,
		"smsmilter_verdicts_total,check=spf,level=pass": 1,
		"smsmilter_recipients_rejected_total":           1,
		"smsmilter_jobs_queued_total":                   1,
		"smsmilter_eom_seconds":                         2,
		"smsmilter_milter_connections":                  1, // m is still open
		"smsmilter_milter_protocol_errors_total":        0,
		"smsmilter_connections_refused_total":           0,
		"smsmilter_milter_timeouts_total":               0,
	} {
		if v, ok := got[key]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", key, v, ok, want)
		}
	}
}
