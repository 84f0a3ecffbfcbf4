package smstext

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/smsmilter/smsmilter/internal/smtpreply"
)

// The seed corpora under testdata/fuzz are generated from the sample mails
// in testdata/mail and the strings below. TestFuzzCorpus fails when they
// drift; regenerate with
//
//	SMSTEXT_UPDATE_CORPUS=1 go test -run TestFuzzCorpus ./internal/smstext

func splitSeeds() []string {
	return []string{
		"",
		"a",
		strings.Repeat("a", 160),
		strings.Repeat("a", 161),
		strings.Repeat("a", 152) + "{" + strings.Repeat("b", 20),
		strings.Repeat("€", 81),
		strings.Repeat("日", 70),
		strings.Repeat("日", 66) + "😀" + strings.Repeat("日", 10),
		strings.Repeat("👨\u200d👩\u200d👧", 30),
		"Hello\nworld\r\n^{}\\[~]|€\f",
		"mixed ascii and 😀 emoji " + strings.Repeat("x", 100),
		"invalid \xff\xfe utf-8",
	}
}

type fitSeed struct {
	text     string
	maxParts uint8
	truncate bool
}

func fitSeeds() []fitSeed {
	return []fitSeed{
		{strings.Repeat("word ", 100), 1, true},
		{strings.Repeat("word ", 100), 4, false},
		{strings.Repeat("日本語", 100), 2, true},
		{strings.Repeat("a", 300) + " 😀", 1, true},
		{strings.Repeat("😀", 100), 1, true},
		{strings.Repeat("日", 68) + "e\u0301" + strings.Repeat("日", 10), 1, true},
		{"", 4, true},
	}
}

