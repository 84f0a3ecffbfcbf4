// Package modem is the built-in `modem` transport: it sends and receives SMS
// through a GSM/UMTS/LTE modem on a serial port with AT commands in PDU mode,
// using github.com/warthog618/modem (at, gsm) and github.com/warthog618/sms.
//
// Sending: the text is encoded by sms (GSM 7-bit, or UCS-2 when the text or
// Message.Encoding needs it), split into concatenated parts with a
// per-transport concatenation reference, and every part asks for a status
// report (TP-SRR). AT+CMMS=1 keeps the radio link up between parts and
// messages where the modem supports it. +CMS ERROR codes are classified as
// permanent or temporary by the table in errors.go (3GPP TS 24.011, 23.040,
// 27.005).
//
// Part references: a part's Ref is "<MR>:<E.164 destination>", e.g.
// "17:+447400123456". The modem's message reference (TP-MR) is one octet and
// wraps after 256 submissions; a status report carries the MR and the
// recipient address back, so pairing the two keeps refs apart unless 256
// parts went out before the report for the same number arrives.
//
// Receiving: +CMT (routed to us; gsm.StartMessageRx acknowledges it with
// +CNMA), +CMTI and +CDSI (stored; read with AT+CMGR, then deleted with
// AT+CMGD), +CDS status reports (parsed here: gsm cannot), and at every
// (re)connection whatever waits in storage (AT+CMGL=4). Concatenated SMS are
// reassembled by one sms.Collector for all of these paths.
//
// Recovery: a watchdog probes the modem with "AT" every watchdog_interval
// (and at once after a send times out). A modem that stops answering is
// closed (go.bug.st/serial closes a port with a pending read; the tarm-based
// package in warthog618/modem would block forever), then re-opened and
// re-initialised with backoff, and message reception is set up again: ATZ
// clears CNMI, without which incoming SMS would silently stop. While the
// modem is down Health and Send return errors; Send's is temporary.
package modem

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warthog618/modem/at"
	"github.com/warthog618/modem/gsm"
	"github.com/warthog618/sms"
	"github.com/warthog618/sms/encoding/gsm7/charset"
	"github.com/warthog618/sms/encoding/tpdu"
	"github.com/warthog618/sms/encoding/ucs2"

	"github.com/smsmilter/smsmilter/plugins/sdk"
)

// warthog618/sms builds its GSM 7-bit tables lazily, unsynchronised, on
// first use: two goroutines decoding at once (a +CMT handler and a +CMTI
// read, or Send) race on them. Building them all here, before any goroutine
// exists, leaves only reads.
func init() {
	charset.DefaultDecoder()
	charset.DefaultEncoder()
	charset.DefaultExtEncoder()
	for nli := charset.Start; nli < charset.End; nli++ {
		charset.NewDecoder(nli)
		charset.NewExtDecoder(nli)
		charset.NewEncoder(nli)
		charset.NewExtEncoder(nli)
	}
}

// Transport is the modem transport. Create it with New.
type Transport struct {
	log *slog.Logger

	// Set once by Configure, read-only afterwards.
	cfg       settings
	env       sdk.Env
	enc       *sms.Encoder
	collector *sms.Collector

	events  chan sdk.Event
	kick    chan struct{} // ask the watchdog to probe now (cap 1)
	sendSem chan struct{} // one Send at a time, so parts go out back to back
	done    chan struct{} // closed by Close
	once    sync.Once
	wg      sync.WaitGroup

	mu          sync.Mutex
	configured  bool
	link        *link // nil while the modem is down
	connecting  *port // the port a connection attempt is initialising
	downErr     error
	downSince   time.Time
	pinRejected bool // the SIM refused our PIN once: never send it again
}

var _ sdk.Transport = (*Transport)(nil)

