package pop3

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/smsmilter/smsmilter/internal/maildir"
	"github.com/smsmilter/smsmilter/internal/store"
)

const (
	// maxCommandLine is RFC 2449's limit, terminating CRLF included.
	maxCommandLine = 255
	// maxSASLLine bounds an AUTH continuation line, which RFC 5034 does
	// not hold to 255 octets (base64 of a 255-octet user, password and
	// authorization identity fits easily).
	maxSASLLine = 2048
)

var errLineTooLong = errors.New("line too long")

type state int

const (
	stateAuthorization state = iota
	stateTransaction
)

type entry struct {
	maildir.Message
	deleted bool
}

type session struct {
	srv   *Server
	raw   net.Conn // the TCP connection
	conn  net.Conn // raw, or TLS over it
	br    *bufio.Reader
	bw    *bufio.Writer
	ip    string
	tls   bool
	log   *slog.Logger
	state state

	user      string // argument of the last USER
	userGiven bool

	mailbox string // locked, in TRANSACTION
	mbox    *maildir.Mailbox
	msgs    []entry
}

func newSession(srv *Server, raw, conn net.Conn, ip string, isTLS bool, log *slog.Logger) *session {
	return &session{
		srv: srv, raw: raw, conn: conn, ip: ip, tls: isTLS, log: log,
		br: bufio.NewReaderSize(conn, 4096),
		bw: bufio.NewWriterSize(conn, 4096),
	}
}

func (s *session) run() {
	defer func() {
		if s.mailbox != "" {
			s.srv.unlock(s.mailbox)
		}
	}()
	s.log.Debug("pop3: session start", "tls", s.tls)
	// No APOP timestamp in the greeting: there is no APOP.
	s.ok("%s POP3 server ready", s.srv.cfg.Hostname)
	for {
		line, err := s.readLine(maxCommandLine)
		if errors.Is(err, errLineTooLong) {
			s.errf("command line too long (limit %d octets)", maxCommandLine)
			continue
		}
		if err != nil {
			s.end(err)
			return
		}
		cmd, err := parseCommand(line)
		if err != nil {
			s.errf("%v", err)
			continue
		}
		if done := s.dispatch(cmd); done {
			s.flush()
			return
		}
	}
}

// end closes a session that did not QUIT: no UPDATE, deletions are dropped.
func (s *session) end(err error) {
	var ne net.Error
	switch {
	case errors.Is(err, errShuttingDown) || s.srv.ctx.Err() != nil:
		s.errf("[SYS/TEMP] server shutting down")
	case errors.As(err, &ne) && ne.Timeout():
		s.errf("idle timeout, closing connection")
	case errors.Is(err, io.EOF):
		s.log.Debug("pop3: client closed the connection", "mailbox", s.mailbox)
		return
	default:
		s.log.Debug("pop3: session ended", "err", err, "mailbox", s.mailbox)
		return
	}
	s.flush()
}

func (s *session) dispatch(cmd command) (done bool) {
	switch cmd.name {
	case "QUIT":
		s.cmdQuit(cmd)
		return true
	case "CAPA":
		s.cmdCapa(cmd)
		return false
	case "APOP":
		s.errf("APOP not supported (passwords are stored hashed); use USER/PASS or AUTH PLAIN")
		return false
	}
	if fn, ok := authCommand(cmd.name); ok {
		if s.state != stateAuthorization {
			s.errf("%s not valid after login", cmd.name)
			return false
		}
		fn(s, cmd)
		return false
	}
	if fn, ok := transactionCommand(cmd.name); ok {
		if s.state != stateTransaction {
			s.errf("%s not valid before login", cmd.name)
			return false
		}
		fn(s, cmd)
		return false
	}
	s.errf("unknown command")
	return false
}

// authCommand and transactionCommand are the commands of each state
// (RFC 1939).
func authCommand(name string) (func(*session, command), bool) {
	switch name {
	case "USER":
		return (*session).cmdUser, true
	case "PASS":
		return (*session).cmdPass, true
	case "AUTH":
		return (*session).cmdAuth, true
	case "STLS":
		return (*session).cmdStls, true
	}
	return nil, false
}

