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
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/smsmilter/smsmilter/internal/store"
	"github.com/smsmilter/smsmilter/internal/testutil"
	"github.com/smsmilter/smsmilter/plugins/sdk"
)

// The tests use go-plugin's helper-process pattern: the test binary, run
// with helperEnv set, is the plugin. Its one account comes in credsEnv as
// ADDRESS:HASH.
const (
	helperEnv = "POP3_PLUGIN_TEST_HELPER"
	credsEnv  = "POP3_PLUGIN_TEST_CREDS"
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "" {
		os.Exit(m.Run())
	}
	addr, hash, _ := strings.Cut(os.Getenv(credsEnv), ":")
	Serve(staticCreds{addr: hash}, sdk.Logger())
	os.Exit(0)
}

type staticCreds map[string]string

func (c staticCreds) MailboxPassword(_ context.Context, address string) (string, error) {
	if h, ok := c[address]; ok {
		return h, nil
	}
	return "", fmt.Errorf("mailbox %s: %w", address, store.ErrNotFound)
}

const (
	user = "alice@example.com"
	pass = "reply-reader"
)

func options(t *testing.T, cfg Config) (Options, *testutil.Buffer) {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	logs := &testutil.Buffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("host log:\n%s", logs.String())
		}
	})
	return Options{
		Path:          os.Args[0],
		Args:          []string{"-test.run=^$"},
		Env:           []string{helperEnv + "=1", credsEnv + "=" + user + ":" + string(hash)},
		Config:        cfg,
		Log:           slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		CheckInterval: 50 * time.Millisecond,
		MinBackoff:    50 * time.Millisecond,
		MaxBackoff:    200 * time.Millisecond,
	}, logs
}

func start(t *testing.T, o Options) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// writeCert writes a self-signed certificate for 127.0.0.1.
func writeCert(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:   time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	return certFile, keyFile
}

// fetch logs in over POP3 and returns every message, as RETR sends them
// (unstuffed, CRLF lines).
func fetch(t *testing.T, conn net.Conn) []string {
	t.Helper()
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	r := bufio.NewReader(conn)
	line := func() string {
		l, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("POP3 read: %v", err)
		}
		return strings.TrimSuffix(l, "\r\n")
	}
	cmd := func(c string) string {
		fmt.Fprintf(conn, "%s\r\n", c)
		l := line()
		if !strings.HasPrefix(l, "+OK") {
			t.Fatalf("POP3 %s: %q", c, l)
		}
		return l
	}
	line() // greeting
	cmd("USER " + user)
	cmd("PASS " + pass)
	var n int
	fmt.Sscanf(cmd("STAT"), "+OK %d", &n)
	var msgs []string
	for i := 1; i <= n; i++ {
		cmd(fmt.Sprintf("RETR %d", i))
		var b strings.Builder
		for l := line(); l != "."; l = line() {
			b.WriteString(strings.TrimPrefix(l, ".") + "\r\n")
		}
		msgs = append(msgs, b.String())
	}
	cmd("QUIT")
	return msgs
}

