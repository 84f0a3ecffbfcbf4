// Package pop3 is the POP3 server of the POP3 plugin (DESIGN.md §7, §13):
// RFC 1939 with the RFC 2449 extensions (CAPA, TOP, UIDL, RESP-CODES,
// AUTH-RESP-CODE, PIPELINING), USER/PASS and SASL PLAIN (RFC 5034), STLS
// (RFC 2595) and implicit TLS on a second listener. There is no APOP: the
// store keeps bcrypt hashes, never passwords.
//
// Mail comes from a maildir.Root; message sizes are the exact octets of the
// CRLF wire form (see package maildir). The abuse rules of §13 live here:
// plaintext logins only over TLS or from connections IsSecure accepts
// (loopback by default), growing delays after repeated failures but no
// lockout, one session per mailbox ([IN-USE]), 255-octet command lines,
// deletions only at QUIT, an idle timeout.
//
// No maintained POP3 server library exists for Go, so the protocol is
// written here directly on bufio.
package pop3

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/smsmilter/smsmilter/internal/maildir"
)

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("pop3: server closed")

// Clock is the time source for login delays; tests pass a fake one so abuse
// tests need not sleep. Connection deadlines use the real clock.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Config configures a Server. Zero values get the documented defaults.
type Config struct {
	Listen    string // plain POP3 (STLS available when TLSConfig is set), for ListenAndServe
	TLSListen string // implicit TLS (POP3S), for ListenAndServe

	// TLSConfig enables STLS and implicit TLS. nil: neither.
	TLSConfig *tls.Config

	Maildir     *maildir.Root
	Credentials Credentials
	Log         *slog.Logger // default: discard

	// IsSecure reports whether a connection from addr may log in with a
	// plaintext password without TLS. Default: IsLoopback.
	IsSecure func(addr net.Addr) bool

	Clock Clock // default: the real clock

	// IdleTimeout ends a session that sends no command for this long
	// (RFC 1939: at least 10 minutes). Default 10m.
	IdleTimeout time.Duration
	// TLSHandshakeTimeout bounds STLS and implicit TLS handshakes. Default 30s.
	TLSHandshakeTimeout time.Duration

	// Hostname is named in the greeting. Default "smsmilter".
	Hostname string

	// MaxSessions bounds concurrent sessions, MaxSessionsPerIP those from
	// one address (so parallel connections do not defeat the login
	// delays). Defaults 200 and 10.
	MaxSessions      int
	MaxSessionsPerIP int

	// Login delays: after FreeFailures (default 3) failed logins from an
	// address or for a mailbox, each attempt waits LoginDelay (default
	// 500ms), doubling per further failure up to MaxLoginDelay (default and
	// upper bound 5s). Failures are forgotten FailureMemory (default 15m)
	// after the last one.
	FreeFailures  int
	LoginDelay    time.Duration
	MaxLoginDelay time.Duration
	FailureMemory time.Duration
}

