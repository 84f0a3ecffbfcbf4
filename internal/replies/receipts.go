package replies

import (
	"context"
	"fmt"
	"strings"

	"github.com/smsmilter/smsmilter/internal/mailer"
	"github.com/smsmilter/smsmilter/internal/store"
	"github.com/smsmilter/smsmilter/plugins/sdk"
)

// JobSent records who wrote to the number, so that a reply from it finds
// its way back (AutoCLIP). The dispatcher calls it for every sent job.
func (r *Router) JobSent(ctx context.Context, j store.Job, transport string) {
	s := store.Sent{Number: j.To, Transport: transport, SenderID: j.SenderID, Sender: j.Sender, MessageID: j.MessageID, Subject: j.Subject, At: r.o.Now()}
	if err := r.o.Store.RecordSent(ctx, s); err != nil {
		r.o.Log.Warn("AutoCLIP record not written: replies from this number will not find the sender", "to", j.To, "err", err)
	}
}

// JobFailed mails the sender that an SMS was given up (DESIGN.md §2 step 5).
func (r *Router) JobFailed(ctx context.Context, j store.Job, reason string) {
	r.notify(ctx, j, "SMS not delivered", fmt.Sprintf(
		"Your SMS to %s could not be delivered and will not be retried.\n\nReason: %s\n\nText of the SMS:\n\n%s\n", j.To, reason, j.Text))
}

// Report applies a delivery report to its job and mails the sender when
// replies.receipts asks for it: "failed" for failures only, "all" also for
// delivered SMS, "none" never.
func (r *Router) Report(ctx context.Context, transport string, rep sdk.Report) error {
	j, err := r.o.Store.UpdatePart(ctx, transport, rep.Ref, rep.State, rep.Error)
	if err != nil {
		r.o.Log.Info("delivery report for an unknown SMS part", "transport", transport, "ref", rep.Ref, "state", rep.State, "err", err)
		return err
	}
	r.o.Log.Info("delivery report", "job", j.ID, "transport", transport, "ref", rep.Ref, "state", rep.State, "job_state", j.State)
	cfg := r.o.Config()
	want := false
	switch j.State {
	case store.JobFailed:
		want = cfg.Replies.Receipts == "failed" || cfg.Replies.Receipts == "all"
	case store.JobDelivered:
		want = cfg.Replies.Receipts == "all"
	}
	if !want {
		return nil
	}
	// A job reaches its final state once, but reports can repeat (SMSCs
	// resend, several parts fail): one receipt per job.
	n, err := r.o.Store.CountEvents(ctx, store.EventReceipt, "job", fmt.Sprint(j.ID), j.Created)
	if err != nil || n > 0 {
		return err
	}
	r.o.Store.LogEvent(ctx, store.Event{Time: r.o.Now(), Kind: store.EventReceipt,
		Message: fmt.Sprintf("SMS %d to %s %s", j.ID, j.To, j.State), Fields: map[string]string{"job": fmt.Sprint(j.ID), "state": j.State, "sender": j.Sender}})
	if j.State == store.JobDelivered {
		r.notify(ctx, j, "SMS delivered", fmt.Sprintf("Your SMS to %s was delivered.\n\nText of the SMS:\n\n%s\n", j.To, j.Text))
	} else {
		reason := rep.Error
		if reason == "" {
			reason = "the network reported it undeliverable"
		}
		r.notify(ctx, j, "SMS not delivered", fmt.Sprintf("Your SMS to %s was not delivered.\n\nReason: %s\n\nText of the SMS:\n\n%s\n", j.To, reason, j.Text))
	}
	return nil
}

// notify mails the original sender about its SMS, threaded under its mail.
// Only senders that passed SPF or aligned DKIM get mail (no backscatter to
// forged senders), and never the null sender.
func (r *Router) notify(ctx context.Context, j store.Job, what, body string) {
	if j.Sender == "" || !j.NotifyOK {
		r.o.Log.Info("no notice sent: sender not authenticated or null", "job", j.ID, "sender", j.Sender, "notice", what)
		return
	}
	cfg := r.o.Config()
	subj := what + " to " + j.To
	if j.Subject != "" {
		subj = what + ": " + strings.TrimPrefix(j.Subject, "Re: ")
	}
	m := &mailer.Message{From: cfg.Mail.From, To: j.Sender, Subject: subj, Date: r.o.Now(), Body: body,
		Extra: map[string]string{"Auto-Submitted": "auto-replied"}}
	if j.MessageID != "" {
		m.InReplyTo, m.References = j.MessageID, []string{j.MessageID}
	}
	data, err := m.Bytes()
	if err != nil {
		r.o.Log.Warn("notice not composed", "job", j.ID, "to", j.Sender, "err", err)
		return
	}
	// Null envelope sender: a notice must never cause another notice.
	if err := r.o.Mail.Submit(ctx, "", []string{j.Sender}, data); err != nil {
		r.o.Log.Warn("notice not queued", "job", j.ID, "to", j.Sender, "err", err)
	}
}
