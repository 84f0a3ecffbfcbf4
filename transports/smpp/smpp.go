// Package smpp is smsmilter's built-in SMPP 3.4 transport (an ESME), on
// github.com/linxGnu/gosmpp. It binds to the SMSC as a transceiver (or
// transmitter or receiver), submits with a window of asynchronous
// submit_sm, keeps the link alive with enquire_link, re-binds with backoff
// when the link drops, concatenates long messages with a UDH, reads
// delivery receipts and incoming SMS (concatenated ones reassembled).
//
// Settings (the transport's `settings` in the config file):
//
//	address              host:port of the SMSC (required)
//	system_id            (required)
//	password, system_type
//	window               submit_sm in flight at once (default 10)
//	bind                 transceiver (default) | transmitter | receiver
//	enquire_link         keep-alive interval (default 30s)
//	registered_delivery  ask for delivery receipts (default true)
//	submit_timeout       the longest one Send takes (default 30s)
//
// Numbers on the wire (DESIGN.md §6, contract): destinations are
// international digits without '+', TON 1, NPI 1; a numeric sender ID
// likewise; an alphanumeric sender ID TON 5, NPI 0. Incoming numbers are
// read as E.164 with phone.Incoming and Env.DefaultRegion.
//
// Send never fails permanently for a reason that time can fix. Within ctx
// and submit_timeout it waits out throttling (ESME_RTHROTTLED,
// ESME_RMSGQFUL: the window halves and the link pauses) and resubmits what
// a dropped link lost, once re-bound; while not bound it waits at most 5s
// for a re-bind. Then it returns a temporary error (not sdk.Permanent), so
// the dispatcher retries or fails over. See classify for the
// command_status table. Delivery is at least once: a submit whose
// response was lost with the link is submitted again.
package smpp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/linxGnu/gosmpp"
	"github.com/linxGnu/gosmpp/data"
	"github.com/linxGnu/gosmpp/pdu"

	"github.com/smsmilter/smsmilter/plugins/sdk"
)

// Link timing. Variables of a Transport, not constants, so tests can
// shorten them.
type timing struct {
	bindTimeout   time.Duration // dial plus bind_resp
	writeTimeout  time.Duration // one PDU write
	minBackoff    time.Duration // first re-bind wait
	maxBackoff    time.Duration
	stableAfter   time.Duration // a link up this long resets the backoff
	bindWait      time.Duration // how long a Send waits for a re-bind
	throttleBase  time.Duration // first pause after ESME_RTHROTTLED
	queueFullBase time.Duration // first pause after ESME_RMSGQFUL
}

func defaultTiming() timing {
	return timing{
		bindTimeout:   10 * time.Second,
		writeTimeout:  10 * time.Second,
		minBackoff:    500 * time.Millisecond,
		maxBackoff:    30 * time.Second,
		stableAfter:   30 * time.Second,
		bindWait:      5 * time.Second,
		throttleBase:  200 * time.Millisecond,
		queueFullBase: time.Second,
	}
}

const eventQueue = 4096

var (
	errLinkDown = errors.New("SMPP link lost before submit_sm_resp")
	errClosed   = errors.New("transport closed")
)

// Transport is the SMPP transport. Create it with New.
type Transport struct {
	log    *slog.Logger
	timing timing

	cfg config
	env sdk.Env

	win    *window
	events chan sdk.Event
	asm    *reassembler
	refs   *refSet
	udhRef atomic.Uint32

	ctx    context.Context // lifetime: Configure to Close
	cancel context.CancelFunc
	done   chan struct{} // the supervisor has stopped

	mu      sync.Mutex
	link    *link         // bound link, nil when not bound
	bound   chan struct{} // closed when link becomes non-nil
	bindErr error         // why the last bind failed
	pending map[int32]*pending
	gen     uint64
	closed  bool
}

type link struct {
	gen    uint64
	sess   *gosmpp.Session
	down   chan struct{} // closed when gosmpp reports the link closed
	once   sync.Once
	upTime time.Time
}

func (l *link) markDown() { l.once.Do(func() { close(l.down) }) }

type pending struct {
	gen uint64
	ch  chan result // buffered 1
}

