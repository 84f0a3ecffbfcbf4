package smpp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smsmilter/smsmilter/internal/testpeer/smpppeer"
	"github.com/smsmilter/smsmilter/plugins/sdk"
)

// Tests against node-smpp (third-party SMSC code), through smpppeer.

// testLog is a slog.Logger writing to t.Log until the test ends.
func testLog(t testing.TB) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// fastTiming makes re-binds and throttle pauses short enough for tests.
func fastTiming(tr *Transport) {
	tr.timing.minBackoff = 50 * time.Millisecond
	tr.timing.maxBackoff = 200 * time.Millisecond
	tr.timing.throttleBase = 50 * time.Millisecond
	tr.timing.queueFullBase = 50 * time.Millisecond
	tr.timing.bindTimeout = 3 * time.Second
	tr.timing.bindWait = time.Second
}

// start configures a transport bound to the peer, with extra settings.
func start(t *testing.T, p *smpppeer.Peer, region string, extra map[string]any) *Transport {
	t.Helper()
	tr := newTransport(testLog(t))
	fastTiming(tr)
	settings := map[string]any{"address": p.Addr(), "system_id": "smsmilter", "password": "secret", "submit_timeout": "10s"}
	for k, v := range extra {
		settings[k] = v
	}
	if err := tr.Configure(context.Background(), sdk.Env{Name: "smsc", DefaultRegion: region}, settings); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	if err := tr.Health(context.Background()); err != nil {
		t.Fatalf("Health after Configure: %v", err)
	}
	return tr
}

// events collects what the transport's Events delivers.
type events struct {
	mu  sync.Mutex
	evs []sdk.Event
	ch  chan struct{}
}

