package harness

import (
	"bufio"
	"bytes"
	"fmt"
	"mime"
	"net"
	"net/mail"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smsmilter/smsmilter/internal/testutil"
)

// Sink is Postfix's smtp-sink capturing every mail it receives into its own
// file: what the MTA relays (ordinary mail, replies, notices) ends up here.
type Sink struct {
	Dir  string // the captured files
	Addr string // 127.0.0.1:PORT
	Port int

	t    testing.TB
	proc *proc
	mu   sync.Mutex
	seen map[string]*SinkMessage // parsed files by name
}

// SinkMessage is one mail transaction smtp-sink captured.
type SinkMessage struct {
	File     string
	MailFrom string   // envelope sender, without <>
	Rcpts    []string // envelope recipients, without <>
	Header   mail.Header
	Body     []byte // as captured: LF line ends
	Raw      []byte // the whole file, smtp-sink's X- lines included
}

// StartSink runs smtp-sink on a free loopback port until the test ends.
func StartSink(t testing.TB) *Sink {
	t.Helper()
	bin := testutil.NeedCmd(t, "smtp-sink")
	NeedRoot(t)
	s := &Sink{t: t, Dir: filepath.Join(testutil.OpenDir(t), "mail"), seen: map[string]*SinkMessage{}}
	if err := os.Mkdir(s.Dir, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(s.Dir, 0o777) // smtp-sink writes as nobody
	for attempt := 0; ; attempt++ {
		s.Port = testutil.FreePort(t)
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port))
		// -d DIR/%M.: one file per transaction (strftime plus a random
		// suffix); -u nobody because it runs as root here.
		cmd := exec.Command(bin, "-u", "nobody", "-d", s.Dir+"/%M.", s.Addr, "256")
		var errOut bytes.Buffer
		cmd.Stderr = &errOut
		p, err := startProc(cmd)
		if err != nil {
			t.Fatalf("starting smtp-sink: %v", err)
		}
		if waitListening(s.Addr, p, 5*time.Second) {
			s.proc = p
			t.Cleanup(p.kill)
			return s
		}
		p.kill()
		if attempt == 3 {
			t.Fatalf("smtp-sink did not start on %s: %s", s.Addr, errOut.String())
		}
	}
}

// Count is the number of files captured so far (cheap: no parsing).
func (s *Sink) Count() int {
	ents, err := os.ReadDir(s.Dir)
	if err != nil {
		return 0
	}
	return len(ents)
}

// Clear removes every captured file (between benchmark rounds).
func (s *Sink) Clear() {
	s.mu.Lock()
	defer s.mu.Unlock()
	ents, _ := os.ReadDir(s.Dir)
	for _, e := range ents {
		os.Remove(filepath.Join(s.Dir, e.Name()))
	}
	s.seen = map[string]*SinkMessage{}
}

// Messages parses every captured file, oldest first. A file still being
// written (its size changed within the last moment) is left for later.
func (s *Sink) Messages() []*SinkMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	ents, err := os.ReadDir(s.Dir)
	if err != nil {
		s.t.Fatalf("reading the sink: %v", err)
	}
	type stamped struct {
		m  *SinkMessage
		at time.Time
	}
	var out []stamped
	for _, e := range ents {
		info, err := e.Info()
		if err != nil {
			continue
		}
		m := s.seen[e.Name()]
		if m == nil {
			if time.Since(info.ModTime()) < 50*time.Millisecond {
				continue // maybe still being written
			}
			raw, err := os.ReadFile(filepath.Join(s.Dir, e.Name()))
			if err != nil {
				continue
			}
			m, err = parseSinkFile(e.Name(), raw)
			if err != nil {
				s.t.Logf("sink: %s: %v", e.Name(), err)
				continue
			}
			s.seen[e.Name()] = m
		}
		out = append(out, stamped{m, info.ModTime()})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].at.Before(out[j].at) })
	ms := make([]*SinkMessage, len(out))
	for i, o := range out {
		ms[i] = o.m
	}
	return ms
}

// Find returns the captured messages match accepts.
func (s *Sink) Find(match func(*SinkMessage) bool) []*SinkMessage {
	var out []*SinkMessage
	for _, m := range s.Messages() {
		if match(m) {
			out = append(out, m)
		}
	}
	return out
}

// Wait waits until a captured message matches and returns the first one.
func (s *Sink) Wait(t testing.TB, timeout time.Duration, what string, match func(*SinkMessage) bool) *SinkMessage {
	t.Helper()
	var found *SinkMessage
	Eventually(t, timeout, "a mail at the sink: "+what, func() bool {
		if ms := s.Find(match); len(ms) > 0 {
			found = ms[0]
			return true
		}
		return false
	})
	return found
}

// To matches messages whose envelope recipients include addr.
func To(addr string) func(*SinkMessage) bool {
	return func(m *SinkMessage) bool { return m.HasRcpt(addr) }
}

// HasRcpt reports whether addr is one of the envelope recipients.
func (m *SinkMessage) HasRcpt(addr string) bool {
	for _, r := range m.Rcpts {
		if strings.EqualFold(r, addr) {
			return true
		}
	}
	return false
}

// Get returns a header field, decoded per RFC 2047 when it can be.
func (m *SinkMessage) Get(name string) string { return decodeHeader(m.Header.Get(name)) }

// decodeHeader decodes a header field's value per RFC 2047 when it can.
func decodeHeader(v string) string {
	if d, err := new(mime.WordDecoder).DecodeHeader(v); err == nil {
		return d
	}
	return v
}

func (m *SinkMessage) String() string {
	return fmt.Sprintf("%s (from <%s> to %v, Subject %q)", m.File, m.MailFrom, m.Rcpts, m.Get("Subject"))
}

func parseSinkFile(name string, raw []byte) (*SinkMessage, error) {
	msg, err := mail.ReadMessage(bufio.NewReader(bytes.NewReader(raw)))
	if err != nil {
		return nil, err
	}
	m := &SinkMessage{File: name, Header: msg.Header, Raw: raw}
	// Take the body from the raw bytes: exact, including a missing final
	// newline.
	// smtp-sink ends each dump file with an empty line of its own.
	if i := bytes.Index(raw, []byte("\n\n")); i >= 0 {
		m.Body = bytes.TrimSuffix(raw[i+2:], []byte("\n"))
	}
	// smtp-sink's own lines: X-Mail-Args: <from> PARAMS, one X-Rcpt-Args:
	// <rcpt> PARAMS per recipient.
	tp := textproto.MIMEHeader(msg.Header)
	m.MailFrom = angle(tp.Get("X-Mail-Args"))
	for _, r := range tp.Values("X-Rcpt-Args") {
		m.Rcpts = append(m.Rcpts, angle(r))
	}
	return m, nil
}

func angle(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '>'); strings.HasPrefix(s, "<") && i > 0 {
		return s[1:i]
	}
	return strings.Fields(s + " ")[0]
}
