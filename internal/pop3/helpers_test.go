package pop3

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/smsmilter/smsmilter/internal/maildir"
	"github.com/smsmilter/smsmilter/internal/store"
	"github.com/smsmilter/smsmilter/internal/testutil"
)

// Test accounts. Hashes use bcrypt's minimum cost: the race detector makes
// the default cost slow, and the cost does not matter to what is tested.
const (
	alice   = "alice@example.com"
	alicePW = "s3cret pass" // a space: PASS takes the rest of the line
	bob     = "bob@example.com"
	bobPW   = "hunter2"
)

type fakeCreds struct {
	mu     sync.Mutex
	hashes map[string]string
	err    error // returned for every lookup when set
}

func newCreds(t testing.TB, pairs ...string) *fakeCreds {
	t.Helper()
	c := &fakeCreds{hashes: map[string]string{}}
	for i := 0; i+1 < len(pairs); i += 2 {
		h, err := bcrypt.GenerateFromPassword([]byte(pairs[i+1]), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		c.hashes[pairs[i]] = string(h)
	}
	return c
}

func (c *fakeCreds) MailboxPassword(_ context.Context, address string) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return "", c.err
	}
	h, ok := c.hashes[address]
	if !ok {
		return "", fmt.Errorf("mailbox %s: %w", address, store.ErrNotFound)
	}
	return h, nil
}

// fakeClock never sleeps: After records the wait, moves time on and fires.
type fakeClock struct {
	mu    sync.Mutex
	now   time.Time
	waits []time.Duration
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1700000000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.waits = append(c.waits, d)
	c.now = c.now.Add(d)
	ch := make(chan time.Time, 1)
	ch <- c.now
	return ch
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// Waits returns and forgets the recorded waits.
func (c *fakeClock) Waits() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := c.waits
	c.waits = nil
	return w
}

type testServer struct {
	srv     *Server
	addr    string // plain listener
	tlsAddr string // implicit TLS listener, when TLS is configured
	root    *maildir.Root
	creds   *fakeCreds
	clock   *fakeClock
	logs    *testutil.Buffer
	cert    tlsFiles
}

type tlsFiles struct {
	certFile, keyFile string
	pool              *x509.CertPool
}

// startServer runs a server on loopback with alice and bob, a fake clock,
// and TLS when withTLS. modify may change the config before it starts.
func startServer(t *testing.T, withTLS bool, modify func(*Config)) *testServer {
	t.Helper()
	root, err := maildir.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{root: root, creds: newCreds(t, alice, alicePW, bob, bobPW), clock: newFakeClock(), logs: &testutil.Buffer{}}
	cfg := Config{
		Maildir:     root,
		Credentials: ts.creds,
		Log:         slog.New(slog.NewTextHandler(ts.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Clock:       ts.clock,
	}
	if withTLS {
		ts.cert = makeCert(t)
		pair, err := tls.LoadX509KeyPair(ts.cert.certFile, ts.cert.keyFile)
		if err != nil {
			t.Fatal(err)
		}
		cfg.TLSConfig = &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	}
	if modify != nil {
		modify(&cfg)
	}
	ts.srv = NewServer(cfg)
	ts.srv.dummy.seen(ts.creds.hashes[alice]) // MinCost dummies: see fakeCreds
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts.addr = ln.Addr().String()
	var wg sync.WaitGroup
	serve := func(ln net.Listener, implicit bool) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := ts.srv.Serve(ln, implicit); !errors.Is(err, ErrServerClosed) {
				t.Errorf("Serve: %v", err)
			}
		}()
	}
	serve(ln, false)
	if withTLS {
		tln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ts.tlsAddr = tln.Addr().String()
		serve(tln, true)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := ts.srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		wg.Wait()
		if t.Failed() {
			t.Logf("server log:\n%s", ts.logs.String())
		}
	})
	return ts
}

func (ts *testServer) deliver(t *testing.T, mailbox string, msgs ...string) []string {
	t.Helper()
	var ids []string
	for _, m := range msgs {
		id, err := ts.root.Deliver(mailbox, []byte(m))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

// makeCert writes a self-signed certificate for 127.0.0.1 and localhost.
func makeCert(t *testing.T) tlsFiles {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "localhost"},
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	f := tlsFiles{certFile: filepath.Join(dir, "cert.pem"), keyFile: filepath.Join(dir, "key.pem"), pool: x509.NewCertPool()}
	os.WriteFile(f.certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(f.keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	f.pool.AddCert(cert)
	return f
}

// client is a raw POP3 client that checks the server's framing strictly:
// every line must end in CRLF.
type client struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	return dialFrom(t, addr, "")
}

// dialFrom connects from a given loopback address (127.0.0.0/8 all work
// on Linux), to look like different clients.
func dialFrom(t *testing.T, addr, local string) *client {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := &client{t: t, conn: conn, r: bufio.NewReader(conn)}
	t.Cleanup(func() { conn.Close() })
	if g := c.line(); !strings.HasPrefix(g, "+OK ") {
		t.Fatalf("greeting %q", g)
	}
	return c
}

func (c *client) line() string {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	l, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("read: %v (got %q)", err, l)
	}
	if !strings.HasSuffix(l, "\r\n") {
		c.t.Fatalf("line %q does not end in CRLF", l)
	}
	return strings.TrimSuffix(l, "\r\n")
}

// multi reads a multi-line body up to the terminating "." and undoes the
// dot-stuffing; raw is the body as sent (stuffed), for octet counts.
func (c *client) multi() (lines []string, raw string) {
	c.t.Helper()
	var b strings.Builder
	for {
		l := c.line()
		if l == "." {
			return lines, b.String()
		}
		b.WriteString(l + "\r\n")
		lines = append(lines, strings.TrimPrefix(l, "."))
		if strings.HasPrefix(l, ".") && !strings.HasPrefix(l, "..") {
			c.t.Fatalf("line %q starts with an unstuffed dot", l)
		}
	}
}

func (c *client) send(line string) {
	c.t.Helper()
	if _, err := c.conn.Write([]byte(line + "\r\n")); err != nil {
		c.t.Fatal(err)
	}
}

func (c *client) cmd(line string) string {
	c.t.Helper()
	c.send(line)
	return c.line()
}

func (c *client) mustOK(line string) string {
	c.t.Helper()
	r := c.cmd(line)
	if !strings.HasPrefix(r, "+OK") {
		c.t.Fatalf("%q: %q, want +OK", line, r)
	}
	return r
}

func (c *client) login(user, pw string) {
	c.t.Helper()
	c.mustOK("USER " + user)
	c.mustOK("PASS " + pw)
}

// starttls upgrades the connection after a successful STLS.
func (c *client) starttls(pool *x509.CertPool) {
	c.t.Helper()
	tc := tls.Client(c.conn, &tls.Config{RootCAs: pool, ServerName: "localhost"})
	if err := tc.Handshake(); err != nil {
		c.t.Fatalf("TLS handshake: %v", err)
	}
	c.conn = tc
	c.r = bufio.NewReader(tc)
}

// expectClosed checks the server hung up.
func (c *client) expectClosed() {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if l, err := c.r.ReadString('\n'); err == nil {
		c.t.Fatalf("connection still open, got %q", l)
	}
}

// wire is the reference wire form (what RETR must send, unstuffed).
func wire(raw string) string {
	s := strings.ReplaceAll(raw, "\r\n", "\n")
	s = strings.ReplaceAll(s, "\r", "\n")
	if s != "" && !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	return strings.ReplaceAll(s, "\n", "\r\n")
}

func newReader(c net.Conn) *bufio.Reader { return bufio.NewReader(c) }
