package milter

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/smsmilter/smsmilter/internal/config"
)

// Listen opens the milter listener: network "tcp" or "unix", as
// config.ParseListen gives them. A stale unix socket left by a crashed
// daemon is removed; one that answers is in use and is left alone.
func Listen(network, where string) (net.Listener, error) {
	if network != "unix" {
		ln, err := net.Listen(network, where)
		if err != nil {
			return nil, fmt.Errorf("milter listen: %w", err)
		}
		return ln, nil
	}
	if fi, err := os.Stat(where); err == nil && fi.Mode()&os.ModeSocket != 0 {
		if c, err := net.DialTimeout("unix", where, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("milter socket %s is in use by another process", where)
		}
		os.Remove(where)
	}
	ln, err := net.Listen("unix", where)
	if err != nil {
		return nil, fmt.Errorf("milter listen: %w", err)
	}
	// Postfix connects as its own user: the socket must be reachable by
	// the group the admin puts postfix in (the unit's RuntimeDirectory).
	if err := os.Chmod(where, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("milter socket %s: %w", where, err)
	}
	return ln, nil
}

// Server accepts MTA connections and runs one milter session per
// connection. go-milter has no deadlines, no connection limit and no drain:
// Server adds them around it.
type Server struct {
	handler *Handler
	log     *slog.Logger

	mu       sync.Mutex
	conns    map[*conn]struct{}
	ln       net.Listener
	draining atomic.Bool
	wg       sync.WaitGroup
	// lastRefusalLog rate-limits the "too many connections" warning: a
	// flood must not turn into a flood of log lines.
	lastRefusalLog atomic.Int64
}

// NewServer returns a server that hands every connection to h.
func NewServer(h *Handler, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{handler: h, log: log, conns: make(map[*conn]struct{})}
}

// Serve accepts connections until Shutdown or a listener error.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.draining.Load() {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.ln = ln
	s.mu.Unlock()
	var tempDelay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.draining.Load() || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded) || isTemporaryAccept(err) {
				// EMFILE and friends: back off instead of spinning.
				tempDelay = min(max(2*tempDelay, 5*time.Millisecond), time.Second)
				s.log.Warn("milter accept failed; retrying", "err", err, "retry_in", tempDelay.String())
				time.Sleep(tempDelay)
				continue
			}
			return fmt.Errorf("milter accept: %w", err)
		}
		tempDelay = 0
		cfg := s.handler.Config()
		s.mu.Lock()
		if len(s.conns) >= maxConnections(cfg) || s.draining.Load() {
			s.mu.Unlock()
			// Refusing is better than stalling the sessions we already
			// have; the MTA applies milter_default_action (tempfail).
			s.handler.metrics.refusedConns.Inc()
			if now := time.Now().UnixNano(); now-s.lastRefusalLog.Load() > int64(time.Second) {
				s.lastRefusalLog.Store(now)
				s.log.Warn("milter connection refused: too many connections", "max_connections", cfg.Milter.MaxConnections,
					"client", nc.RemoteAddr().String())
			}
			nc.Close()
			continue
		}
		c := newConn(nc, s, stepTimeout(cfg), idleTimeout(cfg))
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.handler.metrics.connections.Inc()
		s.mu.Unlock()
		go s.serveConn(c)
	}
}

// isTemporaryAccept reports accept errors that pass (out of file
// descriptors, a connection reset before it was accepted).
func isTemporaryAccept(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED, syscall.ECONNRESET} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func (s *Server) serveConn(c *conn) {
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.handler.metrics.connections.Dec()
		s.wg.Done()
	}()
	st := &connState{server: s, conn: c}
	st.sess = s.handler.newSession(st)
	// One go-milter Server per connection: its NewMilter closure keeps the
	// connection's state (client IP, HELO). go-milter calls it once at the
	// start and again after every final answer (accept, discard, reject,
	// tempfail): that is where a message ends.
	ms := &gomilter.Server{
		NewMilter: func() gomilter.Milter {
			st.sess.endMessage()
			return st.sess
		},
		Actions: gomilter.OptRemoveRcpt | gomilter.OptSetSymList,
		// No OptNo*Reply flags: go-milter does not honour them (NOTES.md).
		// OptNoUnknown: an unknown command ends the connection anyway.
		// Leading space kept so that c=simple DKIM signatures verify.
		Protocol: gomilter.OptNoUnknown | gomilter.OptHeaderLeadingSpace,
		SymList: map[gomilter.Stage][]string{
			gomilter.StageConnect:  {"j", "{daemon_name}", "{daemon_addr}", "v", "_"},
			gomilter.StageMailFrom: {"i", "{auth_type}", "{auth_authen}", "{auth_author}", "{mail_addr}"},
			gomilter.StageRcptTo:   {"i", "{rcpt_addr}"},
			gomilter.StageEOH:      {"i"},
			gomilter.StageEOM:      {"i"},
		},
	}
	ms.Serve(&oneConnListener{c: c}) // returns when the connection is closed
	<-c.done
}

// Draining reports whether Shutdown has begun.
func (s *Server) Draining() bool { return s.draining.Load() }

// Active returns the number of open MTA connections.
func (s *Server) Active() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Shutdown stops accepting and lets open sessions finish until ctx ends,
// then closes what is left: the MTA tempfails those messages and retries,
// and nothing was queued for them (nothing is before end of message). A
// connection closes as soon as it is between messages after having had
// one, since the MTA got every answer it waited for; one that has not yet
// started its first message may still be about to, and is left open.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.draining.Store(true)
	if s.ln != nil {
		s.ln.Close()
	}
	for c := range s.conns {
		if c.idleAfterMessage() {
			c.drainClose()
		}
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		s.handler.Wait()
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	n := len(s.conns)
	for c := range s.conns {
		c.drainClose()
	}
	s.mu.Unlock()
	if n > 0 {
		s.log.Warn("drain timeout: closed open milter connections; the MTA tempfails their messages", "connections", n)
	}
	<-done
	s.handler.Wait()
	return ctx.Err()
}