type result struct {
	status data.CommandStatusType
	msgID  string
	err    error // link lost
}

// New returns an unconfigured SMPP transport logging to log.
func New(log *slog.Logger) sdk.Transport {
	return newTransport(log)
}

func newTransport(log *slog.Logger) *Transport {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Transport{
		log:     log,
		timing:  defaultTiming(),
		events:  make(chan sdk.Event, eventQueue),
		asm:     newReassembler(),
		refs:    newRefSet(),
		bound:   make(chan struct{}),
		pending: map[int32]*pending{},
		done:    make(chan struct{}),
	}
}

// Configure checks the settings and binds. A refused bind for bad
// credentials (ESME_RINVPASWD, ESME_RINVSYSID) is returned as an error; an
// SMSC that cannot be reached is not (the daemon must start while the SMSC
// is down): the transport keeps re-binding in the background, and Health
// says why it is not bound.
func (t *Transport) Configure(ctx context.Context, env sdk.Env, settings map[string]any) error {
	cfg, err := parseConfig(settings)
	if err != nil {
		return err
	}
	t.cfg, t.env = cfg, env
	t.log = t.log.With("transport", env.Name)
	for _, w := range cfg.lengthWarnings() {
		t.log.Warn("smpp: " + w)
	}
	t.win = newWindow(cfg.Window)
	t.udhRef.Store(rand.Uint32())
	t.ctx, t.cancel = context.WithCancel(context.Background())

	bctx, cancel := context.WithTimeout(ctx, t.timing.bindTimeout)
	l, err := t.bind(bctx)
	cancel()
	if err != nil {
		var se *StatusError
		if errors.As(err, &se) && (se.Status == uint32(data.ESME_RINVPASWD) || se.Status == uint32(data.ESME_RINVSYSID)) {
			t.setBindErr(err)
			t.cancel()
			close(t.done)
			return fmt.Errorf("smpp: %w", err)
		}
		t.log.Warn("smpp: not bound yet; retrying in the background", "address", cfg.Address, "err", err)
		t.setBindErr(err)
	} else {
		t.publish(l)
	}
	go t.supervise(l)
	go t.janitor()
	return nil
}

// bind dials and binds once.
func (t *Transport) bind(ctx context.Context) (*link, error) {
	t.mu.Lock()
	t.gen++
	l := &link{gen: t.gen, down: make(chan struct{})}
	t.mu.Unlock()

	bt := pdu.Transceiver
	switch t.cfg.Bind {
	case "transmitter":
		bt = pdu.Transmitter
	case "receiver":
		bt = pdu.Receiver
	}
	conn := &connector{ctx: ctx, addr: t.cfg.Address, bindType: bt, timeout: t.timing.bindTimeout,
		req: func() *pdu.BindRequest {
			r := pdu.NewBindRequest(bt)
			r.SystemID, r.Password, r.SystemType = t.cfg.SystemID, t.cfg.Password, t.cfg.SystemType
			return r
		}}
	enquire := t.cfg.EnquireLink
	settings := gosmpp.Settings{
		EnquireLink: enquire,
		// A link that has read nothing (not even enquire_link_resp) for two
		// keep-alive intervals is dead.
		ReadTimeout:  2*enquire + time.Second,
		WriteTimeout: t.timing.writeTimeout,
		OnAllPDU:     t.onPDU,
		OnSubmitError: func(p pdu.PDU, err error) {
			// Only our requests: a response carries the SMSC's sequence
			// number, which may equal one of ours.
			if _, ok := p.(*pdu.SubmitSM); ok {
				t.resolve(p.GetSequenceNumber(), result{err: fmt.Errorf("writing submit_sm: %w", err)})
			}
		},
		OnReceivingError: func(err error) {
			t.log.Debug("smpp: read error", "err", err)
		},
		OnClosed: func(s gosmpp.State) {
			if s != gosmpp.ExplicitClosing {
				t.log.Info("smpp: link closed", "state", s.String())
			}
			l.markDown()
		},
	}
	sess, err := gosmpp.NewSession(conn, settings, 0)
	if err != nil {
		var se *StatusError
		if errors.As(err, &se) {
			se.Op = "bind_" + t.cfg.Bind + " as " + t.cfg.SystemID
			return nil, se
		}
		return nil, fmt.Errorf("bind to %s: %w", t.cfg.Address, err)
	}
	l.sess = sess
	l.upTime = time.Now()
	t.log.Info("smpp: bound", "address", t.cfg.Address, "bind", t.cfg.Bind, "smsc_system_id", conn.smscID)
	return l, nil
}

