package milter

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/textproto"
	"reflect"
	"slices"
	"strings"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/smsmilter/smsmilter/internal/phone"
	"github.com/smsmilter/smsmilter/internal/smtpreply"
	"github.com/smsmilter/smsmilter/policy"
)

// connState is what a milter connection knows across messages.
type connState struct {
	server    *Server
	conn      *conn
	connected bool // Connect seen
	clientIP  netip.Addr
	host      string
	helo      string
	daemon    string
	// lastMacros is the macro map go-milter handed to the previous
	// callback. go-milter replaces its map on every macro command and keeps
	// it otherwise, so a callback seeing the same map got no macros of its
	// own: they belong to an earlier stage, maybe to the previous message.
	// Holding the map (not its address) keeps its address from being
	// reused by a new one.
	lastMacros map[string]string
	sess       *session
}

// freshMacros returns the macros sent for the command being handled, or
// nil when the MTA sent none for it.
func (cs *connState) freshMacros(m *gomilter.Modifier) map[string]string {
	cur := m.Macros
	prev := cs.lastMacros
	cs.lastMacros = cur
	if cur == nil {
		return nil
	}
	if prev != nil && reflect.ValueOf(cur).UnsafePointer() == reflect.ValueOf(prev).UnsafePointer() {
		return nil
	}
	return cur
}

// recipient is an SMS recipient accepted at RCPT.
type recipient struct {
	addr   string // as the MTA gave it (without <>), for DeleteRecipient
	number phone.Number
}

// phase is where a message is in the milter protocol; commands that do
// not fit the phase end the connection (DESIGN.md §13).
type phase uint8

const (
	phaseIdle     phase = iota // connected, no message open
	phaseEnvelope              // MAIL seen: RCPTs
	phaseHeader                // header fields arriving
	phaseBody                  // end of header seen: body chunks
	phaseDone                  // the message has its final answer
)

func (p phase) String() string {
	return [...]string{"idle", "envelope", "header", "body", "done"}[p]
}

// session is one connection's current message. go-milter asks for a new
// backend after every final answer (accept, discard, reject, tempfail);
// the same session is handed back, reset, so its state never depends on
// which of go-milter's paths ended the previous message.
type session struct {
	h  *Handler
	cs *connState
	// rt is the config snapshot of this message: a reload mid-message must
	// not mix two configs.
	rt *runtime

	phase    phase
	eom      bool              // end of message seen
	rcptSeen int               // RCPT commands this message, any outcome
	final    gomilter.Response // the answer given once phaseDone, repeated if the MTA goes on
	from     string            // envelope sender
	auth     string            // {auth_authen}
	queueID  string            // last fresh i macro of this message
	rcpts    []recipient       // SMS recipients accepted at RCPT
	verdicts []string          // verdict@<sms domain> recipients
	others   int               // recipients smsmilter leaves alone
	header   []policy.Field    // as received, leading space kept
	body     bytes.Buffer      // CRLF, as received
	size     int64             // counted per DESIGN.md §13
	overSize bool              // max_message_size passed: nothing more is kept
	started  time.Time         // MAIL
}

// errOutOfOrder ends the connection: go-milter closes it when a callback
// returns an error, and only that connection is affected.
type errOutOfOrder struct {
	cmd   string
	phase phase
}

func (e *errOutOfOrder) Error() string {
	return fmt.Sprintf("milter protocol: %s out of order (message %s)", e.cmd, e.phase)
}

func (s *session) outOfOrder(cmd string) error {
	err := &errOutOfOrder{cmd: cmd, phase: s.phase}
	s.h.metrics.protocolErrors.Inc()
	s.h.log.Warn("closing milter connection: command out of order", "command", cmd, "phase", s.phase.String(),
		"client_ip", s.cs.clientIP.String(), "mail_from", s.from)
	s.endMessage()
	return err
}

// newMessage resets the session for a message starting now.
func (s *session) newMessage() {
	s.endMessage()
	s.rt = s.h.runtime()
	s.phase = phaseEnvelope
	s.started = s.h.now()
	s.cs.conn.setInMessage(true)
}

// endMessage forgets the message (final answer given, ABORT, or a new
// MAIL). Buffers are dropped, not reused: a session may sit idle for long
// and should not pin a max-size body.
func (s *session) endMessage() {
	if s.phase != phaseIdle && s.phase != phaseDone {
		s.cs.conn.messageDone()
	}
	*s = session{h: s.h, cs: s.cs, rt: s.rt}
}

// finish records the message's final answer when it is a custom reply
// (which keeps the go-milter backend) and returns it.
func (s *session) finish(r gomilter.Response) gomilter.Response {
	s.phase = phaseDone
	s.final = r
	s.cs.conn.messageDone()
	return r
}