func transactionCommand(name string) (func(*session, command), bool) {
	switch name {
	case "STAT":
		return (*session).cmdStat, true
	case "LIST":
		return (*session).cmdList, true
	case "UIDL":
		return (*session).cmdUidl, true
	case "RETR":
		return (*session).cmdRetr, true
	case "DELE":
		return (*session).cmdDele, true
	case "TOP":
		return (*session).cmdTop, true
	case "RSET":
		return (*session).cmdRset, true
	case "NOOP":
		return (*session).cmdNoop, true
	}
	return nil, false
}

// ---- I/O ----

func (s *session) ok(format string, a ...any) {
	s.bw.WriteString("+OK")
	if format != "" {
		s.bw.WriteString(" ")
		fmt.Fprintf(s.bw, format, a...)
	}
	s.bw.WriteString("\r\n")
}

func (s *session) errf(format string, a ...any) {
	s.bw.WriteString("-ERR ")
	fmt.Fprintf(s.bw, format, a...)
	s.bw.WriteString("\r\n")
}

func (s *session) flush() error {
	s.conn.SetWriteDeadline(time.Now().Add(s.srv.cfg.IdleTimeout))
	return s.bw.Flush()
}

// readLine reads one line of at most limit octets (line ending included)
// and returns it without the ending. A longer line is read to its end and
// dropped (errLineTooLong): the session goes on with the next line.
// Output is flushed only when no pipelined input is waiting, so a
// pipelining client gets its answers in few packets (RFC 2449 PIPELINING).
func (s *session) readLine(limit int) ([]byte, error) {
	if err := s.srv.armRead(s.raw); err != nil {
		return nil, err
	}
	if s.br.Buffered() == 0 {
		if err := s.flush(); err != nil {
			return nil, err
		}
	}
	var line []byte
	n := 0
	for {
		chunk, err := s.br.ReadSlice('\n')
		n += len(chunk)
		if n <= limit {
			line = append(line, chunk...)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil {
			return nil, err
		}
		break
	}
	if n > limit {
		return nil, errLineTooLong
	}
	line = line[:len(line)-1]
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	return line, nil
}

// ---- AUTHORIZATION ----

func (s *session) plaintextOK() bool {
	return s.tls || s.srv.cfg.IsSecure(s.raw.RemoteAddr())
}

func (s *session) refusePlaintext(what string) {
	s.log.Info("pop3: plaintext login refused without TLS", "command", what)
	if s.srv.cfg.TLSConfig != nil {
		s.errf("[AUTH] plaintext login refused on an unencrypted connection: use STLS first")
	} else {
		s.errf("[AUTH] plaintext login refused on an unencrypted connection: use the TLS port")
	}
}

func (s *session) cmdCapa(cmd command) {
	if !s.noArgs(cmd) {
		return
	}
	s.ok("capability list follows")
	caps := []string{"TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "EXPIRE NEVER"}
	if s.state == stateAuthorization {
		// Offer only what would work now (RFC 2595 §4: no plaintext
		// mechanisms before TLS where they are refused).
		if s.plaintextOK() {
			caps = append(caps, "USER", "SASL PLAIN")
		}
		if s.srv.cfg.TLSConfig != nil && !s.tls {
			caps = append(caps, "STLS")
		}
	}
	caps = append(caps, "IMPLEMENTATION smsmilter")
	for _, c := range caps {
		s.bw.WriteString(c + "\r\n")
	}
	s.bw.WriteString(".\r\n")
}

func (s *session) cmdUser(cmd command) {
	if !s.plaintextOK() {
		s.refusePlaintext("USER")
		return
	}
	if cmd.rest == "" {
		s.errf("USER needs a mailbox name")
		return
	}
	// Accepted whatever it names: whether a mailbox exists is told by
	// nobody before the password.
	s.user, s.userGiven = cmd.rest, true
	s.ok("send PASS")
}

func (s *session) cmdPass(cmd command) {
	if !s.plaintextOK() {
		s.refusePlaintext("PASS")
		return
	}
	if !s.userGiven {
		s.errf("USER first")
		return
	}
	if cmd.rest == "" {
		s.errf("PASS needs a password")
		return
	}
	user := s.user
	s.user, s.userGiven = "", false // RFC 1939: a failed PASS needs a new USER
	s.login(user, cmd.rest, "USER")
}

func (s *session) cmdAuth(cmd command) {
	if len(cmd.args) == 0 {
		// RFC 1734 clients ask "AUTH" alone for the mechanism list.
		s.ok("SASL mechanisms follow")
		s.bw.WriteString("PLAIN\r\n.\r\n")
		return
	}
	if !strings.EqualFold(cmd.args[0], "PLAIN") {
		s.errf("unsupported SASL mechanism (only PLAIN)")
		return
	}
	if len(cmd.args) > 2 {
		s.errf("AUTH PLAIN takes at most one initial response")
		return
	}
	if !s.plaintextOK() {
		s.refusePlaintext("AUTH PLAIN")
		return
	}
	var resp string
	if len(cmd.args) == 2 {
		resp = cmd.args[1]
		if resp == "=" { // RFC 5034: "=" is an empty initial response
			resp = ""
		}
	} else {
		s.bw.WriteString("+ \r\n")
		line, err := s.readLine(maxSASLLine)
		if errors.Is(err, errLineTooLong) {
			s.errf("SASL response too long")
			return
		}
		if err != nil {
			// The session is gone; run's next read reports why.
			return
		}
		resp = string(line)
		if resp == "*" {
			s.errf("authentication cancelled")
			return
		}
	}
	dec, err := base64.StdEncoding.DecodeString(resp)
	if err != nil {
		s.errf("invalid base64 in SASL response")
		return
	}
	// PLAIN: authzid NUL authcid NUL passwd (RFC 4616). More NULs mean a
	// NUL inside a credential: that login fails.
	parts := strings.Split(string(dec), "\x00")
	if len(parts) != 3 {
		user := ""
		if len(parts) > 1 {
			user = parts[1]
		}
		s.loginFailed(user, "AUTH PLAIN", "malformed PLAIN message or NUL in credentials", 0)
		return
	}
	authz, authc, pw := parts[0], parts[1], parts[2]
	if authz != "" && !strings.EqualFold(authz, authc) {
		s.loginFailed(authc, "AUTH PLAIN", "authorization identity differs from the login", 0)
		return
	}
	s.login(authc, pw, "AUTH PLAIN")
}

// throttleKeys: failures count per client address and per mailbox.
func (s *session) throttleKeys(user string) []string {
	return []string{"ip:" + addressKey(s.ip), "mailbox:" + strings.ToLower(user)}
}

func (s *session) login(user, pw, method string) {
	keys := s.throttleKeys(user)
	delay := s.srv.throttle.delay(s.srv.clock.Now(), keys...)
	if delay > 0 {
		// Wait before even looking at the password: the answer to a right
		// password comes as late as to a wrong one.
		s.flush()
		select {
		case <-s.srv.clock.After(delay):
		case <-s.srv.ctx.Done():
			return // run's next read reports the shutdown
		}
	}
	if strings.IndexByte(user, 0) >= 0 || strings.IndexByte(pw, 0) >= 0 {
		s.loginFailed(user, method, "NUL in credentials", delay)
		return
	}
	mailbox, err := maildir.Normalize(user)
	if err != nil {
		s.srv.dummy.compare(pw)
		s.loginFailed(user, method, "invalid mailbox name", delay)
		return
	}
	ctx, cancel := context.WithTimeout(s.srv.ctx, 30*time.Second)
	hash, err := s.srv.cfg.Credentials.MailboxPassword(ctx, mailbox)
	cancel()
	switch {
	case errors.Is(err, store.ErrNotFound):
		s.srv.dummy.compare(pw)
		s.loginFailed(user, method, "no such mailbox", delay)
		return
	case err != nil:
		s.log.Error("pop3: password lookup failed", "mailbox", mailbox, "err", err)
		s.errf("[SYS/TEMP] cannot check credentials now, try again later")
		return
	}
	s.srv.dummy.seen(hash)
	if !CheckPassword(hash, pw) {
		s.loginFailed(user, method, "wrong password", delay)
		return
	}
	s.srv.throttle.reset(keys[1])
	if !s.srv.lock(mailbox) {
		s.log.Info("pop3: mailbox in use", "mailbox", mailbox)
		s.errf("[IN-USE] mailbox is locked by another session")
		return
	}
	mbox, err := s.srv.cfg.Maildir.Mailbox(mailbox)
	var list []maildir.Message
	if err == nil {
		list, err = mbox.List()
	}
	if err != nil {
		s.srv.unlock(mailbox)
		s.log.Error("pop3: cannot open mailbox", "mailbox", mailbox, "err", err)
		s.errf("[SYS/TEMP] cannot open mailbox, try again later")
		return
	}
	s.mailbox, s.mbox, s.state = mailbox, mbox, stateTransaction
	s.msgs = make([]entry, len(list))
	for i, m := range list {
		s.msgs[i] = entry{Message: m}
	}
	s.log = s.log.With("mailbox", mailbox)
	s.log.Info("pop3: login", "method", method, "tls", s.tls, "messages", len(list))
	n, size := s.count()
	s.ok("mailbox has %d messages (%d octets)", n, size)
}

func (s *session) loginFailed(user, method, reason string, waited time.Duration) {
	n := s.srv.throttle.fail(s.srv.clock.Now(), s.throttleKeys(user)...)
	s.log.Warn("pop3: login failed", "mailbox", user, "method", method, "reason", reason,
		"failures", n, "delayed", waited)
	s.errf("[AUTH] authentication failed")
}

func (s *session) cmdStls(cmd command) {
	if s.srv.cfg.TLSConfig == nil {
		s.errf("STLS not available")
		return
	}
	if s.tls {
		s.errf("already using TLS")
		return
	}
	if !s.noArgs(cmd) {
		return
	}
	s.ok("begin TLS negotiation")
	if err := s.flush(); err != nil {
		return
	}
	// Whatever the client pipelined after STLS came in plaintext and is
	// dropped with the old reader, never run as if it were protected
	// (the STARTTLS command injection of CVE-2011-0411).
	tc := tls.Server(s.raw, s.srv.cfg.TLSConfig)
	s.raw.SetDeadline(time.Now().Add(s.srv.cfg.TLSHandshakeTimeout))
	if err := tc.HandshakeContext(s.srv.ctx); err != nil {
		s.log.Info("pop3: STLS handshake failed", "err", err)
		s.raw.Close()
		return
	}
	s.raw.SetDeadline(time.Time{})
	s.conn, s.tls = tc, true
	s.br.Reset(tc)
	s.bw.Reset(tc)
	// RFC 2595 §4: forget what the client said before TLS.
	s.user, s.userGiven = "", false
}

// ---- TRANSACTION ----

func (s *session) noArgs(cmd command) bool {
	if len(cmd.args) > 0 {
		s.errf("%s takes no arguments", cmd.name)
		return false
	}
	return true
}

func (s *session) count() (n int, size int64) {
	for _, m := range s.msgs {
		if !m.deleted {
			n++
			size += m.Size
		}
	}
	return n, size
}

// message resolves a message-number argument.
func (s *session) message(arg string) (int, *entry, bool) {
	n, ok := parseNumber(arg)
	switch {
	case !ok:
		s.errf("invalid message number")
		return 0, nil, false
	case n < 1 || n > len(s.msgs):
		s.errf("no such message")
		return 0, nil, false
	case s.msgs[n-1].deleted:
		s.errf("message %d already deleted", n)
		return 0, nil, false
	}
	return n, &s.msgs[n-1], true
}

func (s *session) cmdStat(cmd command) {
	if !s.noArgs(cmd) {
		return
	}
	n, size := s.count()
	s.ok("%d %d", n, size)
}

func (s *session) cmdList(cmd command) {
	s.listing(cmd, func(i int, m *entry) string { return fmt.Sprintf("%d %d", i, m.Size) })
}

func (s *session) cmdUidl(cmd command) {
	s.listing(cmd, func(i int, m *entry) string { return fmt.Sprintf("%d %s", i, m.UID()) })
}

// listing is LIST and UIDL: one message, or all that are not deleted.
func (s *session) listing(cmd command, line func(int, *entry) string) {
	switch len(cmd.args) {
	case 0:
		n, size := s.count()
		s.ok("%d messages (%d octets)", n, size)
		for i := range s.msgs {
			if !s.msgs[i].deleted {
				s.bw.WriteString(line(i+1, &s.msgs[i]) + "\r\n")
			}
		}
		s.bw.WriteString(".\r\n")
	case 1:
		if i, m, ok := s.message(cmd.args[0]); ok {
			s.ok("%s", line(i, m))
		}
	default:
		s.errf("%s takes at most one message number", cmd.name)
	}
}

func (s *session) cmdRetr(cmd command) {
	if len(cmd.args) != 1 {
		s.errf("RETR takes one message number")
		return
	}
	if _, m, ok := s.message(cmd.args[0]); ok {
		s.send(m, -1)
	}
}

func (s *session) cmdTop(cmd command) {
	if len(cmd.args) != 2 {
		s.errf("TOP takes a message number and a number of lines")
		return
	}
	_, m, ok := s.message(cmd.args[0])
	if !ok {
		return
	}
	lines, ok := parseNumber(cmd.args[1])
	if !ok {
		s.errf("invalid number of lines")
		return
	}
	s.send(m, lines)
}

// send writes a message as a multi-line response, dot-stuffed: the whole
// message (bodyLines < 0) or its header, the blank line and bodyLines lines
// of the body (TOP).
func (s *session) send(m *entry, bodyLines int) {
	rc, err := s.mbox.Open(m.ID)
	if err != nil {
		s.log.Error("pop3: cannot read message", "id", m.ID, "err", err)
		s.errf("[SYS/TEMP] message cannot be read now")
		return
	}
	defer rc.Close()
	if bodyLines < 0 {
		s.ok("%d octets", m.Size)
	} else {
		s.ok("top of message follows")
	}
	inHeader := true
	errDone := errors.New("done")
	err = maildir.Lines(rc, func(line []byte) error {
		if bodyLines >= 0 && !inHeader {
			if bodyLines == 0 {
				return errDone
			}
			bodyLines--
		}
		if inHeader && len(line) == 0 {
			inHeader = false
		}
		if len(line) > 0 && line[0] == '.' {
			s.bw.WriteByte('.')
		}
		s.bw.Write(line)
		_, werr := s.bw.WriteString("\r\n")
		return werr
	})
	if err != nil && !errors.Is(err, errDone) {
		// The +OK is out: the only honest end is to drop the connection.
		s.log.Error("pop3: reading message failed midway", "id", m.ID, "err", err)
		s.raw.Close()
		return
	}
	s.bw.WriteString(".\r\n")
}

func (s *session) cmdDele(cmd command) {
	if len(cmd.args) != 1 {
		s.errf("DELE takes one message number")
		return
	}
	if i, m, ok := s.message(cmd.args[0]); ok {
		m.deleted = true // removed from the maildir only at QUIT
		s.ok("message %d deleted", i)
	}
}

func (s *session) cmdRset(cmd command) {
	if !s.noArgs(cmd) {
		return
	}
	for i := range s.msgs {
		s.msgs[i].deleted = false
	}
	n, size := s.count()
	s.ok("maildrop has %d messages (%d octets)", n, size)
}

func (s *session) cmdNoop(cmd command) {
	if s.noArgs(cmd) {
		s.ok("")
	}
}

// cmdQuit ends the session; in TRANSACTION it is the UPDATE state, the only
// place where messages are really deleted.
func (s *session) cmdQuit(cmd command) {
	if s.state != stateTransaction {
		s.ok("bye")
		return
	}
	deleted, failed := 0, 0
	for _, m := range s.msgs {
		if !m.deleted {
			continue
		}
		if err := s.mbox.Delete(m.ID); err != nil {
			s.log.Error("pop3: delete failed", "id", m.ID, "err", err)
			failed++
			continue
		}
		deleted++
	}
	if deleted > 0 {
		if err := s.mbox.Sync(); err != nil {
			s.log.Error("pop3: sync after delete failed", "err", err)
		}
	}
	s.log.Info("pop3: logout", "deleted", deleted, "delete_failed", failed)
	if failed > 0 {
		s.errf("[SYS/TEMP] %d deleted messages not removed", failed)
		return
	}
	s.ok("bye (%d messages deleted)", deleted)
}
