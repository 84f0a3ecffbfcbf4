package smstext

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/smsmilter/smsmilter/internal/smtpreply"
)

// msg builds a message from header lines and a body, with CRLF line ends
// as the milter passes them.
func msg(header, body string) []byte {
	s := strings.TrimLeft(header, "\n") + "\n" + body
	s = strings.ReplaceAll(s, "\r\n", "\n")
	return []byte(strings.ReplaceAll(s, "\n", "\r\n"))
}

// wantReply checks that err is the SMTP reply want ("550 5.6.0 ..."), or
// that err is nil when want is empty.
func wantReply(t *testing.T, err error, want string) {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Fatalf("error %v, want none", err)
		}
		return
	}
	var r *smtpreply.Error
	if !errors.As(err, &r) {
		t.Fatalf("error %v (%T), want *smtpreply.Error %q", err, err, want)
	}
	if got := r.Error(); !strings.HasPrefix(got, want) {
		t.Fatalf("error %q, want %q", got, want)
	}
}

const plainHeader = `
From: ann@example.com
To: +447400123456@sms.example.com
Subject: Test
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
`

func TestExtractMailFiles(t *testing.T) {
	disclaimer := []*regexp.Regexp{regexp.MustCompile(`^CONFIDENTIALITY NOTICE:`)}
	for _, tc := range []struct {
		file, subject, body, err string
	}{
		{"plain.eml", "Server down", "Hi Bob,\n\nThe build server is down again.\n\nPlease restart it.", ""},
		{"outlook_html.eml", "RE: Meeting", "Hi Bob,\n\nWe're meeting at 10:30 in room 4 - see the map (https://intranet.example.com/rooms/4).\n\nThanks,\nAnn", ""},
		{"outlook_german.eml", "AW: Server", "Hallo Team,\n\nder Server ist wieder erreichbar.\n\nGrüße\nAnna", ""},
		{"apple_alternative.eml", "Re: Dinner", "See you at 7 – I’ll bring the café order 😀", ""},
		{"gmail_reply.eml", "Re: Call", "Yes, 3pm works.", ""},
		{"iso2022jp.eml", "会議のお知らせ", "明日の会議は10時からです。\nよろしくお願いします。", ""},
		{"shiftjis.eml", "会議のお知らせ", "明日の会議は10時からです。\nよろしくお願いします。", ""},
		{"qp_soft.eml", "Your parcel “4711”", "Dear customer, your parcel “No. 4711” will arrive tomorrow between 08:00 and 12:00. If nobody is at home, we’ll leave it with a neighbour — or at the Post Office in München. 📦", ""},
		{"broken_base64.eml", "tickets", "Meet me at the station at 18:00. Bring the tickets!", ""},
		{"flowed.eml", "flowed", "This is a long paragraph that the mail client wrapped at seventy-two columns but which should be one line in the SMS.\n\nSecond paragraph.", ""},
		{"unknown_charset.eml", "Café", `Café crème at 5 "tonight".`, ""},
		{"html_links.eml", "Sale", "Big Sale\n\nSave 50% today at our shop (https://shop.example.com/sale?utm=1) or shop.example.com.\n\nQuestions? help@shop.example.com\n\n* Shoes\n* Shirts\n\nUnsubscribe (https://shop.example.com/unsubscribe)", ""},
		{"forward_rfc822.eml", "Fwd: alarm", "Disk /var is 95% full on db1.", ""},
		{"attachment_only.eml", "invoice", "", "550 5.6.0 empty SMS text"},
		{"binary_as_text.eml", "data", "", "550 5.6.0 no readable text in the message: the text is undecodable binary data"},
		{"nested25.eml", "nested", "", "550 5.6.0 MIME structure nested deeper than 20 levels"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join("testdata", "mail", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			got, err := Extract(bytes.NewReader(raw), Options{StripPatterns: disclaimer})
			wantReply(t, err, tc.err)
			if got.Subject != tc.subject {
				t.Errorf("subject %q, want %q", got.Subject, tc.subject)
			}
			if got.Body != tc.body {
				t.Errorf("body\n%q\nwant\n%q", got.Body, tc.body)
			}
		})
	}
}

