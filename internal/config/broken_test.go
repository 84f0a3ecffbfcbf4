package config

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/broken/*.err from the current output")

// TestBroken loads every testdata/broken/NAME.yaml and compares the error
// text with NAME.err: the exact lines check-config prints, FILE being the
// base name.
func TestBroken(t *testing.T) {
	files, err := filepath.Glob("testdata/broken/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 25 {
		t.Fatalf("only %d broken configs; want at least 25", len(files))
	}
	for _, f := range files {
		name := filepath.Base(f)
		t.Run(strings.TrimSuffix(name, ".yaml"), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := Parse(name, data)
			if err == nil {
				t.Fatalf("Parse succeeded: %+v", cfg)
			}
			var errs *Errors
			if !errors.As(err, &errs) {
				t.Fatalf("error is %T, not *Errors: %v", err, err)
			}
			for _, p := range errs.Problems {
				if p.File != name || p.Line < 1 || p.Msg == "" || strings.Contains(p.Msg, "\n") {
					t.Errorf("malformed problem %#v", p)
				}
			}
			got := err.Error() + "\n"
			errFile := strings.TrimSuffix(f, ".yaml") + ".err"
			if *update {
				if err := os.WriteFile(errFile, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(errFile)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("errors differ\n--- got:\n%s--- want:\n%s", got, want)
			}
		})
	}
}

// TestLoadNamesFile checks that Load reports the path it was given, as the
// CLI prints it, and that an unreadable file is a plain error.
func TestLoadNamesFile(t *testing.T) {
	path := filepath.Join("testdata", "broken", "unknown_top_key.yaml")
	_, err := Load(path)
	var errs *Errors
	if !errors.As(err, &errs) {
		t.Fatalf("Load(%s) = %v, want *Errors", path, err)
	}
	if want := path + ":2: "; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("Load error %q does not start with %q", err, want)
	}

	_, err = Load(filepath.Join(t.TempDir(), "missing.yaml"))
	if err == nil || !errors.Is(err, os.ErrNotExist) || errors.As(err, &errs) {
		t.Errorf("Load(missing) = %v, want a plain not-exist error", err)
	}
}
