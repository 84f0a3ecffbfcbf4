package smstext

import (
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// sanitized is decoded text with everything that must not reach a phone
// removed, and the count of what was removed as undecodable.
type sanitized struct {
	text    string
	dropped int // control characters, U+FFFD, private-use and noncharacters
	visible int // non-space characters in the input, dropped ones included
}

// garbage reports whether so much of the input was undecodable that the
// rest is noise too: binary data read as text keeps many control bytes and
// replacement characters, real text has next to none.
func (s sanitized) garbage() bool {
	return s.dropped >= 2 && s.dropped*10 > s.visible
}

// sanitize normalises line ends to LF and removes what a phone would show
// as boxes or act upon: C0/C1 controls (tab and newline are kept), terminal
// escape sequences, U+FFFD, private-use characters, noncharacters, and
// invisible format characters (bidi embeddings, overrides and isolates,
// zero-width space, BOM, soft hyphen). The zero-width joiner and non-joiner,
// LRM/RLM and variation selectors stay: emoji sequences and some scripts
// need them. Unicode spaces become ASCII space (NBSP would force UCS-2).
func sanitize(s string) sanitized {
	var b strings.Builder
	b.Grow(len(s))
	var out sanitized
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		i += size
		if r == utf8.RuneError && size == 1 {
			r = unicode.ReplacementChar
		}
		if !unicode.IsSpace(r) {
			out.visible++
		}
		switch {
		case r == '\n' || r == '\t':
			b.WriteRune(r)
		case r == '\r':
			// CRLF and lone CR are both one line end.
			if i < len(s) && s[i] == '\n' {
				i++
			}
			b.WriteByte('\n')
		case r == '\v' || r == '\f' || r == 0x85 || r == 0x2028 || r == 0x2029:
			b.WriteByte('\n')
		case r == 0x1b:
			// Terminal colours in cron and CI mail: formatting, not garbage.
			i += escapeLen(s[i:])
		case r < 0x20 || r >= 0x7f && r < 0xa0:
			out.dropped++
		case r == unicode.ReplacementChar || unicode.Is(unicode.Co, r) || isNoncharacter(r):
			out.dropped++
		case isInvisible(r):
			// Legitimate but useless in an SMS: not garbage.
		case unicode.Is(unicode.Zs, r):
			b.WriteByte(' ')
		default:
			b.WriteRune(r)
		}
	}
	out.text = b.String()
	return out
}

// escapeLen returns the length of the escape sequence after an ESC: CSI
// (ESC [ ... final), OSC (ESC ] ... BEL or ESC \, within the line) and the
// nF/Fe forms (ESC intermediates final), which include the ISO 2022 charset
// switches of undeclared ISO-2022-JP text.
func escapeLen(s string) int {
	if s == "" {
		return 0
	}
	switch s[0] {
	case '[':
		i := 1
		for i < len(s) && s[i] >= 0x30 && s[i] <= 0x3f {
			i++
		}
		for i < len(s) && s[i] >= 0x20 && s[i] <= 0x2f {
			i++
		}
		if i < len(s) && s[i] >= 0x40 && s[i] <= 0x7e {
			i++
		}
		return i
	case ']':
		for i := 1; i < len(s); i++ {
			switch s[i] {
			case 0x07:
				return i + 1
			case 0x1b:
				if i+1 < len(s) && s[i+1] == '\\' {
					return i + 2
				}
				return i
			case '\n', '\r':
				return i
			}
		}
		return len(s)
	}
	i := 0
	for i < len(s) && s[i] >= 0x20 && s[i] <= 0x2f {
		i++
	}
	if i < len(s) && s[i] >= 0x30 && s[i] <= 0x7e {
		i++
	}
	return i
}

func isNoncharacter(r rune) bool {
	return r >= 0xfdd0 && r <= 0xfdef || r&0xfffe == 0xfffe || r >= 0xd800 && r <= 0xdfff
}

func isInvisible(r rune) bool {
	switch {
	case r == 0xad, r == 0x180e, r == 0x200b, r == 0x2060, r == 0xfeff:
		return true
	case r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
		return true // bidi embeddings, overrides, isolates ("Trojan Source")
	case r >= 0xfff9 && r <= 0xfffb:
		return true // interlinear annotation
	}
	return false
}

