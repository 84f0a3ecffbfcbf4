package milter

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/smsmilter/smsmilter/internal/config"
	"github.com/smsmilter/smsmilter/internal/dnsresolver/dnstest"
)

// rawMTA speaks the milter protocol byte by byte, to send what go-milter's
// client would not: unknown commands, commands out of order, half packets.
type rawMTA struct {
	t  testing.TB
	nc net.Conn
}

func (e *env) dialBytes() *rawMTA {
	e.t.Helper()
	nc, err := net.DialTimeout("tcp", e.addr, 5*time.Second)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { nc.Close() })
	r := &rawMTA{t: e.t, nc: nc}
	opt := make([]byte, 12)
	binary.BigEndian.PutUint32(opt, 6)
	binary.BigEndian.PutUint32(opt[4:], 0x3f)
	binary.BigEndian.PutUint32(opt[8:], 0)
	r.write('O', opt)
	if code, _ := r.read(); code != 'O' {
		e.t.Fatalf("OPTNEG answered %q", code)
	}
	return r
}

func (r *rawMTA) write(code byte, data []byte) {
	r.t.Helper()
	b := make([]byte, 5+len(data))
	binary.BigEndian.PutUint32(b, uint32(1+len(data)))
	b[4] = code
	copy(b[5:], data)
	r.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := r.nc.Write(b); err != nil {
		r.t.Fatalf("write %q: %v", code, err)
	}
}

// read returns the next packet; code 0 when the milter closed the
// connection (or after 5 s without an answer, which fails the test).
func (r *rawMTA) read() (byte, []byte) {
	r.t.Helper()
	r.nc.SetReadDeadline(time.Now().Add(8 * time.Second))
	var n uint32
	if err := binary.Read(r.nc, binary.BigEndian, &n); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			r.t.Fatal("no answer and no close within 5s")
		}
		return 0, nil
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r.nc, b); err != nil {
		return 0, nil
	}
	return b[0], b[1:]
}

func (r *rawMTA) expect(code byte, data []byte) {
	r.t.Helper()
	r.write(code, data)
	if got, d := r.read(); got != 'c' {
		r.t.Fatalf("%q answered %q %q, want continue", code, got, d)
	}
}

type pkt struct {
	code byte
	data []byte
}

func cstr(ss ...string) []byte {
	var b []byte
	for _, s := range ss {
		b = append(append(b, s...), 0)
	}
	return b
}

func connectData(ip string) []byte {
	b := append(cstr("client.example.test"), '4', 0, 25)
	return append(b, cstr(ip)...)
}

// closed reports whether the milter closed the connection without
// answering the last command.
func (r *rawMTA) closed() bool {
	code, _ := r.read()
	return code == 0
}

func TestOutOfOrderCommands(t *testing.T) {
	e := newEnv(t)
	mail := cstr("<alice@example.test>")
	rcpt := cstr("<" + gbMobile + "@sms.test>")
	hdr := cstr("From", " alice@example.test")
	for _, tc := range []struct {
		name string
		ok   []pkt // valid commands first
		bad  byte
		data []byte
	}{
		{"unknown command", nil, 'X', nil},
		{"SMTP command unknown to the MTA", nil, 'U', cstr("VRFY x")},
		{"second CONNECT", nil, 'C', connectData(goodIP)},
		{"RCPT before MAIL", nil, 'R', rcpt},
		{"header before RCPT", []pkt{{'M', mail}}, 'L', hdr},
		{"EOM before MAIL", nil, 'E', nil},
		{"body before end of header", []pkt{{'M', mail}, {'R', rcpt}, {'L', hdr}}, 'B', []byte("hello")},
		{"header after end of header", []pkt{{'M', mail}, {'R', rcpt}, {'L', hdr}, {'N', nil}}, 'L', hdr},
		{"RCPT after header", []pkt{{'M', mail}, {'R', rcpt}, {'L', hdr}}, 'R', rcpt},
		{"HELO in the body", []pkt{{'M', mail}, {'R', rcpt}, {'N', nil}}, 'H', cstr("x")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A connection in the middle of a message, untouched by the
			// other one's fault.
			other := e.dial(goodIP)
			must(t, other.s.Macros(gomilter.CodeMail, "{mail_addr}", "alice@example.test"))
			other.s.Mail("alice@example.test", nil)
			other.s.Rcpt(gbMobile+"@sms.test", nil)

			r := e.dialBytes()
			r.expect('C', connectData(goodIP))
			r.expect('H', cstr("client.example.test"))
			for _, c := range tc.ok {
				r.expect(c.code, c.data)
			}
			r.write(tc.bad, tc.data)
			if !r.closed() {
				t.Fatalf("%q out of order: the connection stays open", tc.bad)
			}

			fields, body := splitRaw(textMail("alice@example.test", newMsgID(), "still here"))
			for _, f := range fields {
				other.s.HeaderField(f.Name, f.Value)
			}
			other.s.HeaderEnd()
			other.s.BodyChunk(body)
			if _, act, err := other.s.End(); err != nil || act.Code != gomilter.ActDiscard {
				t.Errorf("the other connection: %v %s", err, actText(act))
			}
		})
	}
}

