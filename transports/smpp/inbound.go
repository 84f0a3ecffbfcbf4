package smpp

import (
	"encoding/binary"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/linxGnu/gosmpp/data"
	"github.com/linxGnu/gosmpp/pdu"

	"github.com/smsmilter/smsmilter/internal/phone"
	"github.com/smsmilter/smsmilter/plugins/sdk"
)

// TLV tags read from incoming PDUs (SMPP 3.4 §5.3.2).
const (
	tagReceiptedMessageID pdu.Tag = 0x001E
	tagMessageState       pdu.Tag = 0x0427
	tagNetworkErrorCode   pdu.Tag = 0x0423
	tagMessagePayload     pdu.Tag = 0x0424
	tagSarMsgRefNum       pdu.Tag = 0x020C
	tagSarTotalSegments   pdu.Tag = 0x020E
	tagSarSegmentSeqnum   pdu.Tag = 0x020F
)

// esm_class message type bits (SMPP 3.4 §5.2.12, bits 5-2).
const (
	esmTypeMask          = 0x3C
	esmReceipt           = 0x04 // SMSC delivery receipt
	esmSMEAck            = 0x08
	esmUserAck           = 0x10
	esmIntermediate      = 0x20 // intermediate delivery notification
	esmUDHI         byte = 0x40
)

// inbound is what deliver_sm and data_sm have in common.
type inbound struct {
	src, dst pdu.Address
	esm      byte
	coding   byte
	ud       []byte  // user data, UDH removed
	udh      pdu.UDH // information elements, when the UDHI bit was set
	tlv      map[pdu.Tag]pdu.Field
}

func fromDeliverSM(p *pdu.DeliverSM) inbound {
	in := inbound{src: p.SourceAddr, dst: p.DestAddr, esm: p.EsmClass, tlv: p.OptionalParameters,
		coding: codingBinary2}
	if enc := p.Message.Encoding(); enc != nil {
		in.coding = enc.DataCoding()
	}
	in.ud, _ = p.Message.GetMessageData()
	in.udh = p.Message.UDH()
	in.payloadFallback()
	return in
}

func fromDataSM(p *pdu.DataSM) inbound {
	in := inbound{src: p.SourceAddr, dst: p.DestAddr, esm: p.EsmClass, coding: p.DataCoding,
		tlv: p.OptionalParameters}
	in.payloadFallback()
	return in
}

// payloadFallback takes the user data from the message_payload TLV when
// short_message is empty (data_sm always; deliver_sm for long MO).
func (in *inbound) payloadFallback() {
	if len(in.ud) > 0 {
		return
	}
	f, ok := in.tlv[tagMessagePayload]
	if !ok {
		return
	}
	in.ud = f.Data
	if in.esm&esmUDHI != 0 && len(in.ud) > 0 {
		var u pdu.UDH
		if n, err := u.UnmarshalBinary(in.ud); err == nil && n <= len(in.ud) {
			in.udh, in.ud = u, in.ud[n:]
		}
	}
}

func (in inbound) tlvString(tag pdu.Tag) (string, bool) {
	f, ok := in.tlv[tag]
	if !ok {
		return "", false
	}
	return strings.TrimRight(string(f.Data), "\x00"), true
}

func (in inbound) tlvByte(tag pdu.Tag) (byte, bool) {
	f, ok := in.tlv[tag]
	if !ok || len(f.Data) < 1 {
		return 0, false
	}
	return f.Data[0], true
}

// concat finds the concatenation of a part: the 8- or 16-bit reference
// UDH element, or the SAR TLVs. seq is 1-based.
func (in inbound) concat() (ref, total, seq int, ok bool) {
	for _, ie := range in.udh {
		switch {
		case ie.ID == 0x00 && len(ie.Data) == 3:
			return int(ie.Data[0]), int(ie.Data[1]), int(ie.Data[2]), ie.Data[1] > 1
		case ie.ID == 0x08 && len(ie.Data) == 4:
			return int(binary.BigEndian.Uint16(ie.Data)), int(ie.Data[2]), int(ie.Data[3]), ie.Data[2] > 1
		}
	}
	r, ok1 := in.tlv[tagSarMsgRefNum]
	t, ok2 := in.tlvByte(tagSarTotalSegments)
	s, ok3 := in.tlvByte(tagSarSegmentSeqnum)
	if ok1 && ok2 && ok3 && len(r.Data) == 2 && t > 1 {
		return int(binary.BigEndian.Uint16(r.Data)), int(t), int(s), true
	}
	return 0, 0, 0, false
}

