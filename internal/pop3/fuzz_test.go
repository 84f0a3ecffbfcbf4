package pop3

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/smsmilter/smsmilter/internal/maildir"
	"github.com/smsmilter/smsmilter/internal/testutil"
)

func slogTo(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }

// FuzzCommand checks the command-line parser never panics and that what it
// returns is consistent with the line: an upper-case keyword of at most 8
// letters, digits or '-', rest the verbatim remainder, args its non-empty
// space-separated fields.
func FuzzCommand(f *testing.F) {
	for _, s := range []string{
		"USER alice@example.com", "PASS pass with spaces ", "LIST", "list 1", "TOP 1 10",
		"AUTH PLAIN AGFsaWNlAHNlY3JldA==", "", " ", "  NOOP", "RETR  1", "X\x00Y", "ÜSER x",
		"CAPA\t", "UIDL 99999999999999999999",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		cmd, err := parseCommand([]byte(line))
		if err != nil {
			if cmd.name != "" || cmd.args != nil || cmd.rest != "" {
				t.Fatalf("error %v with a result %+v", err, cmd)
			}
			return
		}
		if cmd.name == "" || len(cmd.name) > maxKeyword || cmd.name != strings.ToUpper(cmd.name) {
			t.Fatalf("bad keyword %q from %q", cmd.name, line)
		}
		for _, c := range []byte(cmd.name) {
			if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				t.Fatalf("keyword %q has %q", cmd.name, c)
			}
		}
		if !strings.EqualFold(line[:len(cmd.name)], cmd.name) {
			t.Fatalf("keyword %q is not the start of %q", cmd.name, line)
		}
		if rest := line[len(cmd.name):]; rest != "" && " "+cmd.rest != rest {
			t.Fatalf("rest %q, line %q", cmd.rest, line)
		}
		if got, want := strings.Join(cmd.args, ""), strings.ReplaceAll(cmd.rest, " ", ""); got != want {
			t.Fatalf("args %q do not cover rest %q", cmd.args, cmd.rest)
		}
		for _, a := range cmd.args {
			if a == "" || strings.Contains(a, " ") {
				t.Fatalf("arg %q", a)
			}
		}
		if n, ok := parseNumber(line); ok && n < 0 {
			t.Fatalf("parseNumber(%q) = %d", line, n)
		}
	})
}

// FuzzSession runs whatever a client might send through a whole session
// and checks the server never panics, always frames its answers with CRLF
// and ends the session when the client's input ends.
func FuzzSession(f *testing.F) {
	seeds := []string{
		"USER alice@example.com\r\nPASS s3cret pass\r\nSTAT\r\nLIST\r\nUIDL\r\nRETR 1\r\nTOP 2 1\r\nDELE 1\r\nRSET\r\nDELE 3\r\nQUIT\r\n",
		"AUTH PLAIN\r\nAGFsaWNlQGV4YW1wbGUuY29tAHMzY3JldCBwYXNz\r\nLIST 9\r\nDELE 1\r\nDELE 1\r\nQUIT\r\n",
		"CAPA\r\nAUTH\r\nAUTH PLAIN *\r\nSTLS\r\nNOOP\r\nQUIT\r\n",
		"USER a\x00\r\nPASS \x00\r\n" + strings.Repeat("x", 300) + "\r\nQUIT\r\n",
		"user alice@example.com\npass s3cret pass\nretr 2\ntop 1 0\nlist 0\n",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	creds := newCreds(f, alice, alicePW)
	// Deliver once (fsyncs are slow), copy the files for each run.
	template := f.TempDir()
	troot, err := maildir.Open(template)
	if err != nil {
		f.Fatal(err)
	}
	for _, m := range testMsgs {
		if _, err := troot.Deliver(alice, []byte(m)); err != nil {
			f.Fatal(err)
		}
	}
	f.Fuzz(func(t *testing.T, input []byte) {
		dir := t.TempDir()
		if err := os.CopyFS(dir, os.DirFS(template)); err != nil {
			t.Fatal(err)
		}
		root, err := maildir.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		logs := &testutil.Buffer{}
		srv := NewServer(Config{
			Maildir: root, Credentials: creds, Clock: newFakeClock(),
			Log:      slogTo(logs),
			IsSecure: func(net.Addr) bool { return true },
		})
		// Unknown mailboxes cost a bcrypt compare at the cost of the real
		// hashes; without this it would be the default cost, seconds under
		// the fuzzer's instrumentation.
		srv.dummy.seen(creds.hashes[alice])
		conn := &memConn{r: bytes.NewReader(input)}
		srv.handle(conn, false) // returns at the end of the input
		b := conn.w.Bytes()
		if strings.Contains(logs.String(), "panic") {
			t.Fatalf("panic: %s", logs.String())
		}
		if len(b) > 0 && !bytes.HasSuffix(b, []byte("\r\n")) {
			t.Fatalf("output does not end in CRLF: %q", b)
		}
		if bytes.Contains(bytes.ReplaceAll(b, []byte("\r\n"), nil), []byte("\n")) {
			t.Fatalf("bare LF in output: %q", b)
		}
	})
}

// memConn is a connection whose client sends input and then hangs up.
type memConn struct {
	r *bytes.Reader
	w bytes.Buffer
}

func (c *memConn) Read(p []byte) (int, error)         { return c.r.Read(p) }
func (c *memConn) Write(p []byte) (int, error)        { return c.w.Write(p) }
func (c *memConn) Close() error                       { return nil }
func (c *memConn) LocalAddr() net.Addr                { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 110} }
func (c *memConn) RemoteAddr() net.Addr               { return &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 4242} }
func (c *memConn) SetDeadline(t time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(t time.Time) error { return nil }
