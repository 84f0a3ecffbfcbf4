package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/smsmilter/smsmilter/internal/testutil"
)

// Smsmilter is the smsmilter daemon under test: the binary built from this
// checkout, its own state folder and config, listening on loopback ports
// that stay the same across restarts (the MTA is configured with them).
type Smsmilter struct {
	Bin        string
	Dir        string // holds the config, the log and the state folder
	ConfigPath string
	StateDir   string
	LogFile    string
	MilterPort int
	MilterAddr string // as Postfix's smtpd_milters writes it: inet:127.0.0.1:PORT
	HTTPAddr   string // /metrics, /healthz

	t      testing.TB
	mu     sync.Mutex
	proc   *proc
	groups []*proc // every serve started, to kill what is left at cleanup
}

// Config is smsmilter's YAML config as nested maps (DESIGN.md §9).
type Config map[string]any

// Set sets a dotted key ("sms.max_parts"), creating the maps on the way.
func (c Config) Set(key string, v any) Config {
	parts := strings.Split(key, ".")
	m := map[string]any(c)
	for _, p := range parts[:len(parts)-1] {
		next, ok := m[p].(map[string]any)
		if !ok {
			if cm, ok := m[p].(Config); ok {
				next = cm
			} else {
				next = map[string]any{}
				m[p] = next
			}
		}
		m = next
	}
	m[parts[len(parts)-1]] = v
	return c
}

// NewSmsmilter prepares a daemon: its folder and ports (MilterAddr is known
// from here on, to configure the MTA with). Configure writes its config;
// Start runs it.
func NewSmsmilter(t testing.TB) *Smsmilter {
	t.Helper()
	s := &Smsmilter{t: t, Bin: testutil.Smsmilter(t), Dir: testutil.OpenDir(t)}
	os.Chmod(s.Dir, 0o755)
	s.ConfigPath = filepath.Join(s.Dir, "smsmilter.yaml")
	s.StateDir = filepath.Join(s.Dir, "state")
	s.LogFile = filepath.Join(s.Dir, "smsmilter.log")
	s.MilterPort = testutil.FreePort(t)
	s.MilterAddr = "inet:127.0.0.1:" + strconv.Itoa(s.MilterPort)
	s.HTTPAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(testutil.FreePort(t)))
	t.Cleanup(func() {
		if t.Failed() || showLogs() {
			t.Logf("smsmilter log (%s), last lines:\n%s", s.LogFile, Tail(s.Log(), 80))
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, p := range s.groups {
			p.kill()
		}
	})
	return s
}

func (c Config) has(key string) bool {
	m := map[string]any(c)
	parts := strings.Split(key, ".")
	for i, p := range parts {
		v, ok := m[p]
		if !ok {
			return false
		}
		if i == len(parts)-1 {
			return true
		}
		switch n := v.(type) {
		case map[string]any:
			m = n
		case Config:
			m = n
		default:
			return false
		}
	}
	return false
}

// Configure writes cfg as the daemon's config with the harness's own
// keys set: milter.listen, http.listen and state_dir, and unless cfg has
// them a 2s milter.drain_timeout and sms_domains [sms.example.com].
func (s *Smsmilter) Configure(cfg Config) {
	s.t.Helper()
	if cfg == nil {
		cfg = Config{}
	}
	cfg.Set("milter.listen", s.MilterAddr)
	cfg.Set("http.listen", s.HTTPAddr)
	cfg.Set("state_dir", s.StateDir)
	if !cfg.has("milter.drain_timeout") {
		cfg.Set("milter.drain_timeout", "2s")
	}
	if !cfg.has("sms_domains") {
		cfg["sms_domains"] = []string{"sms.example.com"}
	}
	s.WriteConfig(cfg)
}

// WriteConfig replaces the config file (takes effect at the next start or
// SIGHUP).
func (s *Smsmilter) WriteConfig(cfg Config) {
	s.t.Helper()
	b, err := yaml.Marshal(map[string]any(cfg))
	if err != nil {
		s.t.Fatal(err)
	}
	if err := os.WriteFile(s.ConfigPath, b, 0o644); err != nil {
		s.t.Fatal(err)
	}
}

// Start runs `smsmilter serve` and waits until the milter accepts
// connections and /healthz answers 200.
func (s *Smsmilter) Start() {
	s.t.Helper()
	s.mu.Lock()
	if s.proc != nil && !s.proc.exited() {
		s.mu.Unlock()
		s.t.Fatal("smsmilter is already running")
	}
	logf, err := os.OpenFile(s.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		s.mu.Unlock()
		s.t.Fatal(err)
	}
	fmt.Fprintf(logf, "---- harness: smsmilter serve starting at %s\n", time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(s.Bin, "--config", s.ConfigPath, "serve")
	cmd.Dir = s.Dir
	cmd.Stdout, cmd.Stderr = logf, logf
	p, err := startProc(cmd)
	logf.Close()
	if err != nil {
		s.mu.Unlock()
		s.t.Fatalf("starting smsmilter: %v", err)
	}
	s.proc = p
	s.groups = append(s.groups, p)
	s.mu.Unlock()

	ok := waitListening(net.JoinHostPort("127.0.0.1", strconv.Itoa(s.MilterPort)), p, 20*time.Second)
	if ok {
		Eventually(s.t, 10*time.Second, "smsmilter /healthz 200", func() bool {
			code, _ := s.HTTPGet("/healthz")
			return code == 200 || p.exited()
		})
	}
	if !ok || p.exited() {
		s.t.Fatalf("smsmilter did not start:\n%s", Tail(s.Log(), 30))
	}
}

// Running reports whether the daemon is running.
func (s *Smsmilter) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc != nil && !s.proc.exited()
}