func collect(t *testing.T, tr *Transport) *events {
	e := &events{ch: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan sdk.Event)
	done := make(chan struct{})
	go func() { _ = tr.Events(ctx, out); close(done) }()
	go func() {
		for {
			select {
			case ev := <-out:
				e.mu.Lock()
				e.evs = append(e.evs, ev)
				e.mu.Unlock()
				select {
				case e.ch <- struct{}{}:
				default:
				}
			case <-done:
				return
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return e
}

func (e *events) wait(t *testing.T, n int, timeout time.Duration) []sdk.Event {
	t.Helper()
	deadline := time.After(timeout)
	for {
		e.mu.Lock()
		got := append([]sdk.Event(nil), e.evs...)
		e.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-e.ch:
		case <-deadline:
			t.Fatalf("%d events after %v, want %d: %+v", len(got), timeout, n, got)
		}
	}
}

func send(t *testing.T, tr *Transport, m sdk.Message) []sdk.PartResult {
	t.Helper()
	res, err := tr.Send(context.Background(), m)
	if err != nil {
		t.Fatalf("Send(%q): %v", m.Text, err)
	}
	return res
}

func TestBind(t *testing.T) {
	p := smpppeer.Start(t, smpppeer.Options{})
	start(t, p, "", map[string]any{"system_type": "smsmilter"})
	p.WaitBinds(1, 5*time.Second)
	binds := p.Binds()
	if len(binds) != 1 || binds[0].BindType != "bind_transceiver" || binds[0].SystemID != "smsmilter" ||
		binds[0].SystemType != "smsmilter" || binds[0].Status != 0 {
		t.Errorf("binds: %+v", binds)
	}
}

func TestBindTypes(t *testing.T) {
	p := smpppeer.Start(t, smpppeer.Options{})
	for i, bt := range []string{"transmitter", "receiver"} {
		t.Run(bt, func(t *testing.T) {
			tr := start(t, p, "", map[string]any{"bind": bt})
			p.WaitBinds(i+1, 5*time.Second)
			binds := p.Binds()
			if got := binds[len(binds)-1].BindType; got != "bind_"+bt {
				t.Errorf("bind type %s", got)
			}
			if bt == "receiver" {
				_, err := tr.Send(context.Background(), sdk.Message{To: "+447400123456", Text: "x", Encoding: "gsm7"})
				if !sdk.IsPermanent(err) {
					t.Errorf("Send on a receiver bind: %v", err)
				}
			}
		})
	}
}

func TestBindRefused(t *testing.T) {
	p := smpppeer.Start(t, smpppeer.Options{})
	tests := []struct {
		name, systemID, password, want string
	}{
		{"wrong password", "smsmilter", "wrong", "ESME_RINVPASWD"},
		{"wrong system_id", "nobody", "secret", "ESME_RINVSYSID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := newTransport(testLog(t))
			err := tr.Configure(context.Background(), sdk.Env{Name: "smsc"}, map[string]any{
				"address": p.Addr(), "system_id": tt.systemID, "password": tt.password})
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "refused") {
				t.Fatalf("Configure: %v, want an error naming %s", err, tt.want)
			}
			if err := tr.Health(context.Background()); err == nil {
				t.Error("Health nil after a refused bind")
			}
			if err := tr.Close(); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestSMSCDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	tr := newTransport(testLog(t))
	fastTiming(tr)
	if err := tr.Configure(context.Background(), sdk.Env{Name: "smsc"}, map[string]any{
		"address": addr, "system_id": "smsmilter", "submit_timeout": "300ms"}); err != nil {
		t.Fatalf("Configure with the SMSC down: %v (must start anyway)", err)
	}
	defer tr.Close()
	if err := tr.Health(context.Background()); err == nil || !strings.Contains(err.Error(), "not bound") {
		t.Errorf("Health = %v", err)
	}
	_, err = tr.Send(context.Background(), sdk.Message{To: "+447400123456", Text: "x"})
	if err == nil || sdk.IsPermanent(err) || !strings.Contains(err.Error(), "not bound") {
		t.Errorf("Send with the SMSC down: %v, want a temporary 'not bound' error", err)
	}
}

func TestShortGSM(t *testing.T) {
	p := smpppeer.Start(t, smpppeer.Options{})
	tr := start(t, p, "", nil)
	text := "Hello {world} [€5] ~ ^ | \\ @ café"
	res := send(t, tr, sdk.Message{ID: "j1", To: "+447400123456", From: "+447400999888", Text: text, Encoding: "gsm7", Parts: 1})
	s := p.WaitSubmits(1, 5*time.Second)[0]
	if s.DestAddr != "447400123456" || s.DestTON != 1 || s.DestNPI != 1 {
		t.Errorf("destination %q TON %d NPI %d, want 447400123456 1/1", s.DestAddr, s.DestTON, s.DestNPI)
	}
	if s.SourceAddr != "447400999888" || s.SourceTON != 1 || s.SourceNPI != 1 {
		t.Errorf("source %q TON %d NPI %d, want 447400999888 1/1", s.SourceAddr, s.SourceTON, s.SourceNPI)
	}
	if s.DataCoding != 0 || s.ESMClass != 0 || s.UDHHex != "" || s.RegisteredDelivery != 1 {
		t.Errorf("data_coding %d esm_class %#x udh %q registered_delivery %d", s.DataCoding, s.ESMClass, s.UDHHex, s.RegisteredDelivery)
	}
	if s.Text != text {
		t.Errorf("node-smpp decoded %q, want %q", s.Text, text)
	}
	if len(res) != 1 || res[0].Index != 0 || res[0].Ref != s.MessageID || s.MessageID == "" {
		t.Errorf("results %+v, SMSC message_id %q", res, s.MessageID)
	}
}

func TestRegisteredDeliveryOff(t *testing.T) {
	p := smpppeer.Start(t, smpppeer.Options{})
	tr := start(t, p, "", map[string]any{"registered_delivery": false})
	send(t, tr, sdk.Message{To: "+447400123456", From: "ACME", Text: "no receipt"})
	if s := p.WaitSubmits(1, 5*time.Second)[0]; s.RegisteredDelivery != 0 {
		t.Errorf("registered_delivery %d", s.RegisteredDelivery)
	}
}

func TestSenderID(t *testing.T) {
	p := smpppeer.Start(t, smpppeer.Options{})
	tr := start(t, p, "", nil)
	tests := []struct {
		from     string
		addr     string
		ton, npi int
	}{
		{"ACME", "ACME", 5, 0},
		{"Shop 24", "Shop 24", 5, 0},
		{"+447400123456", "447400123456", 1, 1},
		{"819012345678", "819012345678", 1, 1},
	}
	for i, tt := range tests {
		send(t, tr, sdk.Message{To: "+819012345678", From: tt.from, Text: "sender test"})
		s := p.WaitSubmits(i+1, 5*time.Second)[i]
		if s.SourceAddr != tt.addr || s.SourceTON != tt.ton || s.SourceNPI != tt.npi {
			t.Errorf("From %q: source %q TON %d NPI %d, want %q %d/%d", tt.from, s.SourceAddr, s.SourceTON, s.SourceNPI, tt.addr, tt.ton, tt.npi)
		}
		if s.DestAddr != "819012345678" || s.DestTON != 1 || s.DestNPI != 1 {
			t.Errorf("destination %q %d/%d", s.DestAddr, s.DestTON, s.DestNPI)
		}
	}
	if _, err := tr.Send(context.Background(), sdk.Message{To: "+819012345678", From: "MuchTooLongID", Text: "x"}); !sdk.IsPermanent(err) {
		t.Errorf("12-character sender ID: %v, want a permanent error", err)
	}
}

// checkConcat verifies the parts of one long message on the wire and
// returns its text joined as node-smpp decoded it.
func checkConcat(t *testing.T, subs []sdk.PartResult, got []smpppeer.Submit, coding int) string {
	t.Helper()
	if len(got) != len(subs) {
		t.Fatalf("%d submit_sm for %d parts", len(got), len(subs))
	}
	sort.Slice(got, func(i, j int) bool {
		return got[i].Concat != nil && got[j].Concat != nil && got[i].Concat.Part < got[j].Concat.Part
	})
	var sb strings.Builder
	ref := -1
	for i, s := range got {
		c := s.Concat
		if c == nil || s.ESMClass&0x40 == 0 {
			t.Fatalf("part %d: no concatenation UDH (esm_class %#x, udh %q)", i+1, s.ESMClass, s.UDHHex)
		}
		if c.RefBits != 8 || c.Total != len(got) || c.Part != i+1 || (ref >= 0 && c.Ref != ref) {
			t.Errorf("part %d: UDH %+v", i+1, c)
		}
		ref = c.Ref
		if s.DataCoding != coding {
			t.Errorf("part %d: data_coding %d, want %d", i+1, s.DataCoding, coding)
		}
		if want := fmt.Sprintf("050003%02x%02x%02x", c.Ref, len(got), i+1); s.UDHHex != want {
			t.Errorf("part %d: UDH %s, want %s", i+1, s.UDHHex, want)
		}
		limit := 153 // unpacked septets
		if coding == 8 {
			limit = 134 // octets: 67 UTF-16 units
		}
		if n := len(s.ShortMessageHex)/2 - 6; n > limit {
			t.Errorf("part %d: %d octets of user data, more than %d", i+1, n, limit)
		}
		if subs[i].Index != i || subs[i].Ref != s.MessageID {
			t.Errorf("part %d: result %+v, SMSC message_id %q", i+1, subs[i], s.MessageID)
		}
		sb.WriteString(s.Text)
	}
	return sb.String()
}

func TestLongGSM(t *testing.T) {
	p := smpppeer.Start(t, smpppeer.Options{})
	tr := start(t, p, "", nil)
	// 152 septets, then '€' (an escape pair) across the 153 boundary, then
	// enough to need a third part.
	text := strings.Repeat("a", 152) + "€" + strings.Repeat("The quick brown fox {jumps} ", 6)
	res := send(t, tr, sdk.Message{To: "+447400123456", From: "ACME", Text: text, Encoding: "gsm7", Parts: 3})
	if len(res) != 3 {
		t.Fatalf("%d results, want 3", len(res))
	}
	got := p.WaitSubmits(3, 5*time.Second)
	if joined := checkConcat(t, res, got, 0); joined != text {
		t.Errorf("reassembled:\n%q\nwant\n%q", joined, text)
	}
	if got[0].Text != strings.Repeat("a", 152) {
		t.Errorf("part 1 should stop before the escape pair: %q", got[0].Text)
	}
}

func TestUCS2(t *testing.T) {
	p := smpppeer.Start(t, smpppeer.Options{})
	tr := start(t, p, "", nil)
	// 66 units of Japanese, then an emoji straddling the 67-unit boundary,
	// then more Japanese and emoji.
	text := strings.Repeat("日本語", 22) + "😀" + strings.Repeat("こんにちは🎌", 10)
	res := send(t, tr, sdk.Message{To: "+819012345678", From: "ACME", Text: text, Encoding: "ucs2", Parts: 3})
	got := p.WaitSubmits(len(res), 5*time.Second)
	if len(res) != 3 {
		t.Fatalf("%d parts, want 3", len(res))
	}
	if joined := checkConcat(t, res, got, 8); joined != text {
		t.Errorf("reassembled:\n%q\nwant\n%q", joined, text)
	}
	for _, s := range got {
		if strings.ContainsRune(s.Text, '\uFFFD') {
			t.Errorf("part %d has a broken surrogate pair: %q", s.Concat.Part, s.Text)
		}
	}
	short := "こんにちは 😀"
	send(t, tr, sdk.Message{To: "+819012345678", Text: short, Encoding: "ucs2", Parts: 1})
	if s := p.WaitSubmits(4, 5*time.Second)[3]; s.DataCoding != 8 || s.UDHHex != "" || s.Text != short {
		t.Errorf("short UCS-2: coding %d udh %q text %q", s.DataCoding, s.UDHHex, s.Text)
	}
	// gsm7 asked for text that does not fit: sent as UCS-2, not mangled.
	send(t, tr, sdk.Message{To: "+819012345678", Text: "Ω≈ç", Encoding: "gsm7", Parts: 1})
	if s := p.WaitSubmits(5, 5*time.Second)[4]; s.DataCoding != 8 || s.Text != "Ω≈ç" {
		t.Errorf("fallback: coding %d text %q", s.DataCoding, s.Text)
	}
}

func TestReceipts(t *testing.T) {
	for _, mode := range []string{"tlv", "text"} {
		t.Run(mode, func(t *testing.T) {
			p := smpppeer.Start(t, smpppeer.Options{Receipts: mode})
			tr := start(t, p, "", nil)
			ev := collect(t, tr)
			p.ReceiptStatus("447400123457", "UNDELIV", "001", "ENROUTE")

			long := send(t, tr, sdk.Message{To: "+447400123456", Text: strings.Repeat("receipt ", 50), Parts: 3})
			failed := send(t, tr, sdk.Message{To: "+447400123457", Text: "to a phone that is off"})
			got := ev.wait(t, 4, 10*time.Second)
			time.Sleep(100 * time.Millisecond) // an ENROUTE report would show up by now
			got = ev.wait(t, 4, time.Second)
			if len(got) != 4 {
				t.Fatalf("%d events, want 4 (intermediate receipts are not reported): %+v", len(got), got)
			}
			states := map[string]*sdk.Report{}
			for _, e := range got {
				if e.Report == nil {
					t.Fatalf("event %+v is not a report", e)
				}
				states[e.Report.Ref] = e.Report
			}
			for _, r := range long {
				if rep := states[r.Ref]; rep == nil || rep.State != "delivered" || rep.Error != "" {
					t.Errorf("part %d ref %s: report %+v", r.Index, r.Ref, rep)
				}
			}
			rep := states[failed[0].Ref]
			if rep == nil || rep.State != "failed" || !strings.Contains(rep.Error, "UNDELIV") {
				t.Errorf("failed SMS: report %+v", rep)
			}
			if mode == "text" && !strings.Contains(rep.Error, "err:001") {
				t.Errorf("error %q lacks the receipt's err", rep.Error)
			}
			// Every receipt was acknowledged with ESME_ROK.
			for _, d := range p.WaitDeliverResps(5, 5*time.Second) {
				if d.Status != 0 {
					t.Errorf("deliver_sm_resp %+v", d)
				}
			}
		})
	}
}

func TestReceiptQuirks(t *testing.T) {
	p := smpppeer.Start(t, smpppeer.Options{Receipts: "off"})
	tr := start(t, p, "", nil)
	ev := collect(t, tr)
	res := send(t, tr, sdk.Message{To: "+447400123456", Text: "quirks"})
	ref := res[0].Ref // "a000000001": hex
	var n uint64
	fmt.Sscanf(ref[1:], "%x", &n)
	// Text only, the id in decimal, as some SMSCs do.
	p.InjectRaw(smpppeer.RawDeliver{SourceAddr: "447400123456", SourceTON: 1, ESMClass: 0x04,
		ShortMessage: []byte(fmt.Sprintf("id:%d sub:001 dlvrd:001 submit date:2401010000 done date:2401010000 stat:DELIVRD err:000 text:quirks", 0xa000000000+n))})
	// TLVs only, no text, a failure.
	p.InjectRaw(smpppeer.RawDeliver{SourceAddr: "447400123456", SourceTON: 1, ESMClass: 0x04,
		ReceiptedMessageID: ref, MessageState: 8})
	got := ev.wait(t, 2, 5*time.Second)
	if r := got[0].Report; r == nil || r.Ref != ref || r.State != "delivered" {
		t.Errorf("decimal id receipt: %+v", r)
	}
	if r := got[1].Report; r == nil || r.Ref != ref || r.State != "failed" || r.Error != "REJECTD" {
		t.Errorf("TLV-only receipt: %+v", r)
	}
}

func TestIncoming(t *testing.T) {
	tests := []struct {
		name   string
		region string
		mo     smpppeer.MO
		from   string
	}{
		{"international", "", smpppeer.MO{From: "447400123456", To: "447700900123", Text: "Yes, see you at 5", TON: 1, NPI: 1}, "+447400123456"},
		{"TON 0 national with region GB", "GB", smpppeer.MO{From: "07400123456", To: "12345", Text: "national", TON: 0, NPI: 1}, "+447400123456"},
		{"TON 0 without region is international", "", smpppeer.MO{From: "447400123456", To: "12345", Text: "unknown TON", TON: 0, NPI: 1}, "+447400123456"},
		{"TON 0 international digits with region JP", "JP", smpppeer.MO{From: "09012345678", To: "12345", Text: "日本から", Coding: 8, TON: 0, NPI: 1}, "+819012345678"},
		{"UCS-2 emoji", "", smpppeer.MO{From: "819012345678", Text: "ありがとう😀", Coding: 8, TON: 1, NPI: 1}, "+819012345678"},
		{"Latin-1", "", smpppeer.MO{From: "33612345678", Text: "Très bien, à demain", Coding: 3, TON: 1, NPI: 1}, "+33612345678"},
		{"GSM extension", "", smpppeer.MO{From: "447400123456", Text: "Costs €5 {approx}", Coding: 0, TON: 1, NPI: 1}, "+447400123456"},
		{"alphanumeric sender", "", smpppeer.MO{From: "BANK", Text: "code 1234", TON: 5, NPI: 0}, "BANK"},
		{"concatenated GSM", "", smpppeer.MO{From: "447400123456", Text: strings.Repeat("long reply, ", 30), TON: 1, NPI: 1, Parts: 3}, "+447400123456"},
		{"concatenated UCS-2", "", smpppeer.MO{From: "819012345678", Text: strings.Repeat("長い返事😀", 20), Coding: 8, TON: 1, NPI: 1, Parts: 2}, "+819012345678"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := smpppeer.Start(t, smpppeer.Options{})
			tr := start(t, p, tt.region, nil)
			ev := collect(t, tr)
			p.InjectMOWith(tt.mo)
			got := ev.wait(t, 1, 5*time.Second)
			in := got[0].Incoming
			if in == nil {
				t.Fatalf("event %+v is not an incoming SMS", got[0])
			}
			if in.From != tt.from || in.Text != tt.mo.Text || in.At.IsZero() {
				t.Errorf("got From %q Text %q At %v; want %q %q", in.From, in.Text, in.At, tt.from, tt.mo.Text)
			}
			parts := max(1, tt.mo.Parts)
			for _, d := range p.WaitDeliverResps(parts, 5*time.Second) {
				if d.Status != 0 {
					t.Errorf("deliver_sm_resp status %#x", d.Status)
				}
			}
			time.Sleep(50 * time.Millisecond)
			if n := len(ev.wait(t, 1, time.Second)); n != 1 {
				t.Errorf("%d events for one SMS", n)
			}
		})
	}
}

func TestIncomingTo(t *testing.T) {
	p := smpppeer.Start(t, smpppeer.Options{})
	tr := start(t, p, "", nil)
	ev := collect(t, tr)
	p.InjectMO("+447400123456", "447700900123", "hi")
	in := ev.wait(t, 1, 5*time.Second)[0].Incoming
	// dest_addr_ton 0 and no default region: read as international.
	if in == nil || in.From != "+447400123456" || in.To != "+447700900123" {
		t.Errorf("got %+v", in)
	}
}

func TestLinkDropMidBurst(t *testing.T) {
	p := smpppeer.Start(t, smpppeer.Options{Receipts: "off"})
	tr := start(t, p, "", map[string]any{"window": 10, "submit_timeout": "20s"})
	p.DropAfter(15)
	const n = 60
	var wg sync.WaitGroup
	errs := make([]error, n)
	refs := make([]string, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := tr.Send(context.Background(), sdk.Message{To: "+447400123456", Text: fmt.Sprintf("burst %03d", i)})
			errs[i] = err
			if err == nil {
				refs[i] = res[0].Ref
			}
		}()
		if i == 30 {
			wg.Wait() // the first link is gone by now; drop the second one too
			p.DropLinks()
		}
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("SMS %d: %v", i, err)
		}
	}
	seen := map[string]string{}
	for _, s := range p.Accepted() {
		seen[s.Text] = s.MessageID
	}
	for i := range n {
		text := fmt.Sprintf("burst %03d", i)
		if _, ok := seen[text]; !ok {
			t.Errorf("%q never accepted by the SMSC", text)
		}
	}
	acceptedIDs := map[string]bool{}
	for _, s := range p.Accepted() {
		acceptedIDs[s.MessageID] = true
	}
	for i, r := range refs {
		if r != "" && !acceptedIDs[r] {
			t.Errorf("SMS %d: ref %q was not issued by the SMSC", i, r)
		}
	}
	if b := p.Binds(); len(b) < 2 {
		t.Errorf("%d binds; the link was dropped and should have been re-bound", len(b))
	}
	if err := tr.Health(context.Background()); err != nil {
		// The last DropLinks may still be re-binding.
		time.Sleep(time.Second)
		if err := tr.Health(context.Background()); err != nil {
			t.Errorf("Health after the drops: %v", err)
		}
	}
}

