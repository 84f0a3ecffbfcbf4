// Package mailer is how smsmilter sends mail of its own: reply mail built
// from incoming SMS, non-delivery notices, verdict answers and new-server
// notices. Messages are composed safely (every header value stripped of CR,
// LF and NUL and RFC 2047 encoded) and kept in the store's mail queue until
// the MTA at mail.smtp accepts them, so an MTA that is down loses nothing.
package mailer

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"mime"
	"net/mail"
	"sort"
	"strings"
	"time"
)

// Message is a plain-text mail smsmilter composes.
type Message struct {
	From       string // address, or "Name <address>"
	To         string
	Subject    string
	InReplyTo  string   // Message-ID without <>
	References []string // Message-IDs without <>
	Date       time.Time
	MessageID  string // without <>; generated when empty
	Body       string // UTF-8 text; any line ends
	Extra      map[string]string
}

// Bytes renders the message with CRLF line ends. A generated Message-ID
// takes the From address's domain, as the mail is smsmilter's from there.
func (m *Message) Bytes() ([]byte, error) {
	from, err := addressHeader(m.From)
	if err != nil {
		return nil, fmt.Errorf("From %q: %w", m.From, err)
	}
	to, err := addressHeader(m.To)
	if err != nil {
		return nil, fmt.Errorf("To %q: %w", m.To, err)
	}
	if m.MessageID == "" {
		_, domain, _ := strings.Cut(addressOnly(from), "@")
		m.MessageID = NewMessageID(domain)
	}
	date := m.Date
	if date.IsZero() {
		date = time.Now()
	}
	var b bytes.Buffer
	header := func(name, value string) {
		b.WriteString(name)
		b.WriteString(": ")
		b.WriteString(value)
		b.WriteString("\r\n")
	}
	header("From", from)
	header("To", to)
	header("Subject", encodeText(m.Subject))
	header("Date", date.Format(time.RFC1123Z))
	header("Message-ID", "<"+clean(m.MessageID)+">")
	if id := idOnly(m.InReplyTo); id != "" {
		header("In-Reply-To", "<"+id+">")
	}
	if len(m.References) > 0 {
		refs := make([]string, 0, len(m.References))
		for _, r := range m.References {
			if r = idOnly(r); r != "" {
				refs = append(refs, "<"+r+">")
			}
		}
		if len(refs) > 0 {
			header("References", strings.Join(refs, " "))
		}
	}
	keys := make([]string, 0, len(m.Extra))
	for k := range m.Extra {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if name := headerName(k); name != "" {
			header(name, encodeText(m.Extra[k]))
		}
	}
	header("MIME-Version", "1.0")
	header("Content-Type", "text/plain; charset=utf-8")
	header("Content-Transfer-Encoding", "8bit")
	b.WriteString("\r\n")
	b.WriteString(crlfBody(m.Body))
	return b.Bytes(), nil
}

// NewMessageID returns a fresh Message-ID (without <>).
func NewMessageID(domain string) string {
	var r [12]byte
	rand.Read(r[:])
	if domain = clean(domain); domain == "" || strings.ContainsAny(domain, "<>@ ") {
		domain = "smsmilter.invalid"
	}
	return fmt.Sprintf("%d.%s@%s", time.Now().UnixNano(), hex.EncodeToString(r[:]), domain)
}

// clean removes what would let a value escape its header line (DESIGN.md
// §13): CR, LF and NUL.
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case '\r', '\n', 0:
			return ' '
		}
		return r
	}, s)
}

// encodeText cleans a free-text header value and RFC 2047-encodes it when
// it is not plain printable ASCII.
func encodeText(s string) string {
	s = strings.TrimSpace(clean(s))
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] >= 0x7f {
			return mime.QEncoding.Encode("utf-8", s)
		}
	}
	return s
}

// addressHeader renders one address with an RFC 2047-encoded name.
func addressHeader(s string) (string, error) {
	s = strings.TrimSpace(clean(s))
	a, err := mail.ParseAddress(s)
	if err != nil {
		return "", err
	}
	return a.String(), nil
}

// addressOnly is the address of a rendered address header, without name.
func addressOnly(h string) string {
	if a, err := mail.ParseAddress(h); err == nil {
		return a.Address
	}
	return ""
}

// idOnly is a Message-ID as it goes between < and >.
func idOnly(id string) string {
	id = strings.TrimSpace(clean(id))
	id = strings.TrimPrefix(id, "<")
	id = strings.TrimSuffix(id, ">")
	if strings.ContainsAny(id, "<> ") {
		return ""
	}
	return id
}

// headerName keeps only valid field names (RFC 5322: printable ASCII
// except colon).
func headerName(k string) string {
	if k == "" {
		return ""
	}
	for i := 0; i < len(k); i++ {
		if k[i] <= 0x20 || k[i] >= 0x7f || k[i] == ':' {
			return ""
		}
	}
	return k
}

// crlfBody normalises line ends to CRLF and makes sure the body ends with
// one, so the SMTP DATA terminator cannot be confused with content.
func crlfBody(s string) string {
	s = strings.ReplaceAll(s, "\x00", "")
	s = strings.ReplaceAll(s, "\r\n", "\n")
	s = strings.ReplaceAll(s, "\r", "\n")
	if !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	return strings.ReplaceAll(s, "\n", "\r\n")
}
