// Package sdk is what a transport plugin author needs: implement Transport
// and call Serve from main. The host (smsmilter serve) runs the plugin as its
// own process over hashicorp/go-plugin (gRPC), so a crashing driver never
// takes the milter down.
package sdk

import (
	"context"
	"errors"
	"time"
)

// Message is one SMS to send, already encoded and split by the milter.
type Message struct {
	ID       string // job ID, stable across retries (for logs and de-duplication)
	To       string // E.164 with '+'
	From     string // sender ID: alphanumeric (<= 11 chars) or a number
	Text     string
	Encoding string // gsm7 | ucs2
	Parts    int    // number of SMS parts the text needs
}

// PartResult is what the transport learned about one submitted part.
type PartResult struct {
	Index int    // 0-based part number
	Ref   string // message ID the SMSC/modem gave it; delivery reports carry it back
}

// Incoming is an SMS received by the transport (a reply).
type Incoming struct {
	From string // E.164 with '+' (the transport normalises what the network says)
	To   string // destination as reported; may be empty
	Text string
	At   time.Time
}

// Report is a delivery report for a part previously returned by Send.
type Report struct {
	Ref   string
	State string // delivered | failed | unknown (intermediate states are not reported)
	Error string // network error code/text for failed
	At    time.Time
}

// Event is either an incoming SMS or a delivery report.
type Event struct {
	Incoming *Incoming
	Report   *Report
}

// Transport is implemented by plugin authors.
type Transport interface {
	// Configure is called once before anything else with the transport's
	// `settings` from the config file (as JSON-compatible values) and the
	// host's environment. An error here is shown to the admin.
	Configure(ctx context.Context, env Env, settings map[string]any) error
	// Send submits one SMS and returns a result per part. Return an error
	// wrapped with Permanent when retrying cannot help (invalid number);
	// every other error is treated as temporary and retried.
	Send(ctx context.Context, m Message) ([]PartResult, error)
	// Events delivers incoming SMS and delivery reports until ctx ends. It is
	// called once; the plugin sends on the channel and never closes it early.
	Events(ctx context.Context, out chan<- Event) error
	// Health returns nil when the transport can send now.
	Health(ctx context.Context) error
	// Close releases the link (modem port, SMPP bind).
	Close() error
}

// Env is what the host tells a plugin about where it runs.
type Env struct {
	Name          string // transport name from the config
	StateDir      string // a directory the plugin may write
	DefaultRegion string // numbers.default_region, for reading national numbers
}

type permanent struct{ err error }

func (p permanent) Error() string { return p.err.Error() }
func (p permanent) Unwrap() error { return p.err }

// Permanent marks an error as one that retrying cannot fix.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanent{err}
}

// IsPermanent reports whether err (or anything it wraps) was marked Permanent.
func IsPermanent(err error) bool {
	var p permanent
	return errors.As(err, &p)
}

// Forward is an Events for a transport that queues what it receives on a
// channel of its own: it passes each event from in to out until ctx ends
// or done (closed when the transport closes; nil for never) is closed, and
// returns nil. An event taken from in when that happens is dropped.
func Forward(ctx context.Context, in <-chan Event, out chan<- Event, done <-chan struct{}) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-done:
			return nil
		case ev := <-in:
			select {
			case out <- ev:
			case <-ctx.Done():
				return nil
			case <-done:
				return nil
			}
		}
	}
}