// reply makes a custom SMTP reply. go-milter keeps the session for custom
// replies (ActReplyCode), unlike RespReject/RespTempFail which reset it.
// Postfix and Sendmail read the text as a format where "%%" is "%".
//
// The line is kept to printable ASCII and to 500 octets: SMTP reply lines
// are at most 512 (RFC 5321 §4.5.3.1.5), and an MTA that cannot pass a
// reply on may drop it for a generic one.
func reply(e *smtpreply.Error) gomilter.Response {
	line := strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return '?'
		}
		return r
	}, e.Error())
	if len(line) > maxReplyLen {
		line = line[:maxReplyLen-3] + "..."
	}
	return gomilter.NewResponseStr(byte(gomilter.ActReplyCode), strings.ReplaceAll(line, "%", "%%"))
}

// maxReplyLen bounds a reply line before "%" is doubled: Postfix and
// Sendmail undo the doubling before the line goes out.
const maxReplyLen = 500

func (s *session) Connect(host, family string, port uint16, addr net.IP, m *gomilter.Modifier) (gomilter.Response, error) {
	if s.cs.connected {
		return nil, s.outOfOrder("CONNECT")
	}
	mac := s.cs.freshMacros(m)
	s.cs.connected = true
	s.cs.host = host
	if ip, ok := netip.AddrFromSlice(addr); ok {
		s.cs.clientIP = ip.Unmap()
	}
	s.cs.daemon = mac["{daemon_name}"]
	return gomilter.RespContinue, nil
}

func (s *session) Helo(name string, m *gomilter.Modifier) (gomilter.Response, error) {
	s.cs.freshMacros(m)
	switch {
	case !s.cs.connected:
		return nil, s.outOfOrder("HELO")
	case s.phase == phaseHeader || s.phase == phaseBody:
		return nil, s.outOfOrder("HELO")
	}
	// EHLO after STARTTLS, or a new EHLO, ends any open transaction.
	if s.phase != phaseIdle {
		s.endMessage()
	}
	s.cs.helo = name
	return gomilter.RespContinue, nil
}

func (s *session) MailFrom(from string, m *gomilter.Modifier) (gomilter.Response, error) {
	mac := s.cs.freshMacros(m)
	if !s.cs.connected {
		return nil, s.outOfOrder("MAIL")
	}
	// A new MAIL ends whatever message was open: Postfix sends ABORT
	// between messages, go-milter's client and some MTAs do not.
	s.newMessage()
	s.from = from
	s.auth = mac["{auth_authen}"]
	if i := mac["i"]; i != "" {
		s.queueID = i
	}
	return gomilter.RespContinue, nil
}

func (s *session) RcptTo(rcpt string, m *gomilter.Modifier) (gomilter.Response, error) {
	mac := s.cs.freshMacros(m)
	if s.phase != phaseEnvelope {
		return nil, s.outOfOrder("RCPT")
	}
	if i := mac["i"]; i != "" {
		s.queueID = i
	}
	s.rcptSeen++
	cfg := s.rt.cfg
	local, domain, ok := splitAddress(rcpt)
	if !ok || !s.rt.isSMSDomain(domain) {
		s.others++
		return gomilter.RespContinue, nil
	}
	if strings.EqualFold(local, cfg.VerdictLocalPart) {
		if !slices.ContainsFunc(s.verdicts, func(v string) bool { return strings.EqualFold(v, rcpt) }) {
			s.verdicts = append(s.verdicts, rcpt)
		}
		return gomilter.RespContinue, nil
	}
	if len(s.rcpts) >= cfg.SMS.MaxRecipients {
		e := smtpreply.New(452, "4.5.3", "too many SMS recipients: at most %d per message", cfg.SMS.MaxRecipients)
		s.rcptRejected(rcpt, e)
		return reply(e), nil
	}
	n, err := s.rt.parseRecipient(local)
	if err != nil {
		e, ok := smtpreply.As(err)
		if !ok {
			e = smtpreply.Wrap(err, 550, "5.1.3", "not a valid mobile number")
		}
		s.rcptRejected(rcpt, e)
		return reply(e), nil
	}
	s.rcpts = append(s.rcpts, recipient{addr: rcpt, number: n})
	return gomilter.RespContinue, nil
}

func (s *session) rcptRejected(rcpt string, e *smtpreply.Error) {
	s.h.metrics.rcptRejected.Inc()
	s.h.log.Info("recipient rejected", "outcome", "rcpt_rejected", "rcpt", rcpt, "reason", e.Error(),
		"client_ip", s.cs.clientIP.String(), "mail_from", s.from, "auth", s.auth)
}

// smsMail reports whether this message concerns smsmilter at all.
func (s *session) smsMail() bool { return len(s.rcpts) > 0 || len(s.verdicts) > 0 }

// pass ends smsmilter's part in a mail with no SMS recipient: accepting
// it here means the MTA sends none of its body, and nothing is limited or
// buffered (DESIGN.md §13).
func (s *session) pass() gomilter.Response {
	s.h.metrics.messages.WithLabelValues("passed").Inc()
	s.h.log.Debug("no SMS recipient: passed", "outcome", "passed", "client_ip", s.cs.clientIP.String(), "mail_from", s.from)
	return gomilter.RespAccept // go-milter then asks for a new backend: endMessage
}