// IsLoopback reports whether addr is a loopback address (or a Unix socket).
func IsLoopback(addr net.Addr) bool {
	switch a := addr.(type) {
	case *net.TCPAddr:
		return a.IP.IsLoopback()
	case *net.UnixAddr:
		return true
	case nil:
		return false
	}
	host, _, err := net.SplitHostPort(addr.String())
	if err != nil {
		host = addr.String()
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Server is a POP3 server. Create it with NewServer.
type Server struct {
	cfg      Config
	log      *slog.Logger
	clock    Clock
	throttle *throttle
	dummy    dummyHashes

	ctx    context.Context // cancelled by Shutdown: ends login waits
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	closed    bool
	listeners map[net.Listener]struct{}
	conns     map[net.Conn]string // raw connection -> addressKey of the client
	perIP     map[string]int
	locks     map[string]bool // mailboxes with a session in TRANSACTION
}

// maxLoginDelay is the contract's bound (DESIGN.md §13: "up to 5 s").
const maxLoginDelay = 5 * time.Second

// NewServer returns a server for cfg.
func NewServer(cfg Config) *Server {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.IsSecure == nil {
		cfg.IsSecure = IsLoopback
	}
	if cfg.Clock == nil {
		cfg.Clock = realClock{}
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 10 * time.Minute
	}
	if cfg.TLSHandshakeTimeout <= 0 {
		cfg.TLSHandshakeTimeout = 30 * time.Second
	}
	if cfg.Hostname == "" {
		cfg.Hostname = "smsmilter"
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = 200
	}
	if cfg.MaxSessionsPerIP <= 0 {
		cfg.MaxSessionsPerIP = 10
	}
	if cfg.FreeFailures <= 0 {
		cfg.FreeFailures = 3
	}
	if cfg.LoginDelay <= 0 {
		cfg.LoginDelay = 500 * time.Millisecond
	}
	if cfg.MaxLoginDelay <= 0 || cfg.MaxLoginDelay > maxLoginDelay {
		cfg.MaxLoginDelay = maxLoginDelay
	}
	cfg.LoginDelay = min(cfg.LoginDelay, cfg.MaxLoginDelay)
	if cfg.FailureMemory <= 0 {
		cfg.FailureMemory = 15 * time.Minute
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{
		cfg:   cfg,
		log:   cfg.Log,
		clock: cfg.Clock,
		throttle: &throttle{
			free: cfg.FreeFailures, base: cfg.LoginDelay, max: cfg.MaxLoginDelay,
			memory: cfg.FailureMemory, maxEntries: 10000, m: map[string]*failures{},
		},
		ctx:       ctx,
		cancel:    cancel,
		listeners: map[net.Listener]struct{}{},
		conns:     map[net.Conn]string{},
		perIP:     map[string]int{},
		locks:     map[string]bool{},
	}
}

// ListenAndServe listens on cfg.Listen and cfg.TLSListen (each if set) and
// serves both until Shutdown or until one fails.
func (s *Server) ListenAndServe() error {
	type lst struct {
		ln       net.Listener
		implicit bool
	}
	var lns []lst
	closeAll := func() {
		for _, l := range lns {
			l.ln.Close()
		}
	}
	if s.cfg.Listen != "" {
		ln, err := net.Listen("tcp", s.cfg.Listen)
		if err != nil {
			return fmt.Errorf("pop3: listen: %w", err)
		}
		lns = append(lns, lst{ln, false})
	}
	if s.cfg.TLSListen != "" {
		if s.cfg.TLSConfig == nil {
			closeAll()
			return errors.New("pop3: tls_listen set without a TLS certificate")
		}
		ln, err := net.Listen("tcp", s.cfg.TLSListen)
		if err != nil {
			closeAll()
			return fmt.Errorf("pop3: listen: %w", err)
		}
		lns = append(lns, lst{ln, true})
	}
	if len(lns) == 0 {
		return errors.New("pop3: no listen address")
	}
	errc := make(chan error, len(lns))
	for _, l := range lns {
		go func() { errc <- s.Serve(l.ln, l.implicit) }()
	}
	err := <-errc
	closeAll() // one listener failing stops the other too
	return err
}

// Serve accepts connections on ln until Shutdown (ErrServerClosed) or an
// accept error that is not temporary. With implicitTLS every connection
// starts with a TLS handshake (POP3S, port 995).
func (s *Server) Serve(ln net.Listener, implicitTLS bool) error {
	if implicitTLS && s.cfg.TLSConfig == nil {
		return errors.New("pop3: implicit TLS without a TLS config")
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("pop3: accept: %w", err)
			}
			// Out of file descriptors and the like: wait, do not spin.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("pop3: accept failed", "err", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		go s.handle(c, implicitTLS)
	}
}

// track registers a connection; it refuses when shutting down or over the
// session limits.
func (s *Server) track(c net.Conn, ip string) (ok bool, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return false, "server shutting down"
	case len(s.conns) >= s.cfg.MaxSessions:
		return false, "too many sessions"
	case s.perIP[ip] >= s.cfg.MaxSessionsPerIP:
		return false, "too many sessions from your address"
	}
	s.conns[c] = ip
	s.perIP[ip]++
	s.wg.Add(1)
	return true, ""
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	ip := s.conns[c]
	delete(s.conns, c)
	if s.perIP[ip]--; s.perIP[ip] <= 0 {
		delete(s.perIP, ip)
	}
	s.mu.Unlock()
	s.wg.Done()
}

func (s *Server) handle(c net.Conn, implicitTLS bool) {
	ip := hostOf(c.RemoteAddr())
	if ok, reason := s.track(c, addressKey(ip)); !ok {
		// Said in plaintext even on the TLS port: the client learns little,
		// and a handshake just to refuse would cost more than the refusal.
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "-ERR [SYS/TEMP] %s\r\n", reason)
		c.Close()
		s.log.Warn("pop3: connection refused", "remote", ip, "reason", reason)
		return
	}
	defer s.untrack(c)
	defer c.Close()
	log := s.log.With("remote", ip)
	defer func() {
		if r := recover(); r != nil {
			log.Error("pop3: session panic", "panic", r)
		}
	}()
	conn := c
	if implicitTLS {
		tc := tls.Server(c, s.cfg.TLSConfig)
		c.SetDeadline(time.Now().Add(s.cfg.TLSHandshakeTimeout))
		if err := tc.HandshakeContext(s.ctx); err != nil {
			log.Info("pop3: TLS handshake failed", "err", err)
			return
		}
		c.SetDeadline(time.Time{})
		conn = tc
	}
	sess := newSession(s, c, conn, ip, implicitTLS, log)
	sess.run()
}

// armRead sets the idle deadline for the next command. Under s.mu so that
// Shutdown's "read now" deadline cannot be overwritten by a session that
// had not seen the shutdown yet.
func (s *Server) armRead(c net.Conn) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errShuttingDown
	}
	return c.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout))
}

var errShuttingDown = errors.New("server shutting down")

// lock takes a mailbox for a session (RFC 1939: exclusive access to the
// maildrop until QUIT).
func (s *Server) lock(mailbox string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.locks[mailbox] {
		return false
	}
	s.locks[mailbox] = true
	return true
}

func (s *Server) unlock(mailbox string) {
	s.mu.Lock()
	delete(s.locks, mailbox)
	s.mu.Unlock()
}

// Shutdown stops accepting, tells idle sessions the server is going away
// (they end without UPDATE, so no message is deleted), waits for sessions
// busy with a command, and closes whatever is left when ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	for ln := range s.listeners {
		ln.Close()
	}
	s.cancel()
	for c := range s.conns {
		c.SetReadDeadline(time.Unix(1, 0)) // a blocked command read returns now
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		<-done
		return ctx.Err()
	}
}

// addressKey is what limits count per client: the IP address, or its /64
// for IPv6, since one host usually has a whole /64 to pick addresses from.
func addressKey(ip string) string {
	a := net.ParseIP(ip)
	if a == nil || a.To4() != nil {
		return ip
	}
	return a.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

func hostOf(a net.Addr) string {
	if a == nil {
		return ""
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}