func TestUnbindBySMSC(t *testing.T) {
	p := smpppeer.Start(t, smpppeer.Options{})
	tr := start(t, p, "", nil)
	p.Unbind()
	p.WaitBinds(2, 5*time.Second)
	send(t, tr, sdk.Message{To: "+447400123456", Text: "after unbind"})
}

func TestThrottle(t *testing.T) {
	p := smpppeer.Start(t, smpppeer.Options{Receipts: "off"})
	tr := start(t, p, "", map[string]any{"window": 10})
	const n, throttled = 30, 12
	run := func() time.Duration {
		begin := time.Now()
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := tr.Send(context.Background(), sdk.Message{To: "+447400123456", Text: fmt.Sprintf("t%d", i)}); err != nil {
					t.Errorf("SMS %d: %v", i, err)
				}
			}()
		}
		wg.Wait()
		return time.Since(begin)
	}
	plain := run()
	p.Throttle(throttled)
	slow := run()
	if got := len(p.Submits()); got != 2*n+throttled {
		t.Errorf("%d submit_sm, want %d (%d throttled ones retried)", got, 2*n+throttled, throttled)
	}
	if len(p.Accepted()) != 2*n {
		t.Errorf("%d accepted, want %d", len(p.Accepted()), 2*n)
	}
	// The link slowed down: at least one pause (50ms here) with the
	// window halved.
	tr.win.mu.Lock()
	episodes := tr.win.episodes
	tr.win.mu.Unlock()
	if episodes < 1 || slow < tr.timing.throttleBase {
		t.Errorf("%d throttle episodes, throttled burst took %v: no slow-down", episodes, slow)
	}
	t.Logf("burst of %d: %v unthrottled, %v with %d throttled (%d pauses)", n, plain, slow, throttled, episodes)

	// ESME_RMSGQFUL is handled the same way.
	p.ThrottleWith(3, smpppeer.StatusMsgQFull)
	send(t, tr, sdk.Message{To: "+447400123456", Text: "queue full"})
}

