package milter

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/smsmilter/smsmilter/internal/phone"
	"github.com/smsmilter/smsmilter/internal/smstext"
	"github.com/smsmilter/smsmilter/internal/smtpreply"
	"github.com/smsmilter/smsmilter/internal/store"
	"github.com/smsmilter/smsmilter/policy"
)

// Input is one message as the milter saw it; `smsmilter explain` builds one
// from a saved file.
type Input struct {
	ClientIP  netip.Addr
	Helo      string
	MailFrom  string
	AuthLogin string
	QueueID   string
	Header    []policy.Field // values as received: leading space and folds kept
	Body      []byte         // CRLF line ends
	Rcpts     []phone.Number
}

// Plan is what smsmilter would do with a message: the decision, the SMS
// text, and the reason it refuses (nil Err: it would send).
type Plan struct {
	Decision  *policy.Decision // nil when the decision could not be made now
	User      store.User
	Text      string
	Subject   string
	MessageID string // without <>
	Info      smstext.Info
	Err       *smtpreply.Error
}

func (in *Input) message() *policy.Message {
	return &policy.Message{
		ClientIP:  in.ClientIP,
		Helo:      in.Helo,
		MailFrom:  in.MailFrom,
		AuthLogin: in.AuthLogin,
		QueueID:   in.QueueID,
		Header:    in.Header,
		Body:      in.Body,
	}
}

// Raw rebuilds the message as received: header fields as the MTA sent them
// (leading space kept, folds as CRLF), a blank line, then the body. DKIM
// verification and MIME parsing both need exactly this.
func (in *Input) Raw() []byte { return in.message().Raw() }

// Plan decides what to do with a message without changing anything.
// all asks for every verdict even when the rule does not need it.
func (h *Handler) Plan(ctx context.Context, in *Input, all bool) *Plan {
	return h.plan(ctx, h.runtime(), in, all)
}

// plan runs the end-of-message checks of DESIGN.md §2 in order: sender
// policy (verdicts, rule, thresholds), body to SMS text, quota.
func (h *Handler) plan(ctx context.Context, rt *runtime, in *Input, all bool) *Plan {
	p := &Plan{MessageID: messageID(in.Header)}
	h.reg.sync(ctx)
	d, err := rt.eval.Decide(ctx, in.message(), all)
	if err != nil {
		p.Err = asReply(err, 451, "4.7.0", "cannot check the sender now; try again later")
		return p
	}
	p.Decision = d

	text, err := smstext.Extract(bytes.NewReader(in.Raw()), smstext.Options{
		IncludeSubject: rt.cfg.Body.IncludeSubject,
		StripPatterns:  rt.strip,
	})
	p.Subject = text.Subject
	if err == nil {
		p.Text, p.Info, err = smstext.Fit(text.Body, rt.cfg.SMS.MaxParts, rt.cfg.SMS.Overflow)
	}
	if !d.Allowed {
		p.Err = asReply(d.Err(), 550, "5.7.1", "sender not authorized to send SMS")
		return p
	}
	if err != nil {
		p.Err = asReply(err, 550, "5.6.0", "cannot turn this message into SMS text")
		return p
	}
	if d.Rule == nil { // Allowed implies a rule; never send without one
		p.Err = smtpreply.New(550, "5.7.1", "no rule authorizes this sender")
		return p
	}
	u, err := h.reg.GetUser(ctx, d.Rule.User)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			p.Err = smtpreply.New(550, "5.7.1", "forwarding user %q of rule %s:%s does not exist", d.Rule.User, d.Rule.Kind, d.Rule.Pattern)
		} else {
			p.Err = smtpreply.Wrap(err, 451, "4.3.0", "store unavailable; try again later")
		}
		return p
	}
	p.User = u
	if n := uniqueNumbers(in.Rcpts); u.Daily > 0 && n > 0 {
		day := h.now().UTC().Truncate(24 * time.Hour)
		used, err := h.store.CountUserSince(ctx, u.Name, day)
		if err != nil {
			p.Err = smtpreply.Wrap(err, 451, "4.3.0", "store unavailable; try again later")
			return p
		}
		if used+p.Info.Parts*n > u.Daily {
			p.Err = smtpreply.New(550, "5.7.1", "daily SMS quota of %d reached for user %s", u.Daily, u.Name)
			return p
		}
	}
	return p
}

func uniqueNumbers(ns []phone.Number) int {
	seen := make(map[string]bool, len(ns))
	for _, n := range ns {
		seen[n.E164] = true
	}
	return len(seen)
}

func asReply(err error, code int, enhanced, text string) *smtpreply.Error {
	if e, ok := smtpreply.As(err); ok {
		return e
	}
	return smtpreply.Wrap(err, code, enhanced, "%s", text)
}

