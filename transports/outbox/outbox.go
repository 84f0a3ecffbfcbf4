// Package outbox is the transport that needs no radio: each SMS becomes one
// JSON line in a file (DESIGN.md §6, contract), and incoming SMS and
// delivery reports are read from another JSON-lines file, the inbox. It is
// for trying smsmilter out and for tests.
//
// Settings:
//
//	path:          /var/lib/smsmilter/outbox.jsonl   # required
//	inbox:         /var/lib/smsmilter/inbox.jsonl    # optional
//	poll_interval: 1s                                # how often the inbox is read
//
// Each sent SMS is appended to path as
//
//	{"time":"...","transport":"NAME","id":"...","to":"+447400123456","from":"ACME",
//	 "text":"...","encoding":"gsm7","parts":1,"refs":["ID-0"]}
//
// written with O_APPEND in one write and fsynced before Send returns, so
// concurrent Sends never interleave and a returned Send is on disk. The
// text is a JSON string: control characters are escaped, never raw.
//
// Lines appended to the inbox become events, an incoming SMS
//
//	{"from":"+447400123456","to":"ACME","text":"yes please"}
//
// or a delivery report for a part ref that Send returned
//
//	{"report":{"ref":"ID-0","state":"delivered"}}
//
// (state delivered, failed or unknown; optional "error" and "time"). The
// read offset is kept in the plugin's state directory, so a restarted
// plugin does not replay lines; a truncated or replaced inbox is read from
// its start.
package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/smsmilter/smsmilter/plugins/sdk"
)

// Outbox is the transport. Use New.
type Outbox struct {
	log *slog.Logger
	now func() time.Time

	mu    sync.Mutex // serialises appends; guards the configuration
	env   sdk.Env
	path  string
	inbox string
	poll  time.Duration
}

// New returns an unconfigured outbox transport.
func New(log *slog.Logger) sdk.Transport {
	return &Outbox{log: log, now: time.Now}
}

var knownSettings = map[string]bool{"path": true, "inbox": true, "poll_interval": true}