func TestSubmitErrors(t *testing.T) {
	p := smpppeer.Start(t, smpppeer.Options{})
	tr := start(t, p, "", nil)
	p.FailNumber("+447400123457", smpppeer.StatusInvDstAdr)
	p.FailNumber("+447400123458", smpppeer.StatusSysErr)
	p.FailNumber("+447400123459", smpppeer.StatusInvSrcAdr)
	tests := []struct {
		to        string
		permanent bool
		want      string
	}{
		{"+447400123457", true, "ESME_RINVDSTADR"},
		{"+447400123458", false, "ESME_RSYSERR"},
		{"+447400123459", true, "ESME_RINVSRCADR"},
	}
	for _, tt := range tests {
		_, err := tr.Send(context.Background(), sdk.Message{To: tt.to, Text: "x"})
		if err == nil || sdk.IsPermanent(err) != tt.permanent || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Send to %s: %v; want permanent=%v naming %s", tt.to, err, tt.permanent, tt.want)
		}
	}
	// A long message to the bad number fails permanently as a whole.
	_, err := tr.Send(context.Background(), sdk.Message{To: "+447400123457", Text: strings.Repeat("x", 400)})
	if !sdk.IsPermanent(err) {
		t.Errorf("long SMS to a bad number: %v", err)
	}
	// Other numbers are unaffected.
	send(t, tr, sdk.Message{To: "+447400123456", Text: "fine"})
	if _, err := tr.Send(context.Background(), sdk.Message{To: "07400123456", Text: "x"}); !sdk.IsPermanent(err) {
		t.Errorf("non-E.164 destination: %v", err)
	}
}

