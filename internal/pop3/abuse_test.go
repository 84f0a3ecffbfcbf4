package pop3

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/smsmilter/smsmilter/internal/maildir"
	"github.com/smsmilter/smsmilter/internal/testutil"
)

// TestLoginDelays: the first three failures cost nothing, then each attempt
// waits longer, never more than 5 s, and the right password still works.
func TestLoginDelays(t *testing.T) {
	ts := startServer(t, false, nil)
	c := dial(t, ts.addr)
	for i := 0; i < 9; i++ {
		c.mustOK("USER " + alice)
		if r := c.cmd("PASS wrong"); r != "-ERR [AUTH] authentication failed" {
			t.Fatalf("attempt %d: %q", i+1, r)
		}
	}
	want := []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second}
	if got := ts.clock.Waits(); !slices.Equal(got, want) {
		t.Fatalf("waits %v, want %v", got, want)
	}
	// Right password: waits like any attempt (no oracle), then works.
	c.login(alice, alicePW)
	if got := ts.clock.Waits(); !slices.Equal(got, []time.Duration{5 * time.Second}) {
		t.Fatalf("waits before the right password %v", got)
	}
	if !strings.Contains(ts.logs.String(), "pop3: login failed") || !strings.Contains(ts.logs.String(), "reason=\"wrong password\"") {
		t.Errorf("failed logins not logged:\n%s", ts.logs.String())
	}
	c.mustOK("QUIT")

	// The address is still suspect for other mailboxes, but once attempts
	// stop long enough, everything is forgotten.
	c = dial(t, ts.addr)
	c.mustOK("USER " + bob)
	c.cmd("PASS wrong")
	if got := ts.clock.Waits(); len(got) != 1 || got[0] != 5*time.Second {
		t.Fatalf("address not slowed down: %v", got)
	}
	ts.clock.Advance(16 * time.Minute)
	c.login(bob, bobPW)
	if got := ts.clock.Waits(); len(got) != 0 {
		t.Fatalf("waits after the failures expired: %v", got)
	}
}

// TestLoginDelayPerMailbox: failures for one mailbox from many addresses
// slow down the next attempt from a fresh address too.
func TestLoginDelayPerMailbox(t *testing.T) {
	ts := startServer(t, false, nil)
	for i := 2; i <= 5; i++ {
		c := dialFrom(t, ts.addr, fmt.Sprintf("127.0.0.%d", i))
		c.mustOK("USER " + alice)
		c.cmd("PASS wrong")
	}
	if got := ts.clock.Waits(); !slices.Equal(got, []time.Duration{500 * time.Millisecond}) {
		t.Fatalf("waits %v, want one of 500ms (4th failure for the mailbox)", got)
	}
	c := dialFrom(t, ts.addr, "127.0.0.6")
	c.mustOK("AUTH PLAIN " + plain("", alice, alicePW))
	if got := ts.clock.Waits(); !slices.Equal(got, []time.Duration{time.Second}) {
		t.Fatalf("waits %v, want 1s", got)
	}
	// Another mailbox from a fresh address is not slowed down.
	c = dialFrom(t, ts.addr, "127.0.0.7")
	c.login(bob, bobPW)
	if got := ts.clock.Waits(); len(got) != 0 {
		t.Fatalf("unrelated login waited %v", got)
	}
}

// TestLoginDelayRealClock checks the wait really happens, with short
// delays. Only lower bounds: a loaded machine makes anything slow, and the
// exact schedule is TestLoginDelays' business.
func TestLoginDelayRealClock(t *testing.T) {
	ts := startServer(t, false, func(c *Config) {
		c.Clock = nil
		c.LoginDelay = 50 * time.Millisecond
		c.MaxLoginDelay = 80 * time.Millisecond
	})
	c := dial(t, ts.addr)
	var took []time.Duration
	for i := 0; i < 5; i++ {
		c.mustOK("USER " + alice)
		start := time.Now()
		c.cmd("PASS wrong")
		took = append(took, time.Since(start))
	}
	for i, d := range took {
		if i >= 3 && d < 50*time.Millisecond {
			t.Errorf("attempt %d took %v, want >= 50ms", i+1, d)
		}
	}
	start := time.Now()
	c.login(alice, alicePW)
	if d := time.Since(start); d < 80*time.Millisecond {
		t.Errorf("right password after failures took %v, want >= 80ms", d)
	}
}

