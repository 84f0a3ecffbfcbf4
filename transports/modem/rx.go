package modem

import (
	"fmt"
	"strings"
	"time"

	"github.com/warthog618/modem/at"
	"github.com/warthog618/modem/gsm"
	"github.com/warthog618/sms"
	"github.com/warthog618/sms/encoding/tpdu"

	"github.com/smsmilter/smsmilter/internal/phone"
	"github.com/smsmilter/smsmilter/plugins/sdk"
)

// startRx registers the indications and then tells the modem to send
// them. Called on every new link: ATZ (in gsm.Init) clears CNMI.
func (t *Transport) startRx(l *link) error {
	g := l.g
	// gsm handles +CMT: decode, acknowledge with +CNMA, reassemble in
	// our collector (shared with the +CMTI path), hand us the message.
	// CNMI is ours to send (WithInitCmds with none): the library's
	// default does not ask for status reports.
	err := g.StartMessageRx(
		func(m gsm.Message) { t.onMessage(m) },
		func(err error) { t.log.Warn("incoming SMS dropped", "err", err) },
		gsm.WithInitCmds(),
		gsm.WithCollector(t.collector),
	)
	if err != nil {
		return fmt.Errorf("start SMS reception: %w", err)
	}
	// +CMTI and +CDSI name a stored message: the library ignores them.
	stored := func(info []string) { t.onStored(l, info) }
	if err := g.AddIndication("+CMTI:", stored); err != nil {
		return fmt.Errorf("register +CMTI: %w", err)
	}
	if err := g.AddIndication("+CDSI:", stored); err != nil {
		return fmt.Errorf("register +CDSI: %w", err)
	}
	if err := g.AddIndication("+CDS:", func(info []string) { t.onCDS(l, info) }, at.WithTrailingLine); err != nil {
		return fmt.Errorf("register +CDS: %w", err)
	}
	// Phase 2+ service: +CMT and +CDS are acknowledged with +CNMA. A
	// modem that refuses it still delivers, unacknowledged.
	if _, err := g.Command("+CSMS=1"); isLinkError(err) {
		return fmt.Errorf("AT+CSMS=1: %w", err)
	} else if err != nil {
		t.log.Debug("modem refuses AT+CSMS=1", "err", err)
	}
	var last error
	for _, c := range cnmiChoices() {
		if _, last = g.Command("+CNMI=" + c); last == nil {
			t.log.Debug("new message indications on", "cnmi", c)
			return nil
		}
		if isLinkError(last) {
			return fmt.Errorf("set AT+CNMI=%s: %w", c, last)
		}
	}
	// Sending still works; stored SMS are read at the next (re)connect.
	t.log.Warn("modem refuses every AT+CNMI setting: incoming SMS and status reports are read only when the modem is (re)opened", "err", last)
	return nil
}

// onMessage is gsm's +CMT handler: the message is complete and acked.
func (t *Transport) onMessage(m gsm.Message) {
	if len(m.TPDUs) == 0 {
		return
	}
	t.deliver(m.TPDUs[0], m.Message, len(m.TPDUs))
}

// onCDS handles `+CDS: <length>` and its PDU line.
func (t *Transport) onCDS(l *link, info []string) {
	tp, err := parseCDS(info)
	// Acknowledge even what we cannot read: with AT+CSMS=1 a modem that
	// waits for +CNMA in vain stops routing reports to us. With
	// AT+CSMS=0 it answers +CMS ERROR: 340, which is fine.
	if _, ackErr := l.g.Command("+CNMA"); ackErr != nil {
		t.log.Debug("+CNMA for a status report", "err", ackErr)
	}
	if err != nil {
		t.log.Warn("unreadable status report", "err", err)
		return
	}
	t.report(tp)
}

// onStored handles +CMTI / +CDSI: read the message, hand it on, delete it.
func (t *Transport) onStored(l *link, info []string) {
	if len(info) == 0 {
		return
	}
	mem, index, err := parseStoredIndication(info[0])
	if err != nil {
		t.log.Warn("unreadable new message indication", "line", short(info[0]), "err", err)
		return
	}
	l.rxMu.Lock()
	defer l.rxMu.Unlock()
	if mem != l.mem {
		if _, err := l.g.Command(`+CPMS="` + mem + `"`); err != nil {
			t.log.Warn("cannot select message storage; reading the current one", "mem", mem, "err", err)
		} else {
			l.mem = mem
		}
	}
	rsp, err := l.g.Command(fmt.Sprintf("+CMGR=%d", index))
	if err != nil {
		t.log.Warn("cannot read stored SMS", "mem", mem, "index", index, "err", err)
		return
	}
	msgs, errs := parseStored("+CMGR", rsp)
	for _, e := range errs {
		t.log.Warn("unreadable stored SMS", "mem", mem, "index", index, "err", e)
	}
	if len(msgs) == 0 || msgs[0].outgoing() {
		return
	}
	if msgs[0].Err != nil {
		t.log.Warn("undecodable stored SMS deleted", "mem", mem, "index", index, "err", msgs[0].Err)
	} else if !t.received(msgs[0].TPDU) {
		return // closing: keep it for the next start
	}
	if _, err := l.g.Command(fmt.Sprintf("+CMGD=%d", index)); err != nil {
		t.log.Warn("cannot delete stored SMS", "mem", mem, "index", index, "err", err)
	}
}