func TestOutage(t *testing.T) {
	p := smpppeer.Start(t, smpppeer.Options{})
	tr := start(t, p, "", map[string]any{"submit_timeout": "10s"})
	p.RefuseBinds(time.Hour, 0)
	p.DropLinks()
	deadline := time.Now().Add(5 * time.Second)
	for tr.Health(context.Background()) == nil && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if err := tr.Health(context.Background()); err == nil {
		t.Fatal("Health nil while binds are refused")
	}
	// Not bound: Send waits bindWait (1s here), not submit_timeout, then
	// says why with a temporary error.
	begin := time.Now()
	_, err := tr.Send(context.Background(), sdk.Message{To: "+447400123456", Text: "during outage"})
	if err == nil || sdk.IsPermanent(err) || !strings.Contains(err.Error(), "not bound") {
		t.Fatalf("Send during an outage: %v, want a temporary 'not bound' error", err)
	}
	if d := time.Since(begin); d > 5*time.Second {
		t.Errorf("Send during an outage took %v", d)
	}
	if err := tr.Health(context.Background()); err == nil || !strings.Contains(err.Error(), "ESME_RBINDFAIL") {
		t.Errorf("Health during the outage: %v, want the bind refusal", err)
	}
	t.Logf("during outage: Send: %v; Health: %v", err, tr.Health(context.Background()))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	_, err = tr.Send(ctx, sdk.Message{To: "+447400123456", Text: "short ctx"})
	cancel()
	if err == nil || sdk.IsPermanent(err) {
		t.Errorf("Send with a short ctx: %v", err)
	}
	p.RefuseBinds(0, 0)
	p.WaitBinds(2, 5*time.Second)
	send(t, tr, sdk.Message{To: "+447400123456", Text: "after outage"})
}

