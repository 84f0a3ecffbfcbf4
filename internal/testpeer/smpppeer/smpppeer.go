// Package smpppeer runs a scriptable SMSC for tests: node-smpp (the npm
// package "smpp" 0.5.1, third-party code) in server mode, driven by
// transports/smpp/testdata/peer/peer.js. Tests start one with Start, point
// an SMPP client at Addr, look at every submit_sm the SMSC received, and
// script faults: dropped links, throttling, refused binds, per-number errors,
// held responses, incoming SMS and delivery receipts.
//
// The peer needs node on PATH and its npm dependencies installed once:
//
//	npm ci --prefix transports/smpp/testdata/peer
//
// Without them the test is skipped on a developer machine and fails in CI
// (see testutil.NeedCmd).
//
// Methods that script the peer wait until the peer has applied the command
// and call t.Fatal when it cannot: call them from the test goroutine.
package smpppeer

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smsmilter/smsmilter/internal/testutil"
)

// Command status values the peer is commonly told to answer with
// (SMPP 3.4 §5.1.3).
const (
	StatusOK         = 0x00
	StatusMsgQFull   = 0x14 // ESME_RMSGQFUL
	StatusSysErr     = 0x08 // ESME_RSYSERR
	StatusInvSrcAdr  = 0x0A // ESME_RINVSRCADR
	StatusInvDstAdr  = 0x0B // ESME_RINVDSTADR
	StatusBindFail   = 0x0D // ESME_RBINDFAIL
	StatusInvPaswd   = 0x0E // ESME_RINVPASWD
	StatusInvSysID   = 0x0F // ESME_RINVSYSID
	StatusSubmitFail = 0x45 // ESME_RSUBMITFAIL
	StatusThrottled  = 0x58 // ESME_RTHROTTLED
)

// Options configure a peer. The zero value is a peer on a free loopback
// port that accepts system_id "smsmilter" with password "secret" and sends
// delivery receipts with both the text and the TLVs.
type Options struct {
	SystemID string // bind credentials the peer accepts; default "smsmilter"
	Password string // default "secret"
	// Receipts: "tlv" (receipt text plus receipted_message_id and
	// message_state TLVs; the default), "text" (text only) or "off".
	Receipts     string
	ReceiptDelay time.Duration // wait before sending each receipt
	// Quiet leaves out the per-PDU reports (Submits, DeliverResps stay
	// empty), for benchmarks where the reporting would cost the peer time.
	Quiet bool
	Port  int    // 0: any free port
	Dir   string // folder holding peer.js; default: this module's copy
}

// Concat is a concatenation information element found in a UDH.
type Concat struct {
	RefBits int `json:"ref_bits"` // 8 or 16
	Ref     int `json:"ref"`
	Total   int `json:"total"`
	Part    int `json:"part"` // 1-based
}

// Submit is one submit_sm as the peer received it, and what it answered.
type Submit struct {
	Seq                int     `json:"seq"`
	SystemID           string  `json:"system_id"`
	ServiceType        string  `json:"service_type"`
	SourceAddr         string  `json:"source_addr"`
	SourceTON          int     `json:"source_addr_ton"`
	SourceNPI          int     `json:"source_addr_npi"`
	DestAddr           string  `json:"destination_addr"`
	DestTON            int     `json:"dest_addr_ton"`
	DestNPI            int     `json:"dest_addr_npi"`
	ESMClass           int     `json:"esm_class"`
	RegisteredDelivery int     `json:"registered_delivery"`
	DataCoding         int     `json:"data_coding"`
	UDHHex             string  `json:"udh_hex"` // with the UDHL octet; "" without UDH
	Concat             *Concat `json:"concat"`  // nil when the UDH has none
	ShortMessageHex    string  `json:"short_message_hex"`
	// Text is node-smpp's decoding of the user data (UDH excluded) per
	// data_coding: GSM 03.38 for 0, UCS-2 for 8, Latin-1 for 3.
	Text      string `json:"text"`
	Status    int    `json:"status"`     // command_status answered (0: accepted)
	MessageID string `json:"message_id"` // message_id answered when accepted
	Dropped   bool   `json:"dropped"`    // links were dropped instead of answering
}

