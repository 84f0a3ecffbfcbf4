package milter

import (
	"fmt"
	"regexp"
	"strings"
	"testing"

	gomilter "github.com/emersion/go-milter"
)

// replyLine is what Postfix accepts as a milter reply (NOTES.md): code,
// space, enhanced code of the same class, text.
var replyLine = regexp.MustCompile(`^([45])\d\d ([45])\.\d{1,3}\.\d{1,3} \S`)

// validAnswer checks one milter answer as an MTA would read it.
func validAnswer(a *gomilter.Action) error {
	if a == nil {
		return nil
	}
	switch a.Code {
	case gomilter.ActContinue, gomilter.ActAccept, gomilter.ActDiscard:
		return nil
	case gomilter.ActReplyCode:
		line := fmt.Sprintf("%d %s", a.SMTPCode, a.SMTPText)
		m := replyLine.FindStringSubmatch(line)
		if m == nil || m[1] != m[2] {
			return fmt.Errorf("malformed reply %q", line)
		}
		if strings.ContainsAny(line, "\r\n\x00") || len(line) > 512 {
			return fmt.Errorf("reply with control characters or too long: %q", line)
		}
		if strings.Count(strings.ReplaceAll(a.SMTPText, "%%", ""), "%") > 0 {
			return fmt.Errorf("reply with an unescaped %%: %q", line)
		}
		return nil
	}
	return fmt.Errorf("unexpected action %q", a.Code)
}

// FuzzSession sends arbitrary header and body bytes through a real
// session: the milter must never fail the connection (a panic in a
// callback closes it) and every answer must be one an MTA accepts.
func FuzzSession(f *testing.F) {
	f.Add([]byte(textMail("alice@example.test", "seed-1@example.test", "hello")), uint8(0))
	f.Add([]byte("From: =?utf-8?b?w6k=?= <alice@example.test>\nContent-Type: multipart/alternative; boundary=b\n\n--b\nContent-Type: text/html\n\n<p>hi<b>there\n--b--\n"), uint8(1))
	f.Add([]byte("From: alice@example.test\nContent-Transfer-Encoding: base64\n\n!!!notbase64***\n"), uint8(2))
	f.Add([]byte("Authentication-Results: mx.test; spf=pass (x; y) smtp.mailfrom=alice@example.test\nFrom: alice@example.test\n\nx"), uint8(3))
	f.Add([]byte(strings.Repeat("X-Long: "+strings.Repeat("v", 500)+"\n", 20)+"\nbody"), uint8(4))
	e := newEnv(f)
	f.Fuzz(func(t *testing.T, raw []byte, mode uint8) {
		m := e.dialFor(t, goodIP)
		rcpts := [][]string{
			{gbMobile + "@sms.test"},
			{gbMobile + "@sms.test", "x@elsewhere.test"},
			{"verdict@sms.test"},
			{jpMobile + "@sms.test", "verdict@sms.test", "y@elsewhere.test"},
		}[mode%4]
		from := []string{"alice@example.test", "", "mallory@example.test"}[int(mode/4)%3]
		fields, body := splitRaw(string(raw))
		var b strings.Builder
		for _, fl := range fields {
			// What an MTA can hand over: a name without colon, blanks or
			// NUL, a value without NUL.
			name := strings.Map(func(r rune) rune {
				if r == ':' || r == 0 || r <= ' ' || r == 0x7f {
					return -1
				}
				return r
			}, fl.Name)
			if name == "" {
				continue
			}
			b.WriteString(name + ":" + strings.ReplaceAll(strings.ReplaceAll(fl.Value, "\x00", ""), "\n\n", "\n ") + "\n")
		}
		b.WriteString("\n")
		b.Write(body)
		o := m.send(mail{From: from, Rcpts: rcpts, Raw: b.String()})
		if o.Err != nil {
			t.Fatalf("connection failed at %s: %v", o.Stage, o.Err)
		}
		for _, a := range append(o.Rcpt, o.Act) {
			if err := validAnswer(a); err != nil {
				t.Fatal(err)
			}
		}
		if o.Stage != "eom" && o.Stage != "body" && o.Stage != "header" {
			t.Fatalf("answered at %s: %s", o.Stage, o.reply())
		}
	})
}
