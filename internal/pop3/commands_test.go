package pop3

import (
	"encoding/base64"
	"fmt"
	"regexp"
	"strings"
	"testing"
)

// The three messages every command test starts with: CRLF with lines that
// need dot-stuffing, bare LF, and no final line ending.
var testMsgs = []string{
	"Subject: one\r\nFrom: +447400123456@sms.example.com\r\n\r\nhello\r\n.dot line\r\n..two dots\r\n.\r\nend\r\n",
	"Subject: two\n\nline1\nline2\nline3\n",
	"Subject: three\r\n\r\nno final newline",
}

func plain(authz, user, pw string) string {
	return base64.StdEncoding.EncodeToString([]byte(authz + "\x00" + user + "\x00" + pw))
}

// multiLine tells which successful answers are multi-line.
func multiLine(cmd string) bool {
	f := strings.Fields(strings.ToUpper(cmd))
	if len(f) == 0 {
		return false
	}
	switch f[0] {
	case "CAPA", "RETR", "TOP":
		return true
	case "LIST", "UIDL", "AUTH":
		return len(f) == 1
	}
	return false
}

type step struct {
	send string
	// want is the whole answer, lines joined by "\n" (multi-line bodies
	// unstuffed, without the final "."); "re:" makes it a regexp.
	want string
}