// recordingDialer keeps the connection go-milter's client makes, so a test
// can drop it the way a crashed MTA would.
type recordingDialer struct {
	mu    sync.Mutex
	conns []net.Conn
}

func (d *recordingDialer) Dial(network, addr string) (net.Conn, error) {
	c, err := net.DialTimeout(network, addr, 5*time.Second)
	if err == nil {
		d.mu.Lock()
		d.conns = append(d.conns, c)
		d.mu.Unlock()
	}
	return c, err
}

func TestClientVanishes(t *testing.T) {
	e := newEnv(t)
	for _, stage := range []string{"after RCPT", "mid-header", "mid-body", "before EOM"} {
		t.Run(stage, func(t *testing.T) {
			d := &recordingDialer{}
			opts := clientOptions()
			opts.Dialer = d
			s, err := gomilter.NewClientWithOptions("tcp", e.addr, opts).Session()
			if err != nil {
				t.Fatal(err)
			}
			m := &mta{t: t, s: s}
			m.connect(goodIP)
			s.Mail("alice@example.test", nil)
			s.Rcpt(gbMobile+"@sms.test", nil)
			fields, body := splitRaw(textMail("alice@example.test", newMsgID(), strings.Repeat("vanishing text ", 100)))
			switch stage {
			case "mid-header":
				s.HeaderField(fields[0].Name, fields[0].Value)
			case "mid-body", "before EOM":
				for _, f := range fields {
					s.HeaderField(f.Name, f.Value)
				}
				s.HeaderEnd()
				if stage == "mid-body" {
					body = body[:len(body)/2]
				}
				s.BodyChunk(body)
			}
			d.conns[0].Close() // no ABORT, no QUIT
			waitFor(t, "the session to end", func() bool { return e.srv.Active() == 0 })
		})
	}
	if n := len(e.jobs()); n != 0 {
		t.Errorf("%d jobs from vanished clients", n)
	}
	if o := e.dial(goodIP).send(mail{From: "alice@example.test", Rcpts: []string{gbMobile + "@sms.test"}, Raw: textMail("alice@example.test", newMsgID(), "ok")}); o.reply() != "discard" {
		t.Errorf("a new connection afterwards: %s", o.reply())
	}
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestStepTimeout(t *testing.T) {
	const step = 300 * time.Millisecond
	const idle = 4 * step
	e := newEnv(t, func(c *config.Config) { c.Milter.Timeout = step; c.Milter.IdleTimeout = idle })
	for _, tc := range []struct {
		name  string
		idle  bool // waiting between commands: milter.idle_timeout applies
		stall func(r *rawMTA)
	}{
		{"idle after HELO", true, func(r *rawMTA) {}},
		{"half a packet", false, func(r *rawMTA) { r.nc.Write([]byte{0, 0, 0, 100, 'M', '<', 'a'}) }},
		{"mid-message", true, func(r *rawMTA) {
			r.expect('M', cstr("<alice@example.test>"))
			r.expect('R', cstr("<"+gbMobile+"@sms.test>"))
			r.expect('L', cstr("From", " alice@example.test"))
		}},
		{"a slow trickle", false, func(r *rawMTA) {
			// Each byte in time, the packet never whole: the deadline is
			// per packet, not per read.
			for _, b := range []byte{0, 0, 0, 30, 'M', '<', 'a', 'l', 'i', 'c', 'e'} {
				if _, err := r.nc.Write([]byte{b}); err != nil {
					return
				}
				time.Sleep(step / 3)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.dialBytes()
			r.expect('C', connectData(goodIP))
			r.expect('H', cstr("client.example.test"))
			start := time.Now()
			tc.stall(r)
			if !r.closed() {
				t.Fatal("not closed")
			}
			want := step
			if tc.idle {
				want = idle
			}
			if took := time.Since(start); took < want*3/4 || took > want+10*step {
				t.Errorf("closed after %v, want about %v", took, want)
			}
		})
	}
	// The end of message, too, is answered within the step: a DNS server
	// that never answers gives a tempfail in time, not a hung MTA.
	e.dns.Set("example.test", dnstest.Drop)
	start := time.Now()
	o := e.dial(goodIP).send(mail{From: "alice@example.test", Rcpts: []string{gbMobile + "@sms.test"}, Raw: textMail("alice@example.test", newMsgID(), "slow dns")})
	if took := time.Since(start); !strings.HasPrefix(o.reply(), "451 4.7.0") || took > 4*step {
		t.Errorf("got %q after %v, want 451 4.7.0 within about %v", o.reply(), took, step)
	}
	if n := len(e.jobs()); n != 0 {
		t.Errorf("%d jobs", n)
	}
}

func TestMaxConnections(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.Milter.MaxConnections = 3 })
	var open []*mta
	for range 3 {
		open = append(open, e.dial(goodIP))
	}
	// The fourth is refused at once (the MTA tempfails it), not queued
	// behind the others.
	start := time.Now()
	_, err := gomilter.NewClientWithOptions("tcp", e.addr, clientOptions()).Session()
	if err == nil || time.Since(start) > 2*time.Second {
		t.Fatalf("fourth connection: err %v after %v, want refused at once", err, time.Since(start))
	}
	for i, m := range open {
		o := m.send(mail{From: "alice@example.test", Rcpts: []string{gbMobile + "@sms.test"}, Raw: textMail("alice@example.test", newMsgID(), "busy")})
		if o.reply() != "discard" {
			t.Errorf("existing connection %d stalled or failed: %s %v", i, o.reply(), o.Err)
		}
	}
	open[0].s.Close()
	waitFor(t, "a free slot", func() bool { return e.srv.Active() == 2 })
	if o := e.dial(goodIP).send(mail{From: "alice@example.test", Rcpts: []string{"x@elsewhere.test"}, Raw: textMail("a@b.test", newMsgID(), "x")}); o.reply() != "accept" {
		t.Errorf("after one closed, a new connection: %s", o.reply())
	}
}