// extractSeeds are the sample mails plus a few shapes they do not cover.
func extractSeeds(t testing.TB) map[string][]byte {
	seeds := map[string][]byte{}
	files, err := filepath.Glob(filepath.Join("testdata", "mail", "*.eml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no sample mails: %v", err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		seeds["mail_"+strings.TrimSuffix(filepath.Base(f), ".eml")] = b
	}
	seeds["inline_empty"] = nil
	seeds["inline_header_only"] = []byte("Subject: x\r\n")
	seeds["inline_html_in_plain"] = msg(plainHeader, "<html><body><blockquote>q</blockquote>a</body></html>")
	seeds["inline_controls"] = msg(plainHeader, "a\x00\x1b[1mb\u202ec\ufffd\r\n-- \r\nsig")
	return seeds
}

func corpusFile(values ...any) []byte {
	var b bytes.Buffer
	b.WriteString("go test fuzz v1\n")
	for _, v := range values {
		switch v := v.(type) {
		case []byte:
			b.WriteString("[]byte(" + strconv.Quote(string(v)) + ")\n")
		case string:
			b.WriteString("string(" + strconv.Quote(v) + ")\n")
		case uint8:
			b.WriteString("uint8(" + strconv.Itoa(int(v)) + ")\n")
		case bool:
			b.WriteString("bool(" + strconv.FormatBool(v) + ")\n")
		}
	}
	return b.Bytes()
}

func TestFuzzCorpus(t *testing.T) {
	want := map[string][]byte{} // path -> content
	for name, b := range extractSeeds(t) {
		want[filepath.Join("testdata", "fuzz", "FuzzExtract", name)] = corpusFile(b)
	}
	for i, s := range splitSeeds() {
		want[filepath.Join("testdata", "fuzz", "FuzzSplit", "seed"+strconv.Itoa(i))] = corpusFile(s)
	}
	for i, s := range fitSeeds() {
		want[filepath.Join("testdata", "fuzz", "FuzzFit", "seed"+strconv.Itoa(i))] = corpusFile(s.text, s.maxParts, s.truncate)
	}
	update := os.Getenv("SMSTEXT_UPDATE_CORPUS") != ""
	for path, content := range want {
		got, err := os.ReadFile(path)
		if err == nil && bytes.Equal(got, content) {
			continue
		}
		if !update {
			t.Errorf("%s is missing or stale; regenerate with SMSTEXT_UPDATE_CORPUS=1", path)
			continue
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, content, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// checkSMSText fails unless s is clean SMS text as Extract promises.
func checkSMSText(t *testing.T, s string) {
	t.Helper()
	if !utf8.ValidString(s) {
		t.Fatalf("not valid UTF-8: %q", s)
	}
	if s == "" || strings.TrimSpace(s) != s {
		t.Fatalf("empty or untrimmed: %q", s)
	}
	if strings.Contains(s, "\n\n\n") || strings.Contains(s, "  ") || strings.Contains(s, " \n") || strings.Contains(s, "\n ") {
		t.Fatalf("whitespace not collapsed: %q", s)
	}
	for _, r := range s {
		switch {
		case r == '\n':
		case unicode.IsControl(r), r == unicode.ReplacementChar, unicode.Is(unicode.Co, r),
			isNoncharacter(r), isInvisible(r):
			t.Fatalf("forbidden character %U in %q", r, s)
		}
	}
	if !readable(s) {
		t.Fatalf("nothing readable: %q", s)
	}
}

func FuzzExtract(f *testing.F) {
	patterns := []*regexp.Regexp{regexp.MustCompile(`(?i)^confidential`)}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, subject := range []bool{false, true} {
			got, err := Extract(bytes.NewReader(data), Options{IncludeSubject: subject, StripPatterns: patterns})
			if !utf8.ValidString(got.Subject) || strings.ContainsAny(got.Subject, "\r\n\t\x00") {
				t.Fatalf("bad subject %q", got.Subject)
			}
			if err != nil {
				if _, ok := smtpreply.As(err); !ok {
					t.Fatalf("error %v is not an SMTP reply", err)
				}
				if got.Body != "" {
					t.Fatalf("body %q with error %v", got.Body, err)
				}
				continue
			}
			checkSMSText(t, got.Body)
			out, info, err := Fit(got.Body, 4, OverflowTruncate)
			if err != nil || info.Parts < 1 || info.Parts > 4 || info != Measure(out) {
				t.Fatalf("Fit(%q) = %q, %+v, %v", got.Body, out, info, err)
			}
		}
	})
}

// checkSplit checks Split and Measure against each other and the limits.
func checkSplit(t *testing.T, text string) {
	t.Helper()
	parts, enc := Split(text)
	info := Measure(text)
	if strings.Join(parts, "") != text {
		t.Fatalf("parts %q do not join to %q", parts, text)
	}
	if info.Encoding != enc || info.Parts != len(parts) {
		t.Fatalf("Measure %+v disagrees with Split: %s, %d parts", info, enc, len(parts))
	}
	if (enc == GSM7) != IsGSM7(text) {
		t.Fatalf("encoding %s for IsGSM7 = %v", enc, IsGSM7(text))
	}
	units, single, multi := ucs2Units, ucs2Single, ucs2Multi
	if enc == GSM7 {
		units, single, multi = gsmSeptets, gsm7Single, gsm7Multi
	}
	limit := multi
	if len(parts) == 1 {
		limit = single
	}
	total := 0
	for i, p := range parts {
		if p == "" {
			t.Fatalf("empty part %d", i)
		}
		n := 0
		for _, r := range p {
			n += units(r)
		}
		if n > limit {
			t.Fatalf("part %d has %d units, limit %d", i, n, limit)
		}
		// A part may only be short when the next character does not fit.
		if i < len(parts)-1 {
			next, _ := utf8.DecodeRuneInString(parts[i+1])
			if n+units(next) <= multi {
				t.Fatalf("part %d cut early (%d units, next needs %d)", i, n, units(next))
			}
		}
		// Surrogate pairs and escape pairs cannot split: parts are cut at
		// rune boundaries. Check the bytes too.
		if utf8.ValidString(text) && !utf8.ValidString(p) {
			t.Fatalf("part %d is not valid UTF-8", i)
		}
		total += n
	}
	if total != info.Units {
		t.Fatalf("Measure units %d, parts hold %d", info.Units, total)
	}
}

func FuzzSplit(f *testing.F) {
	f.Fuzz(func(t *testing.T, text string) {
		checkSplit(t, text)
	})
}

func FuzzFit(f *testing.F) {
	f.Fuzz(func(t *testing.T, text string, maxParts uint8, truncate bool) {
		overflow := OverflowReject
		if truncate {
			overflow = OverflowTruncate
		}
		limit := min(max(int(maxParts), 1), MaxParts)
		out, info, err := Fit(text, int(maxParts), overflow)
		if info != Measure(out) {
			t.Fatalf("Info %+v is not Measure(%q)", info, out)
		}
		full := Measure(text)
		switch {
		case full.Parts == 0:
			if err == nil {
				t.Fatal("empty text accepted")
			}
		case full.Parts <= limit:
			if err != nil || out != text {
				t.Fatalf("fitting text changed: %q, %v", out, err)
			}
		case !truncate:
			if err == nil || out != text {
				t.Fatalf("too long text not rejected: %q, %v", out, err)
			}
		default:
			if err != nil || info.Parts > limit || info.Parts < 1 {
				t.Fatalf("truncated to %+v, %v", info, err)
			}
			body, ok := strings.CutSuffix(out, gsmEllipsis)
			if !ok || info.Encoding != GSM7 {
				body, ok = strings.CutSuffix(out, ucs2Ellipsis)
				if !ok || info.Encoding != UCS2 {
					t.Fatalf("truncated %s text %q ends with the wrong ellipsis", info.Encoding, out)
				}
			}
			if !strings.HasPrefix(text, body) {
				t.Fatalf("truncated text %q is not a prefix of the text", body)
			}
			checkSplit(t, out)
		}
	})
}