func (in inbound) isReceipt() bool {
	switch in.esm & esmTypeMask {
	case esmReceipt, esmIntermediate:
		return true
	}
	return false
}

// handleInbound turns a deliver_sm or data_sm into an event and returns the
// command_status to answer. ESME_RX_T_APPN (temporary) makes the SMSC
// deliver it again later; it is answered only when the event queue is full.
func (t *Transport) handleInbound(in inbound) data.CommandStatusType {
	switch {
	case in.isReceipt():
		return t.handleReceipt(in)
	case in.esm&esmTypeMask == esmSMEAck || in.esm&esmTypeMask == esmUserAck:
		t.log.Debug("smpp: SME acknowledgement ignored", "from", in.src.Address())
		return data.ESME_ROK
	}
	return t.handleMO(in)
}

func (t *Transport) handleReceipt(in inbound) data.CommandStatusType {
	text := decodeText(in.coding, in.ud)
	rc, _ := parseReceipt(text)
	ref, stat := rc.ID, rc.Stat
	// The TLVs are unambiguous where the text is a convention: prefer them.
	if id, ok := in.tlvString(tagReceiptedMessageID); ok && id != "" {
		ref = id
	}
	if v, ok := in.tlvByte(tagMessageState); ok {
		stat = messageStateName(v)
	}
	if ref == "" {
		t.log.Warn("smpp: delivery receipt without a message id ignored", "text", text)
		return data.ESME_ROK
	}
	state, final := statState(stat)
	if !final {
		t.log.Debug("smpp: intermediate delivery receipt", "ref", ref, "stat", stat)
		return data.ESME_ROK
	}
	ref = t.refs.canonical(ref)
	var errText string
	if state != stateDelivered {
		errText = stat
		if rc.Err != "" {
			errText += " err:" + rc.Err
		}
		if f, ok := in.tlv[tagNetworkErrorCode]; ok && len(f.Data) == 3 {
			errText += fmt.Sprintf(" network_error_code:%d/%d", f.Data[0], binary.BigEndian.Uint16(f.Data[1:]))
		}
	}
	return t.emit(sdk.Event{Report: &sdk.Report{Ref: ref, State: state, Error: errText, At: time.Now()}})
}

func (t *Transport) handleMO(in inbound) data.CommandStatusType {
	from := phone.Incoming(in.src.Address(), in.src.Ton(), t.env.DefaultRegion)
	if from == "" {
		// Unreadable as a number: deliver it anyway with what the SMSC said.
		t.log.Warn("smpp: incoming SMS from an unreadable number", "source_addr", in.src.Address(), "ton", in.src.Ton())
		from = in.src.Address()
	}
	to := phone.Incoming(in.dst.Address(), in.dst.Ton(), t.env.DefaultRegion)
	if to == "" {
		to = in.dst.Address()
	}
	if ref, total, seq, ok := in.concat(); ok {
		if len(t.events) == cap(t.events) {
			return t.queueFull()
		}
		msg, done := t.asm.add(asmKey{from: from, to: to, ref: ref, total: total}, seq,
			fragment{coding: in.coding, data: in.ud}, time.Now())
		if !done {
			return data.ESME_ROK
		}
		return t.emit(sdk.Event{Incoming: &sdk.Incoming{From: from, To: to, Text: msg, At: time.Now()}})
	}
	text := decodeText(in.coding, in.ud)
	return t.emit(sdk.Event{Incoming: &sdk.Incoming{From: from, To: to, Text: text, At: time.Now()}})
}

// emit queues an event for Events without blocking the link's reader.
func (t *Transport) emit(ev sdk.Event) data.CommandStatusType {
	select {
	case t.events <- ev:
		return data.ESME_ROK
	default:
		return t.queueFull()
	}
}

func (t *Transport) queueFull() data.CommandStatusType {
	t.log.Warn("smpp: event queue full; asking the SMSC to deliver again later", "queued", len(t.events))
	return data.ESME_RX_T_APPN
}

// Reassembly of concatenated incoming SMS.

type asmKey struct {
	from, to   string
	ref, total int
}

type fragment struct {
	coding byte
	data   []byte
}

type asmSet struct {
	parts map[int]fragment // by 1-based seq
	first time.Time
}

// reassembler joins the parts of concatenated incoming SMS. Sets that stay
// incomplete are delivered as they are after asmTimeout (a reply with a gap
// is better than none), and at most asmMaxSets are kept.
type reassembler struct {
	mu   sync.Mutex
	sets map[asmKey]*asmSet
}

