package sdk

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"
)

func TestIsPermanent(t *testing.T) {
	base := errors.New("invalid number")
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"plain", base, false},
		{"permanent", Permanent(base), true},
		{"wrapped permanent", fmt.Errorf("smpp: %w", Permanent(base)), true},
		{"permanent of nil", Permanent(nil), false},
	} {
		if got := IsPermanent(tc.err); got != tc.want {
			t.Errorf("%s: IsPermanent = %v", tc.name, got)
		}
		if w := wireError(tc.err); (w == nil) != (tc.err == nil) || (w != nil && w.Permanent != tc.want) {
			t.Errorf("%s: wireError = %v", tc.name, w)
		}
	}
	if !errors.Is(Permanent(base), base) {
		t.Error("Permanent hides the error it wraps")
	}
}

// TestLoggerFormat checks the JSON shape go-plugin's host parses: @level
// and @message, no timestamp of its own (go-plugin would reject the format).
func TestLoggerFormat(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug, ReplaceAttr: replaceAttr}))
	log.Warn("modem gone", "port", "/dev/ttyUSB0")
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"@level": "warn", "@message": "modem gone", "port": "/dev/ttyUSB0"}
	if fmt.Sprint(m) != fmt.Sprint(want) {
		t.Errorf("log line %s, want %v", buf.Bytes(), want)
	}
}

type panicky struct{ Transport }

func (panicky) Send(context.Context, Message) ([]PartResult, error) { panic("boom") }

func TestSendPanicIsTemporary(t *testing.T) {
	s := &server{impl: panicky{}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	resp, err := s.Send(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if e := resp.GetError(); e == nil || e.Permanent || e.Message != "plugin panic in Send: boom" {
		t.Errorf("error %v", e)
	}
}