func TestMaxLoginDelayBounded(t *testing.T) {
	s := NewServer(Config{MaxLoginDelay: time.Hour, LoginDelay: time.Minute})
	for n := 0; n < 100; n++ {
		if d := s.throttle.delayFor(n); d > 5*time.Second {
			t.Fatalf("delay after %d failures = %v, more than 5s", n, d)
		}
	}
	if d := s.throttle.delayFor(3); d != 5*time.Second {
		t.Errorf("delayFor(3) = %v", d)
	}
}

func TestThrottlePrune(t *testing.T) {
	th := &throttle{free: 3, base: time.Second, max: 5 * time.Second, memory: time.Minute, maxEntries: 100, m: map[string]*failures{}}
	now := time.Unix(0, 0)
	for i := 0; i < 1000; i++ {
		now = now.Add(time.Millisecond)
		th.fail(now, "ip:attacker", fmt.Sprintf("mailbox:%d", i))
	}
	if len(th.m) > 101 {
		t.Fatalf("%d entries kept, want at most 101", len(th.m))
	}
	if th.delay(now, "ip:attacker") != 5*time.Second {
		t.Errorf("the attacker's address was pruned")
	}
}

func TestInUse(t *testing.T) {
	ts := startServer(t, false, nil)
	ts.deliver(t, alice, testMsgs...)
	a := dial(t, ts.addr)
	a.login(alice, alicePW)
	b := dial(t, ts.addr)
	b.mustOK("USER " + alice)
	if r := b.cmd("PASS " + alicePW); r != "-ERR [IN-USE] mailbox is locked by another session" {
		t.Fatalf("second session: %q", r)
	}
	if r := b.cmd("AUTH PLAIN " + plain("", alice, alicePW)); !strings.HasPrefix(r, "-ERR [IN-USE]") {
		t.Fatalf("second session, AUTH: %q", r)
	}
	// A wrong password on a locked mailbox says [AUTH], not [IN-USE]: the
	// lock is no oracle for strangers.
	b.mustOK("USER " + alice)
	if r := b.cmd("PASS wrong"); r != "-ERR [AUTH] authentication failed" {
		t.Fatalf("wrong password on a locked mailbox: %q", r)
	}
	a.mustOK("QUIT")
	b.login(alice, alicePW)
	// A session that just vanishes releases the lock too.
	b.conn.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c := dial(t, ts.addr)
		c.mustOK("USER " + alice)
		r := c.cmd("PASS " + alicePW)
		if strings.HasPrefix(r, "+OK") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lock not released after the client vanished: %q", r)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func listCount(t *testing.T, ts *testServer) int {
	t.Helper()
	mb, err := ts.root.Mailbox(alice)
	if err != nil {
		t.Fatal(err)
	}
	l, err := mb.List()
	if err != nil {
		t.Fatal(err)
	}
	return len(l)
}