// TestExtractFilesCovered keeps every sample mail in TestExtractMailFiles.
func TestExtractFilesCovered(t *testing.T) {
	src, err := os.ReadFile("extract_test.go")
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join("testdata", "mail", "*.eml"))
	for _, f := range files {
		if !bytes.Contains(src, []byte(`"`+filepath.Base(f)+`"`)) {
			t.Errorf("%s has no case in TestExtractMailFiles", f)
		}
	}
}

func TestExtractRules(t *testing.T) {
	disclaimer := []*regexp.Regexp{
		regexp.MustCompile(`(?i)^this e-?mail is confidential`),
		nil, // tolerated
		regexp.MustCompile(`^Sent from my `),
	}
	for _, tc := range []struct {
		name   string
		header string
		body   string
		opt    Options
		want   string
		err    string
	}{
		{name: "plain", header: plainHeader, body: "Hello world\n", want: "Hello world"},
		{name: "signature dash dash space", header: plainHeader, body: "Call me\n-- \nAnn\n+44 20 7946 0000\n", want: "Call me"},
		{name: "signature dash dash", header: plainHeader, body: "Call me\n--\nAnn\n", want: "Call me"},
		{name: "triple dash is not a signature", header: plainHeader, body: "Call me\n---\nAnn\n", want: "Call me\n---\nAnn"},
		{name: "signature only", header: plainHeader, body: "-- \nAnn Example\n", err: "550 5.6.0 empty SMS text"},
		{name: "quote with attribution", header: plainHeader,
			body: "Yes.\n\nOn Mon, 3 Mar 2025 at 09:00, Bob <bob@example.com> wrote:\n> Lunch?\n> \n> Bob\n",
			want: "Yes."},
		{name: "bottom posting", header: plainHeader,
			body: "Bob wrote:\n> Lunch?\n\nYes, at noon.\n", want: "Yes, at noon."},
		{name: "interleaved", header: plainHeader,
			body: "> Lunch?\nYes.\n> Where?\nCanteen.\n", want: "Yes.\nCanteen."},
		{name: "german attribution", header: plainHeader,
			body: "Ja.\n\nAm 03.03.2025 um 09:00 schrieb Bernd Beispiel <bernd@example.de>:\n> Mittag?\n", want: "Ja."},
		{name: "french attribution", header: plainHeader,
			body: "Oui.\n\nLe lun. 3 mars 2025 à 09:00, Paul <paul@example.fr> a écrit :\n> Déjeuner ?\n", want: "Oui."},
		{name: "wrapped attribution", header: plainHeader,
			body: "Yes.\n\nOn Mon, Mar 3, 2025 at 9:00 AM Bob Example <bob@example.com>\nwrote:\n\n> Lunch?\n", want: "Yes."},
		{name: "japanese attribution", header: plainHeader,
			body: "はい。\n\n2025年3月3日(月) 9:00 山田 太郎 <taro@example.jp>:\n> 昼食は？\n", want: "はい。"},
		{name: "line before quote kept unless attribution", header: plainHeader,
			body: "See below.\n> quoted\n", want: "See below."},
		{name: "original message", header: plainHeader,
			body: "Done.\n\n-----Original Message-----\nFrom: Bob\nSent: Monday\nDo it.\n", want: "Done."},
		{name: "outlook header block", header: plainHeader,
			body: "Done.\n\n________________________________\nFrom: Bob Example <bob@example.com>\nSent: Monday, March 3, 2025 9:00 AM\nTo: Ann <ann@example.com>\nSubject: Task\n\nDo it.\n",
			want: "Done."},
		{name: "outlook mac header block", header: plainHeader,
			body: "Done.\n\nFrom: Bob Example <bob@example.com>\nDate: Monday, 3 March 2025 at 09:00\nTo: Ann <ann@example.com>\nSubject: Task\n\nDo it.\n",
			want: "Done."},
		{name: "alert starting with From and Date is kept", header: plainHeader,
			body: "From: db1.example.com\nDate: 2025-03-03 09:00\nTo: ops\nSubject: disk\n\nDisk full.\n",
			want: "From: db1.example.com\nDate: 2025-03-03 09:00\nTo: ops\nSubject: disk\n\nDisk full."},
		{name: "bare forward keeps content", header: plainHeader,
			body: "---------- Forwarded message ---------\nFrom: Bob <bob@example.com>\nDate: Mon, 3 Mar 2025\nSubject: Task\nTo: Ann <ann@example.com>\n\nDo it.\n",
			want: "---------- Forwarded message ---------\nFrom: Bob <bob@example.com>\nDate: Mon, 3 Mar 2025\nSubject: Task\nTo: Ann <ann@example.com>\n\nDo it."},
		{name: "from without sent is text", header: plainHeader,
			body: "Note.\nFrom: the ops team\nThanks\n", want: "Note.\nFrom: the ops team\nThanks"},
		{name: "strip patterns", header: plainHeader,
			body: "Deploy at 5.\n\n  This e-mail is   confidential and may be privileged.\nSent from my iPhone\n",
			opt:  Options{StripPatterns: disclaimer}, want: "Deploy at 5."},
		{name: "strip patterns leave other lines", header: plainHeader,
			body: "This line stays.\n", opt: Options{StripPatterns: disclaimer}, want: "This line stays."},
		{name: "whitespace collapse", header: plainHeader,
			body: "\n\n  a  \t b   \n\n\n\n\nc\n \n\t\n d\n\n", want: "a b\n\nc\n\nd"},
		{name: "crlf and cr", header: plainHeader, body: "a\r\nb\rc", want: "a\nb\nc"},
		{name: "include subject", header: plainHeader, body: "Body text\n",
			opt: Options{IncludeSubject: true}, want: "Test\nBody text"},
		{name: "include subject with empty body",
			header: strings.Replace(plainHeader, "Subject: Test", "Subject: Server down", 1), body: "\n",
			opt: Options{IncludeSubject: true}, want: "Server down"},
		{name: "subject not included by default", header: plainHeader, body: "\n", err: "550 5.6.0 empty SMS text"},
		{name: "empty body", header: plainHeader, body: "", err: "550 5.6.0 empty SMS text"},
		{name: "no body at all", header: "From: a@example.com\nSubject: x\n", body: "", err: "550 5.6.0 empty SMS text"},
		{name: "punctuation only", header: plainHeader, body: "...\n!!!\n", err: "550 5.6.0 no readable text in the message"},
		{name: "emoji only is text", header: plainHeader, body: "👍\n", want: "👍"},
		{name: "control characters", header: plainHeader,
			body: "a\x00b\x07c \x1b[31mred\x1b[0m\x7f \u0085next line of text \u009bd \u202eevil\u202c\ufeff\u200b ok\uFFFD and a lot more text\n",
			want: "abc red\nnext line of text d evil ok and a lot more text"},
		{name: "mostly control characters is garbage", header: plainHeader,
			body: "a\x00\x01\x02\x03\x04b\x05\x06\x07\x08", err: "550 5.6.0 no readable text in the message: the text is undecodable binary data"},
		{name: "tab and nbsp become space", header: plainHeader, body: "a\tb\u00a0c\u2003d\n", want: "a b c d"},
		{name: "zwj emoji kept", header: plainHeader, body: "family 👨\u200d👩\u200d👧\n", want: "family 👨\u200d👩\u200d👧"},
		{name: "typographic to gsm", header: plainHeader, body: "It’s “done” – see… •item\n", want: `It's "done" - see... -item`},
		{name: "typographic kept in ucs2", header: plainHeader, body: "It’s 東京\n", want: "It’s 東京"},
		{name: "undecoded base64 line dropped", header: plainHeader,
			body: "Hi\nSGVsbG8gd29ybGQsIHRoaXMgaXMgYmFzZTY0IGVuY29kZWQgdGV4dCE1MjM0NTY3\n", want: "Hi"},
		{name: "undecoded base64 only", header: plainHeader,
			body: "SGVsbG8gd29ybGQsIHRoaXMgaXMgYmFzZTY0IGVuY29kZWQgdGV4dCE1MjM0NTY3\nSGVsbG8gd29ybGQsIHRoaXMgaXMgYmFzZTY0IGVuY29kZWQgdGV4dCE1MjM0NTY3\n",
			err:  "550 5.6.0 no readable text in the message: the text is undecoded base64"},
		{name: "hex digest kept", header: plainHeader,
			body: "Token 9e9e65dc2aeceb9bf16694b201961269abcdef0123456789abcdef01234567\n", want: "Token 9e9e65dc2aeceb9bf16694b201961269abcdef0123456789abcdef01234567"},
		{name: "pgp signed", header: plainHeader,
			body: "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nMeet at 5.\n- -- not a sig\n-----BEGIN PGP SIGNATURE-----\n\niQEzBAEBCAAdFiEE\n=abcd\n-----END PGP SIGNATURE-----\n",
			want: "Meet at 5.\n-- not a sig"},
		{name: "pgp encrypted inline", header: plainHeader,
			body: "-----BEGIN PGP MESSAGE-----\n\nhQEMA1234567890ABAQf/abc\n=xyz1\n-----END PGP MESSAGE-----\n",
			err:  "550 5.6.0 empty SMS text"},
		{name: "multipart encrypted",
			header: "Subject: x\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=b\n",
			body:   "--b\nContent-Type: application/pgp-encrypted\n\nVersion: 1\n--b\nContent-Type: application/octet-stream\n\n-----BEGIN PGP MESSAGE-----\n--b--\n",
			err:    "550 5.6.0 no readable text in the message: the message is encrypted"},
		{name: "html in text/plain", header: plainHeader,
			body: "<html><body><p>Hello <b>there</b></p></body></html>\n", want: "Hello there"},
		{name: "flowed delsp", header: strings.Replace(plainHeader, "charset=utf-8", "charset=utf-8; format=flowed; delsp=yes", 1),
			body: "Hel \nlo wor \nld\n \n>> quoted \n>> more\n", want: "Hello world"},
		{name: "flowed keeps sig line", header: strings.Replace(plainHeader, "charset=utf-8", "charset=utf-8; format=flowed", 1),
			body: "Text \nhere\n-- \nsig\n", want: "Text here"},
		{name: "flowed line before sig", header: strings.Replace(plainHeader, "charset=utf-8", "charset=utf-8; format=flowed", 1),
			body: "Text \n-- \nsig\n", want: "Text"},
		{name: "content-type default", header: "Subject: x\n", body: "Hi there\n", want: "Hi there"},
		{name: "broken content-type params", header: "Subject: x\nContent-Type: text/plain; charset=utf-8; ===\n",
			body: "Grüße\n", want: "Grüße"},
		{name: "unknown transfer encoding", header: plainHeader + "Content-Transfer-Encoding: x-weird\n",
			body: "Plain enough\n", want: "Plain enough"},
		{name: "qp lenient", header: plainHeader + "Content-Transfer-Encoding: quoted-printable\n",
			body: "50=25 off =ZZ and =e2=82=ac5 and caf=\n=C3=A9 =\n", want: "50% off =ZZ and €5 and café"},
		{name: "base64 with junk and padding inside", header: plainHeader + "Content-Transfer-Encoding: base64\n",
			body: "SGVs*bG8=\nIHdv\tcmxk\n", want: "Hello world"},
		{name: "latin1 is windows-1252", header: strings.Replace(plainHeader, "utf-8", "iso-8859-1", 1) + "Content-Transfer-Encoding: 8bit\n",
			body: "It\x92s \x80 5\n", want: "It's € 5"},
		{name: "utf-8 label on latin1 bytes", header: plainHeader + "Content-Transfer-Encoding: 8bit\n",
			body: "caf\xe9 cr\xe8me\n", want: "café crème"},
		{name: "utf-8 with stray invalid byte", header: plainHeader + "Content-Transfer-Encoding: 8bit\n",
			body: "Grüße \xff aus Köln\n", want: "Grüße aus Köln"},
		{name: "no charset undeclared iso-2022-jp", header: "Subject: x\n",
			body: "\x1b$BF|K\\8l\x1b(B\n", want: "日本語"},
		{name: "alternative prefers plain",
			header: "Subject: x\nContent-Type: multipart/alternative; boundary=b\n",
			body:   "--b\nContent-Type: text/html\n\n<p>html</p>\n--b\nContent-Type: text/plain\n\nplain\n--b--\n",
			want:   "plain"},
		{name: "alternative empty plain falls back to html",
			header: "Subject: x\nContent-Type: multipart/alternative; boundary=b\n",
			body:   "--b\nContent-Type: text/plain\n\n \n--b\nContent-Type: text/html\n\n<p>html</p>\n--b--\n",
			want:   "html"},
		{name: "alternative with related html",
			header: "Subject: x\nContent-Type: multipart/alternative; boundary=b\n",
			body:   "--b\nContent-Type: multipart/related; boundary=c\n\n--c\nContent-Type: text/html\n\n<p>rich</p>\n--c\nContent-Type: image/png\n\nPNG\n--c--\n--b--\n",
			want:   "rich"},
		{name: "mixed first text part",
			header: "Subject: x\nContent-Type: multipart/mixed; boundary=b\n",
			body:   "--b\nContent-Type: image/png\nContent-Disposition: inline\n\nPNG\n--b\nContent-Type: text/plain\n\nfirst\n--b\nContent-Type: text/plain\n\nsecond\n--b--\n",
			want:   "first"},
		{name: "mixed text attachment ignored",
			header: "Subject: x\nContent-Type: multipart/mixed; boundary=b\n",
			body:   "--b\nContent-Type: text/plain\nContent-Disposition: attachment; filename=a.txt\n\nattached\n--b\nContent-Type: text/html\n\n<p>body</p>\n--b--\n",
			want:   "body"},
		{name: "attachment with broken disposition params ignored",
			header: "Subject: x\nContent-Type: multipart/mixed; boundary=b\n",
			body:   "--b\nContent-Type: text/plain\nContent-Disposition: attachment; filename=\"a\n\nattached\n--b\nContent-Type: text/plain\n\nbody\n--b--\n",
			want:   "body"},
		{name: "truncated multipart",
			header: "Subject: x\nContent-Type: multipart/mixed; boundary=b\n",
			body:   "--b\nContent-Type: text/plain\n\nno end boundary\n",
			want:   "no end boundary"},
		{name: "multipart without boundary",
			header: "Subject: x\nContent-Type: multipart/mixed\n", body: "text\n", err: "550 5.6.0 empty SMS text"},
		{name: "digest defaults to rfc822",
			header: "Subject: x\nContent-Type: multipart/digest; boundary=b\n",
			body:   "--b\n\nSubject: inner\n\ninner text\n--b--\n",
			want:   "inner text"},
		{name: "attached rfc822 ignored",
			header: "Subject: x\nContent-Type: multipart/mixed; boundary=b\n",
			body:   "--b\nContent-Type: message/rfc822\nContent-Disposition: attachment\n\nSubject: inner\n\ninner text\n--b--\n",
			err:    "550 5.6.0 empty SMS text"},
		{name: "malformed header", header: "this is not a header\n", body: "text\n", err: "550 5.6.0 malformed message header"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Extract(bytes.NewReader(msg(tc.header, tc.body)), tc.opt)
			wantReply(t, err, tc.err)
			if got.Body != tc.want {
				t.Errorf("body\n%q\nwant\n%q", got.Body, tc.want)
			}
		})
	}
}