// DeliverResp is the ESME's answer to a deliver_sm the peer sent.
type DeliverResp struct {
	Kind      string `json:"kind"` // mo | receipt | raw
	Status    int    `json:"status"`
	MessageID string `json:"message_id"` // for receipts
	Stat      string `json:"stat"`       // for receipts
	From      string `json:"from"`       // for MO
}

// Bind is one bind request the peer saw.
type Bind struct {
	SystemID   string `json:"system_id"`
	BindType   string `json:"bind_type"` // bind_transceiver | bind_transmitter | bind_receiver
	SystemType string `json:"system_type"`
	Status     int    `json:"status"` // 0: accepted
}

// Stats are the peer's counters.
type Stats struct {
	Submits   int `json:"submits"`   // submit_sm received on bound links
	Binds     int `json:"binds"`     // accepted binds
	Sessions  int `json:"sessions"`  // links bound now
	Delivered int `json:"delivered"` // deliver_sm answered by the ESME
	Queued    int `json:"queued"`    // deliver_sm waiting for a receiver link
	Held      int `json:"held"`      // responses held by Pause
}

// MO is an incoming SMS for InjectMOWith.
type MO struct {
	From   string // source_addr as sent (digits, no '+', for TON 1)
	To     string
	Text   string
	Coding int // data_coding: 0 GSM 03.38, 3 Latin-1, 8 UCS-2
	TON    int // source_addr_ton, sent as given (0 = unknown)
	NPI    int
	Parts  int // > 1: split into that many parts with an 8-bit concatenation UDH
}

// RawDeliver is a deliver_sm built field by field, for odd SMSCs.
type RawDeliver struct {
	SourceAddr         string
	SourceTON          int
	SourceNPI          int
	DestAddr           string
	ESMClass           int
	DataCoding         int
	ShortMessage       []byte
	ReceiptedMessageID string // TLV 0x001E; "" leaves it out
	MessageState       int    // TLV 0x0427; 0 leaves it out
}

// Peer is a running node-smpp SMSC.
type Peer struct {
	t    testing.TB
	cmd  *exec.Cmd
	in   io.WriteCloser
	port int

	mu       sync.Mutex
	changed  chan struct{} // closed and replaced on every event
	submits  []Submit
	delivers []DeliverResp
	binds    []Bind
	closes   int
	acks     map[int]chan ack
	stats    chan Stats
	nextID   int
	exited   bool
	exitErr  error
	readDone chan struct{}
	logDone  chan struct{}
	quiet    sync.Mutex // serialises t.Log against the end of the test
	stopLogs bool
}

type ack struct {
	OK    bool
	Error string
}

type line struct {
	Event string `json:"event"`
	Port  int    `json:"port"`
	ID    int    `json:"id"`
	OK    bool   `json:"ok"`
	Error string `json:"error"`
}

// DefaultDir is the folder holding peer.js and its package.json in this
// checkout, found from this source file's location.
func DefaultDir() string {
	if d := os.Getenv("SMPPPEER_DIR"); d != "" {
		return d
	}
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return ""
	}
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "transports", "smpp", "testdata", "peer")
}

// Start runs a peer for the rest of the test; t.Cleanup stops it.
func Start(t testing.TB, opts Options) *Peer {
	t.Helper()
	node := testutil.NeedCmd(t, "node")
	dir := opts.Dir
	if dir == "" {
		dir = DefaultDir()
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "smpp", "package.json")); err != nil {
		msg := fmt.Sprintf("node-smpp is not installed: run npm ci --prefix %s", dir)
		if testutil.InCI() {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	args := []string{filepath.Join(dir, "peer.js"), "--port", strconv.Itoa(opts.Port)}
	if opts.SystemID != "" {
		args = append(args, "--system-id", opts.SystemID)
	}
	if opts.Password != "" {
		args = append(args, "--password", opts.Password)
	}
	if opts.Receipts != "" {
		args = append(args, "--receipts", opts.Receipts)
	}
	if opts.ReceiptDelay > 0 {
		args = append(args, "--receipt-delay", strconv.FormatInt(opts.ReceiptDelay.Milliseconds(), 10))
	}
	if opts.Quiet {
		args = append(args, "--quiet")
	}
	cmd := exec.Command(node, args...)
	cmd.Dir = dir
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	errOut, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting the SMPP peer: %v", err)
	}
	p := &Peer{
		t: t, cmd: cmd, in: in,
		changed:  make(chan struct{}),
		acks:     map[int]chan ack{},
		stats:    make(chan Stats, 1),
		readDone: make(chan struct{}),
		logDone:  make(chan struct{}),
	}
	listening := make(chan int, 1)
	go p.readLoop(out, listening)
	go p.logLoop(errOut)
	t.Cleanup(p.stop)

	select {
	case p.port = <-listening:
	case <-p.readDone:
		t.Fatalf("SMPP peer exited before listening: %v", p.exitErr)
	case <-time.After(20 * time.Second):
		t.Fatal("SMPP peer did not start listening within 20s")
	}
	return p
}