func TestShutdownDrain(t *testing.T) {
	e := newEnv(t)
	// busy is in the middle of a message; idle has not started one; done
	// has finished its message and waits.
	busy := e.dial(goodIP)
	must(t, busy.s.Macros(gomilter.CodeMail, "{mail_addr}", "alice@example.test"))
	busy.s.Mail("alice@example.test", nil)
	busy.s.Rcpt(gbMobile+"@sms.test", nil)
	idle := e.dial(goodIP)
	done := e.dial(goodIP)
	done.send(mail{From: "alice@example.test", Rcpts: []string{"x@elsewhere.test"}, Raw: textMail("a@b.test", newMsgID(), "x")})

	const drain = 700 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	start := time.Now()
	shut := make(chan error, 1)
	go func() { shut <- e.srv.Shutdown(ctx) }()
	waitFor(t, "draining", e.srv.Draining)

	if _, err := gomilter.NewClientWithOptions("tcp", e.addr, clientOptions()).Session(); err == nil {
		t.Error("a new connection was accepted while draining")
	}
	// The message in progress completes and its SMS is queued.
	fields, body := splitRaw(textMail("alice@example.test", newMsgID(), "finishing during drain"))
	for _, f := range fields {
		busy.s.HeaderField(f.Name, f.Value)
	}
	busy.s.HeaderEnd()
	busy.s.BodyChunk(body)
	if _, act, err := busy.s.End(); err != nil || act.Code != gomilter.ActDiscard {
		t.Fatalf("message in progress at drain: %v %s", err, actText(act))
	}
	if n := len(e.jobs()); n != 1 {
		t.Errorf("%d jobs, want 1", n)
	}
	// The connection that had finished its message was closed at once.
	if _, err := done.s.Mail("alice@example.test", nil); err == nil {
		t.Error("a connection idle after its message is still open during drain")
	}

	err := <-shut
	took := time.Since(start)
	if !errors.Is(err, context.DeadlineExceeded) || took < drain || took > drain+2*time.Second {
		t.Errorf("Shutdown returned %v after %v, want the deadline after %v (idle was still open)", err, took, drain)
	}
	// The idle one outlived the drain and was closed.
	if _, err := idle.s.Mail("alice@example.test", nil); err == nil {
		t.Error("the idle connection is still open after the drain")
	}
	if n := e.srv.Active(); n != 0 {
		t.Errorf("%d connections left", n)
	}
	if err := <-e.serve; err != nil {
		t.Errorf("Serve returned %v", err)
	}
}

