// Package replies routes what transports receive back to people (DESIGN.md
// §7): an incoming SMS goes through replies.rules — AutoCLIP to whoever
// last wrote to that number, delivery to a named mailbox, or drop — and is
// delivered as a reply mail through the MTA and/or into the POP3 plugin's
// mailboxes, threaded under the mail that caused it. Delivery reports
// update the job and, per replies.receipts, are mailed to the sender.
package replies

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/smsmilter/smsmilter/internal/config"
	"github.com/smsmilter/smsmilter/internal/mailer"
	"github.com/smsmilter/smsmilter/internal/store"
	"github.com/smsmilter/smsmilter/plugins/sdk"
)

// MailSubmitter queues mail for the MTA; *mailer.Spool is one.
type MailSubmitter interface {
	Submit(ctx context.Context, envFrom string, rcpts []string, data []byte) error
}

// Mailbox stores a reply in a POP3 mailbox; the POP3 plugin client is one.
type Mailbox interface {
	Deliver(ctx context.Context, mailbox string, msg []byte) (string, error)
}

// Options are the router's dependencies.
type Options struct {
	Store  store.Store
	Config func() *config.Config
	Mail   MailSubmitter
	POP3   Mailbox // nil when the POP3 plugin is not running
	Log    *slog.Logger
	Now    func() time.Time
}

// Router handles incoming SMS and delivery reports from every transport.
type Router struct{ o Options }

// SetPOP3 sets the POP3 deliverer (the plugin starts after the router).
// Call it before the router handles anything.
func (r *Router) SetPOP3(m Mailbox) { r.o.POP3 = m }

// New returns a router.
func New(o Options) *Router {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Router{o: o}
}

// Decision is what the rules make of one incoming SMS.
type Decision struct {
	Action string // autoclip | deliver | drop
	To     string // mailbox / address; "" for drop
	Rule   int    // index in replies.rules; -1 for the default
	Sent   *store.Sent
	Why    string
}

// Decide applies replies.rules (first match on transport and sender
// prefix). Without a matching rule the action is autoclip with no
// fallback, so replies reach the person who wrote and nobody else.
func (r *Router) Decide(ctx context.Context, cfg *config.Config, transport string, from string) (Decision, error) {
	d := Decision{Action: "autoclip", Rule: -1}
	for i, rule := range cfg.Replies.Rules {
		if rule.Transport != "" && rule.Transport != transport {
			continue
		}
		if rule.FromPrefix != "" && !strings.HasPrefix(from, rule.FromPrefix) {
			continue
		}
		d = Decision{Action: rule.Action, To: rule.To, Rule: i}
		break
	}
	switch d.Action {
	case "drop":
		d.To, d.Why = "", "dropped by rule"
		return d, nil
	case "deliver":
		d.Why = "delivered by rule"
		return d, nil
	}
	since := r.o.Now().Add(-cfg.Replies.AutoCLIPTTL)
	s, err := r.o.Store.LastSent(ctx, from, transport, since)
	switch {
	case err == nil:
		d.Sent, d.To, d.Why = &s, s.Sender, "AutoCLIP: last SMS to this number came from "+s.Sender
	case errors.Is(err, store.ErrNotFound):
		if d.To != "" {
			d.Why = "no SMS sent to this number within replies.autoclip_ttl; rule fallback"
		} else {
			d.Action, d.Why = "drop", "no SMS sent to this number within replies.autoclip_ttl and no fallback"
		}
	default:
		return d, fmt.Errorf("AutoCLIP lookup: %w", err)
	}
	return d, nil
}