// nested returns a message with n multipart/mixed levels around its text,
// or, with rfc822, n message/rfc822 levels.
func nested(n int, rfc822 bool) []byte {
	var b strings.Builder
	b.WriteString("Subject: nested\n")
	for i := 0; i < n; i++ {
		if rfc822 {
			b.WriteString("Content-Type: message/rfc822\n\nSubject: inner\n")
		} else {
			fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\n", i, i)
		}
	}
	b.WriteString("Content-Type: text/plain\n\ndeep\n")
	if !rfc822 {
		for i := n - 1; i >= 0; i-- {
			fmt.Fprintf(&b, "--b%d--\n", i)
		}
	}
	return msg(b.String(), "")[:len(msg(b.String(), ""))-2] // no extra blank line
}

func TestExtractDepth(t *testing.T) {
	for _, tc := range []struct {
		n      int
		rfc822 bool
		err    string
	}{
		{0, false, ""},
		{MaxDepth, false, ""},
		{MaxDepth + 1, false, "550 5.6.0 MIME structure nested deeper than 20 levels"},
		{25, false, "550 5.6.0 MIME structure nested deeper than 20 levels"},
		{MaxDepth, true, ""},
		{MaxDepth + 1, true, "550 5.6.0 MIME structure nested deeper than 20 levels"},
	} {
		t.Run(fmt.Sprintf("%d/rfc822=%v", tc.n, tc.rfc822), func(t *testing.T) {
			got, err := Extract(bytes.NewReader(nested(tc.n, tc.rfc822)), Options{})
			wantReply(t, err, tc.err)
			if tc.err == "" && got.Body != "deep" {
				t.Errorf("body %q, want %q", got.Body, "deep")
			}
		})
	}
	// Depth counts even after the text was found: a bomb after the text
	// part is still refused.
	header := "Subject: x\nContent-Type: multipart/mixed; boundary=top\n"
	inner := string(nested(MaxDepth+1, false))
	inner = inner[strings.Index(inner, "Content-Type:"):]
	body := "--top\nContent-Type: text/plain\n\nfirst\n--top\n" + inner + "\n--top--\n"
	_, err := Extract(bytes.NewReader(msg(header, body)), Options{})
	wantReply(t, err, "550 5.6.0 MIME structure nested deeper than 20 levels")
}

