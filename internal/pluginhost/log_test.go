package pluginhost

import (
	"strings"
	"testing"
)

func TestTail(t *testing.T) {
	tl := newTail()
	for i := 0; i < 15; i++ {
		tl.Write([]byte("line "))
		tl.Write([]byte{byte('a' + i), '\n'})
	}
	tl.Write([]byte("unfinished"))
	lines := strings.Split(tl.String(), "\n")
	if len(lines) != tailLines || lines[0] != "line f" || lines[tailLines-1] != "line o" {
		t.Errorf("tail %q", lines)
	}
}
