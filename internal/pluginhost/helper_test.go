package pluginhost

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	plugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/smsmilter/smsmilter/internal/testutil"
	"github.com/smsmilter/smsmilter/plugins/sdk"
)

// The tests use go-plugin's helper-process pattern: the test binary is the
// plugin. helperEnv tells a re-executed test binary which plugin to be.
const helperEnv = "PLUGINHOST_TEST_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "transport":
		sdk.Serve(newTestTransport(sdk.Logger()))
	case "wrong-cookie":
		// A go-plugin plugin of some other program.
		plugin.Serve(&plugin.ServeConfig{
			HandshakeConfig: plugin.HandshakeConfig{ProtocolVersion: 1, MagicCookieKey: "OTHER_PROGRAM_PLUGIN", MagicCookieValue: "x"},
			Plugins:         plugin.PluginSet{sdk.PluginName: dummyPlugin{}},
			GRPCServer:      plugin.DefaultGRPCServer,
		})
	case "wrong-version":
		// An smsmilter plugin built against a future protocol.
		plugin.Serve(&plugin.ServeConfig{
			HandshakeConfig: plugin.HandshakeConfig{ProtocolVersion: sdk.ProtocolVersion + 98, MagicCookieKey: sdk.MagicCookieKey, MagicCookieValue: sdk.MagicCookieValue},
			Plugins:         plugin.PluginSet{sdk.PluginName: dummyPlugin{}},
			GRPCServer:      plugin.DefaultGRPCServer,
		})
	case "not-a-plugin":
		fmt.Println("hello, I am not a plugin")
		fmt.Fprintln(os.Stderr, "usage: frobnicate FILE")
		os.Exit(2)
	}
	os.Exit(0)
}

type dummyPlugin struct{ plugin.NetRPCUnsupportedPlugin }

func (dummyPlugin) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error { return nil }
func (dummyPlugin) GRPCClient(context.Context, *plugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, errors.New("unused")
}

// testTransport is the plugin the tests drive. Settings: "fail_configure"
// (error text), "record" (a file each sent ID is appended to), "delay" (per
// Send), "incoming" (number of SMS to announce at start). The text of a
// message picks a behaviour: "crash", "hang", "permanent", "temporary",
// "panic"; anything else is sent.
type testTransport struct {
	log     *slog.Logger
	record  string
	delay   time.Duration
	inbound int
	mu      sync.Mutex // serialises writes to record
	reports chan sdk.Event
}

func newTestTransport(log *slog.Logger) *testTransport {
	return &testTransport{log: log, reports: make(chan sdk.Event, 10000)}
}

func (t *testTransport) Configure(_ context.Context, env sdk.Env, s map[string]any) error {
	if msg, ok := s["fail_configure"].(string); ok {
		if s["permanent"] == true {
			return sdk.Permanent(errors.New(msg))
		}
		return errors.New(msg)
	}
	t.record, _ = s["record"].(string)
	if d, ok := s["delay"].(string); ok {
		var err error
		if t.delay, err = time.ParseDuration(d); err != nil {
			return fmt.Errorf("delay: %w", err)
		}
	}
	if n, ok := s["incoming"].(float64); ok {
		t.inbound = int(n)
	}
	t.log.Info("test transport configured", "name", env.Name, "pid", os.Getpid())
	return nil
}

func (t *testTransport) Send(ctx context.Context, m sdk.Message) ([]sdk.PartResult, error) {
	switch m.Text {
	case "crash":
		os.Exit(3)
	case "hang":
		select {} // ignores ctx: a driver stuck in a syscall
	case "permanent":
		return nil, sdk.Permanent(fmt.Errorf("%s: number not allowed", m.To))
	case "temporary":
		return nil, errors.New("SMSC busy")
	case "panic":
		panic("driver bug")
	case "deadline":
		<-ctx.Done()
		return nil, ctx.Err()
	}
	select {
	case <-time.After(t.delay):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if t.record != "" {
		t.mu.Lock()
		f, err := os.OpenFile(t.record, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err == nil {
			_, err = fmt.Fprintf(f, "%s\n", m.ID)
			f.Close()
		}
		t.mu.Unlock()
		if err != nil {
			return nil, err
		}
	}
	parts := make([]sdk.PartResult, m.Parts)
	for i := range parts {
		parts[i] = sdk.PartResult{Index: i, Ref: fmt.Sprintf("%s-%d", m.ID, i)}
		select {
		case t.reports <- sdk.Event{Report: &sdk.Report{Ref: parts[i].Ref, State: "delivered", At: time.Unix(1700000000, 0)}}:
		default:
		}
	}
	return parts, nil
}

func (t *testTransport) Events(ctx context.Context, out chan<- sdk.Event) error {
	for i := 0; i < t.inbound; i++ {
		ev := sdk.Event{Incoming: &sdk.Incoming{From: "+447400123456", To: "ACME", Text: fmt.Sprintf("reply %d", i), At: time.Unix(1700000000, 0)}}
		select {
		case out <- ev:
		case <-ctx.Done():
			return nil
		}
	}
	for {
		select {
		case ev := <-t.reports:
			select {
			case out <- ev:
			case <-ctx.Done():
				return nil
			}
		case <-ctx.Done():
			return nil
		}
	}
}

func (t *testTransport) Health(context.Context) error { return nil }
func (t *testTransport) Close() error                 { return nil }

// start runs the test binary as plugin helper with settings; the Plugin is
// closed when the test ends. The host's log is returned.
func start(t *testing.T, helper string, settings map[string]any, tune func(*Options)) (*Plugin, *testutil.Buffer, error) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	logs := &testutil.Buffer{}
	o := Options{
		Name:     "test",
		Plugin:   "test",
		Self:     self,
		SelfArgs: []string{"-test.run=^$"},
		// A -race binary sleeps 1s at exit unless told not to.
		ExtraEnv:   []string{helperEnv + "=" + helper, "GORACE=" + os.Getenv("GORACE") + " atexit_sleep_ms=0"},
		Settings:   settings,
		Env:        sdk.Env{StateDir: t.TempDir()},
		Log:        slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})).With("transport", "test"),
		MinBackoff: 20 * time.Millisecond,
		MaxBackoff: 200 * time.Millisecond,
	}
	if tune != nil {
		tune(&o)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := Start(ctx, o)
	if err == nil {
		t.Cleanup(func() {
			p.Close()
			if t.Failed() {
				t.Logf("host log:\n%s", logs)
			}
		})
	}
	return p, logs, err
}

func mustStart(t *testing.T, settings map[string]any, tune func(*Options)) (*Plugin, *testutil.Buffer) {
	t.Helper()
	p, logs, err := start(t, "transport", settings, tune)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	return p, logs
}

// pid returns the current process's pid, waiting for a restart to end.
func (p *Plugin) testPID(t *testing.T) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	inst, err := p.current(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return inst.pid()
}

// waitFor polls cond until it holds or the test's patience ends.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func contains(s string, subs ...string) bool {
	for _, x := range subs {
		if !strings.Contains(s, x) {
			return false
		}
	}
	return true
}
