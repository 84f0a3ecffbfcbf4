package smpp

import (
	"context"
	"encoding/hex"
	"strings"
	"testing"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/linxGnu/gosmpp/data"
	"github.com/warthog618/sms/encoding/gsm7"
)

func TestParseReceipt(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want receipt
		ok   bool
	}{
		{
			name: "SMPP 3.4 appendix B",
			in:   "id:0123456789 sub:001 dlvrd:001 submit date:2401021504 done date:2401021505 stat:DELIVRD err:000 text:Hello world",
			want: receipt{ID: "0123456789", Sub: "001", Dlvrd: "001", SubmitDate: "2401021504", DoneDate: "2401021505", Stat: "DELIVRD", Err: "000", Text: "Hello world"},
			ok:   true,
		},
		{
			name: "capitalised Text and keys, no text",
			in:   "ID:abc123 SUB:001 DLVRD:000 SUBMIT DATE:2401021504 DONE DATE:2401021505 STAT:UNDELIV ERR:001 Text:",
			want: receipt{ID: "abc123", Sub: "001", Dlvrd: "000", SubmitDate: "2401021504", DoneDate: "2401021505", Stat: "UNDELIV", Err: "001"},
			ok:   true,
		},
		{
			name: "text holding key names",
			in:   "id:7 stat:DELIVRD err:000 text:id:99 stat:REJECTD",
			want: receipt{ID: "7", Stat: "DELIVRD", Err: "000", Text: "id:99 stat:REJECTD"},
			ok:   true,
		},
		{
			name: "lower-case stat, extra spaces, other order",
			in:   "  stat:expired   id: 55  err:012",
			want: receipt{ID: "55", Stat: "EXPIRED", Err: "012"},
			ok:   true,
		},
		{
			name: "key inside a word is not a key",
			in:   "id:1 squid:2 stat:DELIVRD",
			want: receipt{ID: "1 squid:2", Stat: "DELIVRD"},
			ok:   true,
		},
		{
			name: "a repeated key stays in the value",
			in:   "id:1 id:2 stat:DELIVRD",
			want: receipt{ID: "1 id:2", Stat: "DELIVRD"},
			ok:   true,
		},
		{name: "not a receipt", in: "Hello, are you there?", ok: false},
		{name: "empty", in: "", ok: false},
		{
			name: "non-ASCII before keys keeps offsets right",
			in:   "İİİ id:x stat:DELIVRD",
			want: receipt{ID: "x", Stat: "DELIVRD"},
			ok:   true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := parseReceipt(tt.in)
			if ok != tt.ok {
				t.Fatalf("ok = %v, want %v", ok, tt.ok)
			}
			if tt.ok && got != tt.want {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func FuzzReceipt(f *testing.F) {
	for _, s := range []string{
		"id:0123456789 sub:001 dlvrd:001 submit date:2401021504 done date:2401021505 stat:DELIVRD err:000 text:Hello",
		"ID:a STAT:UNDELIV ERR:001 Text:id:b",
		"stat:",
		"id:",
		"text:id:stat:",
		"submit date:done date:",
		"\x00id:\xff stat:\xfe",
		"İid:1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, ok := parseReceipt(s)
		if ok != (r.ID != "" || r.Stat != "") {
			t.Fatalf("ok = %v with %+v", ok, r)
		}
		for _, v := range []string{r.ID, r.Sub, r.Dlvrd, r.SubmitDate, r.DoneDate, r.Err, r.Text} {
			if !strings.Contains(s, v) {
				t.Fatalf("value %q is not from the input %q", v, s)
			}
		}
		if r.Stat != "" && !strings.Contains(strings.ToUpper(s), r.Stat) {
			t.Fatalf("stat %q is not from the input %q", r.Stat, s)
		}
		statState(r.Stat) // must not panic either
	})
}

func TestStatState(t *testing.T) {
	tests := []struct {
		stat  string
		state string
		final bool
	}{
		{"DELIVRD", stateDelivered, true},
		{"delivered", stateDelivered, true},
		{"UNDELIV", stateFailed, true},
		{"UNDELIVERABLE", stateFailed, true},
		{"REJECTD", stateFailed, true},
		{"EXPIRED", stateFailed, true},
		{"DELETED", stateFailed, true},
		{"SKIPPED", stateFailed, true},
		{"ACCEPTD", "", false},
		{"ENROUTE", "", false},
		{"UNKNOWN", stateUnknown, true},
		{"", stateUnknown, true},
		{"WHATEVER", stateUnknown, true},
	}
	for _, tt := range tests {
		state, final := statState(tt.stat)
		if state != tt.state || final != tt.final {
			t.Errorf("statState(%q) = %q, %v; want %q, %v", tt.stat, state, final, tt.state, tt.final)
		}
	}
	for v, name := range messageStateNames {
		if _, final := statState(name); final == (v == 1 || v == 6) {
			t.Errorf("message_state %d (%s): final = %v", v, name, final)
		}
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		status data.CommandStatusType
		want   outcome
	}{
		{data.ESME_ROK, outcomeOK},
		{data.ESME_RTHROTTLED, outcomeThrottle},
		{data.ESME_RMSGQFUL, outcomeThrottle},
		{data.ESME_RINVBNDSTS, outcomeRebind},
		{data.ESME_RINVDSTADR, outcomePermanent},
		{data.ESME_RINVSRCADR, outcomePermanent},
		{data.ESME_RINVDSTTON, outcomePermanent},
		{data.ESME_RINVMSGLEN, outcomePermanent},
		{data.ESME_RX_P_APPN, outcomePermanent},
		{data.ESME_RSYSERR, outcomeTemporary},
		{data.ESME_RSUBMITFAIL, outcomeTemporary},
		{data.ESME_RX_T_APPN, outcomeTemporary},
		{0x400, outcomeTemporary}, // vendor-specific
		{0xFFFF, outcomeTemporary},
	}
	for _, tt := range tests {
		if got := classify(tt.status); got != tt.want {
			t.Errorf("classify(%s) = %d, want %d", statusText(tt.status), got, tt.want)
		}
	}
	if got := statusText(data.ESME_RINVDSTADR); !strings.Contains(got, "ESME_RINVDSTADR") || !strings.Contains(got, "0x0B") {
		t.Errorf("statusText = %q", got)
	}
	if got := statusText(0x4242); !strings.Contains(got, "0x4242") {
		t.Errorf("statusText(0x4242) = %q", got)
	}
}

// septetLen and unitLen are how the milter counts (DESIGN.md §5).
func septetLen(p []byte) int { return len(p) }

func TestEncodeText(t *testing.T) {
	euroAt := func(pos, total int) string { // '€' (escape pair) starting at septet pos
		return strings.Repeat("a", pos) + "€" + strings.Repeat("b", total-pos-2)
	}
	emojiAt := func(pos, total int) string { // one surrogate pair starting at unit pos
		return strings.Repeat("あ", pos) + "😀" + strings.Repeat("い", total-pos-2)
	}
	tests := []struct {
		name     string
		text     string
		encoding string
		coding   byte
		parts    int
		fellBack bool
	}{
		{"empty", "", "gsm7", codingDefault, 1, false},
		{"160 GSM in one", strings.Repeat("x", 160), "gsm7", codingDefault, 1, false},
		{"161 GSM in two", strings.Repeat("x", 161), "gsm7", codingDefault, 2, false},
		{"extension counts double", strings.Repeat("€", 80), "gsm7", codingDefault, 1, false},
		{"extension 81 double in two", strings.Repeat("€", 81), "gsm7", codingDefault, 2, false},
		{"306 GSM in two", strings.Repeat("x", 306), "gsm7", codingDefault, 2, false},
		{"307 GSM in three", strings.Repeat("x", 307), "gsm7", codingDefault, 3, false},
		{"escape pair at the part edge", euroAt(152, 306), "gsm7", codingDefault, 3, false},
		{"auto GSM", "Hello", "", codingDefault, 1, false},
		{"auto UCS-2", "こんにちは", "", codingUCS2, 1, false},
		{"gsm7 asked, not GSM", "こんにちは", "gsm7", codingUCS2, 1, true},
		{"ucs2 asked for GSM text", "Hello", "ucs2", codingUCS2, 1, false},
		{"70 units in one", strings.Repeat("あ", 70), "ucs2", codingUCS2, 1, false},
		{"71 units in two", strings.Repeat("あ", 71), "ucs2", codingUCS2, 2, false},
		{"35 emoji in one", strings.Repeat("😀", 35), "ucs2", codingUCS2, 1, false},
		{"surrogate pair at the part edge", emojiAt(66, 134), "ucs2", codingUCS2, 3, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, fb, err := encodeText(tt.text, tt.encoding)
			if err != nil {
				t.Fatal(err)
			}
			if e.coding != tt.coding || len(e.parts) != tt.parts || fb != tt.fellBack {
				t.Fatalf("coding %d, %d parts, fellBack %v; want %d, %d, %v", e.coding, len(e.parts), fb, tt.coding, tt.parts, tt.fellBack)
			}
			var joined []byte
			for _, p := range e.parts {
				switch {
				case e.coding == codingDefault && len(e.parts) > 1 && septetLen(p) > gsmPart,
					e.coding == codingUCS2 && len(e.parts) > 1 && len(p)/2 > ucs2Part:
					t.Errorf("part too long: %d octets", len(p))
				case e.coding == codingDefault && len(p) > 0 && p[len(p)-1] == escape:
					t.Errorf("part ends inside an escape pair: %x", p)
				case e.coding == codingUCS2 && len(p) >= 2 && utf16.IsSurrogate(rune(p[len(p)-2])<<8|rune(p[len(p)-1])) && p[len(p)-2] < 0xDC:
					t.Errorf("part ends inside a surrogate pair")
				}
				// Each part must decode on its own to a part of the text.
				if s := decodeText(e.coding, p); !strings.Contains(tt.text, s) || strings.ContainsRune(s, utf8.RuneError) {
					t.Errorf("part %x decodes to %q, not a piece of the text", p, s)
				}
				joined = append(joined, p...)
			}
			if got := decodeText(e.coding, joined); got != tt.text {
				t.Errorf("round trip: %q", got)
			}
		})
	}
	if _, _, err := encodeText("x", "utf8"); err == nil {
		t.Error("unknown encoding accepted")
	}
}

func TestDecodeText(t *testing.T) {
	gsm, _ := gsm7.Encode([]byte("Hi {there} €5 @home"))
	tests := []struct {
		name   string
		coding byte
		hex    string
		want   string
	}{
		{"GSM with extension", codingDefault, hex.EncodeToString(gsm), "Hi {there} €5 @home"},
		{"default alphabet with 8-bit bytes is Latin-1", codingDefault, "636166e9", "café"},
		{"IA5", codingIA5, "68656c6c6f", "hello"},
		{"Latin-1", codingLatin1, "636166e9", "café"},
		{"UCS-2 with emoji", codingUCS2, "30533093d83dde00", "こん😀"},
		{"UCS-2 odd length", codingUCS2, "004100", "A"},
		{"UCS-2 lone surrogate", codingUCS2, "d83d0041", "\uFFFDA"},
		{"Cyrillic", codingCyrillic, "bfe0d8d2d5e2", "Привет"},
		{"class 0xF0 GSM", 0xF0, "48656c6c6f", "Hello"},
		{"binary UTF-8", codingBinary2, "c3a9", "é"},
		{"binary not UTF-8", codingBinary2, "ff", "ÿ"},
	}
	for _, tt := range tests {
		b, _ := hex.DecodeString(tt.hex)
		if got := decodeText(tt.coding, b); got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestParseConfig(t *testing.T) {
	base := func() map[string]any {
		return map[string]any{"address": "127.0.0.1:2775", "system_id": "me"}
	}
	c, err := parseConfig(base())
	if err != nil {
		t.Fatal(err)
	}
	if c.Window != 10 || c.Bind != "transceiver" || c.EnquireLink != 30*time.Second || !c.RegisteredDelivery || c.SubmitTimeout != 30*time.Second {
		t.Errorf("defaults: %+v", c)
	}
	full := base()
	for k, v := range map[string]any{"password": 1234, "system_type": "SMS", "window": float64(50), "bind": "Transmitter",
		"enquire_link": "10s", "registered_delivery": false, "submit_timeout": "5s"} {
		full[k] = v
	}
	c, err = parseConfig(full)
	if err != nil {
		t.Fatal(err)
	}
	if c.Password != "1234" || c.Window != 50 || c.Bind != "transmitter" || c.EnquireLink != 10*time.Second || c.RegisteredDelivery || c.SubmitTimeout != 5*time.Second {
		t.Errorf("parsed: %+v", c)
	}
	bad := []struct {
		key  string
		val  any
		want string
	}{
		{"address", "", "address: required"},
		{"address", "nohost", "not host:port"},
		{"system_id", "", "system_id: required"},
		{"window", 0, "window: 0"},
		{"window", 1.5, "whole number"},
		{"window", 5000, "1 to 1000"},
		{"bind", "both", "bind"},
		{"enquire_link", 30, "duration"},
		{"enquire_link", "10ms", "at least 1s"},
		{"registered_delivery", "maybe", "true or false"},
		{"colour", "blue", `unknown setting "colour"`},
	}
	for _, b := range bad {
		s := base()
		s[b.key] = b.val
		_, err := parseConfig(s)
		if err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("%s=%v: err = %v, want %q", b.key, b.val, err, b.want)
		}
	}
}

func TestWindow(t *testing.T) {
	w := newWindow(8)
	ctx := context.Background()
	for range 8 {
		if err := w.acquire(ctx); err != nil {
			t.Fatal(err)
		}
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	if err := w.acquire(short); err == nil {
		t.Fatal("ninth slot granted")
	}
	cancel()
	w.release()
	w.throttled(30 * time.Millisecond)
	if lim, _ := w.state(); lim != 4 {
		t.Fatalf("limit after throttle = %d, want 4", lim)
	}
	w.throttled(30 * time.Millisecond) // same episode
	if lim, _ := w.state(); lim != 4 {
		t.Fatalf("limit after a second throttle in the pause = %d, want 4", lim)
	}
	for range 7 {
		w.release()
	}
	start := time.Now()
	if err := w.acquire(ctx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 20*time.Millisecond {
		t.Errorf("acquire during the pause took %v", d)
	}
	w.release()
	for range 4 {
		w.succeeded()
	}
	if lim, _ := w.state(); lim != 5 {
		t.Errorf("limit after 4 successes = %d, want 5", lim)
	}
}

func TestRefSet(t *testing.T) {
	r := newRefSet()
	r.add("0000a1b2")
	r.add("12345")
	r.add("ABCDEF")
	tests := map[string]string{
		"0000a1b2": "0000a1b2",
		"a1b2":     "0000a1b2",
		"41394":    "0000a1b2", // decimal of 0xa1b2
		"3039":     "12345",    // hex of 12345
		"abcdef":   "ABCDEF",
		"nothing":  "nothing",
	}
	for in, want := range tests {
		if got := r.canonical(in); got != want {
			t.Errorf("canonical(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestReassembler(t *testing.T) {
	r := newReassembler()
	k := asmKey{from: "+447400123456", ref: 7, total: 3}
	now := time.Now()
	enc := func(s string) []byte { b, _ := gsm7.Encode([]byte(s)); return b }
	if _, done := r.add(k, 3, fragment{data: enc("three")}, now); done {
		t.Fatal("done after one part")
	}
	if _, done := r.add(k, 1, fragment{data: enc("one ")}, now); done {
		t.Fatal("done after two parts")
	}
	if _, done := r.add(k, 1, fragment{data: enc("one ")}, now); done {
		t.Fatal("a repeated part completed the set")
	}
	text, done := r.add(k, 2, fragment{data: enc("two ")}, now)
	if !done || text != "one two three" {
		t.Fatalf("got %q, %v", text, done)
	}
	// UCS-2 with a surrogate pair split by the sender across parts.
	k2 := asmKey{from: "x", ref: 1, total: 2}
	r.add(k2, 1, fragment{coding: codingUCS2, data: []byte{0x00, 0x41, 0xD8, 0x3D}}, now)
	if text, _ := r.add(k2, 2, fragment{coding: codingUCS2, data: []byte{0xDE, 0x00}}, now); text != "A😀" {
		t.Errorf("split surrogate: %q", text)
	}
	// Incomplete sets come out with a gap marker after the timeout.
	k3 := asmKey{from: "y", ref: 2, total: 2}
	r.add(k3, 2, fragment{data: enc("end")}, now)
	if got := r.expired(now.Add(time.Minute)); len(got) != 0 {
		t.Fatalf("expired too soon: %v", got)
	}
	got := r.expired(now.Add(asmTimeout))
	if len(got) != 1 || got[0].Text != "[…part 1 missing…]end" || got[0].From != "y" {
		t.Fatalf("expired: %+v", got)
	}
}

func TestAddresses(t *testing.T) {
	dst, err := destAddress("+447400123456")
	if err != nil || dst.Address() != "447400123456" || dst.Ton() != 1 || dst.Npi() != 1 {
		t.Errorf("destAddress: %v %v", dst, err)
	}
	for _, bad := range []string{"", "+", "+44 7400", "+4474001234567890", "abc", "447400123456"} {
		if _, err := destAddress(bad); err == nil {
			t.Errorf("destAddress(%q) accepted", bad)
		}
	}
	tests := []struct {
		from     string
		addr     string
		ton, npi byte
	}{
		{"ACME", "ACME", 5, 0},
		{"Acme Ltd", "Acme Ltd", 5, 0},
		{"+447400123456", "447400123456", 1, 1},
		{"447400123456", "447400123456", 1, 1},
		{"", "", 0, 0},
	}
	for _, tt := range tests {
		a, err := sourceAddress(tt.from)
		if err != nil || a.Address() != tt.addr || a.Ton() != tt.ton || a.Npi() != tt.npi {
			t.Errorf("sourceAddress(%q) = %q %d/%d, %v", tt.from, a.Address(), a.Ton(), a.Npi(), err)
		}
	}
	for _, bad := range []string{"TwelveChars!", "Café"} {
		if _, err := sourceAddress(bad); err == nil {
			t.Errorf("sourceAddress(%q) accepted", bad)
		}
	}
}