// supervise keeps a link bound until Close: it publishes each new link,
// waits for it to drop, fails what was in flight on it, and re-binds with
// exponential backoff and jitter.
func (t *Transport) supervise(l *link) {
	defer close(t.done)
	backoff := t.timing.minBackoff
	for {
		if l != nil {
			t.publish(l)
			select {
			case <-l.down:
			case <-t.ctx.Done():
			}
			t.retire(l, errLinkDown)
			_ = l.sess.Close()
			if t.ctx.Err() != nil {
				return
			}
			if time.Since(l.upTime) >= t.timing.stableAfter {
				backoff = t.timing.minBackoff
			}
		}
		// Jitter keeps many smsmilter hosts from re-binding in step.
		wait := backoff/2 + rand.N(backoff/2+1)
		select {
		case <-time.After(wait):
		case <-t.ctx.Done():
			return
		}
		backoff = min(2*backoff, t.timing.maxBackoff)
		var err error
		bctx, cancel := context.WithTimeout(t.ctx, t.timing.bindTimeout)
		l, err = t.bind(bctx)
		cancel()
		if err != nil {
			if t.ctx.Err() != nil {
				return
			}
			t.log.Warn("smpp: bind failed", "address", t.cfg.Address, "err", err, "retry_in", backoff)
			t.setBindErr(err)
		}
	}
}

// janitor delivers concatenated incoming SMS whose missing parts never came.
func (t *Transport) janitor() {
	tick := time.NewTicker(30 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			for _, in := range t.asm.expired(time.Now()) {
				t.log.Warn("smpp: incomplete concatenated SMS delivered with gaps", "from", in.From)
				t.emit(sdk.Event{Incoming: &in})
			}
		case <-t.ctx.Done():
			return
		}
	}
}

func (t *Transport) setBindErr(err error) {
	t.mu.Lock()
	t.bindErr = err
	t.mu.Unlock()
}

func (t *Transport) publish(l *link) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.link == l {
		return
	}
	t.link = l
	t.bindErr = nil
	close(t.bound)
}

// retire takes l out of service and fails every submit in flight on it,
// so that Send retries them on the next link.
func (t *Transport) retire(l *link, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.link == l {
		t.link = nil
		t.bound = make(chan struct{})
		if t.bindErr == nil {
			t.bindErr = errors.New("link lost; re-binding")
		}
	}
	for seq, p := range t.pending {
		if p.gen == l.gen {
			delete(t.pending, seq)
			p.ch <- result{err: err}
		}
	}
}

// waitLink returns the bound link, waiting for one within ctx.
func (t *Transport) waitLink(ctx context.Context) (*link, error) {
	for {
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			return nil, errClosed
		}
		l, ch := t.link, t.bound
		t.mu.Unlock()
		if l != nil {
			return l, nil
		}
		select {
		case <-ch:
		case <-t.ctx.Done():
			return nil, errClosed
		case <-ctx.Done():
			t.mu.Lock()
			why := t.bindErr
			t.mu.Unlock()
			if why == nil {
				why = errors.New("binding")
			}
			return nil, fmt.Errorf("not bound to %s: %w", t.cfg.Address, why)
		}
	}
}

// register records a submit awaiting its response on l.
func (t *Transport) register(l *link, seq int32) (chan result, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.link != l {
		return nil, errLinkDown
	}
	ch := make(chan result, 1)
	t.pending[seq] = &pending{gen: l.gen, ch: ch}
	return ch, nil
}

func (t *Transport) unregister(seq int32) {
	t.mu.Lock()
	delete(t.pending, seq)
	t.mu.Unlock()
}

func (t *Transport) resolve(seq int32, r result) {
	t.mu.Lock()
	p, ok := t.pending[seq]
	delete(t.pending, seq)
	t.mu.Unlock()
	if ok {
		p.ch <- r
	} else if r.err == nil {
		// Late (its Send gave up) or unknown: nothing waits for it.
		t.log.Debug("smpp: response for no pending request", "seq", seq, "status", statusText(r.status), "message_id", r.msgID)
	}
}

