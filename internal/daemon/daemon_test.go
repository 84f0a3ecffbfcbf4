package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/smsmilter/smsmilter/internal/config"
	"github.com/smsmilter/smsmilter/internal/store"
	"github.com/smsmilter/smsmilter/internal/store/sqlite"
	"github.com/smsmilter/smsmilter/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

type running struct {
	d      *Daemon
	cancel context.CancelFunc
	done   chan int
	log    *testutil.Buffer
	dir    string
	cfg    string
}

const baseConfig = `milter:
  listen: inet:127.0.0.1:0
  drain_timeout: %s
http:
  listen: 127.0.0.1:0
sms_domains: [sms.example.com]
state_dir: %s
transports:
  out:
    plugin: outbox
    settings:
      path: %s
mail:
  smtp: 127.0.0.1:9
  from: smsmilter@example.com
`

func start(t *testing.T, stateDir string, drain string) *running {
	t.Helper()
	self := testutil.Smsmilter(t) // the daemon re-executes it for its built-in plugins
	dir := t.TempDir()
	if stateDir == "" {
		stateDir = filepath.Join(dir, "state")
	}
	cfgPath := filepath.Join(dir, "smsmilter.yaml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf(baseConfig, drain, stateDir, filepath.Join(dir, "outbox.jsonl"))), 0o644)
	r := &running{done: make(chan int, 1), log: &testutil.Buffer{}, dir: dir, cfg: cfgPath}
	ready := make(chan *Daemon, 1)
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() {
		r.done <- Run(ctx, Options{ConfigPath: cfgPath, Self: self, Stderr: r.log, Ready: func(d *Daemon) { ready <- d }})
	}()
	select {
	case r.d = <-ready:
	case code := <-r.done:
		t.Fatalf("daemon exited %d:\n%s", code, r.log.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("daemon did not start:\n%s", r.log.String())
	}
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(60 * time.Second):
			t.Errorf("daemon did not stop")
		}
		if t.Failed() {
			t.Logf("daemon log:\n%s", r.log.String())
		}
	})
	return r
}

func (r *running) stop(t *testing.T) int {
	t.Helper()
	r.cancel()
	select {
	case code := <-r.done:
		r.done <- code
		return code
	case <-time.After(60 * time.Second):
		t.Fatal("daemon did not stop")
	}
	return -1
}

