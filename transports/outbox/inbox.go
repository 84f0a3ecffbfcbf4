package outbox

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/smsmilter/smsmilter/internal/phone"
	"github.com/smsmilter/smsmilter/plugins/sdk"
)

// maxLine bounds one inbox line; longer ones are skipped.
const maxLine = 1 << 20

// tailer reads new complete lines from the inbox and remembers how far it
// got, in statePath (or only in memory without a state directory).
type tailer struct {
	log       *slog.Logger
	path      string
	region    string
	statePath string
	now       func() time.Time
	pos       position
}

// position is where reading stopped. The file's identity is kept with it
// so that a replaced inbox (rotated, recreated) is read from its start.
type position struct {
	Path   string `json:"path"`
	Inode  uint64 `json:"inode"`
	Offset int64  `json:"offset"`
}

func (t *tailer) run(ctx context.Context, poll time.Duration, out chan<- sdk.Event) error {
	t.loadPosition()
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for {
		if err := t.readNew(ctx, out); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			t.log.Warn("outbox: reading the inbox", "path", t.path, "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

func (t *tailer) loadPosition() {
	if t.statePath == "" {
		return
	}
	data, err := os.ReadFile(t.statePath)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			t.log.Warn("outbox: inbox offset unreadable; reading from the start", "error", err)
		}
		return
	}
	var p position
	if err := json.Unmarshal(data, &p); err != nil || p.Path != t.path {
		return // another inbox, or garbage: start over
	}
	t.pos = p
}

func (t *tailer) savePosition() error {
	if t.statePath == "" {
		return nil
	}
	data, err := json.Marshal(t.pos)
	if err != nil {
		return err
	}
	tmp := t.statePath + ".tmp"
	if err := os.WriteFile(tmp, data, 0o640); err != nil {
		return err
	}
	return os.Rename(tmp, t.statePath)
}

// readNew hands every complete line added since the last call to out. The
// offset is saved after each line is handed over, so a restart replays
// at most the line being handed over.
func (t *tailer) readNew(ctx context.Context, out chan<- sdk.Event) error {
	f, err := os.Open(t.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil // not written yet
	}
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	ino := inode(fi)
	if t.pos.Path != t.path || t.pos.Inode != ino || fi.Size() < t.pos.Offset {
		t.pos = position{Path: t.path, Inode: ino}
	}
	if fi.Size() == t.pos.Offset {
		return nil
	}
	r := bufio.NewReaderSize(io.NewSectionReader(f, t.pos.Offset, fi.Size()-t.pos.Offset), 64<<10)
	for {
		line, n, err := readLine(r)
		if err == io.EOF {
			return nil // a line still being written waits for its newline
		}
		if err != nil {
			return err
		}
		next := t.pos.Offset + n
		if ev, ok := t.parse(bytes.TrimSpace(line)); ok {
			select {
			case out <- ev:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		t.pos.Offset = next
		if err := t.savePosition(); err != nil {
			return fmt.Errorf("saving the inbox offset: %w", err)
		}
	}
}

// readLine returns the next complete line (with its newline) and its length
// in the file, or io.EOF when no complete line is left. Of a line longer
// than maxLine only the start is kept, enough for parse to refuse it.
func readLine(r *bufio.Reader) ([]byte, int64, error) {
	var line []byte
	var n int64
	for {
		chunk, err := r.ReadSlice('\n')
		n += int64(len(chunk))
		if len(line) <= maxLine {
			line = append(line, chunk...)
		}
		switch {
		case err == bufio.ErrBufferFull:
			continue
		case err != nil:
			return nil, 0, err
		}
		return line, n, nil
	}
}

// inboxLine is what one inbox line may hold.
type inboxLine struct {
	From   string     `json:"from"`
	To     string     `json:"to"`
	Text   string     `json:"text"`
	Time   *time.Time `json:"time"`
	Report *struct {
		Ref   json.RawMessage `json:"ref"`
		State string          `json:"state"`
		Error string          `json:"error"`
		Time  *time.Time      `json:"time"`
	} `json:"report"`
}

func (t *tailer) parse(line []byte) (sdk.Event, bool) {
	if len(line) == 0 {
		return sdk.Event{}, false
	}
	if len(line) > maxLine {
		t.log.Warn("outbox: inbox line too long; skipped", "offset", t.pos.Offset)
		return sdk.Event{}, false
	}
	var l inboxLine
	if err := json.Unmarshal(line, &l); err != nil {
		t.log.Warn("outbox: inbox line is not JSON; skipped", "offset", t.pos.Offset, "error", err)
		return sdk.Event{}, false
	}
	at := func(p *time.Time) time.Time {
		if p != nil {
			return *p
		}
		return t.now()
	}
	if r := l.Report; r != nil {
		var ref string
		if err := json.Unmarshal(r.Ref, &ref); err != nil {
			ref = string(r.Ref) // a number, as some people will write it
		}
		state := strings.ToLower(r.State)
		switch state {
		case "delivered", "failed", "unknown":
		default:
			t.log.Warn("outbox: report state is not delivered, failed or unknown; read as unknown", "state", r.State)
			state = "unknown"
		}
		if ref == "" {
			t.log.Warn("outbox: report without a ref; skipped", "offset", t.pos.Offset)
			return sdk.Event{}, false
		}
		return sdk.Event{Report: &sdk.Report{Ref: ref, State: state, Error: r.Error, At: at(r.Time)}}, true
	}
	from := phone.Incoming(l.From, 0, t.region)
	if from == "" {
		t.log.Warn("outbox: incoming SMS without a readable from; skipped", "from", l.From, "offset", t.pos.Offset)
		return sdk.Event{}, false
	}
	return sdk.Event{Incoming: &sdk.Incoming{From: from, To: l.To, Text: l.Text, At: at(l.Time)}}, true
}
