package pluginhost

import (
	"strings"
	"sync"

	"github.com/smsmilter/smsmilter/internal/pluginlog"
)

// tail keeps the last lines a plugin wrote to stderr, to explain a plugin
// that exits before the handshake (wrong cookie, unknown built-in, crash in
// init): go-plugin itself only says "plugin exited before we could connect".
type tail struct {
	pluginlog.LineWriter
	lmu   sync.Mutex
	lines []string
}

const tailLines = 10

func newTail() *tail {
	t := &tail{}
	t.Emit = func(line []byte) {
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
