package smstext

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestIsGSM7(t *testing.T) {
	for _, tc := range []struct {
		text string
		want bool
	}{
		{"", true},
		{"Hello @ $ _ £ ¥ è é ù ì ò Ç Ø ø Å å Δ Φ Γ Λ Ω Π Ψ Σ Θ Ξ Æ æ ß É ¤ ¡ Ä Ö Ñ Ü § ¿ ä ö ñ ü à", true},
		{"line\nbreak\rcr", true},
		{"ext ^ { } \\ [ ~ ] | € \f", true},
		{"`", false},
		{"ç", false}, // only capital Ç is in the table
		{"á", false},
		{"…", false},
		{"’", false},
		{"\x1b", false},
		{"\x00", false},
		{"\t", false},
		{"😀", false},
		{"日本", false},
		{"\xff", false},
	} {
		if got := IsGSM7(tc.text); got != tc.want {
			t.Errorf("IsGSM7(%q) = %v, want %v", tc.text, got, tc.want)
		}
	}
}

func TestMeasureAndSplit(t *testing.T) {
	a := func(n int) string { return strings.Repeat("a", n) }
	j := func(n int) string { return strings.Repeat("日", n) }
	for _, tc := range []struct {
		name  string
		text  string
		enc   string
		units int
		sizes []int // runes per part
	}{
		{"empty", "", GSM7, 0, nil},
		{"gsm one", "a", GSM7, 1, []int{1}},
		{"gsm 160 single", a(160), GSM7, 160, []int{160}},
		{"gsm 161 two", a(161), GSM7, 161, []int{153, 8}},
		{"gsm 306 two", a(306), GSM7, 306, []int{153, 153}},
		{"gsm 307 three", a(307), GSM7, 307, []int{153, 153, 1}},
		{"gsm ext counts two", strings.Repeat("€", 80), GSM7, 160, []int{80}},
		{"gsm ext 81", strings.Repeat("€", 81), GSM7, 162, []int{76, 5}},
		// The escape pair would straddle septets 153/154: it moves.
		{"gsm escape not split", a(152) + "{" + a(10), GSM7, 164, []int{152, 11}},
		{"gsm escape fits exactly", a(151) + "{" + a(10), GSM7, 163, []int{152, 10}},
		{"ucs2 70 single", j(70), UCS2, 70, []int{70}},
		{"ucs2 71 two", j(71), UCS2, 71, []int{67, 4}},
		{"ucs2 emoji units", "😀", UCS2, 2, []int{1}},
		{"ucs2 35 emoji single", strings.Repeat("😀", 35), UCS2, 70, []int{35}},
		// The surrogate pair would straddle units 67/68: it moves.
		{"ucs2 surrogate not split", j(66) + "😀" + j(10), UCS2, 78, []int{66, 11}},
		{"ucs2 surrogate fits exactly", j(65) + "😀" + j(10), UCS2, 77, []int{66, 10}},
		{"one non-gsm char makes ucs2", a(100) + "’", UCS2, 101, []int{67, 34}},
		{"invalid utf-8 is ucs2", "a\xffb", UCS2, 3, []int{3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			info := Measure(tc.text)
			if info.Encoding != tc.enc || info.Units != tc.units || info.Parts != len(tc.sizes) {
				t.Errorf("Measure = %+v, want {%s %d %d}", info, tc.enc, tc.units, len(tc.sizes))
			}
			parts, enc := Split(tc.text)
			if enc != tc.enc {
				t.Errorf("Split encoding %s, want %s", enc, tc.enc)
			}
			var sizes []int
			for _, p := range parts {
				sizes = append(sizes, utf8.RuneCountInString(p))
			}
			if !equalInts(sizes, tc.sizes) {
				t.Errorf("Split sizes %v, want %v", sizes, tc.sizes)
			}
			if got := strings.Join(parts, ""); got != tc.text {
				t.Errorf("parts do not join to the text")
			}
		})
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestFit(t *testing.T) {
	words := func(n int) string { return strings.TrimSpace(strings.Repeat("word ", n)) }
	for _, tc := range []struct {
		name     string
		text     string
		maxParts int
		overflow string
		want     string // "" means: the text unchanged
		enc      string
		parts    int
		err      string
	}{
		{name: "fits", text: "hello", maxParts: 4, overflow: "reject", enc: GSM7, parts: 1},
		{name: "fits exactly", text: strings.Repeat("a", 4*153), maxParts: 4, overflow: "reject", enc: GSM7, parts: 4},
		{name: "reject", text: strings.Repeat("a", 7*153), maxParts: 4, overflow: "reject", enc: GSM7, parts: 7,
			err: "552 5.3.4 message too long for SMS: 7 SMS parts, limit 4"},
		{name: "unknown overflow rejects", text: strings.Repeat("a", 161), maxParts: 1, overflow: "", enc: GSM7, parts: 2,
			err: "552 5.3.4 message too long for SMS: 2 SMS parts, limit 1"},
		{name: "empty", text: "", maxParts: 4, overflow: "truncate", enc: GSM7, parts: 0, err: "550 5.6.0 empty SMS text"},
		{name: "truncate gsm single", text: strings.Repeat("a", 200), maxParts: 1, overflow: "truncate",
			want: strings.Repeat("a", 157) + "...", enc: GSM7, parts: 1},
		{name: "truncate gsm multi", text: strings.Repeat("a", 1000), maxParts: 2, overflow: "truncate",
			want: strings.Repeat("a", 303) + "...", enc: GSM7, parts: 2},
		{name: "truncate ucs2 single", text: strings.Repeat("日", 100), maxParts: 1, overflow: "truncate",
			want: strings.Repeat("日", 69) + "…", enc: UCS2, parts: 1},
		{name: "truncate ucs2 multi", text: strings.Repeat("日", 200), maxParts: 2, overflow: "truncate",
			want: strings.Repeat("日", 133) + "…", enc: UCS2, parts: 2},
		{name: "truncate at word", text: words(100), maxParts: 1, overflow: "truncate",
			want: words(31) + "...", enc: GSM7, parts: 1},
		{name: "truncate drops the non-gsm tail", text: strings.Repeat("a", 300) + " 😀", maxParts: 1, overflow: "truncate",
			want: strings.Repeat("a", 157) + "...", enc: GSM7, parts: 1},
		{name: "truncate ucs2 with emoji", text: strings.Repeat("😀", 100), maxParts: 1, overflow: "truncate",
			want: strings.Repeat("😀", 34) + "…", enc: UCS2, parts: 1},
		{name: "truncate keeps combining mark with base", text: strings.Repeat("日", 68) + "e\u0301" + strings.Repeat("日", 10), maxParts: 1, overflow: "truncate",
			want: strings.Repeat("日", 68) + "…", enc: UCS2, parts: 1},
		{name: "maxParts clamped to 1", text: strings.Repeat("a", 161), maxParts: 0, overflow: "truncate",
			want: strings.Repeat("a", 157) + "...", enc: GSM7, parts: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, info, err := Fit(tc.text, tc.maxParts, tc.overflow)
			wantReply(t, err, tc.err)
			want := tc.want
			if want == "" {
				want = tc.text
			}
			if got != want {
				t.Errorf("Fit = %q, want %q", got, want)
			}
			if info.Encoding != tc.enc || info.Parts != tc.parts {
				t.Errorf("Info %+v, want encoding %s, %d parts", info, tc.enc, tc.parts)
			}
			if info != Measure(got) {
				t.Errorf("Info %+v is not Measure of the result %+v", info, Measure(got))
			}
		})
	}
}

func TestToGSM(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain", "plain"},
		{"It’s “x” – y — z… ‘q’ «g» •", `It's "x" - y - z... 'q' "g" -`},
		{"It’s café", "It's café"},
		{"It’s ç", "It’s ç"}, // ç is not GSM: UCS-2 anyway, keep as written
		{"“日本”", "“日本”"},
		{"€ and ’", "€ and '"},
	} {
		if got := toGSM(tc.in); got != tc.want {
			t.Errorf("toGSM(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