// New returns an unconfigured modem transport that logs to log.
func New(log *slog.Logger) sdk.Transport {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Transport{
		log:     log,
		events:  make(chan sdk.Event, 128),
		kick:    make(chan struct{}, 1),
		sendSem: make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
}

// Errors the transport returns itself.
var (
	errClosed = errors.New("modem: transport closed")
	errDown   = errors.New("modem: not connected")
)

// fatalError is a connection failure that needs the admin (wrong PIN, no
// SIM): Configure reports it instead of retrying in the background.
type fatalError struct{ err error }

func (e fatalError) Error() string { return e.err.Error() }
func (e fatalError) Unwrap() error { return e.err }

// openError is a failure to open the serial device. At start it is most
// likely a wrong device path, so Configure reports it; later (a USB modem
// re-enumerating) it is retried.
type openError struct{ err error }

func (e openError) Error() string { return e.err.Error() }
func (e openError) Unwrap() error { return e.err }

// Configure reads the settings, opens the modem and initialises it. Invalid
// settings, a device that cannot be opened and SIM problems (wrong or
// missing PIN, PUK lock, no SIM) fail Configure. A modem that opens but
// does not answer yet is retried in the background and reported by Health.
func (t *Transport) Configure(ctx context.Context, env sdk.Env, raw map[string]any) error {
	s, err := parseSettings(raw)
	if err != nil {
		return fmt.Errorf("modem: settings: %w", err)
	}
	t.mu.Lock()
	if t.configured {
		t.mu.Unlock()
		return errors.New("modem: Configure called twice")
	}
	t.configured = true
	t.mu.Unlock()

	t.cfg = s
	t.env = env
	t.log = t.log.With("transport", env.Name, "device", s.Device)
	t.enc = newEncoder(s.StatusReports)
	t.collector = sms.NewCollector(sms.WithReassemblyTimeout(s.ReassemblyTimeout, t.onReassemblyTimeout))

	// A host that gives up on Configure gets its answer now, not after
	// the modem's timeouts.
	stop := context.AfterFunc(ctx, func() {
		t.mu.Lock()
		c := t.connecting
		t.mu.Unlock()
		if c != nil {
			c.Close()
		}
	})
	l, err := t.connect()
	stop()
	if ctx.Err() != nil {
		if l != nil {
			l.close()
		}
		return fmt.Errorf("modem %s: %w", s.Device, ctx.Err())
	}
	if err != nil {
		var fe fatalError
		var oe openError
		if errors.As(err, &fe) || errors.As(err, &oe) {
			t.setDown(err)
			return fmt.Errorf("modem %s: %w", s.Device, err)
		}
		t.log.Warn("modem not ready; retrying in the background", "err", err)
		t.setDown(err)
	} else {
		t.mu.Lock()
		t.link = l
		t.mu.Unlock()
		t.log.Info("modem ready")
	}
	t.wg.Add(1)
	go t.supervise()
	return nil
}

// Send submits m, one AT+CMGS per part, and returns one result per part.
// An error means the message has to be sent again as a whole (parts that
// went out before it are logged).
func (t *Transport) Send(ctx context.Context, m sdk.Message) ([]sdk.PartResult, error) {
	to, err := normaliseNumber(m.To)
	if err != nil {
		return nil, sdk.Permanent(fmt.Errorf("modem: %w", err))
	}
	if t.enc == nil {
		return nil, errors.New("modem: not configured")
	}
	pdus, err := t.encode(to, m)
	if err != nil {
		return nil, sdk.Permanent(fmt.Errorf("modem: encode SMS for %s: %w", to, err))
	}

	select {
	case t.sendSem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-t.done:
		return nil, errClosed
	}
	defer func() { <-t.sendSem }()

	l, err := t.current()
	if err != nil {
		return nil, err // temporary: the dispatcher retries
	}
	if !l.noCMMS.Load() {
		// AT+CMMS=1 holds the link to the SMSC open for a few seconds
		// after each submission, so the next part or message does not
		// set it up again. A modem that does not know it answers ERROR.
		if _, err := l.g.Command("+CMMS=1"); err != nil {
			if isLinkError(err) {
				t.suspect()
				err = fmt.Errorf("modem: send to %s: AT+CMMS=1: %w", to, err)
				t.logPartial(m, to, nil, err)
				return nil, err
			}
			l.noCMMS.Store(true)
			t.log.Debug("modem does not support AT+CMMS; continuing without", "err", err)
		}
	}

	results := make([]sdk.PartResult, 0, len(pdus))
	for i := range pdus {
		if err := ctx.Err(); err != nil {
			t.logPartial(m, to, results, err)
			return nil, err
		}
		b, err := pdus[i].MarshalBinary()
		if err != nil {
			return nil, sdk.Permanent(fmt.Errorf("modem: encode part %d for %s: %w", i+1, to, err))
		}
		rsp, err := l.g.SendPDU(b)
		if err != nil {
			err = t.sendError(l, err, to, i, len(pdus))
			t.logPartial(m, to, results, err)
			return nil, err
		}
		mr, err := parseCMGS(rsp)
		if err != nil {
			err = fmt.Errorf("modem: send to %s part %d of %d: %w", to, i+1, len(pdus), err)
			t.logPartial(m, to, results, err)
			return nil, err
		}
		results = append(results, sdk.PartResult{Index: i, Ref: makeRef(mr, to)})
	}
	t.log.Info("sent", "id", m.ID, "to", to, "parts", len(results), "refs", refsOf(results))
	return results, nil
}

func (t *Transport) logPartial(m sdk.Message, to string, sent []sdk.PartResult, err error) {
	if len(sent) == 0 {
		t.log.Warn("send failed", "id", m.ID, "to", to, "err", err)
		return
	}
	t.log.Warn("send failed after some parts went out; the message will be sent again",
		"id", m.ID, "to", to, "sent_refs", refsOf(sent), "err", err)
}

func refsOf(rs []sdk.PartResult) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.Ref
	}
	return out
}