func (p *Peer) stop() {
	_ = p.in.Close() // the peer exits when stdin closes
	done := make(chan struct{})
	go func() {
		<-p.readDone
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
	_ = p.cmd.Wait()
	<-p.logDone
	p.quiet.Lock()
	p.stopLogs = true
	p.quiet.Unlock()
}

func (p *Peer) logf(format string, args ...any) {
	p.quiet.Lock()
	defer p.quiet.Unlock()
	if !p.stopLogs {
		p.t.Logf(format, args...)
	}
}

func (p *Peer) logLoop(r io.Reader) {
	defer close(p.logDone)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		p.logf("smpp peer: %s", sc.Text())
	}
}

func (p *Peer) readLoop(r io.Reader, listening chan<- int) {
	defer close(p.readDone)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		raw := sc.Bytes()
		var l line
		if err := json.Unmarshal(raw, &l); err != nil {
			p.logf("smpp peer: unreadable line %q: %v", raw, err)
			continue
		}
		p.mu.Lock()
		switch l.Event {
		case "listening":
			listening <- l.Port
		case "ack":
			if ch, ok := p.acks[l.ID]; ok {
				ch <- ack{OK: l.OK, Error: l.Error}
				delete(p.acks, l.ID)
			} else if !l.OK {
				p.mu.Unlock()
				p.logf("smpp peer: %s", l.Error)
				p.mu.Lock()
			}
		case "submit_sm":
			var s Submit
			if err := json.Unmarshal(raw, &s); err == nil {
				p.submits = append(p.submits, s)
			}
		case "deliver_sm_resp":
			var d DeliverResp
			if err := json.Unmarshal(raw, &d); err == nil {
				p.delivers = append(p.delivers, d)
			}
		case "bind":
			var b Bind
			if err := json.Unmarshal(raw, &b); err == nil {
				p.binds = append(p.binds, b)
			}
		case "close":
			p.closes++
		case "stats":
			var s Stats
			if err := json.Unmarshal(raw, &s); err == nil {
				select {
				case p.stats <- s:
				default:
				}
			}
		}
		close(p.changed)
		p.changed = make(chan struct{})
		p.mu.Unlock()
	}
	p.mu.Lock()
	p.exited = true
	p.exitErr = errors.New("peer exited")
	for id, ch := range p.acks {
		ch <- ack{Error: "peer exited"}
		delete(p.acks, id)
	}
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
}

// Addr is the host:port the peer listens on.
func (p *Peer) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(p.port)) }

// Port is the port the peer listens on.
func (p *Peer) Port() int { return p.port }

// Pid is the node process's ID (to read its CPU use in benchmarks).
func (p *Peer) Pid() int { return p.cmd.Process.Pid }

// do sends one command and waits for the peer to apply it.
func (p *Peer) do(cmd map[string]any) {
	p.t.Helper()
	p.mu.Lock()
	if p.exited {
		p.mu.Unlock()
		p.t.Fatalf("SMPP peer: %v has exited", cmd["cmd"])
	}
	p.nextID++
	id := p.nextID
	ch := make(chan ack, 1)
	p.acks[id] = ch
	p.mu.Unlock()
	cmd["id"] = id
	b, err := json.Marshal(cmd)
	if err != nil {
		p.t.Fatal(err)
	}
	if _, err := p.in.Write(append(b, '\n')); err != nil {
		p.t.Fatalf("SMPP peer: sending %s: %v", cmd["cmd"], err)
	}
	select {
	case a := <-ch:
		if !a.OK {
			p.t.Fatalf("SMPP peer: %s: %s", cmd["cmd"], a.Error)
		}
	case <-time.After(10 * time.Second):
		p.t.Fatalf("SMPP peer: no answer to %s within 10s", cmd["cmd"])
	}
}

