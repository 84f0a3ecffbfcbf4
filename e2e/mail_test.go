package e2e

import (
	"bufio"
	"net/mail"
	"strings"
	"testing"
)

// parsedMail is a message read back (POP3).
type parsedMail struct {
	Header mail.Header
	Body   []byte
}

func parseMail(t *testing.T, raw string) parsedMail {
	t.Helper()
	m, err := mail.ReadMessage(bufio.NewReader(strings.NewReader(raw)))
	if err != nil {
		t.Fatalf("unreadable mail: %v\n%s", err, raw)
	}
	var b strings.Builder
	sc := bufio.NewScanner(m.Body)
	for sc.Scan() {
		b.WriteString(sc.Text() + "\n")
	}
	return parsedMail{Header: m.Header, Body: []byte(b.String())}
}
