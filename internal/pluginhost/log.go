package pluginhost

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"

	hclog "github.com/hashicorp/go-hclog"
)

// newHCLogger returns an hclog.Logger for go-plugin that ends up in log.
// go-plugin logs its own events through it and re-logs each line the
// plugin writes to stderr (parsing the plugin's JSON lines into level,
// message and attributes); hclog's JSON output is parsed back here, which
// is simpler and sturdier than implementing hclog's wide interface.
func newHCLogger(log *slog.Logger) hclog.Logger {
	level := hclog.Info
	if log.Enabled(context.Background(), slog.LevelDebug) {
		level = hclog.Debug
	}
	return hclog.New(&hclog.LoggerOptions{
		Name:       "plugin",
		Level:      level,
		Output:     &lineWriter{emit: func(line []byte) { logHCLine(log, line) }},
		JSONFormat: true,
	})
}

// logHCLine logs one hclog JSON line through log.
func logHCLine(log *slog.Logger, line []byte) {
	var m map[string]any
	if err := json.Unmarshal(line, &m); err != nil {
		log.Info(string(line))
		return
	}
	msg, _ := m["@message"].(string)
	level := slog.LevelInfo
	switch lv, _ := m["@level"].(string); strings.ToLower(lv) {
	case "trace", "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	}
	// The host's own handler stamps the time; go-plugin adds a bogus
	// zero "timestamp" to lines that carried none.
	delete(m, "@message")
	delete(m, "@level")
	delete(m, "@timestamp")
	delete(m, "timestamp")
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	attrs := make([]slog.Attr, 0, len(keys))
	for _, k := range keys {
		attrs = append(attrs, slog.Any(strings.TrimPrefix(k, "@"), m[k]))
	}
	log.LogAttrs(context.Background(), level, msg, attrs...)
}

// lineWriter calls emit once per complete line written to it.
type lineWriter struct {
	mu   sync.Mutex
	buf  []byte
	emit func(line []byte)
}

var _ io.Writer = (*lineWriter)(nil)

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		line := bytes.TrimRight(w.buf[:i], "\r")
		if len(line) > 0 {
			w.emit(line)
		}
		w.buf = w.buf[i+1:]
	}
	// A plugin that never writes a newline must not grow this forever.
	if len(w.buf) > 64<<10 {
		w.emit(w.buf)
		w.buf = nil
	}
	return len(p), nil
}

// tail keeps the last lines a plugin wrote to stderr, to explain a plugin
// that exits before the handshake (wrong cookie, unknown built-in, crash in
// init): go-plugin itself only says "plugin exited before we could connect".
type tail struct {
	lineWriter
	lmu   sync.Mutex
	lines []string
}

const tailLines = 10

func newTail() *tail {
	t := &tail{}
	t.emit = func(line []byte) {
		t.lmu.Lock()
		defer t.lmu.Unlock()
		t.lines = append(t.lines, string(line))
		if len(t.lines) > tailLines {
			t.lines = t.lines[len(t.lines)-tailLines:]
		}
	}
	return t
}

func (t *tail) String() string {
	t.lmu.Lock()
	defer t.lmu.Unlock()
	return strings.Join(t.lines, "\n")
}