// TestCommands runs each command and its error answers over a raw
// connection, checking every answer exactly.
func TestCommands(t *testing.T) {
	loginSteps := []step{{"USER " + alice, "+OK send PASS"}, {"PASS " + alicePW, "+OK mailbox has 3 messages ({total} octets)"}}
	login := func(steps ...step) []step { return append(append([]step{}, loginSteps...), steps...) }
	body1 := strings.TrimSuffix(strings.ReplaceAll(wire(testMsgs[0]), "\r\n", "\n"), "\n")
	body2 := strings.TrimSuffix(strings.ReplaceAll(wire(testMsgs[1]), "\r\n", "\n"), "\n")
	tests := []struct {
		name  string
		tls   bool
		steps []step
	}{
		{"capa before login", false, []step{
			{"CAPA", "+OK capability list follows\nTOP\nUIDL\nRESP-CODES\nAUTH-RESP-CODE\nPIPELINING\nEXPIRE NEVER\nUSER\nSASL PLAIN\nIMPLEMENTATION smsmilter"},
			{"capa", "re:\\+OK capability list follows\n(?s).*"},
			{"CAPA x", "-ERR CAPA takes no arguments"},
		}},
		{"capa with TLS offers STLS", true, []step{
			{"CAPA", "+OK capability list follows\nTOP\nUIDL\nRESP-CODES\nAUTH-RESP-CODE\nPIPELINING\nEXPIRE NEVER\nUSER\nSASL PLAIN\nSTLS\nIMPLEMENTATION smsmilter"},
		}},
		{"capa after login", false, login(
			step{"CAPA", "+OK capability list follows\nTOP\nUIDL\nRESP-CODES\nAUTH-RESP-CODE\nPIPELINING\nEXPIRE NEVER\nIMPLEMENTATION smsmilter"},
		)},
		{"transaction commands before login", false, []step{
			{"STAT", "-ERR STAT not valid before login"},
			{"LIST", "-ERR LIST not valid before login"},
			{"LIST 1", "-ERR LIST not valid before login"},
			{"UIDL", "-ERR UIDL not valid before login"},
			{"RETR 1", "-ERR RETR not valid before login"},
			{"DELE 1", "-ERR DELE not valid before login"},
			{"TOP 1 1", "-ERR TOP not valid before login"},
			{"RSET", "-ERR RSET not valid before login"},
			{"NOOP", "-ERR NOOP not valid before login"},
		}},
		{"bad lines", false, []step{
			{"", "-ERR empty command line"},
			{" NOOP", "-ERR empty command line"},
			{"XYZZY", "-ERR unknown command"},
			{"NOOP\x00", "-ERR invalid command keyword"},
			{"ABCDEFGHIJ", "-ERR invalid command keyword"},
			{"APOP alice 0123456789abcdef0123456789abcdef", "-ERR APOP not supported (passwords are stored hashed); use USER/PASS or AUTH PLAIN"},
			{"QUIT", "+OK bye"},
		}},
		{"user pass", false, []step{
			{"PASS " + alicePW, "-ERR USER first"},
			{"USER", "-ERR USER needs a mailbox name"},
			{"USER " + alice, "+OK send PASS"},
			{"PASS", "-ERR PASS needs a password"},
			{"PASS wrong", "-ERR [AUTH] authentication failed"},
			{"PASS " + alicePW, "-ERR USER first"}, // a failed PASS needs a new USER
			{"USER nobody@example.com", "+OK send PASS"},
			{"PASS " + alicePW, "-ERR [AUTH] authentication failed"}, // same answer: no enumeration
			{"user ALICE@Example.COM", "+OK send PASS"},
			{"pass " + alicePW, "+OK mailbox has 3 messages ({total} octets)"},
			{"USER " + alice, "-ERR USER not valid after login"},
			{"PASS x", "-ERR PASS not valid after login"},
			{"AUTH PLAIN", "-ERR AUTH not valid after login"},
			{"STLS", "-ERR STLS not valid after login"},
		}},
		{"stat", false, login(
			step{"STAT", "+OK 3 {total}"},
			step{"STAT 1", "-ERR STAT takes no arguments"},
		)},
		{"list", false, login(
			step{"LIST", "+OK 3 messages ({total} octets)\n1 {s1}\n2 {s2}\n3 {s3}"},
			step{"LIST 2", "+OK 2 {s2}"},
			step{"LIST 02", "+OK 2 {s2}"},
			step{"LIST 0", "-ERR no such message"},
			step{"LIST 4", "-ERR no such message"},
			step{"LIST 99999999999999999999999", "-ERR no such message"},
			step{"LIST x", "-ERR invalid message number"},
			step{"LIST -1", "-ERR invalid message number"},
			step{"LIST +1", "-ERR invalid message number"},
			step{"LIST 1 2", "-ERR LIST takes at most one message number"},
		)},
		{"uidl", false, login(
			step{"UIDL", "+OK 3 messages ({total} octets)\n1 {u1}\n2 {u2}\n3 {u3}"},
			step{"UIDL 3", "+OK 3 {u3}"},
			step{"UIDL 4", "-ERR no such message"},
			step{"UIDL a", "-ERR invalid message number"},
			step{"UIDL 1 1", "-ERR UIDL takes at most one message number"},
		)},
		{"retr", false, login(
			step{"RETR 1", "+OK {s1} octets\n" + body1},
			step{"RETR 2", "+OK {s2} octets\n" + body2},
			step{"RETR 3", "+OK {s3} octets\nSubject: three\n\nno final newline"},
			step{"RETR", "-ERR RETR takes one message number"},
			step{"RETR 1 2", "-ERR RETR takes one message number"},
			step{"RETR 9", "-ERR no such message"},
			step{"RETR one", "-ERR invalid message number"},
		)},
		{"top", false, login(
			step{"TOP 1 0", "+OK top of message follows\nSubject: one\nFrom: +447400123456@sms.example.com\n"},
			step{"TOP 1 2", "+OK top of message follows\nSubject: one\nFrom: +447400123456@sms.example.com\n\nhello\n.dot line"},
			step{"TOP 2 1", "+OK top of message follows\nSubject: two\n\nline1"},
			step{"TOP 2 99999999999999999999", "+OK top of message follows\n" + body2},
			step{"TOP 1", "-ERR TOP takes a message number and a number of lines"},
			step{"TOP", "-ERR TOP takes a message number and a number of lines"},
			step{"TOP 1 x", "-ERR invalid number of lines"},
			step{"TOP 1 -1", "-ERR invalid number of lines"},
			step{"TOP 5 1", "-ERR no such message"},
		)},
		{"dele and rset", false, login(
			step{"DELE 1", "+OK message 1 deleted"},
			step{"DELE 1", "-ERR message 1 already deleted"},
			step{"RETR 1", "-ERR message 1 already deleted"},
			step{"TOP 1 0", "-ERR message 1 already deleted"},
			step{"LIST 1", "-ERR message 1 already deleted"},
			step{"UIDL 1", "-ERR message 1 already deleted"},
			step{"STAT", "+OK 2 {s23}"},
			step{"LIST", "+OK 2 messages ({s23} octets)\n2 {s2}\n3 {s3}"},
			step{"UIDL", "+OK 2 messages ({s23} octets)\n2 {u2}\n3 {u3}"},
			step{"DELE", "-ERR DELE takes one message number"},
			step{"DELE 4", "-ERR no such message"},
			step{"DELE x", "-ERR invalid message number"},
			step{"RSET", "+OK maildrop has 3 messages ({total} octets)"},
			step{"RSET 1", "-ERR RSET takes no arguments"},
			step{"STAT", "+OK 3 {total}"},
			step{"RETR 3", "+OK {s3} octets\nSubject: three\n\nno final newline"},
		)},
		{"noop", false, login(
			step{"NOOP", "+OK"},
			step{"NOOP 1", "-ERR NOOP takes no arguments"},
			step{"QUIT", "+OK bye (0 messages deleted)"},
		)},
		{"auth plain", false, []step{
			{"AUTH", "+OK SASL mechanisms follow\nPLAIN"},
			{"AUTH LOGIN", "-ERR unsupported SASL mechanism (only PLAIN)"},
			{"AUTH CRAM-MD5", "-ERR unsupported SASL mechanism (only PLAIN)"},
			{"AUTH PLAIN a b", "-ERR AUTH PLAIN takes at most one initial response"},
			{"AUTH PLAIN !!!", "-ERR invalid base64 in SASL response"},
			{"AUTH PLAIN =", "-ERR [AUTH] authentication failed"},
			{"AUTH PLAIN " + plain("", alice, "wrong"), "-ERR [AUTH] authentication failed"},
			{"AUTH PLAIN " + plain(bob, alice, alicePW), "-ERR [AUTH] authentication failed"},
			{"AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00"+alice+"\x00"+alicePW+"\x00x")), "-ERR [AUTH] authentication failed"},
			{"AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte(alice+"\x00"+alicePW)), "-ERR [AUTH] authentication failed"},
			{"AUTH PLAIN", "+ "},
			{"*", "-ERR authentication cancelled"},
			{"AUTH PLAIN", "+ "},
			{"not base64", "-ERR invalid base64 in SASL response"},
			{"AUTH PLAIN", "+ "},
			{plain(alice, alice, alicePW), "+OK mailbox has 3 messages ({total} octets)"},
		}},
		{"auth plain initial response", false, []step{
			{"auth plain " + plain("", "Alice@Example.com", alicePW), "+OK mailbox has 3 messages ({total} octets)"},
		}},
		{"nul in credentials", false, []step{
			{"USER alice@example.com\x00", "+OK send PASS"},
			{"PASS " + alicePW, "-ERR [AUTH] authentication failed"},
			{"USER " + alice, "+OK send PASS"},
			{"PASS " + alicePW + "\x00", "-ERR [AUTH] authentication failed"},
			{"USER " + alice, "+OK send PASS"},
			{"PASS \x00" + alicePW, "-ERR [AUTH] authentication failed"},
		}},
		{"line length", false, []step{
			// 255 octets with the CRLF is the limit (RFC 2449).
			{"USER " + strings.Repeat("u", 255-len("USER ")-2), "+OK send PASS"},
			{"USER " + strings.Repeat("u", 255-len("USER ")-1), "-ERR command line too long (limit 255 octets)"},
			{"NOOP " + strings.Repeat("x", 300), "-ERR command line too long (limit 255 octets)"},
			{strings.Repeat("y", 20000), "-ERR command line too long (limit 255 octets)"},
			{"USER " + alice, "+OK send PASS"},
			{"PASS " + alicePW, "+OK mailbox has 3 messages ({total} octets)"},
			{"STAT " + strings.Repeat("1", 300), "-ERR command line too long (limit 255 octets)"},
			{"STAT", "+OK 3 {total}"},
		}},
		{"stls without tls", false, []step{
			{"STLS", "-ERR STLS not available"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, tt.tls, nil)
			ids := ts.deliver(t, alice, testMsgs...)
			var sizes []int
			for _, m := range testMsgs {
				sizes = append(sizes, len(wire(m)))
			}
			repl := strings.NewReplacer(
				"{s1}", fmt.Sprint(sizes[0]), "{s2}", fmt.Sprint(sizes[1]), "{s3}", fmt.Sprint(sizes[2]),
				"{s23}", fmt.Sprint(sizes[1]+sizes[2]), "{total}", fmt.Sprint(sizes[0]+sizes[1]+sizes[2]),
				"{u1}", ids[0], "{u2}", ids[1], "{u3}", ids[2])
			c := dial(t, ts.addr)
			for _, st := range tt.steps {
				got := c.cmd(st.send)
				if multiLine(st.send) && strings.HasPrefix(got, "+OK") {
					lines, _ := c.multi()
					got = strings.Join(append([]string{got}, lines...), "\n")
				}
				want := repl.Replace(st.want)
				if re, ok := strings.CutPrefix(want, "re:"); ok {
					if !regexp.MustCompile("^(?:" + re + ")$").MatchString(got) {
						t.Fatalf("%.60q:\n got %q\nwant /%s/", st.send, got, re)
					}
				} else if got != want {
					t.Fatalf("%.60q:\n got %q\nwant %q", st.send, got, want)
				}
			}
		})
	}
}

