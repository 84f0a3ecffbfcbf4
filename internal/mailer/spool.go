package mailer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/smtp"
	"net/textproto"
	"os"
	"time"

	"github.com/smsmilter/smsmilter/internal/store"
)

// Spool keeps outgoing mail in the store until the MTA accepts it. Submit
// is durable once it returns; Run delivers in the background and retries
// with backoff, so the MTA being down (or restarting) loses nothing.
type Spool struct {
	Store store.MailQueue
	// SMTP returns the MTA address (host:port) to submit to: a func so a
	// config reload takes effect without restarting the spool.
	SMTP func() string
	Log  *slog.Logger
	// Helo is the name smsmilter gives in EHLO; default the host name.
	Helo string
	// MaxAge is how long a mail is retried before it is given up; default 5 days
	// (what MTAs use for their own queue).
	MaxAge time.Duration
	// Timeout bounds one SMTP conversation; default 60s.
	Timeout time.Duration
	Now     func() time.Time

	wake chan struct{}
}

// NewSpool returns a spool submitting to the address smtp returns.
func NewSpool(q store.MailQueue, smtpAddr func() string, log *slog.Logger) *Spool {
	return &Spool{Store: q, SMTP: smtpAddr, Log: log, wake: make(chan struct{}, 1)}
}

// Submit queues a mail for delivery. envFrom "" is the null sender
// (notices, so that they never bounce back and forth).
func (s *Spool) Submit(ctx context.Context, envFrom string, rcpts []string, data []byte) error {
	if len(rcpts) == 0 {
		return errors.New("mail without recipients")
	}
	if _, err := s.Store.EnqueueMail(ctx, store.Mail{From: envFrom, To: rcpts, Data: data, NextTry: s.now(), Created: s.now()}); err != nil {
		return fmt.Errorf("queue mail: %w", err)
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return nil
}

func (s *Spool) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// Run delivers queued mail until ctx ends.
func (s *Spool) Run(ctx context.Context) {
	if s.wake == nil {
		s.wake = make(chan struct{}, 1)
	}
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		s.flush(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-s.wake:
		}
	}
}

// Flush delivers what is due now, once; tests and the CLI use it.
func (s *Spool) Flush(ctx context.Context) { s.flush(ctx) }

func (s *Spool) flush(ctx context.Context) {
	for ctx.Err() == nil {
		ms, err := s.Store.ClaimMail(ctx, s.now(), 20, 10*time.Minute)
		if err != nil {
			s.log().Warn("mail queue unavailable", "err", err)
			return
		}
		if len(ms) == 0 {
			return
		}
		for _, m := range ms {
			s.deliver(ctx, m)
		}
	}
}

func (s *Spool) deliver(ctx context.Context, m store.Mail) {
	addr := s.SMTP()
	err := s.send(ctx, addr, m)
	log := s.log().With("mail_id", m.ID, "to", m.To, "smtp", addr)
	switch {
	case err == nil:
		if err := s.Store.MailDone(ctx, m.ID); err != nil {
			log.Warn("mail sent but not marked done; it may be sent twice", "err", err)
		}
		log.Info("mail submitted")
	case permanent(err) || s.now().Sub(m.Created) > s.maxAge():
		log.Warn("mail given up", "err", err, "attempts", m.Attempts+1)
		s.Store.MailFail(ctx, m.ID, err.Error())
	default:
		next := s.now().Add(backoff(m.Attempts))
		log.Info("mail submission failed; will retry", "err", err, "next_try", next.Format(time.RFC3339))
		s.Store.MailRetry(ctx, m.ID, next, err.Error())
	}
}

func (s *Spool) maxAge() time.Duration {
	if s.MaxAge > 0 {
		return s.MaxAge
	}
	return 5 * 24 * time.Hour
}

func (s *Spool) log() *slog.Logger {
	if s.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Log
}

// backoff grows from 30s to an hour, with jitter so that a queue built up
// while the MTA was down does not hit it all at once.
func backoff(attempts int) time.Duration {
	d := 30 * time.Second << min(attempts, 7)
	d = min(d, time.Hour)
	return d/2 + rand.N(d/2+1)
}

// permanent reports an SMTP 5xx answer: retrying cannot help.
func permanent(err error) bool {
	var te *textproto.Error
	return errors.As(err, &te) && te.Code >= 500
}

func (s *Spool) send(ctx context.Context, addr string, m store.Mail) error {
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = time.Minute
	}
	d := net.Dialer{Timeout: timeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	conn.SetDeadline(time.Now().Add(timeout))
	host, _, _ := net.SplitHostPort(addr)
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		conn.Close()
		return err
	}
	defer c.Close()
	helo := s.Helo
	if helo == "" {
		helo, _ = os.Hostname()
		if helo == "" {
			helo = "localhost"
		}
	}
	if err := c.Hello(helo); err != nil {
		return err
	}
	if err := c.Mail(m.From); err != nil {
		return err
	}
	for _, r := range m.To {
		if err := c.Rcpt(r); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	// net/smtp's data writer dot-stuffs: a body line "." cannot end DATA.
	if _, err := w.Write(m.Data); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}
