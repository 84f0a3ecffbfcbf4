package milter

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/smsmilter/smsmilter/internal/config"
	"github.com/smsmilter/smsmilter/internal/mailer"
	"github.com/smsmilter/smsmilter/internal/smtpreply"
	"github.com/smsmilter/smsmilter/internal/store"
)

// verdictAnswersPerHour bounds verdict answers per address (DESIGN.md §13),
// so the verdict address cannot be used to mail someone repeatedly.
const verdictAnswersPerHour = 10

// notice mails the sender that the SMS part of a mixed message was refused.
// Only senders whose address passed SPF or aligned DKIM get one: a notice to
// a forged sender would be backscatter. Never to the null sender.
func (s *session) notice(ctx context.Context, authenticated bool, e *smtpreply.Error, subject string) {
	if s.from == "" {
		return
	}
	if !authenticated {
		s.h.log.Info("no notice sent: sender not authenticated by SPF or aligned DKIM", "mail_from", s.from, "reason", e.Error())
		return
	}
	body := fmt.Sprintf("Your message was delivered to its email recipients, but it was not sent as SMS to:\n\n  %s\n\nReason: %s\n",
		strings.ReplaceAll(s.numbers(), ",", "\n  "), e.Error())
	subj := "SMS not sent"
	if subject != "" {
		subj += ": " + subject
	}
	s.h.sendMail(ctx, s.rt.cfg, s.from, subj, body, "", map[string]string{"Auto-Submitted": "auto-replied"})
}

// answerVerdict mails the sender each check's result, the rule, the
// decision and a preview of the SMS (DESIGN.md §4, verdict address), at
// most verdictAnswersPerHour per address.
func (s *session) answerVerdict(ctx context.Context, p *Plan) (answered bool) {
	h := s.h
	if s.from == "" {
		h.log.Info("verdict answer not sent: null sender")
		return false
	}
	addr := strings.ToLower(s.from)
	n, err := h.store.CountEvents(ctx, store.EventVerdict, "sender", addr, h.now().Add(-time.Hour))
	if err != nil {
		h.log.Warn("verdict answer not sent: store unavailable", "sender", s.from, "err", err.Error())
		return false
	}
	if n >= verdictAnswersPerHour {
		h.log.Info("verdict answer not sent: hourly limit reached", "sender", s.from, "limit", verdictAnswersPerHour)
		return false
	}
	var b bytes.Buffer
	WriteExplanation(&b, p)
	h.event(ctx, store.EventVerdict, "verdict answered to "+s.from, map[string]string{"sender": addr, "queue_id": s.queueID})
	subj := "SMS verdict"
	if p.Subject != "" {
		subj += ": " + p.Subject
	}
	return h.sendMail(ctx, s.rt.cfg, s.from, subj, b.String(), p.MessageID, map[string]string{"Auto-Submitted": "auto-replied"})
}

// WriteExplanation prints a plan the way a person reads it: verdicts, rule,
// decision, and the SMS preview. Used by the verdict answer and `explain`.
func WriteExplanation(b *bytes.Buffer, p *Plan) {
	if p.Decision != nil {
		p.Decision.Explain(b)
		b.WriteString("\n")
	}
	if p.Err != nil {
		fmt.Fprintf(b, "Decision: REFUSED: %s\n", p.Err.Error())
	} else {
		fmt.Fprintf(b, "Decision: WOULD SEND as user %s (sender ID %s)\n", p.User.Name, p.User.SenderID)
	}
	if p.Text != "" {
		enc := p.Info.Encoding
		switch enc {
		case "gsm7":
			enc = "GSM 7-bit (gsm7)"
		case "ucs2":
			enc = "UCS-2 (ucs2)"
		}
		unit := "characters"
		if p.Info.Encoding == "ucs2" {
			unit = "UTF-16 units"
		}
		fmt.Fprintf(b, "\nSMS preview: encoding %s, %d %s, %d part(s)\n", enc, p.Info.Units, unit, p.Info.Parts)
		b.WriteString("----\n")
		b.WriteString(p.Text)
		b.WriteString("\n----\n")
	}
}

// sendMail queues a mail from mail.from; failures are logged, never fatal to
// the milter answer.
func (h *Handler) sendMail(ctx context.Context, cfg *config.Config, to, subject, body, inReplyTo string, extra map[string]string) bool {
	msg := &mailer.Message{
		From:      cfg.Mail.From,
		To:        to,
		Subject:   subject,
		InReplyTo: inReplyTo,
		Date:      h.now(),
		Body:      body,
		Extra:     extra,
	}
	if inReplyTo != "" {
		msg.References = []string{inReplyTo}
	}
	data, err := msg.Bytes()
	if err != nil {
		h.log.Warn("cannot compose mail", "to", to, "err", err.Error())
		return false
	}
	if h.mail == nil {
		h.log.Info("mail not sent: no mail submitter", "to", to, "subject", subject)
		return false
	}
	// The null envelope sender: notices and answers never bounce back.
	if err := h.mail.Submit(ctx, "", []string{to}, data); err != nil {
		h.log.Warn("cannot queue mail", "to", to, "subject", subject, "err", err.Error())
		return false
	}
	return true
}
