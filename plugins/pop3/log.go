package pop3

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"sort"
	"strings"
	"sync"

	hclog "github.com/hashicorp/go-hclog"
)

// newHCLogger returns the hclog.Logger go-plugin wants, ending up in log.
// go-plugin logs its own events through it and re-logs each JSON line the
// plugin writes to stderr at that line's level; the JSON hclog writes is
// parsed back here, which is simpler than implementing hclog's interface.
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
	// The host's handler stamps the time itself.
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

// lineWriter calls emit once per complete line written to it.
type lineWriter struct {
	mu   sync.Mutex
	buf  []byte
	emit func(line []byte)
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		if line := bytes.TrimRight(w.buf[:i], "\r"); len(line) > 0 {
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
