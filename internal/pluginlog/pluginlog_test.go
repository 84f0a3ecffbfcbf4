package pluginlog

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestLogHCLine(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`{"@level":"error","@message":"bind failed","@module":"plugin.smsmilter","@timestamp":"2026-01-01T00:00:00.000000Z","timestamp":"0001","addr":"smsc:2775"}`,
			`level=ERROR msg="bind failed" module=plugin.smsmilter addr=smsc:2775`},
		{`{"@level":"trace","@message":"x"}`, `level=DEBUG msg=x`},
		{`{"@level":"warn","@message":"w","n":3}`, `level=WARN msg=w n=3`},
		{`not json at all`, `level=INFO msg="not json at all"`},
	} {
		var buf bytes.Buffer
		log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{
			Level: slog.LevelDebug,
			ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
				if a.Key == slog.TimeKey {
					return slog.Attr{}
				}
				return a
			},
		}))
		logHCLine(log, []byte(tc.in))
		if got := strings.TrimSpace(buf.String()); got != tc.want {
			t.Errorf("%s\n got %s\nwant %s", tc.in, got, tc.want)
		}
	}
}