// sendError turns what the modem said about a submission into a permanent
// or temporary error. A +CMS ERROR concerns this message only: the modem
// stays in service for the next one.
func (t *Transport) sendError(l *link, err error, to string, part, parts int) error {
	where := fmt.Sprintf("modem: send to %s part %d of %d", to, part+1, parts)
	var cms at.CMSError
	if errors.As(err, &cms) {
		code, convErr := strconv.Atoi(strings.TrimSpace(string(cms)))
		if convErr != nil {
			return fmt.Errorf("%s: +CMS ERROR: %s: %w", where, string(cms), err)
		}
		name, permanent := cmsError(code)
		e := fmt.Errorf("%s: +CMS ERROR: %d (%s): %w", where, code, name, err)
		if permanent {
			return sdk.Permanent(e)
		}
		return e
	}
	switch {
	case isLinkError(err):
		// The modem may be hung: let the watchdog look now rather than
		// at its next tick.
		t.suspect()
	case errors.Is(err, gsm.ErrMalformedResponse):
		// An OK without +CMGS is the late answer to an earlier command:
		// the PDU may never have been written and the modem may sit at
		// its "> " prompt. Escape it, and let the watchdog get the
		// link back in step.
		l.g.Escape()
		t.suspect()
	}
	return fmt.Errorf("%s: %w", where, err)
}

// isLinkError reports errors that say the modem itself did not answer.
func isLinkError(err error) bool {
	return errors.Is(err, at.ErrDeadlineExceeded) || errors.Is(err, at.ErrClosed)
}

// Events forwards incoming SMS and status reports until ctx ends or the
// transport is closed.
func (t *Transport) Events(ctx context.Context, out chan<- sdk.Event) error {
	return sdk.Forward(ctx, t.events, out, t.done)
}

// Health is nil while the modem answers; otherwise it says since when and
// why it is down.
func (t *Transport) Health(ctx context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case !t.configured:
		return errors.New("modem: not configured")
	case t.link != nil:
		return nil
	case t.downErr == nil:
		return errDown
	}
	return fmt.Errorf("modem: down since %s: %w", t.downSince.Format(time.RFC3339), t.downErr)
}

