package phone

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/smsmilter/smsmilter/internal/smtpreply"
)

func TestParseRecipient(t *testing.T) {
	tests := []struct {
		local, region string
		allowed       []string
		want          string // E.164, or "" when rejected
		wantText      string // part of the reply text
	}{
		{local: "+447400123456", want: "+447400123456"},
		{local: "+819012345678", want: "+819012345678"},
		{local: "+12015550123", want: "+12015550123"}, // US: fixed line or mobile
		{local: "09012345678", region: "JP", want: "+819012345678"},
		{local: "09012345678", region: "jp", want: "+819012345678"},
		{local: "+819012345678", region: "GB", want: "+819012345678"},
		{local: "+8180123", wantText: "+8180123: too short for Japan (JP)"},
		{local: "+442079460000", wantText: "a fixed-line number in United Kingdom (GB), not a mobile number"},
		{local: "+448001111111", wantText: "toll-free"},
		{local: "09012345678", wantText: "international form"},
		{local: "+447400123456", allowed: []string{"JP"}, wantText: "SMS to United Kingdom (GB) are not allowed"},
		{local: "+447400123456", allowed: []string{"jp", "gb"}, want: "+447400123456"},
		{local: "+999123456789", wantText: "unknown country code"},
		{local: "+", wantText: "not a phone number"},
		{local: "", wantText: "not a phone number"},
		{local: "+44 7400123456", wantText: "not a phone number"},
		{local: `"+447400123456"`, wantText: "not a phone number"},
		{local: "+4474%00123456", wantText: "not a phone number"},
		{local: "+4474!00123456", wantText: "not a phone number"},
		{local: "+٤٤٧٤٠٠١٢٣٤٥٦", wantText: "not a phone number"}, // Arabic-Indic digits
		{local: "+４４７４００１２３４５６", wantText: "not a phone number"}, // full-width digits
		{local: "+4474001234567890123456", wantText: "too long"},
		{local: "bob", wantText: "not a phone number"},
	}
	for _, tt := range tests {
		n, err := ParseRecipient(tt.local, tt.region, tt.allowed)
		if tt.want != "" {
			if err != nil || n.E164 != tt.want {
				t.Errorf("ParseRecipient(%q, %q) = %+v, %v; want %s", tt.local, tt.region, n, err, tt.want)
			}
			continue
		}
		e, ok := smtpreply.As(err)
		if !ok {
			t.Errorf("ParseRecipient(%q) = %+v, %v; want a 550 5.1.3 reply", tt.local, n, err)
			continue
		}
		if e.Code != 550 || e.Enhanced != "5.1.3" || !strings.Contains(e.Error(), tt.wantText) {
			t.Errorf("ParseRecipient(%q): %q; want 550 5.1.3 containing %q", tt.local, e.Error(), tt.wantText)
		}
	}
}

func TestIncoming(t *testing.T) {
	tests := []struct {
		number string
		ton    byte
		region string
		want   string
	}{
		{"447400123456", 1, "", "+447400123456"},
		{"447400123456", 1, "JP", "+447400123456"},
		{"+447400123456", 0, "JP", "+447400123456"},
		{"447400123456", 0, "", "+447400123456"},
		{"09012345678", 0, "JP", "+819012345678"},
		{"07400123456", 0, "GB", "+447400123456"},
		{"00447400123456", 0, "JP", "+447400123456"},
		{"07400123456", 2, "GB", "+447400123456"},
		{"ACME", 5, "", "ACME"},
		{"", 1, "", ""},
		{"+44abc", 1, "", ""},
	}
	for _, tt := range tests {
		if got := Incoming(tt.number, tt.ton, tt.region); got != tt.want {
			t.Errorf("Incoming(%q, %d, %q) = %q; want %q", tt.number, tt.ton, tt.region, got, tt.want)
		}
	}
}

// FuzzParseRecipient feeds arbitrary local parts: the parser must never
// panic, accept only '+' and ASCII digits, and answer with a one-line,
// printable 550 5.1.3 reply.
func FuzzParseRecipient(f *testing.F) {
	for _, s := range []string{"+447400123456", "+8180123", "09012345678", "+", "+44 74", "\x00", "+٤٤", "+1" + strings.Repeat("9", 40)} {
		f.Add(s, "")
		f.Add(s, "JP")
	}
	f.Fuzz(func(t *testing.T, local, region string) {
		if len(region) > 3 {
			region = region[:3]
		}
		n, err := ParseRecipient(local, region, nil)
		if err == nil {
			if !strings.HasPrefix(n.E164, "+") || !asciiDigits(n.E164[1:]) {
				t.Fatalf("accepted %q as %q", local, n.E164)
			}
			for _, r := range strings.TrimPrefix(local, "+") {
				if r < '0' || r > '9' {
					t.Fatalf("accepted non-digit local part %q", local)
				}
			}
			return
		}
		e, ok := smtpreply.As(err)
		if !ok || e.Code != 550 {
			t.Fatalf("%q: %v is not a 550 reply", local, err)
		}
		line := e.Error()
		if !utf8.ValidString(line) || strings.ContainsAny(line, "\r\n\x00") {
			t.Fatalf("%q: reply %q is not one clean line", local, line)
		}
	})
}