// TestDeleteOnlyAtQuit: DELE marks, RSET unmarks, QUIT (UPDATE) deletes,
// and a session that ends any other way deletes nothing.
func TestDeleteOnlyAtQuit(t *testing.T) {
	ts := startServer(t, false, func(c *Config) { c.IdleTimeout = 300 * time.Millisecond })
	ts.deliver(t, alice, testMsgs...)

	c := dial(t, ts.addr)
	c.login(alice, alicePW)
	c.mustOK("DELE 1")
	c.mustOK("DELE 2")
	if n := listCount(t, ts); n != 3 {
		t.Fatalf("after DELE, before QUIT: %d messages on disk", n)
	}
	c.conn.Close() // vanish without QUIT
	waitUnlocked(t, ts)
	if n := listCount(t, ts); n != 3 {
		t.Fatalf("session dropped without QUIT deleted messages: %d left", n)
	}

	c = dial(t, ts.addr)
	c.login(alice, alicePW)
	c.mustOK("DELE 1")
	c.mustOK("RSET")
	c.mustOK("DELE 3")
	if r := c.cmd("QUIT"); r != "+OK bye (1 messages deleted)" {
		t.Fatalf("QUIT: %q", r)
	}
	c.expectClosed()
	if n := listCount(t, ts); n != 2 {
		t.Fatalf("after QUIT: %d messages, want 2", n)
	}

	// Idle timeout: the session ends, nothing is deleted.
	c = dial(t, ts.addr)
	c.login(alice, alicePW)
	c.mustOK("DELE 1")
	if l := c.line(); l != "-ERR idle timeout, closing connection" {
		t.Fatalf("idle: %q", l)
	}
	c.expectClosed()
	waitUnlocked(t, ts)
	if n := listCount(t, ts); n != 2 {
		t.Fatalf("idle-timed-out session deleted: %d left", n)
	}
}

