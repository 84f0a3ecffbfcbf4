// Package smstext turns a mail message into the text of an SMS and works
// out how that text is sent: GSM 03.38 7-bit or UCS-2, and in how many
// parts (DESIGN §5, §13).
//
// Extract picks the text of a message: the first inline text/plain part;
// inside multipart/alternative text/plain before text/html (HTML only when
// the plain part is missing or blank); inside multipart/mixed and the others
// the first part with readable text; inline message/rfc822 is read as its
// body. Attachments (Content-Disposition: attachment) and non-text types are
// ignored. MIME nested deeper than MaxDepth is refused, also past the text.
// HTML is rendered with html2text as a mail client shows it: hidden
// elements and markup go, a link reads "label (https://...)".
//
// Transfer encodings and charsets are decoded leniently (broken base64 and
// quoted-printable as far as they go, unknown charsets as UTF-8 when valid,
// else windows-1252), and the text is cleaned for a phone:
//
//   - Nothing that is not text reaches the SMS: control characters (newline
//     excepted; a tab becomes a space), terminal escape sequences, U+FFFD,
//     private-use characters, bidi overrides, markup, PGP armour, lines of
//     undecoded base64. A part that is mostly undecodable is dropped whole.
//   - The signature goes, from a line that is "-- " to the end. A line that
//     is just "--" counts too: many clients and encoders strip the
//     trailing space, and HTML signatures lose it in conversion. Mobile
//     taglines ("Sent from my iPhone") are left to Options.StripPatterns.
//   - Quoted lines (">" first) go, with the attribution line before each
//     quoted block ("On ... wrote:", "Am ... schrieb ...:", and the like).
//   - Outlook's quoted original goes, from "-----Original Message-----" or
//     a From:/Sent:/To:/Subject: header block to the end, but only when
//     text precedes it, so that a bare forward keeps its content.
//   - Lines matching Options.StripPatterns go. Each pattern is matched
//     against each line after blanks are collapsed and the line trimmed.
//   - Runs of spaces and tabs become one space, lines are trimmed, and at
//     most one blank line separates paragraphs.
//   - With Options.IncludeSubject the subject is the first line, on its own
//     (no "Subject: " label: it would cost 9 characters of every SMS). A
//     mail with a subject and no body text then makes an SMS of its subject.
//   - Typographic punctuation that mail clients put in (’ “ ” – — …) is
//     replaced by its ASCII form when, and only when, that makes the whole
//     text GSM 7-bit: one curly apostrophe would otherwise force UCS-2 and
//     cut the room of each part from 160 to 70 characters.
//
// Measure, Split and Fit count and cut text as the network does: see Split.
// Fit truncates with "..." when the result is GSM 7-bit and "…" when it is
// UCS-2, because "…" is not in GSM 03.38 and would switch GSM text to UCS-2.
package smstext

import (
	"bufio"
	"fmt"
	"io"
	"mime"
	"regexp"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/encoding/charmap"

	"github.com/smsmilter/smsmilter/internal/smtpreply"
)

// Options are the body.* settings.
type Options struct {
	IncludeSubject bool             // body.include_subject: prepend the subject
	StripPatterns  []*regexp.Regexp // body.strip_patterns, matched per line (corporate disclaimers)
}

// Text is what Extract found.
type Text struct {
	Subject string // decoded, on one line; set even when not included
	Body    string // the SMS text before fitting; the subject is its first line with IncludeSubject
}

// Extract reads a raw RFC 5322 message and returns its SMS text. Errors are
// *smtpreply.Error: 550 5.6.0 "empty SMS text" when nothing is left, 550
// 5.6.0 with a reason when only unreadable text was found, when MIME nests
// deeper than MaxDepth, or when the header is not a mail header. Text.Subject
// is set whenever the header could be read, also with an error.
//
// The caller bounds the size of r (milter.max_message_size).
func Extract(r io.Reader, o Options) (Text, error) {
	br := bufio.NewReader(r)
	h, err := readHeader(br)
	if err != nil {
		return Text{}, err
	}
	t := Text{Subject: decodeSubject(h.Get("Subject"))}

	var w walker
	c, err := w.entity(h, br, 0, "text/plain", false)
	if err != nil {
		return t, err
	}
	body, encoded := "", 0
	if c.kind != kindNone {
		body, encoded = cleanLines(c.text, o.StripPatterns)
		if encoded > 0 && !readable(body) {
			w.why = "the text is undecoded base64"
		}
	}
	if !readable(body) {
		body = ""
	}
	if o.IncludeSubject && readable(t.Subject) {
		if body == "" {
			body = t.Subject
		} else {
			body = t.Subject + "\n" + body
		}
	}
	if body == "" {
		if w.why != "" {
			return t, smtpreply.New(550, "5.6.0", "no readable text in the message: %s", w.why)
		}
		return t, smtpreply.Wrap(fmt.Errorf("smstext: no text left after extraction"), 550, "5.6.0", "empty SMS text")
	}
	t.Body = toGSM(body)
	return t, nil
}

// decodeSubject decodes RFC 2047 encoded words leniently (an unknown
// charset falls back like a body) and returns the subject on one clean
// line. Raw 8-bit subjects are UTF-8 when valid, else windows-1252.
func decodeSubject(raw string) string {
	if !utf8.ValidString(raw) {
		if s, err := charmap.Windows1252.NewDecoder().String(raw); err == nil {
			raw = s
		}
	}
	d := mime.WordDecoder{CharsetReader: func(label string, in io.Reader) (io.Reader, error) {
		b, err := io.ReadAll(in)
		if err != nil {
			return nil, err
		}
		return strings.NewReader(decodeCharset(label, b)), nil
	}}
	s, err := d.DecodeHeader(raw)
	if err != nil {
		s = raw
	}
	s = sanitize(s).text
	return strings.Join(strings.Fields(s), " ")
}
