package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary bytes to Parse: it must never panic, and every
// failure must be an *Errors whose problems each print as one
// FILE:LINE: message line. The committed corpus in testdata/fuzz/FuzzParse
// holds the broken configs and the examples; they are added here as well so
// that new test files seed the fuzzer without regenerating the corpus.
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/broken/*.yaml")
	examples, _ := filepath.Glob("../../examples/*.yaml")
	for _, p := range append(seeds, examples...) {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("fuzz.yaml", data)
		if err == nil {
			if cfg == nil || len(cfg.SMSDomains) == 0 {
				t.Fatalf("no error but config %+v", cfg)
			}
			for name, tr := range cfg.Transports {
				if tr.Settings == nil || tr.TPS <= 0 {
					t.Fatalf("transport %q = %+v", name, tr)
				}
			}
			for _, r := range cfg.Routes {
				for _, n := range r.Transports {
					if _, ok := cfg.Transports[n]; !ok {
						t.Fatalf("route to unknown transport %q accepted", n)
					}
				}
			}
			return
		}
		if cfg != nil {
			t.Fatalf("config %+v returned with error %v", cfg, err)
		}
		var errs *Errors
		if !errors.As(err, &errs) || len(errs.Problems) == 0 {
			t.Fatalf("error %T %v is not a non-empty *Errors", err, err)
		}
		for _, p := range errs.Problems {
			if p.File != "fuzz.yaml" || p.Line < 0 || p.Msg == "" || strings.ContainsAny(p.Msg, "\r\n") {
				t.Fatalf("malformed problem %#v", p)
			}
		}
		if n := strings.Count(err.Error(), "\n") + 1; n != len(errs.Problems) {
			t.Fatalf("Error() has %d lines for %d problems", n, len(errs.Problems))
		}
	})
}