// conn puts a deadline on every milter step: go-milter sets none, and a
// vanished or stalled MTA must not hold a session forever. Each packet the
// MTA sends must arrive whole within the step timeout of the moment we
// start waiting for it, and each answer must be written within it.
//
// The wait for the next command is bounded by milter.idle_timeout: the MTA
// sends nothing while its SMTP client is slow to send its next command, and
// a slow client must not cost it the milter (Postfix waits smtpd_timeout,
// 300s, for a client). An idle connection past it is closed (DESIGN.md
// §13); once a command starts arriving it must arrive whole within
// milter.timeout.
type conn struct {
	net.Conn
	server  *Server
	timeout time.Duration
	idle    time.Duration

	// go-milter reads each packet in two exact-size reads (length, then
	// the rest): buffered, a command and its macros take one read(2).
	br *bufio.Reader
	// Read-side framing, to tell where a packet starts: go-milter never
	// reads across packets.
	hdr       [4]byte
	hdrN      int
	remaining uint32

	inMessage atomic.Bool
	messages  atomic.Int64 // messages ended on this connection
	drained   atomic.Bool  // closed by drain: reads end quietly (EOF)

	closeOnce sync.Once
	done      chan struct{}
}

// stepTimeout and maxConnections guard against a config built without
// Load (tests, explain): zero would refuse everything.
func stepTimeout(cfg *config.Config) time.Duration {
	if cfg.Milter.Timeout > 0 {
		return cfg.Milter.Timeout
	}
	return 30 * time.Second
}

func maxConnections(cfg *config.Config) int {
	if cfg.Milter.MaxConnections > 0 {
		return cfg.Milter.MaxConnections
	}
	return 500
}

// idleTimeout is milter.idle_timeout, never below the step timeout.
func idleTimeout(cfg *config.Config) time.Duration {
	return max(cfg.Milter.IdleTimeout, stepTimeout(cfg))
}

func newConn(nc net.Conn, s *Server, timeout, idle time.Duration) *conn {
	c := &conn{Conn: nc, server: s, timeout: timeout, idle: max(idle, timeout), done: make(chan struct{})}
	c.br = bufio.NewReaderSize(rawReader{nc}, 4096)
	return c
}

func (c *conn) setInMessage(v bool) { c.inMessage.Store(v) }

// messageDone marks the end of a message (answered or aborted).
func (c *conn) messageDone() {
	c.inMessage.Store(false)
	c.messages.Add(1)
}

func (c *conn) idleAfterMessage() bool { return !c.inMessage.Load() && c.messages.Load() > 0 }

func (c *conn) drainClose() {
	c.drained.Store(true)
	c.Close()
}

func (c *conn) Read(p []byte) (int, error) {
	boundary := false
	if c.hdrN == 0 && c.remaining == 0 {
		// A packet boundary: the previous command was read whole.
		if c.server != nil && c.server.draining.Load() && c.idleAfterMessage() {
			c.drainClose()
			return 0, io.EOF
		}
		boundary = true
		if c.br.Buffered() == 0 {
			c.Conn.SetReadDeadline(time.Now().Add(c.idle))
		}
	}
	n, err := c.br.Read(p)
	if boundary && n > 0 {
		// The next command has begun: the rest of it is one step.
		c.Conn.SetReadDeadline(time.Now().Add(c.timeout))
	}
	c.track(p[:n])
	if err != nil {
		if c.drained.Load() {
			return n, io.EOF
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() && c.server != nil {
			c.server.handler.metrics.timeouts.Inc()
			c.server.log.Warn("milter connection timed out: closing it", "timeout", c.timeout.String(), "idle_timeout", c.idle.String(),
				"in_message", c.inMessage.Load(), "remote", c.RemoteAddr().String())
		}
	}
	return n, err
}

// rawReader hides the net.Conn's other methods from bufio.
type rawReader struct{ r io.Reader }

func (r rawReader) Read(p []byte) (int, error) { return r.r.Read(p) }

// track follows packet boundaries through the bytes read.
func (c *conn) track(b []byte) {
	for len(b) > 0 {
		if c.hdrN < 4 {
			k := copy(c.hdr[c.hdrN:], b)
			c.hdrN += k
			b = b[k:]
			if c.hdrN == 4 {
				c.remaining = binary.BigEndian.Uint32(c.hdr[:])
				if c.remaining == 0 {
					c.hdrN = 0 // go-milter refuses it and closes
				}
			}
			continue
		}
		k := min(uint32(len(b)), c.remaining)
		c.remaining -= k
		b = b[k:]
		if c.remaining == 0 {
			c.hdrN = 0
		}
	}
}

func (c *conn) Write(p []byte) (int, error) {
	c.Conn.SetWriteDeadline(time.Now().Add(c.timeout))
	return c.Conn.Write(p)
}

func (c *conn) Close() error {
	var err error
	c.closeOnce.Do(func() {
		err = c.Conn.Close()
		close(c.done)
	})
	return err
}

// oneConnListener hands go-milter's Serve exactly one connection, then
// blocks until that connection is closed.
type oneConnListener struct {
	c    *conn
	used bool
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	if !l.used {
		l.used = true
		return l.c, nil
	}
	<-l.c.done
	return nil, net.ErrClosed
}

func (l *oneConnListener) Close() error   { return nil }
func (l *oneConnListener) Addr() net.Addr { return l.c.LocalAddr() }