// Stop sends SIGTERM (drain, stop plugins, exit 0) and waits; a daemon
// that does not exit within 30s fails the test.
func (s *Smsmilter) Stop() {
	s.t.Helper()
	s.mu.Lock()
	p := s.proc
	s.mu.Unlock()
	if p == nil || p.exited() {
		return
	}
	p.signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.kill()
		s.t.Fatalf("smsmilter did not exit within 30s of SIGTERM:\n%s", Tail(s.Log(), 30))
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		s.t.Errorf("smsmilter exited %d after SIGTERM, want 0", code)
	}
	// Its plugins die with it (Pdeathsig); make sure of it.
	p.kill()
}

// Kill kills the daemon and its plugins at once with SIGKILL, as a crash
// (or the OOM killer, or systemd's kill of the whole unit) would.
func (s *Smsmilter) Kill() {
	s.mu.Lock()
	p := s.proc
	s.mu.Unlock()
	if p != nil {
		p.kill()
	}
}

// Signal sends sig to the daemon (SIGHUP reloads).
func (s *Smsmilter) Signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		s.proc.signal(sig)
	}
}

// Log is everything the daemon logged, over every start.
func (s *Smsmilter) Log() string {
	b, _ := os.ReadFile(s.LogFile)
	return string(b)
}

// WaitLog waits until the log contains sub.
func (s *Smsmilter) WaitLog(sub string, timeout time.Duration) {
	s.t.Helper()
	Eventually(s.t, timeout, fmt.Sprintf("smsmilter to log %q", sub), func() bool { return strings.Contains(s.Log(), sub) })
}

// CLI runs `smsmilter --config FILE ARGS...` with stdin, returning its
// combined output and exit code.
func (s *Smsmilter) CLI(stdin string, args ...string) (string, int) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.Bin, append([]string{"--config", s.ConfigPath}, args...)...)
	cmd.Dir = s.Dir
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return string(out), ee.ExitCode()
		}
		s.t.Fatalf("smsmilter %s: %v", strings.Join(args, " "), err)
	}
	return string(out), 0
}

// MustCLI runs a CLI command that must exit 0 and returns its output.
func (s *Smsmilter) MustCLI(args ...string) string {
	s.t.Helper()
	out, code := s.CLI("", args...)
	if code != 0 {
		s.t.Fatalf("smsmilter %s: exit %d\n%s", strings.Join(args, " "), code, out)
	}
	return out
}

// HTTPGet fetches a path of http.listen; code 0 when it cannot connect.
func (s *Smsmilter) HTTPGet(path string) (int, string) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + s.HTTPAddr + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// Metric returns the sum of the samples of a Prometheus metric whose
// line starts with prefix (name, optionally with labels), -1 if none.
func (s *Smsmilter) Metric(prefix string) float64 {
	s.t.Helper()
	code, body := s.HTTPGet("/metrics")
	if code != 200 {
		s.t.Fatalf("/metrics: %d %s", code, body)
	}
	return sumMetric(body, prefix)
}

func sumMetric(body, prefix string) float64 {
	sum, found := 0.0, false
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		// A bare name must not match a longer one (foo vs foo_bucket).
		if rest := line[len(prefix):]; !strings.Contains(prefix, "{") && rest != "" && rest[0] != ' ' && rest[0] != '{' {
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			sum, found = sum+v, true
		}
	}
	if !found {
		return -1
	}
	return sum
}

// Job is one SMS job as `smsmilter queue --json` prints it.
type Job struct {
	ID        int64  `json:"id"`
	State     string `json:"state"`
	To        string `json:"to"`
	From      string `json:"from"`
	User      string `json:"user"`
	Sender    string `json:"sender"`
	MessageID string `json:"message_id"`
	QueueID   string `json:"queue_id"`
	Text      string `json:"text"`
	Encoding  string `json:"encoding"`
	Parts     int    `json:"parts"`
	Attempts  int    `json:"attempts"`
	Transport string `json:"transport"`
	LastError string `json:"last_error"`
}

// Queue lists every SMS job (smsmilter queue --json --limit 0).
func (s *Smsmilter) Queue() []Job {
	s.t.Helper()
	return cliJSON[Job](s, "queue", "--json", "--limit", "0")
}

// Event is one entry of `smsmilter log --json`.
type Event struct {
	Kind    string            `json:"kind"`
	Message string            `json:"message"`
	Fields  map[string]string `json:"fields"`
}

// Events lists the event log (smsmilter log --json --limit 0).
func (s *Smsmilter) Events() []Event {
	s.t.Helper()
	return cliJSON[Event](s, "log", "--json", "--limit", "0")
}

// cliJSON runs a CLI command that prints one JSON value of type T after
// another and returns them.
func cliJSON[T any](s *Smsmilter, args ...string) []T {
	s.t.Helper()
	out := s.MustCLI(args...)
	var vs []T
	dec := json.NewDecoder(strings.NewReader(out))
	for dec.More() {
		var v T
		if err := dec.Decode(&v); err != nil {
			s.t.Fatalf("smsmilter %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		vs = append(vs, v)
	}
	return vs
}