// Incoming routes one incoming SMS. An error means it could not be stored
// for delivery (the caller logs it; transports ack what they receive, so
// the error is not returned to the network).
func (r *Router) Incoming(ctx context.Context, transport string, in sdk.Incoming) error {
	cfg := r.o.Config()
	at := in.At
	if at.IsZero() {
		at = r.o.Now()
	}
	d, err := r.Decide(ctx, cfg, transport, in.From)
	if err != nil {
		r.o.Log.Error("incoming SMS not routed: store unavailable", "from", in.From, "transport", transport, "err", err)
		return err
	}
	fields := map[string]string{"from": in.From, "transport": transport, "action": d.Action, "to": d.To, "text": preview(in.Text)}
	log := r.o.Log.With("from", in.From, "transport", transport, "action", d.Action, "to", d.To)
	if d.Action == "drop" || d.To == "" {
		log.Info("incoming SMS dropped", "why", d.Why)
		r.event(ctx, fmt.Sprintf("SMS from %s on %s dropped: %s", in.From, transport, d.Why), fields)
		return nil
	}
	msg := r.replyMail(cfg, in, at, d)
	data, err := msg.Bytes()
	if err != nil {
		log.Warn("incoming SMS not delivered: cannot compose the mail", "err", err)
		r.event(ctx, fmt.Sprintf("SMS from %s on %s not delivered: %v", in.From, transport, err), fields)
		return nil
	}
	var errs []error
	var done []string
	for _, how := range cfg.Replies.Deliver {
		switch how {
		case "email":
			// The envelope sender is smsmilter's own address: a bounce of
			// a reply goes to the admin, never back into the SMS path.
			if err := r.o.Mail.Submit(ctx, cfg.Mail.From, []string{d.To}, data); err != nil {
				errs = append(errs, fmt.Errorf("email: %w", err))
			} else {
				done = append(done, "email")
			}
		case "pop3":
			if r.o.POP3 == nil {
				errs = append(errs, errors.New("pop3: the POP3 plugin is not running"))
				continue
			}
			if _, err := r.o.POP3.Deliver(ctx, d.To, data); err != nil {
				errs = append(errs, fmt.Errorf("pop3: %w", err))
			} else {
				done = append(done, "pop3")
			}
		}
	}
	fields["message_id"] = msg.MessageID
	fields["delivered"] = strings.Join(done, ",")
	if len(errs) > 0 {
		err := errors.Join(errs...)
		log.Error("incoming SMS not fully delivered", "err", err, "delivered", done)
		r.event(ctx, fmt.Sprintf("SMS from %s on %s for %s: %v", in.From, transport, d.To, err), fields)
		return err
	}
	log.Info("incoming SMS delivered", "why", d.Why, "via", done, "message_id", msg.MessageID)
	r.event(ctx, fmt.Sprintf("SMS from %s on %s delivered to %s (%s)", in.From, transport, d.To, d.Why), fields)
	return nil
}

// replyMail builds the mail for an incoming SMS: From the number at the
// SMS domain, so that answering it sends another SMS; threaded under the
// mail that the SMS answers.
func (r *Router) replyMail(cfg *config.Config, in sdk.Incoming, at time.Time, d Decision) *mailer.Message {
	m := &mailer.Message{
		From: in.From + "@" + smsDomain(cfg),
		To:   d.To,
		Date: at,
		Body: in.Text,
		Extra: map[string]string{
			"X-SMS-From": in.From,
		},
	}
	if !strings.HasPrefix(in.From, "+") {
		// An alphanumeric sender cannot be written back to: say so
		// rather than give an address that would be refused.
		m.From = "sms-" + safeLocal(in.From) + "@" + smsDomain(cfg)
	}
	m.Subject = "SMS from " + in.From
	if d.Sent != nil {
		if d.Sent.Subject != "" {
			m.Subject = "Re: " + strings.TrimPrefix(d.Sent.Subject, "Re: ")
		}
		if d.Sent.MessageID != "" {
			m.InReplyTo = d.Sent.MessageID
			m.References = []string{d.Sent.MessageID}
		}
	}
	return m
}

func safeLocal(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r < 0x80 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			b.WriteRune(r)
		}
	}
	if b.Len() == 0 {
		return "unknown"
	}
	return b.String()
}

func smsDomain(cfg *config.Config) string {
	if len(cfg.SMSDomains) > 0 {
		return cfg.SMSDomains[0]
	}
	return "sms.invalid"
}

func (r *Router) event(ctx context.Context, msg string, f map[string]string) {
	if err := r.o.Store.LogEvent(ctx, store.Event{Time: r.o.Now(), Kind: store.EventReply, Message: msg, Fields: f}); err != nil {
		r.o.Log.Warn("cannot write the event log", "err", err)
	}
}

func preview(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > 60 {
		s = string(r[:60]) + "…"
	}
	return s
}