// Configure reads the settings. Unknown keys are errors: a mistyped "inbox"
// would otherwise silently receive nothing.
func (o *Outbox) Configure(_ context.Context, env sdk.Env, s map[string]any) error {
	var unknown []string
	for k := range s {
		if !knownSettings[k] {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return sdk.Permanent(fmt.Errorf("outbox: unknown settings %s (known: path, inbox, poll_interval)", strings.Join(unknown, ", ")))
	}
	str := func(k string) (string, error) {
		v, ok := s[k]
		if !ok || v == nil {
			return "", nil
		}
		x, ok := v.(string)
		if !ok {
			return "", sdk.Permanent(fmt.Errorf("outbox: setting %s: want a string, got %v", k, v))
		}
		return x, nil
	}
	path, err := str("path")
	if err != nil {
		return err
	}
	if path == "" {
		return sdk.Permanent(errors.New("outbox: setting path is required (the file each SMS is appended to)"))
	}
	inbox, err := str("inbox")
	if err != nil {
		return err
	}
	poll := time.Second
	if p, err := str("poll_interval"); err != nil {
		return err
	} else if p != "" {
		if poll, err = time.ParseDuration(p); err != nil || poll <= 0 {
			return sdk.Permanent(fmt.Errorf("outbox: setting poll_interval: %q is not a positive duration", p))
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return fmt.Errorf("outbox: %w", err)
	}
	// Fail now, where the admin sees it, rather than at the first SMS.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("outbox: %w", err)
	}
	f.Close()

	o.mu.Lock()
	defer o.mu.Unlock()
	o.env, o.path, o.inbox, o.poll = env, path, inbox, poll
	o.log.Info("outbox configured", "path", path, "inbox", inbox)
	return nil
}

// record is one line of the outbox file. The first six fields after time
// and transport are the contract.
type record struct {
	Time      string   `json:"time"`
	Transport string   `json:"transport"`
	ID        string   `json:"id"`
	To        string   `json:"to"`
	From      string   `json:"from"`
	Text      string   `json:"text"`
	Encoding  string   `json:"encoding"`
	Parts     int      `json:"parts"`
	Refs      []string `json:"refs"`
}

var e164 = regexp.MustCompile(`^\+[1-9][0-9]{1,14}$`)

// Send appends m to the outbox file.
func (o *Outbox) Send(ctx context.Context, m sdk.Message) ([]sdk.PartResult, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if !e164.MatchString(m.To) {
		return nil, sdk.Permanent(fmt.Errorf("outbox: %q is not an E.164 number", m.To))
	}
	if m.Encoding != "gsm7" && m.Encoding != "ucs2" {
		return nil, sdk.Permanent(fmt.Errorf("outbox: encoding %q: want gsm7 or ucs2", m.Encoding))
	}
	parts := max(m.Parts, 1)
	r := record{
		Time:     o.now().UTC().Format(time.RFC3339Nano),
		ID:       m.ID,
		To:       m.To,
		From:     m.From,
		Text:     m.Text,
		Encoding: m.Encoding,
		Parts:    parts,
		Refs:     make([]string, parts),
	}
	results := make([]sdk.PartResult, parts)
	for i := range results {
		ref := fmt.Sprintf("%s-%d", m.ID, i)
		r.Refs[i] = ref
		results[i] = sdk.PartResult{Index: i, Ref: ref}
	}

	o.mu.Lock()
	defer o.mu.Unlock()
	if o.path == "" {
		return nil, errors.New("outbox: not configured")
	}
	r.Transport = o.env.Name
	line, err := marshalLine(r)
	if err != nil {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	if err := appendSync(o.path, line); err != nil {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	return results, nil
}

// marshalLine encodes v as one JSON line. encoding/json escapes C0 control
// characters (\n, \u0000, ...), quotes, backslashes and U+2028/9, and
// replaces invalid UTF-8 with U+FFFD; DEL and the C1 controls, which it
// leaves alone, are escaped here, so that no control character reaches a
// terminal or a line-based reader raw. HTML escaping is off so that "<"
// and "&" stay readable.
func marshalLine(v any) ([]byte, error) {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	out := make([]byte, 0, b.Len())
	for _, r := range b.String() {
		if r == 0x7f || (r >= 0x80 && r <= 0x9f) {
			out = fmt.Appendf(out, `\u%04x`, r)
			continue
		}
		out = utf8.AppendRune(out, r)
	}
	return out, nil
}

// appendSync appends line to path in one write and flushes it to disk. The
// file is opened each time so that a rotated or removed outbox is
// recreated rather than written into the void.
func appendSync(path string, line []byte) error {
	_, statErr := os.Stat(path)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return err
	}
	if _, err := f.Write(line); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if errors.Is(statErr, os.ErrNotExist) {
		// A new file is durable only once its directory entry is.
		if d, err := os.Open(filepath.Dir(path)); err == nil {
			_ = d.Sync()
			d.Close()
		}
	}
	return nil
}

// Health reports whether the outbox can be written.
func (o *Outbox) Health(context.Context) error {
	o.mu.Lock()
	path := o.path
	o.mu.Unlock()
	if path == "" {
		return errors.New("outbox: not configured")
	}
	if _, err := os.Stat(filepath.Dir(path)); err != nil {
		return fmt.Errorf("outbox: %w", err)
	}
	return nil
}

// Close has nothing to release: files are opened per use.
func (o *Outbox) Close() error { return nil }

// Events tails the inbox, if one is configured.
func (o *Outbox) Events(ctx context.Context, out chan<- sdk.Event) error {
	o.mu.Lock()
	inbox, poll, env := o.inbox, o.poll, o.env
	o.mu.Unlock()
	if inbox == "" {
		<-ctx.Done()
		return nil
	}
	t := &tailer{
		log:    o.log,
		path:   inbox,
		region: env.DefaultRegion,
		now:    o.now,
	}
	if env.StateDir != "" {
		t.statePath = filepath.Join(env.StateDir, "outbox-inbox.offset")
	} else {
		o.log.Warn("outbox: no state directory; a restarted plugin reads the inbox from its start")
	}
	return t.run(ctx, poll, out)
}
