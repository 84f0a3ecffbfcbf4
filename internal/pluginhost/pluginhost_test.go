package pluginhost

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/smsmilter/smsmilter/plugins/sdk"
)

func gone(pid int) bool {
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

func TestStartFailures(t *testing.T) {
	for _, tc := range []struct {
		name, helper string
		tune         func(*Options)
		want         []string
	}{
		{"wrong cookie", "wrong-cookie", nil, []string{"failed the handshake", "magic cookie"}},
		{"wrong version", "wrong-version", nil, []string{"failed the handshake", "protocol 1", "Plugin version: 99"}},
		{"not a plugin", "not-a-plugin", nil, []string{"Unrecognized remote plugin message: hello, I am not a plugin"}},
		{"missing binary", "transport", func(o *Options) { o.Plugin = "/nonexistent/httpsms" }, []string{"/nonexistent/httpsms"}},
		{"relative path", "transport", func(o *Options) { o.Plugin = "bin/httpsms" }, []string{`plugin "bin/httpsms": want a built-in name`}},
		{"built-in without self", "transport", func(o *Options) { o.Self = "" }, []string{"needs the smsmilter binary"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := start(t, tc.helper, nil, tc.tune)
			if err == nil {
				t.Fatal("Start succeeded")
			}
			if !contains(err.Error(), tc.want...) {
				t.Errorf("error %q\nwant it to contain %q", err, tc.want)
			}
		})
	}
}

func TestConfigureError(t *testing.T) {
	for _, permanent := range []bool{false, true} {
		t.Run(fmt.Sprint("permanent=", permanent), func(t *testing.T) {
			const msg = "device /dev/ttyUSB3: no such file or directory"
			_, _, err := start(t, "transport", map[string]any{"fail_configure": msg, "permanent": permanent}, nil)
			if err == nil {
				t.Fatal("Start succeeded")
			}
			if want := "transport test: " + msg; err.Error() != want {
				t.Errorf("error %q, want %q", err, want)
			}
			if sdk.IsPermanent(err) != permanent {
				t.Errorf("IsPermanent = %v", !permanent)
			}
		})
	}
}

func TestSend(t *testing.T) {
	p, logs := mustStart(t, nil, nil)
	pid := p.testPID(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	parts, err := p.Send(ctx, sdk.Message{ID: "job1", To: "+447400123456", From: "ACME", Text: "hello", Encoding: "gsm7", Parts: 3})
	if err != nil {
		t.Fatal(err)
	}
	want := []sdk.PartResult{{Index: 0, Ref: "job1-0"}, {Index: 1, Ref: "job1-1"}, {Index: 2, Ref: "job1-2"}}
	if fmt.Sprint(parts) != fmt.Sprint(want) {
		t.Errorf("parts %v, want %v", parts, want)
	}

	for _, tc := range []struct {
		text      string
		permanent bool
		want      string
	}{
		{"permanent", true, "transport test: +447400123456: number not allowed"},
		{"temporary", false, "transport test: SMSC busy"},
		{"panic", false, "transport test: plugin panic in Send: driver bug"},
	} {
		_, err := p.Send(ctx, sdk.Message{ID: "j", To: "+447400123456", Text: tc.text, Parts: 1})
		if err == nil || err.Error() != tc.want || sdk.IsPermanent(err) != tc.permanent {
			t.Errorf("%s: error %v (permanent %v), want %q (permanent %v)", tc.text, err, sdk.IsPermanent(err), tc.want, tc.permanent)
		}
	}
	if p.testPID(t) != pid {
		t.Error("the plugin was restarted by a transport error or a recovered panic")
	}
	if err := p.Health(ctx); err != nil {
		t.Errorf("Health: %v", err)
	}
	// The plugin's own log line, through sdk.Logger and go-plugin, in ours
	// with its level and attributes.
	waitFor(t, "the plugin's log line", func() bool {
		return contains(logs.String(), "level=INFO", `msg="test transport configured"`, "transport=test", "name=test")
	})
}

func TestSendDeadline(t *testing.T) {
	p, _ := mustStart(t, nil, func(o *Options) { o.SendGrace = 2 * time.Second })
	pid := p.testPID(t)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := p.Send(ctx, sdk.Message{ID: "j", Text: "deadline", Parts: 1})
	if err == nil || sdk.IsPermanent(err) || !strings.Contains(err.Error(), "deadline exceeded") {
		t.Errorf("error %v, want a temporary deadline error", err)
	}
	if p.testPID(t) != pid {
		t.Error("a plugin that honoured its deadline was restarted")
	}
}

func TestEvents(t *testing.T) {
	p, _ := mustStart(t, map[string]any{"incoming": 3}, nil)
	for i := 0; i < 3; i++ {
		ev := next(t, p)
		in := ev.Incoming
		if in == nil || in.From != "+447400123456" || in.To != "ACME" || in.Text != fmt.Sprintf("reply %d", i) || !in.At.Equal(time.Unix(1700000000, 0)) {
			t.Errorf("event %d: %+v", i, in)
		}
	}
	if _, err := p.Send(context.Background(), sdk.Message{ID: "m", To: "+447400123456", Text: "x", Parts: 2}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		r := next(t, p).Report
		if r == nil || r.Ref != fmt.Sprintf("m-%d", i) || r.State != "delivered" {
			t.Errorf("report %d: %+v", i, r)
		}
	}
}

func next(t *testing.T, p *Plugin) sdk.Event {
	t.Helper()
	select {
	case ev, ok := <-p.Events():
		if !ok {
			t.Fatal("events channel closed")
		}
		return ev
	case <-time.After(20 * time.Second):
		t.Fatal("no event")
	}
	return sdk.Event{}
}

func TestCrashMidSend(t *testing.T) {
	p, _ := mustStart(t, map[string]any{"incoming": 1}, nil)
	next(t, p)
	pid := p.testPID(t)
	_, err := p.Send(context.Background(), sdk.Message{ID: "c", Text: "crash", Parts: 1})
	if err == nil || sdk.IsPermanent(err) {
		t.Fatalf("error %v, want a temporary one", err)
	}
	if _, err := p.Send(context.Background(), sdk.Message{ID: "after", Text: "x", Parts: 1}); err != nil {
		t.Fatalf("after the restart: %v", err)
	}
	if p.testPID(t) == pid {
		t.Error("same pid after a crash")
	}
	if !gone(pid) {
		t.Errorf("crashed process %d still there", pid)
	}
	// The same channel carries the new process's events.
	if ev := next(t, p); ev.Incoming == nil {
		t.Errorf("event %+v", ev)
	}
}

// TestKillDuringBurst kills the plugin twice while 16 senders push 300 SMS
// through it, retrying temporary errors as the dispatcher will: every SMS
// must get through, and only those in flight at a kill may go twice.
func TestKillDuringBurst(t *testing.T) {
	record := filepath.Join(t.TempDir(), "sent")
	p, _ := mustStart(t, map[string]any{"record": record, "delay": "2ms"}, nil)
	const total, workers, kills = 300, 16, 2

	var sent, retries atomic.Int64
	jobs := make(chan string)
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	pids := map[int]bool{}
	var pidsMu sync.Mutex
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range jobs {
				for attempt := 0; ; attempt++ {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					_, err := p.Send(ctx, sdk.Message{ID: id, To: "+447400123456", Text: "burst", Parts: 1})
					cancel()
					if err == nil {
						sent.Add(1)
						break
					}
					if sdk.IsPermanent(err) || attempt > 100 {
						errs <- fmt.Errorf("%s: %w", id, err)
						return
					}
					retries.Add(1)
					time.Sleep(10 * time.Millisecond)
				}
			}
		}()
	}
	go func() {
		for i := 0; i < total; i++ {
			jobs <- fmt.Sprintf("sms%03d", i)
		}
		close(jobs)
	}()
	for k := 1; k <= kills; k++ {
		waitFor(t, "sends before a kill", func() bool { return sent.Load() >= int64(k*total/(kills+1)) })
		pid := p.testPID(t)
		pidsMu.Lock()
		pids[pid] = true
		pidsMu.Unlock()
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	pids[p.testPID(t)] = true
	if len(pids) != kills+1 {
		t.Errorf("%d distinct plugin processes, want %d", len(pids), kills+1)
	}

	data, err := os.ReadFile(record)
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, id := range strings.Fields(string(data)) {
		count[id]++
	}
	dups := 0
	for i := 0; i < total; i++ {
		id := fmt.Sprintf("sms%03d", i)
		if count[id] == 0 {
			t.Errorf("%s never sent", id)
		}
		dups += max(count[id]-1, 0)
	}
	if dups > kills*workers {
		t.Errorf("%d SMS sent twice; at most %d were in flight at the kills", dups, kills*workers)
	}
	t.Logf("%d retries, %d duplicates after %d kills", retries.Load(), dups, kills)
	if retries.Load() == 0 {
		t.Error("no Send failed: the kills hit no SMS in flight")
	}

	p.Close()
	for pid := range pids {
		if !gone(pid) {
			t.Errorf("plugin process %d still running after Close", pid)
		}
	}
}

func TestHungSend(t *testing.T) {
	p, _ := mustStart(t, nil, func(o *Options) {
		o.HealthInterval = time.Hour // only the Send can tell
		o.SendGrace = 300 * time.Millisecond
	})
	pid := p.testPID(t)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	begin := time.Now()
	_, err := p.Send(ctx, sdk.Message{ID: "h", Text: "hang", Parts: 1})
	if err == nil || sdk.IsPermanent(err) || !strings.Contains(err.Error(), "plugin hung") {
		t.Fatalf("error %v, want a temporary 'plugin hung'", err)
	}
	if d := time.Since(begin); d > 3*time.Second {
		t.Errorf("a hung Send took %v", d)
	}
	if _, err := p.Send(context.Background(), sdk.Message{ID: "after", Text: "x", Parts: 1}); err != nil {
		t.Fatalf("after the restart: %v", err)
	}
	if p.testPID(t) == pid {
		t.Error("hung plugin not replaced")
	}
	waitFor(t, "the hung process to go", func() bool { return gone(pid) })
}

// TestStoppedPlugin freezes the plugin (SIGSTOP: nothing in it runs, not
// even go-plugin's shutdown handler); the health check must notice and
// replace it.
func TestStoppedPlugin(t *testing.T) {
	p, logs := mustStart(t, nil, func(o *Options) {
		o.HealthInterval = 100 * time.Millisecond
		o.HealthTimeout = 300 * time.Millisecond
	})
	pid := p.testPID(t)
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a new process", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.cur != nil && p.cur.pid() != pid
	})
	if _, err := p.Send(context.Background(), sdk.Message{ID: "after", Text: "x", Parts: 1}); err != nil {
		t.Fatalf("after the restart: %v", err)
	}
	waitFor(t, "the stopped process to go", func() bool { return gone(pid) })
	if !strings.Contains(logs.String(), "no health answer") {
		t.Error("the restart's reason is not logged")
	}
}

func TestClose(t *testing.T) {
	p, _ := mustStart(t, nil, nil)
	pid := p.testPID(t)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if !gone(pid) {
		t.Errorf("plugin process %d still running after Close", pid)
	}
	if _, err := p.Send(context.Background(), sdk.Message{ID: "x", Text: "x", Parts: 1}); !errors.Is(err, ErrClosed) {
		t.Errorf("Send after Close: %v", err)
	}
	if _, ok := <-p.Events(); ok {
		t.Error("events channel open after Close")
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