// messageID returns the Message-ID without <> ("" if none).
func messageID(h []policy.Field) string {
	for _, f := range h {
		if strings.EqualFold(strings.TrimSpace(f.Name), "Message-Id") {
			v := strings.Join(strings.Fields(f.Value), "")
			return strings.TrimSuffix(strings.TrimPrefix(v, "<"), ">")
		}
	}
	return ""
}

func (s *session) input() *Input {
	in := &Input{ClientIP: s.cs.clientIP, Helo: s.cs.helo, MailFrom: s.from, AuthLogin: s.auth, QueueID: s.queueID,
		Header: s.header, Body: s.body.Bytes()}
	for _, r := range s.rcpts {
		in.Rcpts = append(in.Rcpts, r.number)
	}
	return in
}

// endOfMessage runs the end-of-message steps of DESIGN.md §2 and returns
// the milter's answer. Answers that end the message and keep the other
// recipients are RespAccept (after the SMS recipients were deleted);
// RespDiscard when no recipient is left; custom replies refuse or
// tempfail the whole message.
func (s *session) endOfMessage(ctx context.Context, m *gomilter.Modifier) gomilter.Response {
	h, rt := s.h, s.rt
	log := s.decisionLog()
	if s.overSize {
		return s.tooBigMixed(ctx, m, log)
	}
	in := s.input()
	verdict := len(s.verdicts) > 0
	p := h.plan(ctx, rt, in, verdict)
	if len(s.rcpts) > 0 {
		s.countVerdicts(p)
	}
	fields := s.logFields(p)
	if verdict {
		fields = append(fields, "verdict_answered", s.answerVerdict(ctx, p))
		for _, r := range s.verdicts {
			m.DeleteRecipient(r)
		}
	}
	if len(s.rcpts) == 0 {
		h.metrics.messages.WithLabelValues("verdict").Inc()
		reason := ""
		if p.Err != nil {
			reason = p.Err.Error()
		}
		log.Info("verdict", append(fields, "outcome", "verdict", "reason", reason)...)
		return s.rest()
	}

	if p.Err != nil {
		if p.Err.Temporary() {
			log.Warn("tempfail", append(fields, "outcome", "tempfail", "reason", p.Err.Error())...)
			h.metrics.messages.WithLabelValues("tempfail").Inc()
			return reply(p.Err)
		}
		h.metrics.messages.WithLabelValues("refused").Inc()
		h.eventLater(store.EventRefused, p.Err.Error(), s.eventFields(p))
		if s.others == 0 {
			log.Info("refused", append(fields, "outcome", "refused", "reason", p.Err.Error())...)
			return reply(p.Err)
		}
		// Mixed mail: the other recipients get it, the sender hears why
		// the SMS part was dropped.
		log.Info("refused", append(fields, "outcome", "refused_sms_part", "reason", p.Err.Error())...)
		s.dropSMSRecipients(m)
		s.notice(ctx, s.authenticated(ctx, in, p.Decision, verdict), p.Err, p.Subject)
		return gomilter.RespAccept
	}

	jobs := s.jobs(p)
	res, err := h.store.Enqueue(ctx, jobs, rt.cfg.SMS.DedupeWindow)
	if err != nil {
		// The MTA keeps the mail and retries; nothing was recorded, no
		// dedupe key either, so the retry goes through.
		e := smtpreply.Wrap(err, 451, "4.3.0", "cannot queue the SMS now; try again later")
		log.Error("tempfail", append(fields, "outcome", "tempfail", "reason", e.Error(), "err", err.Error())...)
		h.metrics.messages.WithLabelValues("tempfail").Inc()
		return reply(e)
	}
	ids := make([]string, 0, len(res.IDs))
	for _, id := range res.IDs {
		if id != 0 {
			ids = append(ids, strconv.FormatInt(id, 10))
		}
	}
	h.metrics.jobs.Add(float64(len(ids)))
	if h.queued != nil && len(ids) > 0 {
		h.queued()
	}
	h.metrics.messages.WithLabelValues("queued").Inc()
	jobList := strings.Join(ids, ",")
	log.Info("queued", append(fields, "outcome", "queued", "jobs", jobList, "duplicates", res.Duplicates)...)
	ef := s.eventFields(p)
	ef["jobs"] = jobList
	h.eventLater(store.EventAccepted, fmt.Sprintf("%d SMS queued for %s (rule %s:%s, user %s)",
		len(ids), orNull(s.from), p.Decision.Rule.Kind, p.Decision.Rule.Pattern, p.User.Name), ef)
	s.checkNewIP(ctx, p)

	s.dropSMSRecipients(m)
	return s.rest()
}