func waitUnlocked(t *testing.T, ts *testServer) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ts.srv.mu.Lock()
		n := len(ts.srv.locks)
		ts.srv.mu.Unlock()
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("mailbox still locked")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPlaintextNeedsTLS: on a connection IsSecure refuses, USER, PASS and
// AUTH PLAIN are refused until STLS; then they work.
func TestPlaintextNeedsTLS(t *testing.T) {
	var asked []string
	ts := startServer(t, true, func(c *Config) {
		c.IsSecure = func(a net.Addr) bool { asked = append(asked, a.String()); return false }
	})
	ts.deliver(t, alice, testMsgs...)
	c := dial(t, ts.addr)
	c.send("CAPA")
	c.line()
	caps, _ := c.multi()
	if slices.Contains(caps, "USER") || slices.Contains(caps, "SASL PLAIN") || !slices.Contains(caps, "STLS") {
		t.Fatalf("CAPA without TLS on an insecure connection: %v", caps)
	}
	refused := "-ERR [AUTH] plaintext login refused on an unencrypted connection: use STLS first"
	for _, cmd := range []string{"USER " + alice, "PASS " + alicePW, "AUTH PLAIN " + plain("", alice, alicePW), "AUTH PLAIN"} {
		if r := c.cmd(cmd); r != refused {
			t.Fatalf("%s: %q, want %q", cmd, r, refused)
		}
	}
	if len(asked) == 0 {
		t.Fatal("IsSecure was never asked")
	}
	if r := c.cmd("STLS x"); r != "-ERR STLS takes no arguments" {
		t.Fatalf("STLS x: %q", r)
	}
	c.mustOK("STLS")
	c.starttls(ts.cert.pool)
	c.send("CAPA")
	c.line()
	caps, _ = c.multi()
	if !slices.Contains(caps, "USER") || !slices.Contains(caps, "SASL PLAIN") || slices.Contains(caps, "STLS") {
		t.Fatalf("CAPA after STLS: %v", caps)
	}
	if r := c.cmd("STLS"); r != "-ERR already using TLS" {
		t.Fatalf("second STLS: %q", r)
	}
	c.login(alice, alicePW)
	c.mustOK("STAT")
	c.mustOK("QUIT")

	// Implicit TLS is secure from the start.
	tc, err := tls.Dial("tcp", ts.tlsAddr, &tls.Config{RootCAs: ts.cert.pool, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	ic := &client{t: t, conn: tc}
	ic.r = newReader(tc)
	if g := ic.line(); !strings.HasPrefix(g, "+OK") {
		t.Fatalf("greeting over TLS: %q", g)
	}
	ic.mustOK("AUTH PLAIN " + plain("", alice, alicePW))
	if r := ic.cmd("STLS"); r != "-ERR STLS not valid after login" {
		t.Fatalf("STLS over implicit TLS: %q", r)
	}
	ic.mustOK("QUIT")
}

func TestPlaintextRefusedWithoutTLSConfig(t *testing.T) {
	ts := startServer(t, false, func(c *Config) { c.IsSecure = func(net.Addr) bool { return false } })
	c := dial(t, ts.addr)
	if r := c.cmd("USER " + alice); r != "-ERR [AUTH] plaintext login refused on an unencrypted connection: use the TLS port" {
		t.Fatalf("USER: %q", r)
	}
}

// TestSTLSInjection: commands pipelined after STLS in plaintext are never
// run (CVE-2011-0411).
func TestSTLSInjection(t *testing.T) {
	ts := startServer(t, true, nil)
	c := dial(t, ts.addr)
	c.send("STLS\r\nUSER " + alice)
	if l := c.line(); l != "+OK begin TLS negotiation" {
		t.Fatalf("STLS: %q", l)
	}
	c.starttls(ts.cert.pool)
	// Had the injected USER run, PASS would log in.
	if r := c.cmd("PASS " + alicePW); r != "-ERR USER first" {
		t.Fatalf("injected command ran: PASS answered %q", r)
	}
}

func TestSTLSAfterUSERForgetsIt(t *testing.T) {
	ts := startServer(t, true, nil)
	c := dial(t, ts.addr)
	c.mustOK("USER " + alice)
	c.mustOK("STLS")
	c.starttls(ts.cert.pool)
	if r := c.cmd("PASS " + alicePW); r != "-ERR USER first" {
		t.Fatalf("USER survived STLS: %q", r)
	}
}

func TestStoreFailure(t *testing.T) {
	ts := startServer(t, false, nil)
	ts.creds.mu.Lock()
	ts.creds.err = errors.New("database is locked")
	ts.creds.mu.Unlock()
	c := dial(t, ts.addr)
	c.mustOK("USER " + alice)
	if r := c.cmd("PASS " + alicePW); r != "-ERR [SYS/TEMP] cannot check credentials now, try again later" {
		t.Fatalf("PASS with a failing store: %q", r)
	}
	ts.creds.mu.Lock()
	ts.creds.err = nil
	ts.creds.mu.Unlock()
	c.login(alice, alicePW) // a store failure is not a failed login
	if w := ts.clock.Waits(); len(w) != 0 {
		t.Errorf("store failure counted as failed login: %v", w)
	}
}

func TestSessionLimits(t *testing.T) {
	ts := startServer(t, false, func(c *Config) { c.MaxSessionsPerIP = 2; c.MaxSessions = 3 })
	dial(t, ts.addr)
	dial(t, ts.addr)
	conn, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := &client{t: t, conn: conn, r: newReader(conn)}
	if l := c.line(); l != "-ERR [SYS/TEMP] too many sessions from your address" {
		t.Fatalf("third session from one address: %q", l)
	}
	dialFrom(t, ts.addr, "127.0.0.2")
	conn2, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	c = &client{t: t, conn: conn2, r: newReader(conn2)}
	if l := c.line(); l != "-ERR [SYS/TEMP] too many sessions" {
		t.Fatalf("fourth session: %q", l)
	}
}

func TestShutdown(t *testing.T) {
	ts := startServer(t, false, nil)
	ts.deliver(t, alice, testMsgs...)
	c := dial(t, ts.addr)
	c.login(alice, alicePW)
	c.mustOK("DELE 1")
	time.Sleep(20 * time.Millisecond) // let the session block reading
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ts.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if l := c.line(); l != "-ERR [SYS/TEMP] server shutting down" {
		t.Fatalf("on shutdown: %q", l)
	}
	c.expectClosed()
	if n := listCount(t, ts); n != 3 {
		t.Fatalf("shutdown ran UPDATE: %d messages left", n)
	}
	if _, err := net.DialTimeout("tcp", ts.addr, time.Second); err == nil {
		t.Fatal("still accepting after Shutdown")
	}
}

func TestIsLoopback(t *testing.T) {
	tests := []struct {
		addr net.Addr
		want bool
	}{
		{&net.TCPAddr{IP: net.ParseIP("127.0.0.1")}, true},
		{&net.TCPAddr{IP: net.ParseIP("127.8.9.10")}, true},
		{&net.TCPAddr{IP: net.ParseIP("::1")}, true},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:127.0.0.1")}, true},
		{&net.TCPAddr{IP: net.ParseIP("192.0.2.1")}, false},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.1")}, false},
		{&net.UnixAddr{Name: "/run/x"}, true},
		{nil, false},
	}
	for _, tt := range tests {
		if got := IsLoopback(tt.addr); got != tt.want {
			t.Errorf("IsLoopback(%v) = %v, want %v", tt.addr, got, tt.want)
		}
	}
}

func TestHashPassword(t *testing.T) {
	h, err := hashPassword("correct horse", bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	if !raceEnabled {
		// The default cost takes seconds under the race detector.
		dh, err := HashPassword("correct horse")
		if err != nil {
			t.Fatal(err)
		}
		if c, _ := bcrypt.Cost([]byte(dh)); c != bcrypt.DefaultCost || !CheckPassword(dh, "correct horse") {
			t.Errorf("HashPassword: cost %d, or it does not check", c)
		}
	}
	if !CheckPassword(h, "correct horse") || CheckPassword(h, "correct horsE") || CheckPassword(h, "") {
		t.Error("CheckPassword does not tell right from wrong")
	}
	if strings.Contains(h, "correct") {
		t.Error("hash contains the password")
	}
	for _, bad := range []string{"", "a\x00b", "a\nb", "a\rb", strings.Repeat("x", 73)} { // refused before hashing: fast
		if _, err := HashPassword(bad); err == nil {
			t.Errorf("HashPassword(%q) accepted", bad)
		}
	}
	if CheckPassword(h, "correct horse\x00") || CheckPassword("not a hash", "x") {
		t.Error("CheckPassword accepted NUL or a bad hash")
	}
}

func TestAddressKey(t *testing.T) {
	tests := []struct{ in, want string }{
		{"192.0.2.1", "192.0.2.1"},
		{"2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"},
		{"2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"},
		{"::ffff:192.0.2.1", "::ffff:192.0.2.1"},
		{"pipe", "pipe"},
	}
	for _, tt := range tests {
		if got := addressKey(tt.in); got != tt.want {
			t.Errorf("addressKey(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestListenAndServe(t *testing.T) {
	root, err := maildir.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := NewServer(Config{TLSListen: "127.0.0.1:0", Maildir: root}).ListenAndServe(); err == nil || !strings.Contains(err.Error(), "without a TLS certificate") {
		t.Errorf("TLSListen without TLSConfig: %v", err)
	}
	if err := NewServer(Config{Maildir: root}).ListenAndServe(); err == nil {
		t.Error("no listen address accepted")
	}
	addr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	srv := NewServer(Config{Listen: addr, Maildir: root, Credentials: newCreds(t)})
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	var conn net.Conn
	for i := 0; ; i++ {
		if conn, err = net.Dial("tcp", addr); err == nil {
			break
		}
		if i > 200 {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	c := &client{t: t, conn: conn, r: newReader(conn)}
	if g := c.line(); !strings.HasPrefix(g, "+OK smsmilter POP3 server ready") {
		t.Fatalf("greeting %q", g)
	}
	c.mustOK("QUIT")
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("ListenAndServe after Shutdown: %v", err)
	}
}