func (s *session) Header(name, value string, m *gomilter.Modifier) (gomilter.Response, error) {
	s.cs.freshMacros(m)
	switch {
	case s.phase == phaseDone && !s.eom:
		return s.final, nil
	case s.phase == phaseEnvelope && s.rcptSeen > 0:
		s.phase = phaseHeader
	case s.phase == phaseHeader:
	default:
		return nil, s.outOfOrder("HEADER")
	}
	if !s.smsMail() {
		return s.pass(), nil
	}
	// DESIGN.md §13 counts "Name: value" CRLF. With SMFIP_HDR_LEADSPC the
	// value keeps the space after the colon; without it, it does not.
	n := int64(len(name) + 2 + len(strings.TrimPrefix(value, " ")) + 2)
	return s.add(n, func() { s.header = append(s.header, policy.Field{Name: name, Value: value}) }), nil
}

func (s *session) Headers(h textproto.MIMEHeader, m *gomilter.Modifier) (gomilter.Response, error) {
	mac := s.cs.freshMacros(m)
	switch {
	case s.phase == phaseDone && !s.eom:
		return s.final, nil
	case s.phase == phaseEnvelope && s.rcptSeen > 0, s.phase == phaseHeader:
		s.phase = phaseBody
	default:
		return nil, s.outOfOrder("EOH")
	}
	if i := mac["i"]; i != "" {
		s.queueID = i
	}
	if !s.smsMail() {
		return s.pass(), nil
	}
	return s.add(2, nil), nil // the blank line
}

func (s *session) BodyChunk(chunk []byte, m *gomilter.Modifier) (gomilter.Response, error) {
	s.cs.freshMacros(m)
	switch {
	case s.phase == phaseDone && !s.eom:
		return s.final, nil
	case s.phase == phaseBody:
	default:
		return nil, s.outOfOrder("BODY")
	}
	return s.add(int64(len(chunk)), func() { s.body.Write(chunk) }), nil
}

// add counts n octets against milter.max_message_size and keeps the data
// only while under it. Mail for SMS recipients only is refused at once;
// mixed mail goes on for its other recipients, unbuffered.
func (s *session) add(n int64, keep func()) gomilter.Response {
	s.size += n
	limit := int64(s.rt.cfg.Milter.MaxMessageSize)
	if limit > 0 && s.size > limit {
		if !s.overSize {
			// Drop the body; the header kept so far is small and is
			// what an SPF check for a notice needs.
			s.overSize = true
			s.body = bytes.Buffer{}
		}
		if s.others == 0 {
			e := s.tooBig()
			s.h.metrics.messages.WithLabelValues("too_big").Inc()
			s.decisionLog().Info("refused", "outcome", "too_big", "size", s.size, "reason", e.Error())
			return s.finish(reply(e))
		}
		return gomilter.RespContinue
	}
	if keep != nil {
		keep()
	}
	return gomilter.RespContinue
}

func (s *session) tooBig() *smtpreply.Error {
	return smtpreply.New(552, "5.3.4", "message too big for SMS: more than %d bytes", int64(s.rt.cfg.Milter.MaxMessageSize))
}

func (s *session) Body(m *gomilter.Modifier) (gomilter.Response, error) {
	mac := s.cs.freshMacros(m)
	switch {
	case s.phase == phaseDone && !s.eom:
		return s.final, nil
	case s.phase == phaseEnvelope && s.rcptSeen > 0, s.phase == phaseHeader, s.phase == phaseBody:
	default:
		return nil, s.outOfOrder("EOM")
	}
	s.eom = true
	// The queue ID is reliable only here (Postfix); an earlier fresh one
	// of the same message is the fallback.
	if i := mac["i"]; i != "" {
		s.queueID = i
	}
	if !s.smsMail() {
		return s.pass(), nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout(s.rt.cfg))
	defer cancel()
	start := time.Now()
	resp := s.endOfMessage(ctx, m)
	s.h.metrics.eomLatency.Observe(time.Since(start).Seconds())
	if resp.Continue() {
		// A custom reply keeps go-milter's backend: the message still
		// ends here.
		return s.finish(resp), nil
	}
	return resp, nil
}

func (s *session) Abort(m *gomilter.Modifier) error {
	s.cs.freshMacros(m)
	// A client that vanishes mid-message leaves no SMS: nothing is queued
	// before end of message, so there is nothing to undo.
	s.endMessage()
	return nil
}

// decisionLog is the logger of this message's decision line.
func (s *session) decisionLog() *slog.Logger {
	return s.h.log.With("queue_id", s.queueID, "client_ip", s.cs.clientIP.String(), "helo", s.cs.helo,
		"mail_from", s.from, "auth", s.auth)
}

// splitAddress splits local@domain at the last '@'.
func splitAddress(addr string) (local, domain string, ok bool) {
	i := strings.LastIndexByte(addr, '@')
	if i <= 0 || i == len(addr)-1 {
		return "", "", false
	}
	return addr[:i], addr[i+1:], true
}
