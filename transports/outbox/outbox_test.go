package outbox

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smsmilter/smsmilter/plugins/sdk"
)

func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func configured(t *testing.T, settings map[string]any, env sdk.Env) *Outbox {
	t.Helper()
	o := New(testLog(t)).(*Outbox)
	o.now = func() time.Time { return time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC) }
	if err := o.Configure(context.Background(), env, settings); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	return o
}

func readLines(t *testing.T, path string) [][]byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) > 0 && data[len(data)-1] != '\n' {
		t.Errorf("outbox does not end with a newline")
	}
	return bytes.SplitAfter(bytes.TrimSuffix(data, []byte("\n")), []byte("\n"))
}

func TestConfigure(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name     string
		settings map[string]any
		want     string // "" = ok
	}{
		{"ok", map[string]any{"path": filepath.Join(dir, "out.jsonl")}, ""},
		{"creates the directory", map[string]any{"path": filepath.Join(dir, "sub", "out.jsonl"), "inbox": filepath.Join(dir, "in.jsonl"), "poll_interval": "50ms"}, ""},
		{"no path", map[string]any{}, "setting path is required"},
		{"path not a string", map[string]any{"path": 3.0}, "setting path: want a string"},
		{"unknown key", map[string]any{"path": filepath.Join(dir, "o"), "inobx": "x"}, "unknown settings inobx"},
		{"bad poll", map[string]any{"path": filepath.Join(dir, "o"), "poll_interval": "soon"}, `poll_interval: "soon"`},
		{"unwritable", map[string]any{"path": "/proc/outbox.jsonl"}, "outbox: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := New(testLog(t)).Configure(context.Background(), sdk.Env{Name: "o"}, tc.settings)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("error %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
}

func TestSendContract(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.jsonl")
	o := configured(t, map[string]any{"path": path}, sdk.Env{Name: "try"})
	texts := []struct{ name, text, want string }{
		{"plain", "Meeting at 10", "Meeting at 10"},
		{"quotes and backslash", `say "hi" \ bye`, `say "hi" \ bye`},
		{"newlines and tabs", "line1\nline2\r\n\tindented", "line1\nline2\r\n\tindented"},
		{"NUL and ESC", "a\x00b\x1b[31mred", "a\x00b\x1b[31mred"},
		{"DEL and C1", "a\x7fb\u0085c\u009bd", "a\x7fb\u0085c\u009bd"},
		{"line separators", "a\u2028b\u2029c", "a\u2028b\u2029c"},
		{"html", "<b>&amp;</b>", "<b>&amp;</b>"},
		{"emoji", "ok 👍🏽 日本", "ok 👍🏽 日本"},
		{"invalid UTF-8", "bad \xff\xfe end", "bad \ufffd\ufffd end"},
	}
	for i, tc := range texts {
		enc := "gsm7"
		if i%2 == 1 {
			enc = "ucs2"
		}
		parts, err := o.Send(context.Background(), sdk.Message{ID: fmt.Sprint("job", i), To: "+447400123456", From: "ACME", Text: tc.text, Encoding: enc, Parts: 2})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		want := []sdk.PartResult{{Index: 0, Ref: fmt.Sprintf("job%d-0", i)}, {Index: 1, Ref: fmt.Sprintf("job%d-1", i)}}
		if fmt.Sprint(parts) != fmt.Sprint(want) {
			t.Errorf("%s: parts %v, want %v", tc.name, parts, want)
		}
	}

	lines := readLines(t, path)
	if len(lines) != len(texts) {
		t.Fatalf("%d lines, want %d", len(lines), len(texts))
	}
	for i, line := range lines {
		tc := texts[i]
		body := bytes.TrimSuffix(line, []byte("\n"))
		for _, b := range body {
			if b < 0x20 || b == 0x7f {
				t.Errorf("%s: raw control byte %#x in %s", tc.name, b, body)
			}
		}
		if bytes.Contains(body, []byte("\xc2\x85")) || bytes.Contains(body, []byte("\xc2\x9b")) {
			t.Errorf("%s: raw C1 control in %s", tc.name, body)
		}
		var r map[string]any
		if err := json.Unmarshal(body, &r); err != nil {
			t.Fatalf("%s: %v in %s", tc.name, err, body)
		}
		wantEnc := "gsm7"
		if i%2 == 1 {
			wantEnc = "ucs2"
		}
		want := map[string]any{
			"id": fmt.Sprint("job", i), "to": "+447400123456", "from": "ACME", "text": tc.want,
			"encoding": wantEnc, "parts": 2.0, "transport": "try", "time": "2026-03-01T12:00:00Z",
		}
		for k, v := range want {
			if r[k] != v {
				t.Errorf("%s: %s = %#v, want %#v", tc.name, k, r[k], v)
			}
		}
		if fmt.Sprint(r["refs"]) != fmt.Sprintf("[job%d-0 job%d-1]", i, i) {
			t.Errorf("%s: refs %v", tc.name, r["refs"])
		}
	}
}

func TestSendRefusals(t *testing.T) {
	o := configured(t, map[string]any{"path": filepath.Join(t.TempDir(), "o")}, sdk.Env{})
	for _, tc := range []struct {
		name string
		m    sdk.Message
		want string
	}{
		{"national number", sdk.Message{To: "07400123456", Encoding: "gsm7"}, "not an E.164 number"},
		{"letters", sdk.Message{To: "+44abc", Encoding: "gsm7"}, "not an E.164 number"},
		{"encoding", sdk.Message{To: "+447400123456", Encoding: "latin1"}, "encoding"},
	} {
		_, err := o.Send(context.Background(), tc.m)
		if err == nil || !sdk.IsPermanent(err) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want a permanent one with %q", tc.name, err, tc.want)
		}
	}
	if _, err := New(testLog(t)).Send(context.Background(), sdk.Message{To: "+447400123456", Encoding: "gsm7"}); err == nil || sdk.IsPermanent(err) {
		t.Errorf("unconfigured: error %v, want a temporary one", err)
	}
}