// TestRetrOctets checks that the size LIST announces is exactly what RETR
// sends (before stuffing), for every kind of line ending.
func TestRetrOctets(t *testing.T) {
	msgs := []string{
		"a\nb\n", "a\r\nb\r\n", "a\rb\r", "mixed\r\nlf\nbare\rcr", ".\r\n..\r\n...\r\n", "",
		"x\r\n" + strings.Repeat("long line ", 5000) + "\n", "headers only\r\n",
	}
	ts := startServer(t, false, nil)
	ts.deliver(t, alice, msgs...)
	c := dial(t, ts.addr)
	c.login(alice, alicePW)
	for i, m := range msgs {
		r := c.cmd(fmt.Sprintf("LIST %d", i+1))
		var n, size int
		fmt.Sscanf(r, "+OK %d %d", &n, &size)
		if size != len(wire(m)) {
			t.Errorf("message %d: LIST size %d, want %d", i+1, size, len(wire(m)))
		}
		r = c.cmd(fmt.Sprintf("RETR %d", i+1))
		if r != fmt.Sprintf("+OK %d octets", size) {
			t.Errorf("message %d: RETR answer %q", i+1, r)
		}
		lines, _ := c.multi()
		var got strings.Builder
		for _, l := range lines {
			got.WriteString(l + "\r\n")
		}
		if got.String() != wire(m) || got.Len() != size {
			t.Errorf("message %d: RETR sent %q (%d octets), want %q (%d)", i+1, got.String(), got.Len(), wire(m), size)
		}
	}
	c.mustOK("QUIT")
}