func TestShutdownIdle(t *testing.T) {
	e := newEnv(t)
	m := e.dial(goodIP)
	m.send(mail{From: "alice@example.test", Rcpts: []string{gbMobile + "@sms.test"}, Raw: textMail("alice@example.test", newMsgID(), "x")})
	m.s.Close() // QUIT: the MTA ended its SMTP session
	waitFor(t, "no connection", func() bool { return e.srv.Active() == 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := e.srv.Shutdown(ctx); err != nil || time.Since(start) > time.Second {
		t.Errorf("Shutdown with nothing open: %v after %v", err, time.Since(start))
	}
}

func TestListenUnix(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "milter.sock")
	ln, err := Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o660 {
		t.Errorf("socket mode: %v %v", fi.Mode(), err)
	}
	if _, err := Listen("unix", path); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("a socket in use: %v", err)
	}
	// A stale socket from a crashed daemon is replaced.
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	ln, err = Listen("unix", path)
	if err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	ln.Close()
}

// The answer to OPTNEG: protocol version 2 (what go-milter speaks), only
// the actions used, no OptNo*Reply flags (go-milter does not honour them),
// unknown commands off, header values with their leading space, and the
// macros wanted per stage (Postfix honours SymList with version 2).
func TestNegotiation(t *testing.T) {
	e := newEnv(t)
	nc, err := net.DialTimeout("tcp", e.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	r := &rawMTA{t: t, nc: nc}
	opt := make([]byte, 12)
	binary.BigEndian.PutUint32(opt, 6)
	binary.BigEndian.PutUint32(opt[4:], 0x1ff)
	binary.BigEndian.PutUint32(opt[8:], 0x1fffff)
	r.write('O', opt)
	code, data := r.read()
	if code != 'O' || len(data) < 12 {
		t.Fatalf("OPTNEG answered %q %q", code, data)
	}
	version := binary.BigEndian.Uint32(data)
	actions := gomilter.OptAction(binary.BigEndian.Uint32(data[4:]))
	proto := gomilter.OptProtocol(binary.BigEndian.Uint32(data[8:]))
	if version != 2 {
		t.Errorf("version %d", version)
	}
	if actions != gomilter.OptRemoveRcpt|gomilter.OptSetSymList {
		t.Errorf("actions %#x", actions)
	}
	noReply := gomilter.OptNoHeaderReply | gomilter.OptNoConnReply | gomilter.OptNoHeloReply | gomilter.OptNoMailReply |
		gomilter.OptNoRcptReply | gomilter.OptNoDataReply | gomilter.OptNoUnknownReply | gomilter.OptNoEOHReply | gomilter.OptNoBodyReply
	if proto&noReply != 0 || proto&gomilter.OptNoUnknown == 0 || proto&gomilter.OptHeaderLeadingSpace == 0 {
		t.Errorf("protocol %#x", proto)
	}
	syms := map[uint32]string{}
	for rest := data[12:]; len(rest) > 4; {
		stage := binary.BigEndian.Uint32(rest)
		list, after, _ := strings.Cut(string(rest[4:]), "\x00")
		syms[stage] = list
		rest = []byte(after)
	}
	for stage, want := range map[gomilter.Stage]string{gomilter.StageMailFrom: "{auth_authen}", gomilter.StageEOM: "i", gomilter.StageConnect: "{daemon_name}"} {
		if !slices.Contains(strings.Fields(syms[uint32(stage)]), want) {
			t.Errorf("SymList for stage %d is %q, want %s", stage, syms[uint32(stage)], want)
		}
	}
}