// rest is the answer once the SMS and verdict recipients are taken care
// of: the message is consumed when no other recipient is left.
func (s *session) rest() gomilter.Response {
	if s.others == 0 {
		return gomilter.RespDiscard
	}
	return gomilter.RespAccept
}

// tooBigMixed handles mail over max_message_size that also has other
// recipients: they still get it; the SMS recipients are dropped and the
// sender is told (DESIGN.md §13).
func (s *session) tooBigMixed(ctx context.Context, m *gomilter.Modifier, log *slog.Logger) gomilter.Response {
	e := s.tooBig()
	s.h.metrics.messages.WithLabelValues("too_big").Inc()
	if s.others == 0 { // not reached: refused when the limit was passed
		log.Info("refused", "outcome", "too_big", "size", s.size, "reason", e.Error())
		return reply(e)
	}
	log.Info("refused", "outcome", "too_big_sms_part", "size", s.size, "reason", e.Error(), "to", s.numbers())
	s.h.eventLater(store.EventRefused, e.Error(), s.eventFields(&Plan{}))
	s.dropSMSRecipients(m)
	for _, r := range s.verdicts {
		m.DeleteRecipient(r)
	}
	// The body is gone; the header kept so far and the envelope are
	// enough to check SPF, which is what a notice needs.
	in := s.input()
	in.Body = nil
	s.notice(ctx, s.authenticated(ctx, in, nil, false), e, "")
	return gomilter.RespAccept
}

// authenticated reports whether the envelope sender passed SPF or the
// From domain aligned DKIM, running every check if the decision at hand
// did not (a rule that needs no SPF still must not cause backscatter).
func (s *session) authenticated(ctx context.Context, in *Input, d *policy.Decision, all bool) bool {
	if d != nil && (d.SenderAuthenticated || all) {
		return d.SenderAuthenticated
	}
	if s.from == "" {
		return false
	}
	d, err := s.rt.eval.Decide(ctx, in.message(), true)
	if err != nil {
		s.h.log.Info("cannot check the sender for a notice", "mail_from", s.from, "err", err.Error())
		return false
	}
	return d.SenderAuthenticated
}

func (s *session) countVerdicts(p *Plan) {
	d := p.Decision
	if d == nil {
		return
	}
	for _, v := range []struct {
		check string
		v     policy.Verdict
	}{{"dkim", d.Verdicts.DKIM}, {"spf", d.Verdicts.SPF}, {"dmarc", d.Verdicts.DMARC}} {
		if v.v.Result == "" {
			continue
		}
		level := v.v.Level.String()
		if v.v.Level == 0 {
			level = "none"
		}
		s.h.metrics.verdicts.WithLabelValues(v.check, level).Inc()
	}
}

// jobs builds one job per SMS recipient (the same number twice in one mail
// is one SMS). The dedupe key is the Message-ID, or without one a hash of
// the envelope sender and body, with the number: the MTA's retry of a mail
// whose answer got lost is then not sent twice (DESIGN.md §6).
func (s *session) jobs(p *Plan) []store.Job {
	key := p.MessageID
	if key == "" {
		sum := sha256.New()
		sum.Write([]byte(strings.ToLower(s.from)))
		sum.Write([]byte{0})
		sum.Write(s.body.Bytes())
		key = "body:" + hex.EncodeToString(sum.Sum(nil)[:16])
	}
	sender := s.from
	if addr := p.Decision.From; addr != "" {
		sender = addr
	}
	jobs := make([]store.Job, 0, len(s.rcpts))
	seen := make(map[string]bool, len(s.rcpts))
	for _, r := range s.rcpts {
		if seen[r.number.E164] {
			continue
		}
		seen[r.number.E164] = true
		jobs = append(jobs, store.Job{
			DedupeKey: key + "|" + r.number.E164,
			MessageID: p.MessageID,
			QueueID:   s.queueID,
			Sender:    sender,
			NotifyOK:  p.Decision.SenderAuthenticated && s.from != "",
			Subject:   p.Subject,
			User:      p.User.Name,
			SenderID:  p.User.SenderID,
			To:        r.number.E164,
			Text:      p.Text,
			Encoding:  p.Info.Encoding,
			Parts:     p.Info.Parts,
		})
	}
	return jobs
}

func (s *session) dropSMSRecipients(m *gomilter.Modifier) {
	for _, r := range s.rcpts {
		m.DeleteRecipient(r.addr)
	}
}

func (s *session) numbers() string {
	to := make([]string, 0, len(s.rcpts))
	for _, r := range s.rcpts {
		to = append(to, r.number.E164)
	}
	return strings.Join(to, ",")
}