// readable reports whether s has anything a person reads: a letter, a digit
// or a symbol (emoji). Punctuation alone is not a message.
func readable(s string) bool {
	for _, r := range s {
		if unicode.IsLetter(r) || unicode.IsNumber(r) || unicode.Is(unicode.So, r) {
			return true
		}
	}
	return false
}

// unflow undoes RFC 3676 format=flowed: a line ending in a space continues
// on the next line at the same quote depth. Apple Mail and Thunderbird
// send it; without unflowing, the SMS would keep their soft line breaks.
func unflow(s string, delsp bool) string {
	lines := strings.Split(s, "\n")
	var b strings.Builder
	b.Grow(len(s))
	joining := false
	prevDepth := 0
	for _, l := range lines {
		depth := 0
		for depth < len(l) && l[depth] == '>' {
			depth++
		}
		content := l[depth:]
		content = strings.TrimPrefix(content, " ") // space-stuffing
		if joining && (depth != prevDepth || content == "-- ") {
			// Quote depth changed, or the signature starts: the previous
			// paragraph ends here.
			b.WriteByte('\n')
			joining = false
		}
		if !joining {
			if depth > 0 {
				b.WriteString(strings.Repeat(">", depth))
				b.WriteByte(' ')
			}
		}
		flowed := strings.HasSuffix(content, " ") && content != "-- "
		if flowed && delsp {
			content = content[:len(content)-1]
		}
		b.WriteString(content)
		if !flowed {
			b.WriteByte('\n')
		}
		joining, prevDepth = flowed, depth
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// Line rules, compiled once: a *regexp.Regexp is never changed after
// compilation and is safe for concurrent use.
var (
	// "On Mon, 3 Mar 2025, Ann <ann@example.com> wrote:" and translations.
	// (No \b: Go's \b knows only ASCII word characters.)
	attributionVerbRE = regexp.MustCompile(`(?i)(^|\s)(wrote|writes|schrieb|a écrit|escribió|escreveu|ha scritto|scrisse|schreef|skrev|kirjoitti|napisał|napsal|написал|написала|írta|yazdı|έγραψε)(\s[^:]*)?\s*[:：]$`)
	// "2025年3月3日(月) 10:00 山田 <taro@example.com>:" (Gmail, no verb).
	attributionAddrRE = regexp.MustCompile(`<[^<>\s@]+@[^<>\s]+>\s*[:：]$`)
	// Attribution openings, to join an attribution wrapped over two lines.
	attributionOpenRE = regexp.MustCompile(`^(On|Am|Le|El|Il|Em|Op|Den|Dne|W dniu|Pada|В)\s`)
	// Outlook's separator line, in the languages Outlook ships.
	originalMessageRE = regexp.MustCompile(`(?i)^-{2,}\s*(original message|ursprüngliche nachricht|message d'origine|mensaje original|messaggio originale|oorspronkelijk bericht|originalmeddelande|opprinnelig melding|oprindelig meddelelse|alkuperäinen viesti|wiadomość oryginalna|původní zpráva|eredeti üzenet|исходное сообщение|mensagem original)\s*-{2,}$`)
	// Outlook's reply header: From:, then Sent: (or Date:), To:, Subject:,
	// in the languages Outlook ships.
	headerFromRE    = regexp.MustCompile(`(?i)^(from|von|de|da|van|från|fra|od|от|差出人|发件人|寄件者)\s*[:：]`)
	headerSentRE    = regexp.MustCompile(`(?i)^(sent|gesendet|envoyé|enviado|enviada|inviato|verzonden|skickat|sendt|lähetetty|wysłano|odesláno|отправлено|送信日時|发送时间)(\s\S+)?\s*[:：]`)
	headerDateRE    = regexp.MustCompile(`(?i)^(date|datum|fecha|data|päivämäärä|дата|日付|日期)\s*[:：]`)
	headerToRE      = regexp.MustCompile(`(?i)^(to|an|à|a|para|aan|till|til|do|kenelle|кому|宛先|收件人)\s*[:：]`)
	headerSubjectRE = regexp.MustCompile(`(?i)^(subject|betreff|objet|asunto|oggetto|assunto|onderwerp|ämne|emne|aihe|temat|předmět|тема|件名|主题)\s*[:：]`)
	forwardedRE     = regexp.MustCompile(`(?i)^-{2,}\s*(forwarded message|weitergeleitete nachricht|message transféré|mensaje reenviado|messaggio inoltrato|doorgestuurd bericht)\s*-{2,}$`)
	separatorRE     = regexp.MustCompile(`^[_\-=*]{5,}$`)
	// An undecoded base64 line: long, one token, base64 alphabet only.
	base64LineRE = regexp.MustCompile(`^[A-Za-z0-9+/]{40,}={0,2}$`)
)

// cleanLines applies the line rules of DESIGN §5 to sanitized text: it
// collapses blanks, drops PGP armour and undecoded base64, cuts the
// signature and Outlook's quoted original, drops quoted lines with their
// attribution and the lines matching patterns, and keeps at most one blank
// line between paragraphs.
//
// It also returns how many lines of undecoded base64 it dropped.
func cleanLines(text string, patterns []*regexp.Regexp) (string, int) {
	raw := strings.Split(text, "\n")
	lines := make([]string, len(raw))
	for i, l := range raw {
		lines[i] = collapseBlanks(l)
	}
	lines = dropArmor(lines)
	lines = lines[:cutIndex(lines)]
	lines = dropQuotes(lines)
	out := lines[:0]
	encoded := 0
	for _, l := range lines {
		if l != "" && isEncodedLine(l) {
			encoded++
			continue
		}
		if l != "" && matchesAny(l, patterns) {
			continue
		}
		out = append(out, l)
	}
	return joinParagraphs(out), encoded
}

// collapseBlanks turns runs of spaces and tabs into one space and trims
// the line.
func collapseBlanks(l string) string {
	if !strings.ContainsAny(l, " \t") {
		return l
	}
	var b strings.Builder
	b.Grow(len(l))
	blank := false
	for _, r := range strings.TrimSpace(l) {
		if r == ' ' || r == '\t' {
			blank = true
			continue
		}
		if blank {
			b.WriteByte(' ')
			blank = false
		}
		b.WriteRune(r)
	}
	return b.String()
}

// dropArmor removes OpenPGP armour: encrypted blocks and signatures
// entirely, the header of a clear-signed message (its text stays, with
// dash-escaping undone). An unterminated block runs to the end.
func dropArmor(lines []string) []string {
	out := lines[:0]
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		switch {
		case l == "-----BEGIN PGP SIGNED MESSAGE-----":
			for i+1 < len(lines) && strings.HasPrefix(lines[i+1], "Hash:") {
				i++
			}
			for j := i + 1; j < len(lines) && !strings.HasPrefix(lines[j], "-----BEGIN PGP "); j++ {
				if strings.HasPrefix(lines[j], "- ") {
					lines[j] = lines[j][2:]
				}
			}
		case strings.HasPrefix(l, "-----BEGIN PGP ") && strings.HasSuffix(l, "-----"):
			end := "-----END PGP " + strings.TrimPrefix(l, "-----BEGIN PGP ")
			for i+1 < len(lines) && lines[i+1] != end {
				i++
			}
			i++ // the END line
		default:
			out = append(out, l)
		}
	}
	return out
}

// cutIndex returns where the text that is the sender's own ends: at the
// signature separator, or at Outlook's quoted original ("-----Original
// Message-----", or a From:/Sent:/To:/Subject: header block) when something
// precedes it. That condition keeps the text of a mail that is only a
// forwarded message, and of alerts that begin with "From:" and "Date:".
// Separator lines and blank lines just before the cut go with it.
func cutIndex(lines []string) int {
	content := false
	for i, l := range lines {
		// "-- " is the standard separator; "--" is accepted too because
		// many clients and encoders strip trailing blanks (and HTML
		// signatures lose them in conversion).
		cut := l == "--"
		if !cut && content {
			cut = originalMessageRE.MatchString(l) || isReplyHeader(lines, i)
		}
		if cut {
			for i > 0 && (lines[i-1] == "" || separatorRE.MatchString(lines[i-1])) {
				i--
			}
			return i
		}
		if l != "" && !separatorRE.MatchString(l) && !forwardedRE.MatchString(l) {
			content = true
		}
	}
	return len(lines)
}

// isReplyHeader reports whether lines[i] starts an Outlook reply header:
// From:, then within the same block Sent: with To: or Subject:, or Date:
// with both To: and Subject:.
func isReplyHeader(lines []string, i int) bool {
	if !headerFromRE.MatchString(lines[i]) {
		return false
	}
	var sent, date, to, subject bool
	for j := i + 1; j < len(lines) && j <= i+6 && lines[j] != ""; j++ {
		l := lines[j]
		switch {
		case headerSentRE.MatchString(l):
			sent = true
		case headerDateRE.MatchString(l):
			date = true
		case headerToRE.MatchString(l):
			to = true
		case headerSubjectRE.MatchString(l):
			subject = true
		}
	}
	return sent && (to || subject) || date && to && subject
}

// dropQuotes removes quoted lines (">" first) and the attribution line
// ("On ... wrote:", "Am ... schrieb ...:", wrapped over two lines too) just
// before each quoted block. Interleaved answers between quotes stay.
func dropQuotes(lines []string) []string {
	out := make([]string, 0, len(lines))
	inQuote := false
	for _, l := range lines {
		if !strings.HasPrefix(l, ">") {
			if l != "" {
				inQuote = false
			}
			out = append(out, l)
			continue
		}
		if inQuote {
			continue
		}
		inQuote = true
		j := len(out) - 1
		for j >= 0 && out[j] == "" {
			j--
		}
		switch {
		case j >= 1 && isWrappedAttribution(out[j-1], out[j]):
			out = out[:j-1]
		case j >= 0 && isAttribution(out[j]):
			out = out[:j]
		}
	}
	return out
}

func isAttribution(l string) bool {
	return attributionVerbRE.MatchString(l) || attributionAddrRE.MatchString(l)
}

// isWrappedAttribution reports whether prev and cur are one attribution
// that the client wrapped, like "On Mon, 3 Mar 2025 at 10:00, Ann Example
// <ann@example.com>" and "wrote:".
func isWrappedAttribution(prev, cur string) bool {
	return prev != "" && attributionOpenRE.MatchString(prev) && !strings.HasSuffix(prev, ".") &&
		!attributionOpenRE.MatchString(cur) && isAttribution(prev+" "+cur)
}

// isEncodedLine reports whether l looks like undecoded base64: one long
// token of the base64 alphabet that mixes upper case, lower case and
// digits (hex digests and words do not).
func isEncodedLine(l string) bool {
	if !base64LineRE.MatchString(l) {
		return false
	}
	var upper, lower, digit bool
	for i := 0; i < len(l); i++ {
		c := l[i]
		upper = upper || c >= 'A' && c <= 'Z'
		lower = lower || c >= 'a' && c <= 'z'
		digit = digit || c >= '0' && c <= '9'
	}
	return upper && lower && digit
}

func matchesAny(l string, patterns []*regexp.Regexp) bool {
	for _, p := range patterns {
		if p != nil && p.MatchString(l) {
			return true
		}
	}
	return false
}

// joinParagraphs joins lines with LF, keeping at most one blank line in a
// row and none at either end.
func joinParagraphs(lines []string) string {
	var b strings.Builder
	blank := false
	for _, l := range lines {
		if l == "" {
			blank = b.Len() > 0
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('\n')
			if blank {
				b.WriteByte('\n')
			}
		}
		blank = false
		b.WriteString(l)
	}
	return b.String()
}

// typographic maps punctuation that mail clients "smarten" to its ASCII
// form. Outlook and Word turn every apostrophe into U+2019, which alone
// would force UCS-2 and cut the room per part from 160 to 70.
func typographic(r rune) string {
	switch r {
	case '‘', '’', '‚', '‛', '′', '`', '´':
		return "'"
	case '“', '”', '„', '‟', '″', '«', '»':
		return `"`
	case '‐', '‑', '‒', '–', '—', '―', '−', '•':
		return "-"
	case '‹':
		return "<"
	case '›':
		return ">"
	case '…':
		return "..."
	}
	return ""
}

// toGSM replaces typographic punctuation by ASCII when that makes the whole
// text GSM 7-bit; otherwise (the text needs UCS-2 anyway) it keeps every
// character as written.
func toGSM(s string) string {
	if IsGSM7(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		if t := typographic(r); t != "" {
			b.WriteString(t)
			continue
		}
		if gsmSeptets(r) == 0 {
			return s
		}
		b.WriteRune(r)
	}
	return b.String()
}