// Close stops the watchdog and releases the serial port. It asks the modem
// to keep new SMS in its storage (AT+CNMI=0,...), read at the next start.
func (t *Transport) Close() error {
	t.once.Do(func() {
		close(t.done)
		t.mu.Lock()
		l, c := t.link, t.connecting
		t.link = nil
		t.downErr = errClosed
		t.downSince = time.Now()
		t.mu.Unlock()
		if c != nil {
			c.Close()
		}
		if l != nil {
			_, _ = l.g.Command("+CNMI=0,0,0,0,0", at.WithTimeout(min(t.cfg.CommandTimeout, 2*time.Second)))
			l.close()
		}
		t.wg.Wait()
		if t.collector != nil {
			t.collector.Close()
		}
	})
	return nil
}

// current returns the live link, or a temporary error while it is down.
func (t *Transport) current() (*link, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	select {
	case <-t.done:
		return nil, errClosed
	default:
	}
	if t.link != nil {
		return t.link, nil
	}
	if t.downErr != nil {
		return nil, fmt.Errorf("modem: down since %s: %w", t.downSince.Format(time.RFC3339), t.downErr)
	}
	return nil, errDown
}

func (t *Transport) setDown(err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.downErr == nil || t.downSince.IsZero() {
		t.downSince = time.Now()
	}
	t.downErr = err
}

// emit queues an event for Events; false when the transport is closing
// (the caller then keeps a stored message for the next start).
func (t *Transport) emit(ev sdk.Event) bool {
	select {
	case t.events <- ev:
		return true
	case <-t.done:
		return false
	}
}

// normaliseNumber checks the destination is E.164. sms.To marks every
// number international, so a national or garbled number must not reach it.
func normaliseNumber(n string) (string, error) {
	n = strings.TrimSpace(n)
	if d, ok := strings.CutPrefix(n, "+"); !ok || len(d) < 2 || len(d) > 15 || d[0] == '0' || !digits(d) {
		return "", fmt.Errorf("destination %q is not an E.164 number (+digits)", n)
	}
	return n, nil
}

// digits reports whether s is all ASCII digits.
func digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// makeRef is the part reference scheme shared by Send and status reports.
func makeRef(mr int, to string) string {
	return strconv.Itoa(mr) + ":" + to
}

// srrOption sets TP-SRR on the template: every part asks for a status
// report.
type srrOption struct{}

func (srrOption) ApplyTPDUOption(t *tpdu.TPDU) error {
	t.FirstOctet |= tpdu.FoSRR
	return nil
}

// counter is a tpdu.Counter. The concatenation reference counter starts
// at a random value and lives as long as the transport: sms.Encode starts
// a fresh one at 1 for every message, so two long messages to one handset
// would share a reference and could be merged by it.
type counter struct{ n atomic.Int64 }

func (c *counter) Count() int { return int(c.n.Add(1)) }

func newEncoder(srr bool) *sms.Encoder {
	opts := []sms.EncoderOption{sms.AsSubmit}
	if srr {
		opts = append(opts, sms.WithTemplateOption(srrOption{}))
	}
	e := sms.NewEncoder(opts...)
	cr := &counter{}
	cr.n.Store(rand.Int64N(256))
	e.ConcatRef = cr
	return e
}

// encode builds the SMS-SUBMIT TPDUs for m. The milter already chose the
// encoding; "ucs2" is honoured even where GSM 7-bit would fit, so that the
// part count matches what the sender was told.
func (t *Transport) encode(to string, m sdk.Message) ([]tpdu.TPDU, error) {
	if m.Text == "" {
		return nil, errors.New("empty text")
	}
	opts := []sms.EncoderOption{sms.To(to)}
	msg := []byte(m.Text)
	if strings.EqualFold(m.Encoding, "ucs2") {
		opts = append(opts, sms.AsUCS2)
		msg = ucs2.Encode([]rune(m.Text))
	}
	pdus, err := t.enc.Encode(msg, opts...)
	if err != nil {
		return nil, err
	}
	if len(pdus) == 0 {
		return nil, errors.New("nothing to send")
	}
	if len(pdus) > 255 {
		return nil, fmt.Errorf("%d parts: more than a concatenated SMS can hold", len(pdus))
	}
	return pdus, nil
}
