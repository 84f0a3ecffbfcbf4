package smpp

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/smsmilter/smsmilter/internal/smstext"
)

// The milter counts parts with internal/smstext; the transport splits with
// its own code. Both must agree, or Message.Parts and the PartResults differ.
func TestPartsMatchSmstext(t *testing.T) {
	// Every character smstext calls GSM must encode here with the same
	// number of septets.
	for r := rune(0); r < 0x3000; r++ {
		s := string(r)
		if !smstext.IsGSM7(s) {
			continue
		}
		e, fb, err := encodeText(s, "gsm7")
		if err != nil || fb || e.coding != codingDefault {
			t.Errorf("%U %q: smstext says GSM, encodeText: coding %d fellBack %v err %v", r, s, e.coding, fb, err)
			continue
		}
		if got, want := len(e.parts[0]), smstext.Measure(s).Units; got != want {
			t.Errorf("%U %q: %d septets, smstext counts %d", r, s, got, want)
		}
	}
	alphabets := []string{
		"abc xyz 0123456789.,!?",
		"abc €{}[]~^|\\ äöü",
		"日本語こんにちは😀🎌👍🏽a",
		"Ωαβγ Привет",
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		pool := []rune(alphabets[i%len(alphabets)])
		if i%7 == 0 { // mixed: mostly GSM with one odd character
			pool = append([]rune(alphabets[0]), '😀')
		}
		n := rng.IntN(700)
		var sb strings.Builder
		for range n {
			sb.WriteRune(pool[rng.IntN(len(pool))])
		}
		text := sb.String()
		info := smstext.Measure(text)
		e, fb, err := encodeText(text, info.Encoding)
		if err != nil || fb {
			t.Fatalf("%q: fellBack %v err %v", text, fb, err)
		}
		want := info.Parts
		if want == 0 {
			want = 1 // the empty text still goes out as one (empty) SMS
		}
		if len(e.parts) != want {
			t.Errorf("%q (%s, %d units): %d parts, smstext says %d", text, info.Encoding, info.Units, len(e.parts), want)
		}
		parts, _ := smstext.Split(text)
		for j, p := range parts {
			if j < len(e.parts) && decodeText(e.coding, e.parts[j]) != p {
				t.Errorf("%q: part %d is %q here, %q in smstext", text, j+1, decodeText(e.coding, e.parts[j]), p)
			}
		}
	}
}
