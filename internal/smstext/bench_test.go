package smstext

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func benchExtract(b *testing.B, file string) {
	raw, err := os.ReadFile(filepath.Join("testdata", "mail", file))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Extract(bytes.NewReader(raw), Options{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkExtractPlain(b *testing.B) { benchExtract(b, "plain.eml") }

func BenchmarkExtractHTML(b *testing.B) { benchExtract(b, "outlook_html.eml") }

func BenchmarkExtractAlternative(b *testing.B) { benchExtract(b, "apple_alternative.eml") }

func BenchmarkSplit(b *testing.B) {
	for _, bc := range []struct{ name, text string }{
		{"gsm7", strings.Repeat("The quick brown fox jumps over the lazy dog. ", 14)}, // 630 septets, 5 parts
		{"ucs2", strings.Repeat("素早い茶色の狐がのろまな犬を飛び越える。😀", 12)},                         // 5 parts
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(bc.text)))
			b.ReportAllocs()
			for b.Loop() {
				Split(bc.text)
			}
		})
	}
}

func BenchmarkMeasure(b *testing.B) {
	text := strings.Repeat("The quick brown fox jumps over the lazy dog. ", 14)
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		Measure(text)
	}
}