func (s *session) eventFields(p *Plan) map[string]string {
	f := map[string]string{"sender": s.from, "queue_id": s.queueID, "client_ip": s.cs.clientIP.String(), "to": s.numbers()}
	if p.MessageID != "" {
		f["message_id"] = p.MessageID
	}
	if d := p.Decision; d != nil {
		if d.From != "" {
			f["from"] = d.From
		}
		if r := d.Rule; r != nil {
			f["rule"] = r.Kind + ":" + r.Pattern
			f["user"] = r.User
		}
	}
	return f
}

// logFields are the decision line's fields: who, what, rule, verdicts.
func (s *session) logFields(p *Plan) []any {
	f := []any{"message_id", p.MessageID, "to", s.numbers(), "verdict_rcpts", len(s.verdicts), "other_rcpts", s.others, "size", s.size}
	if d := p.Decision; d != nil {
		f = append(f, "from", d.From,
			"dkim", verdictText(d.Verdicts.DKIM), "spf", verdictText(d.Verdicts.SPF), "dmarc", verdictText(d.Verdicts.DMARC),
			"sender_authenticated", d.SenderAuthenticated)
		if d.Rule != nil {
			f = append(f, "rule", d.Rule.Kind+":"+d.Rule.Pattern, "user", d.Rule.User, "security", d.Security.Type)
		} else {
			f = append(f, "rule", "")
		}
	}
	if p.Info.Parts > 0 {
		f = append(f, "parts", p.Info.Parts, "encoding", p.Info.Encoding)
	}
	return f
}

func verdictText(v policy.Verdict) string {
	if v.Result == "" {
		return "not_checked"
	}
	return v.Result
}

func (h *Handler) event(ctx context.Context, kind, msg string, fields map[string]string) {
	h.writeEvent(ctx, store.Event{Time: h.now(), Kind: kind, Message: msg, Fields: fields})
}

func (h *Handler) writeEvent(ctx context.Context, e store.Event) {
	if err := h.store.LogEvent(ctx, e); err != nil {
		h.log.Warn("cannot write event log", "kind", e.Kind, "err", err.Error())
	}
}

// eventLater writes an event after the milter has answered. The accepted
// and refused events are for `smsmilter log`, not part of the decision:
// committing them before the answer would put a second commit (an fsync)
// on every message's path. Server.Shutdown waits for them.
func (h *Handler) eventLater(kind, msg string, fields map[string]string) {
	e := store.Event{Time: h.now(), Kind: kind, Message: msg, Fields: fields}
	h.bg.Add(1)
	go func() {
		defer h.bg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		h.writeEvent(ctx, e)
	}()
}

// Wait waits for the event log writes of messages already answered.
func (h *Handler) Wait() { h.bg.Wait() }

// checkNewIP tells the admin, once per rule and IP ever, that a new server
// sent accepted mail for a rule (DESIGN.md §4, from the Email2SMS seed).
func (s *session) checkNewIP(ctx context.Context, p *Plan) {
	h := s.h
	r := p.Decision.Rule
	if r == nil || !s.cs.clientIP.IsValid() {
		return
	}
	ip := s.cs.clientIP.String()
	isNew, err := h.reg.SeeClientIP(ctx, r.ID, ip, h.now())
	if err != nil {
		h.log.Warn("cannot record the sending server", "rule", r.Kind+":"+r.Pattern, "client_ip", ip, "err", err.Error())
		return
	}
	if !isNew {
		return
	}
	rule := r.Kind + ":" + r.Pattern
	h.log.Info("new sending server", "rule", rule, "client_ip", ip, "helo", s.cs.helo, "mail_from", s.from, "from", p.Decision.From)
	h.event(ctx, store.EventNewIP, fmt.Sprintf("new sending server %s for rule %s (sender %s)", ip, rule, orNull(first(p.Decision.From, s.from))),
		map[string]string{"ip": ip, "rule": rule, "sender": s.from, "from": p.Decision.From, "helo": s.cs.helo})
	admin := s.rt.cfg.Notify.Admin
	if admin == "" {
		return
	}
	body := fmt.Sprintf("A server smsmilter had not seen before sent mail that was accepted for SMS.\n\n"+
		"  Server IP:  %s\n  HELO:       %s\n  Rule:       %s\n  User:       %s\n  Sender:     %s\n  From:       %s\n\n"+
		"If you do not recognise this server, remove or tighten the rule.\nYou get this mail once per server and rule.\n",
		ip, s.cs.helo, rule, r.User, orNull(s.from), p.Decision.From)
	h.sendMail(ctx, s.rt.cfg, admin, "New server sending SMS mail: "+ip, body, "", nil)
}

func orNull(s string) string {
	if s == "" {
		return "<>"
	}
	return s
}

func first(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
