package smstext

import (
	"bytes"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/emersion/go-message/charset"
	"golang.org/x/text/encoding"
	"golang.org/x/text/encoding/charmap"
	"golang.org/x/text/encoding/htmlindex"
	"golang.org/x/text/encoding/japanese"
	"golang.org/x/text/encoding/unicode"
	"golang.org/x/text/transform"
)

// decodeTransfer undoes a Content-Transfer-Encoding leniently: broken
// base64 or quoted-printable decodes as far as it can instead of failing,
// and an unknown encoding is taken as is (what is not text is caught later
// as garbage).
func decodeTransfer(cte string, b []byte) []byte {
	switch strings.ToLower(strings.TrimSpace(cte)) {
	case "base64":
		return decodeBase64(b)
	case "quoted-printable":
		return decodeQP(b)
	}
	return b
}

// decodeBase64 decodes base64 ignoring every byte outside the alphabet
// (line breaks, blanks, junk) and treating "=" as the end of a group rather
// than of the data: some mailers concatenate separately padded chunks. The
// URL-safe alphabet is accepted too.
func decodeBase64(b []byte) []byte {
	out := make([]byte, 0, len(b)*3/4)
	var acc uint32
	n := 0
	for _, c := range b {
		var v byte
		switch {
		case c >= 'A' && c <= 'Z':
			v = c - 'A'
		case c >= 'a' && c <= 'z':
			v = c - 'a' + 26
		case c >= '0' && c <= '9':
			v = c - '0' + 52
		case c == '+' || c == '-':
			v = 62
		case c == '/' || c == '_':
			v = 63
		case c == '=':
			// Flush the whole bytes of a partial group; drop the rest.
			switch n {
			case 2:
				out = append(out, byte(acc>>4))
			case 3:
				out = append(out, byte(acc>>10), byte(acc>>2))
			}
			acc, n = 0, 0
			continue
		default:
			continue
		}
		acc = acc<<6 | uint32(v)
		n++
		if n == 4 {
			out = append(out, byte(acc>>16), byte(acc>>8), byte(acc))
			acc, n = 0, 0
		}
	}
	switch n {
	case 2:
		out = append(out, byte(acc>>4))
	case 3:
		out = append(out, byte(acc>>10), byte(acc>>2))
	}
	return out
}

// decodeQP decodes quoted-printable leniently: "=XX" (either case) is a
// byte, "=" at the end of a line is a soft break, any other "=" is kept as
// written. Trailing blanks on a line are transport padding (RFC 2045 6.7)
// and go.
func decodeQP(b []byte) []byte {
	out := make([]byte, 0, len(b))
	for len(b) > 0 {
		line, rest, eol := bytes.Cut(b, []byte("\n"))
		b = rest
		line = bytes.TrimRight(line, " \t\r")
		if bytes.HasSuffix(line, []byte("=")) {
			line, eol = line[:len(line)-1], false
		}
		for i := 0; i < len(line); i++ {
			c := line[i]
			if c == '=' && i+2 < len(line) && isHex(line[i+1]) && isHex(line[i+2]) {
				out = append(out, unhex(line[i+1])<<4|unhex(line[i+2]))
				i += 2
				continue
			}
			out = append(out, c)
		}
		if eol {
			out = append(out, '\n')
		}
	}
	return out
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}

// decodeCharset converts b from the named charset to UTF-8, never failing.
// Labels are looked up as the WHATWG Encoding Standard defines them (what
// mail clients do: ISO-8859-1 and US-ASCII mean windows-1252, Shift_JIS
// means its Microsoft form), then in the IANA registry through go-message.
// With no label, an unknown one, or one that claims ASCII, the bytes are
// UTF-8 when they are valid UTF-8, ISO-2022-JP when they carry its escape
// sequences, and windows-1252 otherwise. Valid multi-byte UTF-8 under a
// Latin-1 label is read as UTF-8, and see decodeUTF8 for the reverse.
func decodeCharset(label string, b []byte) string {
	label = strings.ToLower(strings.Trim(strings.TrimSpace(label), `"'`))
	switch label {
	case "", "us-ascii", "ascii", "us_ascii", "ansi_x3.4-1968", "iso646-us", "unknown-8bit", "x-unknown", "default":
		return guessCharset(b)
	case "utf-8", "utf8":
		return decodeUTF8(b)
	}
	enc, err := htmlindex.Get(label)
	if err != nil {
		r, err := charset.Reader(label, bytes.NewReader(b))
		if err != nil {
			return guessCharset(b)
		}
		out, _ := io.ReadAll(r) // keep what decoded before an error
		return strings.ToValidUTF8(string(out), "\uFFFD")
	}
	switch enc {
	case unicode.UTF8:
		return decodeUTF8(b)
	case charmap.Windows1252:
		// ISO-8859-1 and windows-1252 labels on UTF-8 text are a common
		// script bug; Latin-1 text that is also valid multi-byte UTF-8
		// ("Ã¼" and the like) is not seen in practice.
		if utf8.Valid(b) && hasMultibyte(b) {
			return string(b)
		}
	}
	return decodeWith(enc, b)
}

// decodeWith decodes b, keeping what decoded before an error and the rest
// as replacement characters (dropped later).
func decodeWith(enc encoding.Encoding, b []byte) string {
	out, _ := io.ReadAll(transform.NewReader(bytes.NewReader(b), enc.NewDecoder()))
	return strings.ToValidUTF8(string(out), "\uFFFD")
}

func guessCharset(b []byte) string {
	switch {
	case bytes.Contains(b, []byte("\x1b$B")) || bytes.Contains(b, []byte("\x1b$@")):
		// Before the UTF-8 test: ISO-2022-JP is 7-bit, so always valid UTF-8.
		return decodeWith(japanese.ISO2022JP, b)
	case utf8.Valid(b):
		return string(b)
	}
	return decodeWith(charmap.Windows1252, b)
}

// decodeUTF8 reads text declared UTF-8. Text that is not valid UTF-8 and
// has no multi-byte UTF-8 sequence at all is 8-bit legacy text mislabelled
// (a common script bug) and is read as windows-1252; otherwise invalid
// bytes become replacement characters.
func decodeUTF8(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if size > 1 && r != utf8.RuneError {
			return strings.ToValidUTF8(string(b), "\uFFFD")
		}
		i += size
	}
	return decodeWith(charmap.Windows1252, b)
}

func hasMultibyte(b []byte) bool {
	for _, c := range b {
		if c >= utf8.RuneSelf {
			return true
		}
	}
	return false
}