// waitFor waits until cond (called with p.mu held) is true.
func (p *Peer) waitFor(timeout time.Duration, what string, cond func() bool) {
	p.t.Helper()
	deadline := time.After(timeout)
	for {
		p.mu.Lock()
		ok, ch, exited := cond(), p.changed, p.exited
		p.mu.Unlock()
		if ok {
			return
		}
		if exited {
			p.t.Fatalf("SMPP peer exited while waiting for %s", what)
		}
		select {
		case <-ch:
		case <-deadline:
			p.t.Fatalf("SMPP peer: timed out after %v waiting for %s", timeout, what)
		}
	}
}

// Submits returns every submit_sm received so far, in arrival order.
func (p *Peer) Submits() []Submit {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Submit(nil), p.submits...)
}

// WaitSubmits waits until at least n submit_sm have arrived and returns them all.
func (p *Peer) WaitSubmits(n int, timeout time.Duration) []Submit {
	p.t.Helper()
	p.waitFor(timeout, fmt.Sprintf("%d submit_sm", n), func() bool { return len(p.submits) >= n })
	return p.Submits()
}

// Accepted returns the submit_sm the peer accepted (status 0, not dropped).
func (p *Peer) Accepted() []Submit {
	var out []Submit
	for _, s := range p.Submits() {
		if s.Status == 0 && !s.Dropped {
			out = append(out, s)
		}
	}
	return out
}

// DeliverResps returns the answers to every deliver_sm the peer sent so far.
func (p *Peer) DeliverResps() []DeliverResp {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]DeliverResp(nil), p.delivers...)
}

// WaitDeliverResps waits until at least n deliver_sm were answered.
func (p *Peer) WaitDeliverResps(n int, timeout time.Duration) []DeliverResp {
	p.t.Helper()
	p.waitFor(timeout, fmt.Sprintf("%d deliver_sm_resp", n), func() bool { return len(p.delivers) >= n })
	return p.DeliverResps()
}

// Binds returns every bind request seen so far, refused ones included.
func (p *Peer) Binds() []Bind {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Bind(nil), p.binds...)
}

// WaitBinds waits until at least n binds were accepted.
func (p *Peer) WaitBinds(n int, timeout time.Duration) {
	p.t.Helper()
	p.waitFor(timeout, fmt.Sprintf("%d accepted binds", n), func() bool {
		c := 0
		for _, b := range p.binds {
			if b.Status == 0 {
				c++
			}
		}
		return c >= n
	})
}

// Stats asks the peer for its counters.
func (p *Peer) Stats() Stats {
	p.t.Helper()
	select {
	case <-p.stats:
	default:
	}
	p.do(map[string]any{"cmd": "stats"})
	select {
	case s := <-p.stats:
		return s
	case <-time.After(10 * time.Second):
		p.t.Fatal("SMPP peer: no stats")
		return Stats{}
	}
}

// InjectMO sends an incoming SMS from an international number (TON 1,
// NPI 1; from is digits with or without '+') in GSM 03.38, or UCS-2 when
// the text needs it.
func (p *Peer) InjectMO(from, to, text string) {
	p.t.Helper()
	coding := 0
	if !gsmOnly(text) {
		coding = 8
	}
	p.InjectMOWith(MO{From: strings.TrimPrefix(from, "+"), To: strings.TrimPrefix(to, "+"),
		Text: text, Coding: coding, TON: 1, NPI: 1})
}

// InjectMOWith sends an incoming SMS built as given.
func (p *Peer) InjectMOWith(mo MO) {
	p.t.Helper()
	p.do(map[string]any{"cmd": "mo", "from": mo.From, "to": mo.To, "text": mo.Text,
		"coding": mo.Coding, "ton": mo.TON, "npi": mo.NPI, "parts": mo.Parts})
}