// onPDU handles every PDU gosmpp reads, on the link's reader goroutine; it
// must not block. The returned PDU is sent as the response.
func (t *Transport) onPDU(p pdu.PDU) (pdu.PDU, bool) {
	switch pp := p.(type) {
	case *pdu.SubmitSMResp:
		t.resolve(pp.SequenceNumber, result{status: pp.CommandStatus, msgID: pp.MessageID})
	case *pdu.GenericNack:
		t.resolve(pp.SequenceNumber, result{status: pp.CommandStatus})
	case *pdu.EnquireLink:
		return pp.GetResponse(), false
	case *pdu.Unbind:
		t.log.Info("smpp: SMSC sent unbind")
		return pp.GetResponse(), true
	case *pdu.DeliverSM:
		resp := pp.GetResponse().(*pdu.DeliverSMResp)
		resp.CommandStatus = t.handleInbound(fromDeliverSM(pp))
		return resp, false
	case *pdu.DataSM:
		resp := pp.GetResponse().(*pdu.DataSMResp)
		resp.CommandStatus = t.handleInbound(fromDataSM(pp))
		return resp, false
	case *pdu.EnquireLinkResp, *pdu.UnbindResp, *pdu.AlertNotification, *pdu.DeliverSMResp:
	default:
		if p.CanResponse() {
			t.log.Warn("smpp: unsupported request from the SMSC", "pdu", fmt.Sprintf("%T", p))
			n := pdu.NewGenericNack().(*pdu.GenericNack)
			n.SequenceNumber = p.GetSequenceNumber()
			n.CommandStatus = data.ESME_RINVCMDID
			return n, false
		}
	}
	return nil, false
}