func TestConcurrentSends(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.jsonl")
	o := configured(t, map[string]any{"path": path}, sdk.Env{Name: "c"})
	const goroutines, each = 16, 25
	long := strings.Repeat("x", 5000) // larger than a pipe buffer, still one write
	var wg sync.WaitGroup
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if _, err := o.Send(context.Background(), sdk.Message{ID: fmt.Sprintf("g%d-%d", g, i), To: "+447400123456", Text: long, Encoding: "gsm7", Parts: 1}); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	seen := map[string]bool{}
	for _, line := range readLines(t, path) {
		var r record
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatalf("interleaved or broken line: %v", err)
		}
		if r.Text != long || seen[r.ID] {
			t.Errorf("line %s: bad text or repeated", r.ID)
		}
		seen[r.ID] = true
	}
	if len(seen) != goroutines*each {
		t.Errorf("%d SMS in the outbox, want %d", len(seen), goroutines*each)
	}
}

// TestInbox feeds the inbox and checks the events, that a restarted plugin
// (a new Outbox on the same state directory) does not replay lines, and
// that a truncated inbox is read from its start.
func TestInbox(t *testing.T) {
	dir := t.TempDir()
	inbox := filepath.Join(dir, "inbox.jsonl")
	state := filepath.Join(dir, "state")
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	settings := map[string]any{"path": filepath.Join(dir, "out.jsonl"), "inbox": inbox, "poll_interval": "10ms"}
	env := sdk.Env{Name: "o", StateDir: state, DefaultRegion: "JP"}

	appendInbox := func(lines ...string) {
		f, err := os.OpenFile(inbox, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for _, l := range lines {
			if _, err := f.WriteString(l); err != nil {
				t.Fatal(err)
			}
		}
	}
	run := func() (chan sdk.Event, func()) {
		o := configured(t, settings, env)
		ctx, cancel := context.WithCancel(context.Background())
		out := make(chan sdk.Event)
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := o.Events(ctx, out); err != nil {
				t.Error(err)
			}
		}()
		return out, func() { cancel(); <-done }
	}
	next := func(out chan sdk.Event) sdk.Event {
		t.Helper()
		select {
		case ev := <-out:
			return ev
		case <-time.After(10 * time.Second):
			t.Fatal("no event")
		}
		return sdk.Event{}
	}
	none := func(out chan sdk.Event) {
		t.Helper()
		select {
		case ev := <-out:
			t.Fatalf("unexpected event %+v %+v", ev.Incoming, ev.Report)
		case <-time.After(100 * time.Millisecond):
		}
	}

	out, stop := run()
	appendInbox(
		`{"from":"+447400123456","to":"ACME","text":"yes \"please\"\n","time":"2026-03-01T12:00:00Z"}`+"\n",
		"not json\n",
		"\n",
		`{"from":"09012345678","text":"national, read in JP"}`+"\n",
		`{"report":{"ref":"job1-0","state":"delivered"}}`+"\n",
		`{"report":{"ref":17,"state":"FAILED","error":"absent subscriber"}}`+"\n",
		`{"from":"+447400123456","text":"half a li`, // no newline yet
	)
	ev := next(out)
	if in := ev.Incoming; in == nil || in.From != "+447400123456" || in.To != "ACME" || in.Text != "yes \"please\"\n" || !in.At.Equal(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)) {
		t.Errorf("first event %+v", ev.Incoming)
	}
	if in := next(out).Incoming; in == nil || in.From != "+819012345678" {
		t.Errorf("national number: %+v", in)
	}
	if r := next(out).Report; r == nil || r.Ref != "job1-0" || r.State != "delivered" {
		t.Errorf("report %+v", r)
	}
	if r := next(out).Report; r == nil || r.Ref != "17" || r.State != "failed" || r.Error != "absent subscriber" {
		t.Errorf("numeric ref report %+v", r)
	}
	none(out) // the unfinished line waits
	appendInbox("ne\"}\n")
	if in := next(out).Incoming; in == nil || in.Text != "half a line" {
		t.Errorf("completed line: %+v", in)
	}
	stop()

	// A restart: nothing is replayed; new lines arrive.
	out, stop = run()
	none(out)
	appendInbox(`{"from":"+447400123456","text":"after restart"}` + "\n")
	if in := next(out).Incoming; in == nil || in.Text != "after restart" {
		t.Errorf("after restart: %+v", in)
	}
	stop()

	// The inbox is truncated and rewritten while the plugin is down.
	if err := os.WriteFile(inbox, []byte(`{"from":"+447400123456","text":"new file"}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, stop = run()
	if in := next(out).Incoming; in == nil || in.Text != "new file" {
		t.Errorf("truncated inbox: %+v", in)
	}
	none(out)
	stop()
}

func TestNoInbox(t *testing.T) {
	o := configured(t, map[string]any{"path": filepath.Join(t.TempDir(), "o")}, sdk.Env{})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := o.Events(ctx, make(chan sdk.Event)); err != nil {
		t.Errorf("Events without an inbox: %v", err)
	}
	if err := o.Health(ctx); err != nil {
		t.Errorf("Health: %v", err)
	}
}