const (
	asmTimeout = 10 * time.Minute
	asmMaxSets = 10000
)

func newReassembler() *reassembler { return &reassembler{sets: map[asmKey]*asmSet{}} }

// add stores one part; when the set is complete it returns the text.
func (r *reassembler) add(k asmKey, seq int, f fragment, now time.Time) (string, bool) {
	if seq < 1 || seq > k.total {
		// A broken UDH: treat the part as a message of its own.
		return decodeText(f.coding, f.data), true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.sets[k]
	if !ok {
		if len(r.sets) >= asmMaxSets {
			r.dropOldestLocked()
		}
		s = &asmSet{parts: map[int]fragment{}, first: now}
		r.sets[k] = s
	}
	s.parts[seq] = f // a repeated part replaces the earlier copy
	if len(s.parts) < k.total {
		return "", false
	}
	delete(r.sets, k)
	return joinParts(s.parts, k.total), true
}

func (r *reassembler) dropOldestLocked() {
	var oldest asmKey
	var t time.Time
	for k, s := range r.sets {
		if t.IsZero() || s.first.Before(t) {
			oldest, t = k, s.first
		}
	}
	delete(r.sets, oldest)
}

// expired removes and returns the sets older than asmTimeout, joined with
// a marker where parts are missing.
func (r *reassembler) expired(now time.Time) []sdk.Incoming {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []sdk.Incoming
	for k, s := range r.sets {
		if now.Sub(s.first) < asmTimeout {
			continue
		}
		delete(r.sets, k)
		out = append(out, sdk.Incoming{From: k.from, To: k.to, Text: joinParts(s.parts, k.total), At: s.first})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].At.Before(out[j].At) })
	return out
}

// joinParts decodes the parts in order. When every part has the same
// coding the octets are joined before decoding, so a sender that split a
// surrogate pair or an escape pair across parts still reads right.
func joinParts(parts map[int]fragment, total int) string {
	same, coding := true, byte(0)
	first := true
	for _, f := range parts {
		if first {
			coding, first = f.coding, false
		} else if f.coding != coding {
			same = false
		}
	}
	var sb strings.Builder
	var run []byte
	flush := func() {
		if len(run) > 0 {
			sb.WriteString(decodeText(coding, run))
			run = run[:0]
		}
	}
	for i := 1; i <= total; i++ {
		f, ok := parts[i]
		switch {
		case !ok:
			flush()
			sb.WriteString("[…part " + strconv.Itoa(i) + " missing…]")
		case same:
			run = append(run, f.data...)
		default:
			sb.WriteString(decodeText(f.coding, f.data))
		}
	}
	flush()
	return sb.String()
}

// refSet remembers recently issued message IDs, so that a receipt that
// writes the ID differently (a known SMSC quirk: hex in submit_sm_resp,
// decimal in the receipt text or the reverse, other case, leading zeros)
// still matches the Ref that Send returned.
type refSet struct {
	mu   sync.Mutex
	byID map[string]string // normalised form -> ID as issued
	ring []string          // normalised forms, oldest first from next
	next int
}

const refSetSize = 1 << 16

func newRefSet() *refSet {
	return &refSet{byID: make(map[string]string, refSetSize), ring: make([]string, refSetSize)}
}

func normRef(id string) string {
	n := strings.TrimLeft(strings.ToLower(id), "0")
	if n == "" && id != "" {
		return "0"
	}
	return n
}

func (r *refSet) add(id string) {
	k := normRef(id)
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.byID[k]; ok {
		return
	}
	if old := r.ring[r.next]; old != "" {
		delete(r.byID, old)
	}
	r.ring[r.next] = k
	r.byID[k] = id
	r.next = (r.next + 1) % len(r.ring)
}

// canonical returns id as Send returned it, when a variant of it is known;
// else id itself.
func (r *refSet) canonical(id string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := normRef(id)
	if orig, ok := r.byID[k]; ok {
		return orig
	}
	if n, err := strconv.ParseUint(id, 10, 64); err == nil {
		if orig, ok := r.byID[strconv.FormatUint(n, 16)]; ok {
			return orig
		}
	}
	if n, err := strconv.ParseUint(id, 16, 64); err == nil {
		if orig, ok := r.byID[strconv.FormatUint(n, 10)]; ok {
			return orig
		}
	}
	return id
}
