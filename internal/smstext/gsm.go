package smstext

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/smsmilter/smsmilter/internal/smtpreply"
)

// Encodings reported in Info.Encoding, as the outbox contract spells them.
const (
	GSM7 = "gsm7"
	UCS2 = "ucs2"
)

// Part limits of 3GPP TS 23.040/23.038. A concatenated part loses 7 septets
// (6 octets) to the user data header, hence 153 and 67.
const (
	gsm7Single = 160
	gsm7Multi  = 153
	ucs2Single = 70
	ucs2Multi  = 67
)

// MaxParts is the most parts a concatenated SMS can have: the UDH carries the
// part count in one octet.
const MaxParts = 255

// Info describes how a text is sent.
type Info struct {
	Encoding string // "gsm7" or "ucs2"
	Units    int    // GSM septets (extension characters count 2) or UTF-16 code units
	Parts    int    // number of SMS parts; 0 for the empty text
}

// gsmSeptets returns how many septets r takes in the GSM 03.38 default
// alphabet: 1 for the basic table, 2 for the extension table (escape + code),
// 0 when r cannot be sent as GSM 7-bit.
//
// ESC itself is deliberately not accepted: a raw ESC would turn the next
// character into an extension-table character on the handset. Ç is 0x09, as
// in the Unicode mapping and both transport libraries (warthog618/sms,
// gosmpp), so that what we count is what they encode.
func gsmSeptets(r rune) int {
	if r < 0x80 {
		switch {
		case r == '\n' || r == '\r':
			return 1
		case r == '\f' || r == '^' || r == '{' || r == '}' || r == '\\' ||
			r == '[' || r == '~' || r == ']' || r == '|':
			return 2
		case r == '`':
			return 0
		case r >= 0x20 && r < 0x7f:
			return 1
		}
		return 0
	}
	switch r {
	case '£', '¥', 'è', 'é', 'ù', 'ì', 'ò', 'Ç', 'Ø', 'ø', 'Å', 'å',
		'Δ', 'Φ', 'Γ', 'Λ', 'Ω', 'Π', 'Ψ', 'Σ', 'Θ', 'Ξ', 'Æ', 'æ', 'ß', 'É',
		'¤', '¡', 'Ä', 'Ö', 'Ñ', 'Ü', '§', '¿', 'ä', 'ö', 'ñ', 'ü', 'à':
		return 1
	case '€':
		return 2
	}
	return 0
}

// ucs2Units returns the UTF-16 code units r takes: characters outside the
// BMP (most emoji) are a surrogate pair. An invalid byte in a Go string
// ranges as U+FFFD, one unit, which is also what an encoder sends for it.
func ucs2Units(r rune) int {
	if r > 0xFFFF {
		return 2
	}
	return 1
}

// IsGSM7 reports whether every character of text is in the GSM 03.38
// default alphabet or its extension table.
func IsGSM7(text string) bool {
	for i := 0; i < len(text); i++ {
		// Fast path for the common all-ASCII text.
		if c := text[i]; c < utf8.RuneSelf {
			if gsmSeptets(rune(c)) == 0 {
				return false
			}
			continue
		}
		r, size := utf8.DecodeRuneInString(text[i:])
		if r == utf8.RuneError && size == 1 || gsmSeptets(r) == 0 {
			return false
		}
		i += size - 1
	}
	return true
}

// limits returns the encoding of text, a function giving each character's
// units, and the single-part and per-part limits.
func limits(text string) (enc string, units func(rune) int, single, multi int) {
	if IsGSM7(text) {
		return GSM7, gsmSeptets, gsm7Single, gsm7Multi
	}
	return UCS2, ucs2Units, ucs2Single, ucs2Multi
}

// Measure returns the encoding, units and number of parts of text, exactly
// as Split would cut it.
func Measure(text string) Info {
	enc, units, single, multi := limits(text)
	total, parts, cur := 0, 1, 0
	for _, r := range text {
		u := units(r)
		total += u
		// Greedy packing: a character that does not fit whole starts the
		// next part, so escape pairs and surrogate pairs are never split.
		if cur+u > multi {
			parts++
			cur = 0
		}
		cur += u
	}
	switch {
	case total == 0:
		parts = 0
	case total <= single:
		parts = 1
	}
	return Info{Encoding: enc, Units: total, Parts: parts}
}

// Split cuts text into the parts it is sent as, and returns their encoding.
// The cut is by size only, as SMSCs and handsets do (and as the transport
// libraries do), so counts match the operator's bill; but never inside an
// extension-table escape pair or a UTF-16 surrogate pair. The parts joined
// are text. The empty text has no parts.
func Split(text string) (parts []string, enc string) {
	enc, units, single, multi := limits(text)
	if text == "" {
		return nil, enc
	}
	total := 0
	for _, r := range text {
		total += units(r)
		if total > single {
			break
		}
	}
	if total <= single {
		return []string{text}, enc
	}
	start, cur := 0, 0
	for i, r := range text {
		u := units(r)
		if cur+u > multi {
			parts = append(parts, text[start:i])
			start, cur = i, 0
		}
		cur += u
	}
	return append(parts, text[start:]), enc
}

// Overflow policies for Fit (sms.overflow).
const (
	OverflowReject   = "reject"
	OverflowTruncate = "truncate"
)