// InjectReceipt sends a delivery receipt for messageID with stat
// (DELIVRD, UNDELIV, ENROUTE...) and err ("000"); withTLV adds the
// receipted_message_id and message_state TLVs.
func (p *Peer) InjectReceipt(messageID, stat, errCode string, withTLV bool) {
	p.t.Helper()
	p.do(map[string]any{"cmd": "receipt", "message_id": messageID, "stat": stat, "err": errCode, "tlv": withTLV})
}

// InjectRaw sends a deliver_sm built field by field.
func (p *Peer) InjectRaw(r RawDeliver) {
	p.t.Helper()
	c := map[string]any{"cmd": "deliver_raw", "source_addr": r.SourceAddr,
		"source_addr_ton": r.SourceTON, "source_addr_npi": r.SourceNPI,
		"destination_addr": r.DestAddr, "esm_class": r.ESMClass, "data_coding": r.DataCoding,
		"short_message_hex": fmt.Sprintf("%x", r.ShortMessage)}
	if r.ReceiptedMessageID != "" {
		c["receipted_message_id"] = r.ReceiptedMessageID
	}
	if r.MessageState != 0 {
		c["message_state"] = r.MessageState
	}
	p.do(c)
}

// DropLinks destroys every link at once (no unbind), as a network failure would.
func (p *Peer) DropLinks() { p.t.Helper(); p.do(map[string]any{"cmd": "drop"}) }

// DropAfter makes the peer answer n more submit_sm, then destroy every
// link when the next one arrives (that one, and any in flight, unanswered).
func (p *Peer) DropAfter(n int) { p.t.Helper(); p.do(map[string]any{"cmd": "drop_after", "n": n}) }

// Throttle answers the next n submit_sm with ESME_RTHROTTLED.
func (p *Peer) Throttle(n int) { p.t.Helper(); p.ThrottleWith(n, StatusThrottled) }

// ThrottleWith answers the next n submit_sm with status.
func (p *Peer) ThrottleWith(n, status int) {
	p.t.Helper()
	p.do(map[string]any{"cmd": "throttle", "n": n, "status": status})
}

// RefuseBinds refuses every bind for d with status (0: ESME_RBINDFAIL).
func (p *Peer) RefuseBinds(d time.Duration, status int) {
	p.t.Helper()
	p.do(map[string]any{"cmd": "refuse_binds", "ms": d.Milliseconds(), "status": status})
}

// FailNumber answers every submit_sm to num (with or without '+') with
// status; status 0 clears it.
func (p *Peer) FailNumber(num string, status int) {
	p.t.Helper()
	p.do(map[string]any{"cmd": "fail_number", "number": strings.TrimPrefix(num, "+"), "status": status})
}

// Pause holds every submit_sm response until Resume.
func (p *Peer) Pause() { p.t.Helper(); p.do(map[string]any{"cmd": "pause"}) }

// Resume sends the held responses and answers at once again.
func (p *Peer) Resume() { p.t.Helper(); p.do(map[string]any{"cmd": "resume"}) }

// SetReceipts changes the receipt mode ("tlv", "text", "off") and delay.
func (p *Peer) SetReceipts(mode string, delay time.Duration) {
	p.t.Helper()
	p.do(map[string]any{"cmd": "receipts", "mode": mode, "delay_ms": delay.Milliseconds()})
}

// ReceiptStatus makes receipts for submits to number carry stat and err,
// after one receipt for each intermediate state (ENROUTE, ACCEPTD). An
// empty stat restores DELIVRD.
func (p *Peer) ReceiptStatus(number, stat, errCode string, intermediate ...string) {
	p.t.Helper()
	if intermediate == nil {
		intermediate = []string{}
	}
	p.do(map[string]any{"cmd": "receipt_status", "number": strings.TrimPrefix(number, "+"),
		"stat": stat, "err": errCode, "intermediate": intermediate})
}

// Unbind sends unbind on every link, as an SMSC shutting down would.
func (p *Peer) Unbind() { p.t.Helper(); p.do(map[string]any{"cmd": "unbind"}) }

// gsmOnly reports whether every rune is in the GSM 03.38 default alphabet
// or its extension table (node-smpp's own table).
func gsmOnly(s string) bool {
	const gsm = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà\f^{}\\[~]|€"
	for _, r := range s {
		if !strings.ContainsRune(gsm, r) {
			return false
		}
	}
	return true
}