func TestDecodeSubject(t *testing.T) {
	for _, tc := range []struct{ raw, want string }{
		{"Hello", "Hello"},
		{"=?UTF-8?B?R3LDvMOfZQ==?=", "Grüße"},
		{"=?iso-8859-1?q?caf=E9?= =?iso-8859-1?q?_cr=E8me?=", "café crème"},
		{"=?ISO-2022-JP?B?GyRCMnE1RBsoQg==?=", "会議"},
		{"=?x-unknown?Q?caf=E9?=", "café"},
		{"=?utf-8?B?broken", "=?utf-8?B?broken"},
		{"multi\r\n line\t subject", "multi line subject"},
		{"raw caf\xe9", "raw café"},
		{"raw UTF-8 Grüße", "raw UTF-8 Grüße"},
		{"ctl\x00\x1b[1mbold", "ctlbold"},
	} {
		if got := decodeSubject(tc.raw); got != tc.want {
			t.Errorf("decodeSubject(%q) = %q, want %q", tc.raw, got, tc.want)
		}
	}
}

func TestDecodeBase64(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"SGVsbG8=", "Hello"},
		{"SGVsbG8", "Hello"},
		{"SGVs\r\nbG8=", "Hello"},
		{"SGVsbG8=SGVsbG8=", "HelloHello"},
		{"S!G@V#s$b%G^8", "Hello"},
		{"-_-_", "\xfb\xff\xbf"},
		{"", ""},
		{"A", ""},
	} {
		if got := string(decodeBase64([]byte(tc.in))); got != tc.want {
			t.Errorf("decodeBase64(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestDecodeQP(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"a=3Db", "a=b"},
		{"soft=\r\nbreak", "softbreak"},
		{"soft=  \r\nbreak", "softbreak"},
		{"trailing   \r\nline", "trailing\nline"},
		{"bad =G1 =", "bad =G1 "},
		{"end=", "end"},
		{"=e9=E9", "\xe9\xe9"},
		{"a\nb", "a\nb"},
	} {
		if got := string(decodeQP([]byte(tc.in))); got != tc.want {
			t.Errorf("decodeQP(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestDecodeCharset(t *testing.T) {
	for _, tc := range []struct{ label, in, want string }{
		{"utf-8", "Grüße", "Grüße"},
		{"UTF8", "Grüße", "Grüße"},
		{"us-ascii", "Grüße", "Grüße"}, // mislabelled UTF-8
		{"us-ascii", "Gr\xfc\xdfe", "Grüße"},
		{"", "Gr\xfc\xdfe", "Grüße"},
		{"iso-8859-1", "\x93q\x94", "“q”"}, // windows-1252, as WHATWG
		{"iso-8859-1", "Grüße", "Grüße"},   // mislabelled UTF-8
		{"windows-1252", "caf\xe9", "café"},
		{"windows-1251", "\xcf\xf0\xe8\xe2\xe5\xf2", "Привет"},
		{"koi8-r", "\xf0\xd2\xc9\xd7\xc5\xd4", "Привет"},
		{"shift_jis", "\x93\xfa\x96{", "日本"},
		{"euc-jp", "\xc6\xfc\xcb\xdc", "日本"},
		{"iso-2022-jp", "\x1b$BF|K\\\x1b(B", "日本"},
		{"gb2312", "\xc4\xe3\xba\xc3", "你好"},
		{"big5", "\xa7\x41\xa6\x6e", "你好"},
		{"utf-16le", "h\x00i\x00", "hi"},
		{"x-no-such-charset", "caf\xe9", "café"},
		{`"UTF-8"`, "ok", "ok"},
	} {
		if got := decodeCharset(tc.label, []byte(tc.in)); got != tc.want {
			t.Errorf("decodeCharset(%q, %q) = %q, want %q", tc.label, tc.in, got, tc.want)
		}
	}
}

func TestHTMLToText(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`<p>Hello <b>world</b>! It's <i>fine</i>, <font color=red>ok</font>.</p>`, "Hello world! It's fine, ok."},
		{`<a href="https://example.com/x">label</a>`, "label (https://example.com/x)"},
		{`<a href="https://example.com/">example.com</a>`, "example.com"},
		{`<a href="https://example.com/"></a>`, "https://example.com/"},
		{`<a href="mailto:a@example.com?subject=hi">a@example.com</a>`, "a@example.com"},
		{`<a href="mailto:a@example.com">write</a>`, "write (a@example.com)"},
		{`<a href="tel:+447400123456">call</a>`, "call (+447400123456)"},
		{`<a href="#top">top</a> <a href="javascript:x()">js</a>`, "top js"},
		{`<a href="https://e.example/"><img src="cid:x" alt="Logo"></a>`, "Logo (https://e.example/)"},
		{`<img src="cid:x" alt="ignored">text`, "text"},
		{`<a href="https://e.example/"><div>Line one</div><div>Line two</div></a>`, "Line one\nLine two\n(https://e.example/)"},
		{`<div style="display: none">hidden</div><span hidden>h2</span><p style="mso-hide:all">h3</p>shown`, "shown"},
		{`<head><title>T</title><style>p{}</style></head><script>x</script>body`, "body"},
		{`<h1>Title</h1><p>text</p>`, "Title\n\ntext"},
		{`a<br>b<div>c</div>d`, "a\nb\nc\nd"},
		{`<p class="MsoNormal">one<o:p></o:p></p><p class="MsoNormal">two</p>`, "one\ntwo"},
		{`<!-- comment -->&lt;b&gt; &amp; &eacute;`, "<b> & é"},
		{`<blockquote>quoted</blockquote>after`, ">\n> quoted\n\nafter"},
		{strings.Repeat("<div>", 300) + "deep" + strings.Repeat("</div>", 300) + "shallow", "shallow"},
		{strings.Repeat("<div>", 1000) + "deep" + strings.Repeat("</div>", 1000) + "<script>x</script>shallow", "deep\n\nshallow"},
	} {
		got := sanitize(htmlToText(tc.in)).text
		got, _ = cleanLines(got, nil)
		if strings.HasPrefix(tc.want, ">") {
			got = sanitize(htmlToText(tc.in)).text
			got = joinParagraphsOf(got)
		}
		if got != tc.want {
			t.Errorf("htmlToText(%.200q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// joinParagraphsOf collapses blanks without the quote rules.
func joinParagraphsOf(s string) string {
	lines := strings.Split(s, "\n")
	for i := range lines {
		lines[i] = collapseBlanks(lines[i])
	}
	return joinParagraphs(lines)
}