func (r *running) healthz(t *testing.T) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + r.d.HTTPAddr().String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestHealthzAndMetrics(t *testing.T) {
	r := start(t, "", "5s")
	code, body := r.healthz(t)
	if code != 200 || !strings.Contains(body, "store: ok") || !strings.Contains(body, "milter: ok") {
		t.Fatalf("healthz %d %q", code, body)
	}
	resp, err := http.Get("http://" + r.d.HTTPAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, name := range []string{"smsmilter_messages_total", "smsmilter_eom_seconds", `smsmilter_queue_jobs{state="queued"}`} {
		if !strings.Contains(string(b), name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
}

// A bad config sent with SIGHUP is logged (daemon log and event log) and
// the old one keeps running.
func TestReloadKeepsOldConfigOnError(t *testing.T) {
	r := start(t, "", "5s")
	good, _ := os.ReadFile(r.cfg)
	os.WriteFile(r.cfg, []byte("milter:\n  listn: x\n"), 0o644)
	if err := r.d.Reload(); err == nil {
		t.Fatal("bad config accepted")
	}
	if got := r.d.Config().SMSDomains; len(got) != 1 || got[0] != "sms.example.com" {
		t.Fatalf("config in force changed: %v", got)
	}
	if !strings.Contains(r.log.String(), "config reload failed") || !strings.Contains(r.log.String(), `unknown key \"listn\"`) && !strings.Contains(r.log.String(), `unknown key "listn"`) {
		t.Errorf("daemon log does not say why:\n%s", r.log.String())
	}
	// A good config with a changed listen address reloads and says the
	// change needs a restart.
	changed := strings.Replace(string(good), "sms_domains: [sms.example.com]", "sms_domains: [sms.example.com, sms2.example.com]", 1)
	changed = strings.Replace(changed, "listen: inet:127.0.0.1:0", "listen: inet:127.0.0.1:1", 1)
	os.WriteFile(r.cfg, []byte(changed), 0o644)
	if err := r.d.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := r.d.Config().SMSDomains; len(got) != 2 {
		t.Fatalf("reload did not take effect: %v", got)
	}
	code := r.stop(t)
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	st, err := sqlite.OpenDir(context.Background(), r.d.Config().StateDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	evs, _ := st.ListEvents(context.Background(), store.EventConfig, time.Time{}, 0)
	var msgs []string
	for _, e := range evs {
		msgs = append(msgs, e.Message)
	}
	all := strings.Join(msgs, "\n")
	if !strings.Contains(all, "config reload failed; the old config keeps running") || !strings.Contains(all, "need a restart to take effect: milter.listen") {
		t.Errorf("event log:\n%s", all)
	}
}

// SIGTERM (ctx end) lets a session in progress finish within
// milter.drain_timeout, refuses new connections, and exits 0.
func TestDrainLetsOpenSessionFinish(t *testing.T) {
	r := start(t, "", "10s")
	addr := r.d.MilterAddr().String()
	s, err := gomilter.NewClientWithOptions("tcp", addr, gomilter.ClientOptions{
		Dialer: &net.Dialer{Timeout: 5 * time.Second}, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second,
		ActionMask: gomilter.OptAddHeader | gomilter.OptRemoveRcpt,
	}).Session()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Conn("client.test", gomilter.FamilyInet, 25, "192.0.2.1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Mail("alice@example.com", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Rcpt("bob@example.org", nil); err != nil {
		t.Fatal(err)
	}
	r.cancel() // SIGTERM
	time.Sleep(300 * time.Millisecond)
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Error("new connections are still accepted while draining")
	}
	// The open session still gets its answers.
	act, err := s.HeaderField("Subject", "hi")
	if err != nil || act.Code != gomilter.ActAccept && act.Code != gomilter.ActContinue {
		t.Fatalf("session cut off while draining: %v %+v", err, act)
	}
	s.Close()
	select {
	case code := <-r.done:
		r.done <- code
		if code != 0 {
			t.Fatalf("exit %d", code)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("did not exit after the last session closed")
	}
}

func TestBadConfigExits2(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "bad.yaml")
	os.WriteFile(p, []byte("sms_domains: []\nbogus: 1\n"), 0o644)
	var log testutil.Buffer
	code := Run(context.Background(), Options{ConfigPath: p, Self: "/bin/false", Stderr: &log})
	if code != 2 || !strings.Contains(log.String(), "bad.yaml:2:") {
		t.Fatalf("exit %d, output %q", code, log.String())
	}
}

// /healthz answers 503 naming the store while it cannot be written (disk
// full), and 200 again once it can.
func TestHealthzStoreFailure(t *testing.T) {
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", mnt).CombinedOutput(); err != nil {
		// Some sandboxes refuse mount even to root; the store's own
		// fault tests cover the failure there.
		t.Skipf("cannot mount a tmpfs here: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", mnt).Run() })
	r := start(t, filepath.Join(mnt, "state"), "2s")
	if code, body := r.healthz(t); code != 200 {
		t.Fatalf("healthz before: %d %s", code, body)
	}
	filler := filepath.Join(mnt, "filler")
	exec.Command("dd", "if=/dev/zero", "of="+filler, "bs=1M", "count=16").Run()
	code, body := r.healthz(t)
	if code != 503 || !strings.Contains(body, "store: unavailable") {
		t.Fatalf("healthz with the disk full: %d %q", code, body)
	}
	os.Remove(filler)
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body = r.healthz(t)
		if code == 200 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if code != 200 {
		t.Fatalf("healthz after space came back: %d %q", code, body)
	}
	r.stop(t)
}

func TestLogIsJSONWhenAsked(t *testing.T) {
	var b bytes.Buffer
	log := newLogger(&b, config.Log{Format: "json", Level: "info"})
	log.Info("hello", "k", "v")
	var m map[string]any
	if err := json.Unmarshal(b.Bytes(), &m); err != nil || m["msg"] != "hello" {
		t.Fatalf("%q: %v", b.String(), err)
	}
}

// An SMS a crashed daemon had in hand goes out as soon as the next one
// starts, not when its lease would have run out.
func TestResumesJobsInFlightAtACrash(t *testing.T) {
	stateDir := filepath.Join(t.TempDir(), "state")
	st, err := sqlite.OpenDir(context.Background(), stateDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := st.Enqueue(ctx, []store.Job{{DedupeKey: "m|+447400123456", User: "ops", SenderID: "ACME", To: "+447400123456", Text: "in flight", Encoding: "gsm7", Parts: 1}}, 0); err != nil {
		t.Fatal(err)
	}
	if got, err := st.Claim(ctx, time.Now(), 10, time.Hour); err != nil || len(got) != 1 {
		t.Fatalf("claim: %v %v", got, err)
	}
	st.Close() // the dispatcher holding it dies here
	r := start(t, stateDir, "2s")
	outbox := filepath.Join(r.dir, "outbox.jsonl")
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, _ := os.ReadFile(outbox)
		if strings.Contains(string(b), "in flight") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the SMS in flight at the crash was not sent after the restart; outbox %q", b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// The real signals, through the real binary: SIGHUP with a bad config is
// logged and the daemon keeps serving; SIGTERM exits 0.
func TestSignalsThroughTheBinary(t *testing.T) {
	bin := testutil.Smsmilter(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "smsmilter.yaml")
	port := testutil.FreePort(t)
	good := fmt.Sprintf(baseConfig, "2s", filepath.Join(dir, "state"), filepath.Join(dir, "outbox.jsonl"))
	good = strings.Replace(good, "listen: 127.0.0.1:0", fmt.Sprintf("listen: 127.0.0.1:%d", port), 1)
	os.WriteFile(cfg, []byte(good), 0o644)
	var log testutil.Buffer
	cmd := exec.Command(bin, "serve", "--config", cfg)
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	healthz := func() int {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", port))
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("%s; log:\n%s", what, log.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitFor("not serving", func() bool { return healthz() == 200 })
	os.WriteFile(cfg, []byte("transports: {x: {plugin: nope}}\n"), 0o644)
	cmd.Process.Signal(syscall.SIGHUP)
	waitFor("bad reload not logged", func() bool { return strings.Contains(log.String(), "config reload failed") })
	if healthz() != 200 {
		t.Fatalf("not serving after a bad reload")
	}
	os.WriteFile(filepath.Join(dir, "good.yaml"), []byte(good), 0o644)
	out, err := exec.Command(bin, "log", "--kind", "config", "--config", filepath.Join(dir, "good.yaml")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "config reload failed; the old config keeps running") {
		t.Errorf("smsmilter log --kind config: %v\n%s", err, out)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v; log:\n%s", err, log.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("no exit after SIGTERM; log:\n%s", log.String())
	}
}
