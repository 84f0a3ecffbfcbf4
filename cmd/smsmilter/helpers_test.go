package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/smsmilter/smsmilter/internal/dnsresolver/dnstest"
	"github.com/smsmilter/smsmilter/internal/store"
	"github.com/smsmilter/smsmilter/internal/store/sqlite"
)

// env is one temporary installation: a config file in a temporary
// directory whose state_dir is there too, and an in-process DNS server that
// dns.resolver points at, so no test asks the system resolver anything.
type env struct {
	t        *testing.T
	dir      string
	cfgPath  string
	stateDir string
	dns      *dnstest.Server
}

// configYAML is the base config; extra is appended (top-level keys).
func newEnv(t *testing.T, extra string) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), dns: dnstest.NewServer(t)}
	e.stateDir = filepath.Join(e.dir, "state")
	e.cfgPath = filepath.Join(e.dir, "smsmilter.yaml")
	e.writeConfig(extra)
	return e
}

func (e *env) writeConfig(extra string) {
	e.t.Helper()
	cfg := fmt.Sprintf(`sms_domains: [sms.example.com]
state_dir: %s
http:
  listen: ""
dns:
  resolver: %s
  timeout: 2s
transports:
  outbox:
    plugin: outbox
    settings:
      path: %s
`, e.stateDir, e.dns.Addr, filepath.Join(e.dir, "outbox.jsonl"))
	if extra != "" {
		cfg += strings.TrimLeft(extra, "\n")
	}
	if err := os.WriteFile(e.cfgPath, []byte(cfg), 0o644); err != nil {
		e.t.Fatal(err)
	}
}

// result is what one CLI invocation produced.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\n--- stdout:\n%s--- stderr:\n%s", r.code, r.stdout, r.stderr)
}

// runCLI calls run with args as given (no --config added).
func runCLI(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	var in io.Reader = strings.NewReader(stdin)
	code := run(context.Background(), args, in, &out, &errb)
	return result{code, out.String(), errb.String()}
}

// run runs a command against e's config (--config first).
func (e *env) run(args ...string) result {
	e.t.Helper()
	return runCLI(e.t, "", append([]string{"--config", e.cfgPath}, args...)...)
}

// runIn is run with stdin.
func (e *env) runIn(stdin string, args ...string) result {
	e.t.Helper()
	return runCLI(e.t, stdin, append([]string{"--config", e.cfgPath}, args...)...)
}

// must runs a command that has to succeed.
func (e *env) must(args ...string) result {
	e.t.Helper()
	r := e.run(args...)
	if r.code != exitOK {
		e.t.Fatalf("smsmilter %s: %v", strings.Join(args, " "), r)
	}
	return r
}

// store opens the store the CLI writes, closed at the end of the test.
func (e *env) store() store.Store {
	e.t.Helper()
	st, err := sqlite.OpenDir(context.Background(), e.stateDir, slog.New(slog.DiscardHandler))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { st.Close() })
	return st
}

// rules lists the store's rules by "kind:pattern".
func (e *env) rules() map[string]store.Rule {
	e.t.Helper()
	st := e.store()
	rs, err := st.ListRules(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	m := map[string]store.Rule{}
	for _, r := range rs {
		m[r.Kind+":"+r.Pattern] = r
	}
	return m
}

// writeFile writes a file in e.dir and returns its path.
func (e *env) writeFile(name, content string) string {
	e.t.Helper()
	p := filepath.Join(e.dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		e.t.Fatal(err)
	}
	return p
}

// check compares a result with an expected exit code and substrings of
// its output (stdout and stderr together) and reports what differs.
func check(t *testing.T, what string, r result, code int, want ...string) {
	t.Helper()
	if r.code != code {
		t.Errorf("%s: exit %d, want %d\n%v", what, r.code, code, r)
		return
	}
	all := r.stdout + r.stderr
	for _, w := range want {
		if !strings.Contains(all, w) {
			t.Errorf("%s: output lacks %q\n%v", what, w, r)
		}
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