func dialPOP3(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestDeliverThenReadOverPOP3(t *testing.T) {
	certFile, keyFile := writeCert(t)
	o, logs := options(t, Config{
		Listen: "127.0.0.1:0", TLSListen: "127.0.0.1:0", TLSCert: certFile, TLSKey: keyFile,
		StateDir: t.TempDir(),
	})
	c := start(t, o)
	ctx := context.Background()
	msgs := []string{
		"From: +447400123456@sms.example.com\r\nSubject: SMS reply\r\n\r\nyes, see you at 5\r\n",
		"From: +819012345678@sms.example.com\nSubject: another\n\n.leading dot\n",
	}
	for _, m := range msgs {
		id, err := c.Deliver(ctx, "Alice@Example.COM", []byte(m))
		if err != nil {
			t.Fatal(err)
		}
		if id == "" {
			t.Fatal("empty ID")
		}
	}
	if err := c.Health(ctx); err != nil {
		t.Fatalf("Health: %v", err)
	}
	listen, tlsListen := c.Addrs()
	if listen == "" || tlsListen == "" {
		t.Fatalf("Addrs = %q, %q", listen, tlsListen)
	}
	want := []string{msgs[0], strings.ReplaceAll(msgs[1], "\n", "\r\n")}
	if got := fetch(t, dialPOP3(t, listen)); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("over POP3: %q, want %q", got, want)
	}
	tc, err := tls.Dial("tcp", tlsListen, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := fetch(t, tc); len(got) != 2 {
		t.Fatalf("over POP3S: %d messages", len(got))
	}
	// The plugin's own log lines reach the host's log at their level.
	if !strings.Contains(logs.String(), "pop3: delivered") {
		t.Errorf("plugin log not in the host log:\n%s", logs.String())
	}

	_, err = c.Deliver(ctx, "../../etc", nil)
	if err != nil {
		t.Errorf("a mailbox name with ../ is encoded, not refused: %v", err)
	}
	_, err = c.Deliver(ctx, "bad\x00name", []byte("x"))
	if err == nil || !Permanent(err) {
		t.Errorf("Deliver to an invalid mailbox: %v (permanent=%v)", err, Permanent(err))
	}
	if Permanent(errors.New("other")) {
		t.Error("Permanent(other error)")
	}
}

// TestCrashRestart: kill -9 the plugin; the next Deliver starts a new one,
// which serves the mail delivered before the crash on the same port.
func TestCrashRestart(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	o, logs := options(t, Config{Listen: addr, StateDir: t.TempDir()})
	o.CheckInterval = time.Hour // only Deliver notices the crash here
	c := start(t, o)
	ctx := context.Background()
	if _, err := c.Deliver(ctx, user, []byte("Subject: before\r\n\r\none\r\n")); err != nil {
		t.Fatal(err)
	}
	pid := c.pid()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Without waiting: the Deliver may meet the dying process and retry.
	if _, err := c.Deliver(ctx, user, []byte("Subject: after\r\n\r\ntwo\r\n")); err != nil {
		t.Fatalf("Deliver after kill -9: %v", err)
	}
	if c.pid() == pid || c.Restarts() != 1 {
		t.Fatalf("pid %d (was %d), restarts %d", c.pid(), pid, c.Restarts())
	}
	got := fetch(t, dialPOP3(t, addr))
	if len(got) != 2 || !strings.Contains(got[0], "before") || !strings.Contains(got[1], "after") {
		t.Fatalf("after restart: %q", got)
	}
	if !strings.Contains(logs.String(), "restarting") {
		t.Errorf("restart not logged")
	}
}

// TestSupervisorRestarts: with no delivery to notice, the supervisor
// brings POP3 back after a crash.
func TestSupervisorRestarts(t *testing.T) {
	o, _ := options(t, Config{Listen: "127.0.0.1:0", StateDir: t.TempDir()})
	c := start(t, o)
	ctx := context.Background()
	if _, err := c.Deliver(ctx, user, []byte("Subject: kept\r\n\r\nx\r\n")); err != nil {
		t.Fatal(err)
	}
	pid := c.pid()
	syscall.Kill(pid, syscall.SIGKILL)
	deadline := time.Now().Add(30 * time.Second)
	for c.Restarts() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("plugin not restarted")
		}
		time.Sleep(20 * time.Millisecond)
	}
	listen, _ := c.Addrs()
	if got := fetch(t, dialPOP3(t, listen)); len(got) != 1 || !strings.Contains(got[0], "kept") {
		t.Fatalf("after supervisor restart: %q", got)
	}
}

func TestStartErrors(t *testing.T) {
	certFile, keyFile := writeCert(t)
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no state dir", Config{Listen: "127.0.0.1:0"}, "state_dir is required"},
		{"no listener", Config{StateDir: t.TempDir()}, "neither listen nor tls_listen"},
		{"tls without cert", Config{TLSListen: "127.0.0.1:0", StateDir: t.TempDir()}, "tls_listen needs tls_cert"},
		{"bad cert", Config{Listen: "127.0.0.1:0", TLSCert: keyFile, TLSKey: certFile, StateDir: t.TempDir()}, "TLS certificate"},
		{"bad address", Config{Listen: "127.0.0.1:99999", StateDir: t.TempDir()}, "listen"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, _ := options(t, tt.cfg)
			c, err := Start(context.Background(), o)
			if err == nil {
				c.Close()
				t.Fatal("Start succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not say %q", err, tt.want)
			}
		})
	}
	t.Run("not a plugin", func(t *testing.T) {
		o, _ := options(t, Config{Listen: "127.0.0.1:0", StateDir: t.TempDir()})
		o.Path, o.Args, o.StartTimeout = "/bin/true", nil, 5*time.Second
		if c, err := Start(context.Background(), o); err == nil {
			c.Close()
			t.Fatal("Start of /bin/true succeeded")
		}
	})
}

func TestClose(t *testing.T) {
	o, _ := options(t, Config{Listen: "127.0.0.1:0", StateDir: t.TempDir()})
	c := start(t, o)
	pid := c.pid()
	listen, _ := c.Addrs()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Deliver(context.Background(), user, []byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Deliver after Close: %v", err)
	}
	if err := syscall.Kill(pid, 0); err == nil {
		// Reaped by go-plugin; a zombie would still answer signal 0.
		time.Sleep(100 * time.Millisecond)
		if err := syscall.Kill(pid, 0); err == nil {
			t.Errorf("plugin process %d still exists after Close", pid)
		}
	}
	if conn, err := net.DialTimeout("tcp", listen, time.Second); err == nil {
		conn.Close()
		t.Errorf("still listening on %s after Close", listen)
	}
}

// pid is the running plugin's process ID (tests).
func (c *Client) pid() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inst == nil {
		return 0
	}
	return c.inst.pid()
}
