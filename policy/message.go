package policy

import (
	"bytes"
	"errors"
	"fmt"
	"net/mail"
	"net/netip"
	"strings"
)

// Field is a header field as received. Value keeps the leading space and
// the folding as the MTA sent it, because c=simple DKIM signatures cover
// those bytes.
type Field struct{ Name, Value string }

// Message is what the policy looks at: the SMTP transaction and the mail.
type Message struct {
	ClientIP  netip.Addr
	Helo      string
	MailFrom  string // envelope sender, "" for the null sender
	AuthLogin string // {auth_authen}, "" when not authenticated
	QueueID   string // the MTA's queue ID (macro i)
	Header    []Field
	Body      []byte // CRLF line ends
}

// Raw is the message as it was received: each header field
// "Name:Value\r\n", a blank line, then the body. Folding inside values is
// normalised to CRLF (milters may see bare LF), which is what the client
// sent on the wire.
func (m *Message) Raw() []byte {
	var b bytes.Buffer
	for _, f := range m.Header {
		b.WriteString(f.Name)
		b.WriteByte(':')
		b.WriteString(crlf(f.Value))
		b.WriteString("\r\n")
	}
	b.WriteString("\r\n")
	b.Write(m.Body)
	return b.Bytes()
}

func crlf(s string) string {
	if !strings.ContainsAny(s, "\r\n") {
		return s
	}
	s = strings.ReplaceAll(s, "\r\n", "\n")
	s = strings.ReplaceAll(s, "\r", "\n")
	return strings.ReplaceAll(s, "\n", "\r\n")
}

// unfold joins a folded header value into one line (RFC 5322 §2.2.3).
func unfold(s string) string {
	s = strings.ReplaceAll(s, "\r\n", "")
	s = strings.ReplaceAll(s, "\n", "")
	return strings.ReplaceAll(s, "\r", "")
}

// fromAddress returns the one author address of the message, lower-cased.
// No From: field, several, an unparsable one or one naming several
// mailboxes is an error saying so: such a message has no single author a
// rule could match, and DMARC (RFC 7489 §6.6.1) refuses to guess too.
func fromAddress(h []Field) (string, error) {
	var vals []string
	for _, f := range h {
		if strings.EqualFold(strings.TrimSpace(f.Name), "From") {
			vals = append(vals, f.Value)
		}
	}
	switch len(vals) {
	case 0:
		return "", errors.New("the message has no From: header")
	case 1:
	default:
		return "", fmt.Errorf("the message has %d From: headers", len(vals))
	}
	v := strings.TrimSpace(unfold(vals[0]))
	if v == "" {
		return "", errors.New("the From: header is empty")
	}
	list, err := mail.ParseAddressList(v)
	if err != nil {
		return "", fmt.Errorf("the From: header %q cannot be parsed: %w", clip(v, 80), err)
	}
	switch len(list) {
	case 0:
		return "", errors.New("the From: header names no address")
	case 1:
	default:
		return "", fmt.Errorf("the From: header names %d addresses", len(list))
	}
	addr := strings.ToLower(list[0].Address)
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 || at == len(addr)-1 {
		return "", fmt.Errorf("the From: address %q has no domain", clip(addr, 80))
	}
	return addr, nil
}

// domainOf returns the lower-cased domain of an address ("" if none).
func domainOf(addr string) string {
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return ""
	}
	return strings.TrimSuffix(strings.ToLower(addr[at+1:]), ".")
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