// Ellipses that end a truncated text. "…" is not in GSM 03.38: appending it
// to GSM text would switch the whole message to UCS-2 and cut its room by
// more than half, so GSM text ends with three dots instead.
const (
	gsmEllipsis  = "..."
	ucs2Ellipsis = "…"
)

// Fit makes text fit into maxParts SMS parts. With overflow "truncate" a
// longer text is cut (at a word boundary when one is near) and ends with
// "..." if the result is GSM 7-bit, or "…" if it is UCS-2; with "reject"
// (or any other value) it fails with 552 5.3.4. maxParts is clamped to
// 1..255. The returned Info describes the returned text; on error the text
// and Info are those of the input, for previews.
func Fit(text string, maxParts int, overflow string) (string, Info, error) {
	maxParts = min(max(maxParts, 1), MaxParts)
	info := Measure(text)
	if info.Parts == 0 {
		return text, info, smtpreply.New(550, "5.6.0", "empty SMS text")
	}
	if info.Parts <= maxParts {
		return text, info, nil
	}
	if overflow != OverflowTruncate {
		return text, info, smtpreply.New(552, "5.3.4", "message too long for SMS: %d SMS parts, limit %d", info.Parts, maxParts)
	}
	out := truncate(text, maxParts)
	return out, Measure(out), nil
}

// truncate returns the longest prefix of text that, with its ellipsis,
// fits into maxParts parts.
func truncate(text string, maxParts int) string {
	// Two candidates: the longest GSM-only prefix ending in "...", and the
	// longest prefix of any kind ending in "…" (UCS-2). The longer one wins;
	// GSM wins ties as it leaves the most room.
	g := fitPrefix(text, maxParts, gsmSeptets, gsm7Single, gsm7Multi, gsmEllipsis)
	u := fitPrefix(text, maxParts, ucs2Units, ucs2Single, ucs2Multi, ucs2Ellipsis)
	cut := max(g, u)
	prefix := tidyCut(text, cut)
	// Shortening can only make it fit better, but it may have removed the
	// last non-GSM character: then "..." in GSM is the better ending.
	e := ucs2Ellipsis
	if IsGSM7(prefix) {
		e = gsmEllipsis
	}
	for prefix != "" && Measure(prefix+e).Parts > maxParts {
		// Not reached (the candidates fit), but never return too much.
		_, size := utf8.DecodeLastRuneInString(prefix)
		prefix = prefix[:len(prefix)-size]
	}
	return prefix + e
}

// fitPrefix returns the byte length of the longest prefix of text that
// followed by ellipsis fits into maxParts parts with the given units; a
// character with no units in this encoding ends the search.
func fitPrefix(text string, maxParts int, units func(rune) int, single, multi int, ellipsis string) int {
	// state is the greedy packing of Measure, kept incrementally so that
	// each prefix is checked in constant time.
	type state struct{ total, parts, cur int }
	add := func(s state, u int) state {
		s.total += u
		if s.cur+u > multi {
			s.parts++
			s.cur = 0
		}
		s.cur += u
		return s
	}
	fits := func(s state) bool {
		for _, r := range ellipsis {
			s = add(s, units(r))
		}
		return s.total <= single || s.parts <= maxParts
	}
	s := state{parts: 1}
	best := 0
	for best < len(text) {
		r, size := utf8.DecodeRuneInString(text[best:])
		u := units(r)
		if u == 0 {
			break
		}
		if s = add(s, u); !fits(s) {
			break
		}
		best += size
	}
	return best
}

// tidyCut shortens text[:cut] so it does not end inside a word (when a
// space is near), inside a combining sequence, or in trailing space.
func tidyCut(text string, cut int) string {
	prefix := text[:cut]
	rest := text[cut:]
	next, _ := utf8.DecodeRuneInString(rest)
	// Never separate a base character from the marks or joiners after it.
	for prefix != "" && rest != "" && (isJoining(next) || lastRune(prefix) == '\u200d') {
		r, size := utf8.DecodeLastRuneInString(prefix)
		prefix, rest, next = prefix[:len(prefix)-size], text[len(prefix)-size:], r
	}
	if rest != "" && !unicode.IsSpace(next) && prefix != "" && !unicode.IsSpace(lastRune(prefix)) {
		// Inside a word: back off to the last space within 20 characters.
		tail := prefix
		for n := 0; n < 20 && tail != ""; n++ {
			r, size := utf8.DecodeLastRuneInString(tail)
			if unicode.IsSpace(r) {
				if head := strings.TrimRightFunc(tail, unicode.IsSpace); head != "" {
					prefix = head
				}
				break
			}
			tail = tail[:len(tail)-size]
		}
	}
	return strings.TrimRightFunc(prefix, unicode.IsSpace)
}

// isJoining reports whether r attaches to the character before it.
func isJoining(r rune) bool {
	return unicode.In(r, unicode.Mn, unicode.Me, unicode.Mc) || r == '\u200d' ||
		(r >= 0xFE00 && r <= 0xFE0F) || (r >= 0xE0020 && r <= 0xE007F) || (r >= 0x1F3FB && r <= 0x1F3FF)
}

func lastRune(s string) rune {
	r, _ := utf8.DecodeLastRuneInString(s)
	return r
}