// Send submits every part of m and returns the SMSC's message_id for each.
func (t *Transport) Send(ctx context.Context, m sdk.Message) ([]sdk.PartResult, error) {
	if t.win == nil {
		return nil, errors.New("smpp: Send before Configure")
	}
	if t.cfg.Bind == "receiver" {
		return nil, sdk.Permanent(errors.New("smpp: bound as a receiver; this transport cannot send (bind: transceiver or transmitter)"))
	}
	dst, err := destAddress(m.To)
	if err != nil {
		return nil, sdk.Permanent(fmt.Errorf("smpp: %w", err))
	}
	src, err := sourceAddress(m.From)
	if err != nil {
		return nil, sdk.Permanent(fmt.Errorf("smpp: %w", err))
	}
	enc, fellBack, err := encodeText(m.Text, m.Encoding)
	if err != nil {
		return nil, sdk.Permanent(fmt.Errorf("smpp: %w", err))
	}
	n := len(enc.parts)
	if fellBack {
		t.log.Warn("smpp: text does not fit GSM 03.38; sent as UCS-2", "id", m.ID)
	}
	if n > 255 {
		return nil, sdk.Permanent(fmt.Errorf("smpp: %d parts; concatenation allows 255", n))
	}
	if m.Parts != 0 && m.Parts != n {
		t.log.Warn("smpp: part count differs from the milter's", "id", m.ID, "milter_parts", m.Parts, "smpp_parts", n)
	}

	ctx, cancel := context.WithTimeout(ctx, t.cfg.SubmitTimeout)
	defer cancel()
	ref := byte(t.udhRef.Add(1))
	results := make([]sdk.PartResult, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	// Parts go out in order (part i+1 is handed to the link after part i),
	// then wait for their responses together.
	prev := make(chan struct{})
	close(prev)
	for i := range n {
		next := make(chan struct{})
		sm := submitSpec{src: src, dst: dst, coding: enc.coding, ud: enc.parts[i]}
		if n > 1 {
			sm.udh = concatUDH(ref, byte(n), byte(i+1))
		}
		wg.Add(1)
		go func(i int, prev <-chan struct{}, next chan struct{}) {
			defer wg.Done()
			var once sync.Once
			sent := func() { once.Do(func() { close(next) }) }
			defer sent()
			select {
			case <-prev:
			case <-ctx.Done():
			}
			id, err := t.submit(ctx, sm, sent)
			results[i] = sdk.PartResult{Index: i, Ref: id}
			errs[i] = err
			if sdk.IsPermanent(err) {
				cancel() // the others cannot make the SMS whole
			}
		}(i, prev, next)
		prev = next
	}
	wg.Wait()

	var accepted []sdk.PartResult
	var firstErr error
	for i, err := range errs {
		if err == nil {
			accepted = append(accepted, results[i])
			continue
		}
		// A permanent error explains the others' cancellation: report it.
		if firstErr == nil || sdk.IsPermanent(err) && !sdk.IsPermanent(firstErr) {
			firstErr = fmt.Errorf("part %d/%d: %w", i+1, n, err)
			if sdk.IsPermanent(err) {
				firstErr = sdk.Permanent(firstErr)
			}
		}
	}
	if firstErr != nil {
		// The parts the SMSC accepted are returned too; resending the SMS
		// sends them again (at least once).
		return accepted, firstErr
	}
	return results, nil
}

// submitSpec is one part ready to be put in a submit_sm.
type submitSpec struct {
	src, dst pdu.Address
	coding   byte
	udh      []byte
	ud       []byte
}

func (t *Transport) newSubmitSM(s submitSpec) *pdu.SubmitSM {
	p := pdu.NewSubmitSM().(*pdu.SubmitSM)
	p.SourceAddr, p.DestAddr = s.src, s.dst
	if t.cfg.RegisteredDelivery {
		p.RegisteredDelivery = 1 // SMSC delivery receipt on success and failure
	}
	msg := append(append([]byte(nil), s.udh...), s.ud...)
	if len(s.udh) > 0 {
		p.EsmClass = esmUDHI
	}
	enc := data.GSM7BIT
	if s.coding == codingUCS2 {
		enc = data.UCS2
	}
	_ = p.Message.SetMessageDataWithEncoding(msg, enc) // <= 140 octets: cannot fail
	return p
}

// submit sends one part until the SMSC accepts it, refuses it, or ctx
// ends. sent is called once the first attempt is handed to the link.
//
// Not bound, it waits at most timing.bindWait (5s) for a re-bind, then
// returns a temporary error: during an outage the dispatcher should fail
// over to the route's next transport or retry later, not queue here.
func (t *Transport) submit(ctx context.Context, s submitSpec, sent func()) (string, error) {
	begin := time.Now()
	var last error
	giveUp := func(cause error) error {
		if errors.Is(cause, errClosed) {
			return fmt.Errorf("smpp: %w", cause)
		}
		if last == nil {
			last = cause
		}
		return fmt.Errorf("smpp: gave up after %v: %w", time.Since(begin).Round(time.Millisecond), last)
	}
	for {
		wctx, cancel := context.WithTimeout(ctx, t.timing.bindWait)
		l, err := t.waitLink(wctx)
		cancel()
		if err != nil {
			if !errors.Is(err, errClosed) {
				last = err // the outage is the news, not what happened before it
			}
			return "", giveUp(err)
		}
		if err := t.win.acquire(ctx); err != nil {
			return "", giveUp(errors.New("no window slot free in time"))
		}
		p := t.newSubmitSM(s)
		seq := p.SequenceNumber
		ch, err := t.register(l, seq)
		if err != nil {
			t.win.release()
			continue
		}
		err = l.sess.Transceiver().Submit(p)
		sent()
		if err != nil {
			t.unregister(seq)
			t.win.release()
			last = fmt.Errorf("submitting: %w", err)
			// The link is closing; wait until the supervisor retires it.
			select {
			case <-l.down:
			case <-time.After(50 * time.Millisecond):
			case <-ctx.Done():
			}
			continue
		}
		var r result
		select {
		case r = <-ch:
		case <-ctx.Done():
			t.unregister(seq)
			t.win.release()
			return "", giveUp(errors.New("no submit_sm_resp"))
		}
		t.win.release()
		if r.err != nil {
			last = r.err
			continue
		}
		switch classify(r.status) {
		case outcomeOK:
			t.win.succeeded()
			if r.msgID == "" {
				t.log.Warn("smpp: submit_sm_resp without message_id; receipts cannot be matched", "dest", s.dst.Address())
			}
			t.refs.add(r.msgID)
			return r.msgID, nil
		case outcomeThrottle:
			base := t.timing.throttleBase
			if r.status == data.ESME_RMSGQFUL {
				base = t.timing.queueFullBase
			}
			t.win.throttled(base)
			last = &StatusError{Op: "submit_sm", Status: uint32(r.status)}
			lim, _ := t.win.state()
			t.log.Debug("smpp: throttled by the SMSC", "status", statusText(r.status), "window", lim)
		case outcomeRebind:
			last = &StatusError{Op: "submit_sm", Status: uint32(r.status)}
			t.log.Warn("smpp: SMSC says the link is not bound; re-binding", "status", statusText(r.status))
			l.markDown()
		case outcomePermanent:
			return "", sdk.Permanent(fmt.Errorf("smpp: %w", &StatusError{Op: "submit_sm to " + s.dst.Address(), Status: uint32(r.status)}))
		default:
			return "", fmt.Errorf("smpp: %w", &StatusError{Op: "submit_sm to " + s.dst.Address(), Status: uint32(r.status)})
		}
	}
}

// destAddress puts an E.164 number on the wire: digits without '+', TON 1
// (international), NPI 1 (ISDN/E.164).
func destAddress(to string) (pdu.Address, error) {
	digits, intl := strings.CutPrefix(to, "+")
	if !intl || !isDigits(digits) || len(digits) > 15 {
		return pdu.Address{}, fmt.Errorf("destination %q is not an E.164 number", to)
	}
	return pdu.NewAddressWithTonNpiAddr(1, 1, digits)
}

// sourceAddress puts a sender ID on the wire: a number as international
// digits (TON 1, NPI 1), anything else alphanumeric (TON 5, NPI 0), which
// GSM allows up to 11 characters.
func sourceAddress(from string) (pdu.Address, error) {
	if from == "" {
		return pdu.NewAddressWithTonNpi(0, 0), nil // the SMSC's default sender
	}
	if digits := strings.TrimPrefix(from, "+"); isDigits(digits) && len(digits) <= 20 {
		return pdu.NewAddressWithTonNpiAddr(1, 1, digits)
	}
	if len(from) > 11 {
		return pdu.Address{}, fmt.Errorf("alphanumeric sender ID %q is longer than 11 characters", from)
	}
	for _, c := range []byte(from) {
		if c < 0x20 || c > 0x7e {
			return pdu.Address{}, fmt.Errorf("alphanumeric sender ID %q must be printable ASCII", from)
		}
	}
	return pdu.NewAddressWithTonNpiAddr(5, 0, from)
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// Events passes incoming SMS and delivery reports to out until ctx ends or
// the transport is closed.
func (t *Transport) Events(ctx context.Context, out chan<- sdk.Event) error {
	for {
		select {
		case ev := <-t.events:
			select {
			case out <- ev:
			case <-ctx.Done():
				t.log.Warn("smpp: an event was dropped at shutdown", "report", ev.Report != nil)
				return nil
			}
		case <-ctx.Done():
			return nil
		case <-t.done:
			return nil
		}
	}
}

// Health is nil while bound; otherwise it says why not.
func (t *Transport) Health(ctx context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case t.closed:
		return fmt.Errorf("smpp: %w", errClosed)
	case t.win == nil:
		return errors.New("smpp: not configured")
	case t.link != nil:
		return nil
	case t.bindErr != nil:
		return fmt.Errorf("smpp: not bound to %s: %w", t.cfg.Address, t.bindErr)
	}
	return fmt.Errorf("smpp: not bound to %s yet", t.cfg.Address)
}

// Close unbinds and stops re-binding. Sends in flight fail with a
// temporary error.
func (t *Transport) Close() error {
	t.mu.Lock()
	if t.closed || t.cancel == nil {
		t.closed = true
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	t.mu.Unlock()
	t.cancel()
	<-t.done
	t.mu.Lock()
	for seq, p := range t.pending {
		delete(t.pending, seq)
		p.ch <- result{err: errClosed}
	}
	t.mu.Unlock()
	return nil
}