// TestPipelining sends a whole session in one write (RFC 2449 PIPELINING)
// and gets every answer, in order.
func TestPipelining(t *testing.T) {
	ts := startServer(t, false, nil)
	ts.deliver(t, alice, testMsgs...)
	c := dial(t, ts.addr)
	c.conn.Write([]byte("USER " + alice + "\r\nPASS " + alicePW + "\r\nSTAT\r\nLIST\r\nRETR 2\r\nDELE 2\r\nNOOP\r\nQUIT\r\n"))
	want := []string{"+OK send PASS", "+OK mailbox has 3 messages", "+OK 3 ", "+OK 3 messages"}
	for _, w := range want {
		if l := c.line(); !strings.HasPrefix(l, w) {
			t.Fatalf("got %q, want %q...", l, w)
		}
	}
	if lines, _ := c.multi(); len(lines) != 3 {
		t.Fatalf("LIST lines %v", lines)
	}
	if l := c.line(); !strings.HasPrefix(l, "+OK") {
		t.Fatalf("RETR: %q", l)
	}
	c.multi()
	for _, w := range []string{"+OK message 2 deleted", "+OK", "+OK bye (1 messages deleted)"} {
		if l := c.line(); l != w {
			t.Fatalf("got %q, want %q", l, w)
		}
	}
	c.expectClosed()
}