func TestNoResponse(t *testing.T) {
	p := smpppeer.Start(t, smpppeer.Options{Receipts: "off"})
	tr := start(t, p, "", map[string]any{"submit_timeout": "300ms"})
	p.Pause()
	_, err := tr.Send(context.Background(), sdk.Message{To: "+447400123456", Text: "held"})
	if err == nil || sdk.IsPermanent(err) || !strings.Contains(err.Error(), "no submit_sm_resp") {
		t.Errorf("Send without a response: %v", err)
	}
	p.Resume() // the late response is ignored
	send(t, tr, sdk.Message{To: "+447400123456", Text: "answered"})
}

func TestEnquireLink(t *testing.T) {
	p := smpppeer.Start(t, smpppeer.Options{})
	tr := start(t, p, "", map[string]any{"enquire_link": "1s"})
	// Idle for longer than the read timeout (2×1s+1s) would allow without
	// enquire_link traffic.
	time.Sleep(3500 * time.Millisecond)
	if err := tr.Health(context.Background()); err != nil {
		t.Fatal(err)
	}
	if b := p.Binds(); len(b) != 1 {
		t.Errorf("%d binds: the idle link was dropped", len(b))
	}
	send(t, tr, sdk.Message{To: "+447400123456", Text: "still here"})
}

func TestClose(t *testing.T) {
	p := smpppeer.Start(t, smpppeer.Options{})
	tr := start(t, p, "", nil)
	out := make(chan sdk.Event)
	done := make(chan error)
	go func() { done <- tr.Events(context.Background(), out) }()
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Events did not return after Close")
	}
	_, err := tr.Send(context.Background(), sdk.Message{To: "+447400123456", Text: "x"})
	if err == nil || sdk.IsPermanent(err) || !errors.Is(err, errClosed) {
		t.Errorf("Send after Close: %v", err)
	}
	if err := tr.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

var _ io.Writer = (*testWriter)(nil)
