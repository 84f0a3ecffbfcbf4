package outbox_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/smsmilter/smsmilter/internal/pluginhost"
	"github.com/smsmilter/smsmilter/internal/testutil"
	"github.com/smsmilter/smsmilter/plugins/sdk"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// TestThroughSmsmilterBinary runs the outbox the way the daemon does: the
// real smsmilter binary, re-executed as `smsmilter plugin outbox`, driven
// through pluginhost.
func TestThroughSmsmilterBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds cmd/smsmilter")
	}
	dir := t.TempDir()
	bin := testutil.Smsmilter(t)

	logs := &testutil.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	opts := func(plugin string, settings map[string]any) pluginhost.Options {
		return pluginhost.Options{
			Name: "try", Plugin: plugin, Self: bin, Settings: settings,
			Env: sdk.Env{StateDir: filepath.Join(dir, "state")}, Log: log,
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// The admin's mistakes, in words the admin can act on.
	if _, err := pluginhost.Start(ctx, opts("outbox", nil)); err == nil || !strings.Contains(err.Error(), "setting path is required") {
		t.Errorf("outbox without path: %v", err)
	}
	if _, err := pluginhost.Start(ctx, opts("nosuch", nil)); err == nil || !strings.Contains(err.Error(), `no built-in plugin "nosuch"`) {
		t.Errorf("unknown built-in: %v", err)
	}

	outPath, inbox := filepath.Join(dir, "outbox.jsonl"), filepath.Join(dir, "inbox.jsonl")
	p, err := pluginhost.Start(ctx, opts("outbox", map[string]any{"path": outPath, "inbox": inbox, "poll_interval": "20ms"}))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	parts, err := p.Send(ctx, sdk.Message{ID: "q1", To: "+447400123456", From: "ACME", Text: "Server down\n\"db1\"", Encoding: "gsm7", Parts: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(parts) != 1 || parts[0].Ref != "q1-0" {
		t.Errorf("parts %+v", parts)
	}
	data, err := os.ReadFile(outPath)
	if err != nil {
		t.Fatal(err)
	}
	var r map[string]any
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatalf("%v: %s", err, data)
	}
	if r["id"] != "q1" || r["to"] != "+447400123456" || r["from"] != "ACME" || r["text"] != "Server down\n\"db1\"" || r["encoding"] != "gsm7" || r["parts"] != 1.0 || r["transport"] != "try" {
		t.Errorf("outbox line %s", data)
	}
	if _, err := p.Send(ctx, sdk.Message{ID: "q2", To: "07400123456", Encoding: "gsm7"}); !sdk.IsPermanent(err) {
		t.Errorf("national number: %v, want a permanent error", err)
	}

	if err := os.WriteFile(inbox, []byte(`{"report":{"ref":"q1-0","state":"delivered"}}`+"\n"+`{"from":"+447400123456","text":"ack"}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"report q1-0", "incoming ack"} {
		select {
		case ev := <-p.Events():
			got := ""
			if ev.Report != nil {
				got = "report " + ev.Report.Ref
			} else if ev.Incoming != nil {
				got = "incoming " + ev.Incoming.Text
			}
			if got != want {
				t.Errorf("event %q, want %q", got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no event %q", want)
		}
	}

	if err := p.Health(ctx); err != nil {
		t.Errorf("Health: %v", err)
	}
	pid := pluginPID(t, bin)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if pid != 0 && !errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
		t.Errorf("plugin process %d still running after Close", pid)
	}
	if !strings.Contains(logs.String(), `msg="outbox configured"`) {
		t.Errorf("the plugin's log is not in the host's:\n%s", logs.String())
	}
}

// pluginPID finds the `smsmilter plugin outbox` process started from bin.
func pluginPID(t *testing.T, bin string) int {
	t.Helper()
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if strings.HasPrefix(string(cmdline), bin+"\x00plugin\x00outbox") {
			pid, _ := strconv.Atoi(e.Name())
			return pid
		}
	}
	t.Log("plugin process not found in /proc")
	return 0
}