// drainStored reads and deletes what arrived while nobody listened
// (before the start, or while the modem was being recovered: ATZ resets
// CNMI, so the modem stored the SMS instead of routing them).
func (t *Transport) drainStored(l *link) {
	l.rxMu.Lock()
	defer l.rxMu.Unlock()
	// PDU mode: 4 is all messages; stored outgoing ones are skipped below.
	rsp, err := l.g.Command("+CMGL=4")
	if err != nil {
		t.log.Debug("cannot list stored SMS", "err", err)
		if isLinkError(err) {
			t.suspect()
		}
		return
	}
	msgs, errs := parseStored("+CMGL", rsp)
	for _, e := range errs {
		t.log.Warn("unreadable stored SMS", "err", e)
	}
	for _, m := range msgs {
		if m.outgoing() {
			continue
		}
		if m.Err != nil {
			t.log.Warn("undecodable stored SMS deleted", "index", m.Index, "err", m.Err)
		} else if !t.received(m.TPDU) {
			return
		}
		if _, err := l.g.Command(fmt.Sprintf("+CMGD=%d", m.Index)); err != nil {
			t.log.Warn("cannot delete stored SMS", "index", m.Index, "err", err)
		}
	}
}

// received handles one TPDU read from storage. It returns false only when
// the transport is closing and the message was not handed on.
func (t *Transport) received(tp tpdu.TPDU) bool {
	switch tp.SmsType() {
	case tpdu.SmsStatusReport:
		return t.report(tp)
	case tpdu.SmsDeliver:
	default:
		t.log.Warn("stored message is neither an SMS nor a status report; ignored", "type", tp.SmsType().String())
		return true
	}
	segs, err := t.collector.Collect(tp)
	if err != nil {
		t.log.Warn("incoming SMS part dropped", "err", err)
		return true
	}
	if segs == nil {
		return true // more parts to come
	}
	text, err := sms.Decode(segs)
	if err != nil {
		t.log.Warn("undecodable incoming SMS dropped", "from", segs[0].OA.Number(), "err", err)
		return true
	}
	return t.deliver(segs[0], string(text), len(segs))
}

// deliver emits an incoming SMS. The sender is read as E.164 per
// DESIGN.md §6 (TON 1 or "+digits" international, TON 0 by
// numbers.default_region).
func (t *Transport) deliver(first *tpdu.TPDU, text string, parts int) bool {
	from := phone.Incoming(first.OA.Addr, byte(first.OA.TypeOfNumber()), t.env.DefaultRegion)
	if from == "" {
		from = first.OA.Number()
		t.log.Warn("sender number not readable as E.164; passed on as given", "from", from)
	}
	when := first.SCTS.Time
	if when.IsZero() {
		when = time.Now()
	}
	t.log.Info("received SMS", "from", from, "parts", parts)
	return t.emit(sdk.Event{Incoming: &sdk.Incoming{From: from, Text: text, At: when}})
}

// report emits a final status report; intermediate ones are only logged.
func (t *Transport) report(tp tpdu.TPDU) bool {
	to := phone.Incoming(tp.RA.Addr, byte(tp.RA.TypeOfNumber()), t.env.DefaultRegion)
	ref := makeRef(int(tp.MR), to)
	state, text, final := tpStatus(tp.ST)
	if !final {
		t.log.Debug("status report: SC still trying", "ref", ref, "status", text)
		return true
	}
	r := &sdk.Report{Ref: ref, State: state, At: tp.DT.Time}
	if r.At.IsZero() {
		r.At = time.Now()
	}
	if state != "delivered" {
		r.Error = text
	}
	t.log.Info("status report", "ref", ref, "state", state, "status", text)
	return t.emit(sdk.Event{Report: r})
}

// onReassemblyTimeout delivers what arrived of a long SMS whose other parts
// never came: a reply with a gap is better than none. Gaps are marked.
func (t *Transport) onReassemblyTimeout(segs []*tpdu.TPDU) {
	var first *tpdu.TPDU
	var b strings.Builder
	missing := 0
	for _, s := range segs {
		if s == nil {
			missing++
			b.WriteString("[…]")
			continue
		}
		if first == nil {
			first = s
		}
		text, err := sms.Decode([]*tpdu.TPDU{s})
		if err != nil {
			b.WriteString("[…]")
			continue
		}
		b.Write(text)
	}
	if first == nil {
		return
	}
	t.log.Warn("incomplete long SMS delivered with gaps", "from", first.OA.Number(), "missing_parts", missing, "parts", len(segs))
	t.deliver(first, b.String(), len(segs)-missing)
}
