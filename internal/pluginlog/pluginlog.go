// Package pluginlog carries what a go-plugin host hears from its plugins
// into the host's slog.Logger: go-plugin's own events and the hclog JSON
// lines a plugin writes to stderr (HCLogger), and what a plugin prints on
// stdout and stderr outside hclog (Stdout, Stderr). The daemon's transport
// plugin host (internal/pluginhost) and the pop3 plugin's client
// (plugins/pop3) use it.
package pluginlog

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

// HCLogger returns an hclog.Logger for go-plugin that ends up in log.
// go-plugin logs its own events through it and re-logs each line the
// plugin writes to stderr (parsing the plugin's JSON lines into level,
// message and attributes); hclog's JSON output is parsed back here, which
// is simpler and sturdier than implementing hclog's wide interface.
func HCLogger(log *slog.Logger) hclog.Logger {
	level := hclog.Info
	if log.Enabled(context.Background(), slog.LevelDebug) {
		level = hclog.Debug
	}
	return hclog.New(&hclog.LoggerOptions{
		Name:       "plugin",
		Level:      level,
		Output:     &LineWriter{Emit: func(line []byte) { logHCLine(log, line) }},
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
	for _, k := range []string{"@message", "@level", "@timestamp", "timestamp"} {
		delete(m, k)
	}
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

// Stdout is a writer for go-plugin's SyncStdout: each line the plugin
// prints on its stdout (fmt.Print, a library's log) is logged at info
// level with stream=stdout.
func Stdout(log *slog.Logger) io.Writer {
	return &LineWriter{Emit: func(l []byte) { log.Info(string(l), "stream", "stdout") }}
}

// Stderr is a writer for go-plugin's SyncStderr: each line the plugin
// prints on its stderr outside hclog is logged as a warning with
// stream=stderr.
func Stderr(log *slog.Logger) io.Writer {
	return &LineWriter{Emit: func(l []byte) { log.Warn(string(l), "stream", "stderr") }}
}

// LineWriter calls Emit once per complete line written to it (without the
// line end; empty lines are left out). A line longer than 64 KiB is
// emitted in pieces.
type LineWriter struct {
	Emit func(line []byte)

	mu  sync.Mutex
	buf []byte
}

var _ io.Writer = (*LineWriter)(nil)

func (w *LineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		if line := bytes.TrimRight(w.buf[:i], "\r"); len(line) > 0 {
			w.Emit(line)
		}
		w.buf = w.buf[i+1:]
	}
	// A plugin that never writes a newline must not grow this forever.
	if len(w.buf) > 64<<10 {
		w.Emit(w.buf)
		w.buf = nil
	}
	return len(p), nil
}
