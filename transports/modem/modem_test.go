package modem

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/warthog618/sms"
	"github.com/warthog618/sms/encoding/pdumode"
	"github.com/warthog618/sms/encoding/tpdu"

	"github.com/smsmilter/smsmilter/plugins/sdk"
)

// These tests drive the transport against fakeModem over a real pty pair
// (socat), so the serial port code, the at package's line handling and our
// parsers all run as they do against hardware.

// testWriter sends log lines to t.Log until the test ends: goroutines of
// the at package may still log after Close returns.
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

func testLogger(t testing.TB) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func baseSettings(fm *fakeModem, extra map[string]any) map[string]any {
	s := map[string]any{
		"device": fm.device,
		// Generous: these tests share a loaded machine, and only a
		// silent fake should ever reach a timeout.
		"command_timeout":   "5s",
		"watchdog_interval": "5s",
		"reconnect_min":     "50ms",
		"reconnect_max":     "200ms",
	}
	maps.Copy(s, extra)
	return s
}

func startTransport(t *testing.T, fm *fakeModem, extra map[string]any, env sdk.Env) (*Transport, <-chan sdk.Event) {
	t.Helper()
	log := testLogger(t)
	tr := New(log).(*Transport)
	if env.Name == "" {
		env.Name = "gsm"
	}
	if err := tr.Configure(context.Background(), env, baseSettings(fm, extra)); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	evs := make(chan sdk.Event, 32)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tr.Events(ctx, evs)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		tr.Close()
	})
	// Storage is read once at start; tests that store messages later
	// want that done first.
	if err := fm.waitAnswered("+CMGL=4", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	return tr, evs
}

func waitEvent(t *testing.T, evs <-chan sdk.Event, timeout time.Duration) sdk.Event {
	t.Helper()
	select {
	case ev := <-evs:
		return ev
	case <-time.After(timeout):
		t.Fatalf("no event within %s", timeout)
	}
	return sdk.Event{}
}

func noEvent(t *testing.T, evs <-chan sdk.Event, d time.Duration) {
	t.Helper()
	select {
	case ev := <-evs:
		t.Fatalf("unexpected event %+v / %+v", ev.Incoming, ev.Report)
	case <-time.After(d):
	}
}

func send(t *testing.T, tr *Transport, to, text, enc string) []sdk.PartResult {
	t.Helper()
	res, err := tr.Send(context.Background(), sdk.Message{ID: "job-" + to, To: to, From: "ACME", Text: text, Encoding: enc})
	if err != nil {
		t.Fatalf("Send to %s: %v", to, err)
	}
	return res
}

// decoded reassembles the text of the submits in order.
func decoded(t *testing.T, subs []submit) string {
	t.Helper()
	var segs []*tpdu.TPDU
	for i := range subs {
		segs = append(segs, &subs[i].TPDU)
	}
	b, err := sms.Decode(segs)
	if err != nil {
		t.Fatalf("decode submitted: %v", err)
	}
	return string(b)
}

func TestSendSingleGSM(t *testing.T) {
	fm := newFakeModem(t)
	tr, _ := startTransport(t, fm, nil, sdk.Env{})
	for _, c := range []string{"Z", "E0", "+GCAP", "+CMGF=0", "+CMEE=1", "+CSMS=1", "+CNMI=2,2,0,1,0"} {
		if !slices.Contains(fm.commands(), c) {
			t.Errorf("init did not send AT%s; got %q", c, fm.commands())
		}
	}
	if err := tr.Health(context.Background()); err != nil {
		t.Fatalf("Health: %v", err)
	}

	res := send(t, tr, "+447400123456", "Hello from smsmilter @ £5", "gsm7")
	if len(res) != 1 || res[0].Index != 0 || res[0].Ref != "1:+447400123456" {
		t.Fatalf("results = %+v", res)
	}
	subs := fm.submitted()
	if len(subs) != 1 {
		t.Fatalf("modem got %d submits", len(subs))
	}
	tp := subs[0].TPDU
	if tp.DA.Addr != "447400123456" || tp.DA.TypeOfNumber() != tpdu.TonInternational || tp.DA.NumberingPlan() != tpdu.NpISDN {
		t.Errorf("DA = %+v", tp.DA)
	}
	if a, _ := tp.Alphabet(); a != tpdu.Alpha7Bit {
		t.Errorf("alphabet = %v, want GSM 7-bit", a)
	}
	if !tp.FirstOctet.SRR() {
		t.Error("status report request (SRR) not set")
	}
	if tp.UDH != nil || tp.FirstOctet.UDHI() {
		t.Errorf("single SMS has a UDH: %v", tp.UDH)
	}
	if got := decoded(t, subs); got != "Hello from smsmilter @ £5" {
		t.Errorf("text = %q", got)
	}
	if !slices.Contains(fm.commands(), "+CMMS=1") {
		t.Error("AT+CMMS=1 not sent")
	}
}

func TestSendLong(t *testing.T) {
	fm := newFakeModem(t)
	tr, _ := startTransport(t, fm, map[string]any{"smsc": "+447785016005"}, sdk.Env{})
	if !slices.Contains(fm.commands(), `+CSCA="+447785016005",145`) {
		t.Errorf("SMSC not set; commands %q", fm.commands())
	}
	text := strings.Repeat("The quick brown fox jumps over the lazy dog. ", 9) // 405 chars: 3 parts of 153
	res := send(t, tr, "+819012345678", text, "gsm7")
	if len(res) != 3 {
		t.Fatalf("%d parts, want 3: %+v", len(res), res)
	}
	for i, r := range res {
		if want := fmt.Sprintf("%d:+819012345678", i+1); r.Index != i || r.Ref != want {
			t.Errorf("part %d = %+v, want ref %s", i, r, want)
		}
	}
	subs := fm.submitted()
	if got := decoded(t, subs); got != text {
		t.Errorf("reassembled %q", got)
	}
	ref0 := -1
	for i, s := range subs {
		segs, seq, ref, ok := s.TPDU.ConcatInfo()
		if !ok || segs != 3 || seq != i+1 {
			t.Errorf("part %d concat info %d/%d ok=%v", i, seq, segs, ok)
		}
		if ref0 < 0 {
			ref0 = ref
		} else if ref != ref0 {
			t.Errorf("part %d concat ref %d, part 1 had %d", i, ref, ref0)
		}
		if !s.TPDU.FirstOctet.SRR() {
			t.Errorf("part %d without SRR", i)
		}
	}
	// A second long message must not reuse the concatenation reference,
	// or the handset may merge the two.
	send(t, tr, "+819012345678", text, "gsm7")
	subs = fm.submitted()
	_, _, ref2, _ := subs[3].TPDU.ConcatInfo()
	if ref2 == ref0 {
		t.Errorf("second message reuses concat ref %d", ref0)
	}
}

func TestSendUCS2(t *testing.T) {
	fm := newFakeModem(t)
	tr, _ := startTransport(t, fm, nil, sdk.Env{})
	tests := []struct {
		name, text, enc string
		parts           int
	}{
		{"japanese and emoji", "こんにちは、世界 🎉👍", "ucs2", 1},
		{"picked by the library", "Grüße 😀", "gsm7", 1},
		{"forced for ascii", "plain ascii", "ucs2", 1},
		// 66 BMP characters then emoji: a surrogate pair straddles the
		// 67-unit boundary of the first part and must not be split.
		{"long with emoji at the boundary", strings.Repeat("あ", 66) + strings.Repeat("😀", 40), "ucs2", 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := len(fm.submitted())
			res := send(t, tr, "+447400123456", tc.text, tc.enc)
			if len(res) != tc.parts {
				t.Fatalf("%d parts, want %d", len(res), tc.parts)
			}
			subs := fm.submitted()[before:]
			for i, s := range subs {
				if a, _ := s.TPDU.Alphabet(); a != tpdu.AlphaUCS2 {
					t.Errorf("part %d alphabet %v, want UCS-2", i, a)
				}
				if one, err := sms.Decode([]*tpdu.TPDU{&s.TPDU}); err != nil || !utf8.Valid(one) {
					t.Errorf("part %d does not decode on its own (split surrogate?): %v", i, err)
				}
			}
			if got := decoded(t, subs); got != tc.text {
				t.Errorf("text = %q, want %q", got, tc.text)
			}
		})
	}
}

func TestSIMPIN(t *testing.T) {
	tests := []struct {
		name    string
		pin     string // configured
		wantErr string
		tries   int
	}{
		{"right pin", "1234", "", 1},
		{"wrong pin", "9999", "rejected the PIN", 1},
		{"no pin configured", "", "needs a PIN", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fm := newFakeModem(t)
			fm.set(func(m *fakeModem) { m.simState, m.pin = "SIM PIN", "1234" })
			extra := map[string]any{}
			if tc.pin != "" {
				extra["pin"] = tc.pin
			}
			tr := New(testLogger(t))
			defer tr.Close()
			err := tr.Configure(context.Background(), sdk.Env{Name: "gsm"}, baseSettings(fm, extra))
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Configure: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("Configure error = %v, want %q", err, tc.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), tc.pin) && tc.pin != "" {
				t.Errorf("error shows the PIN: %v", err)
			}
			fm.mu.Lock()
			tries := fm.pinTries
			fm.mu.Unlock()
			if tries != tc.tries {
				t.Errorf("PIN sent %d times, want %d", tries, tc.tries)
			}
			if tc.wantErr == "" {
				send(t, tr.(*Transport), "+447400123456", "unlocked", "gsm7")
			}
		})
	}
}

func TestCMSErrors(t *testing.T) {
	fm := newFakeModem(t)
	tr, _ := startTransport(t, fm, nil, sdk.Env{})
	fm.mu.Lock()
	fm.cmsFor["447400111111"] = "+CMS ERROR: 38"  // network out of order
	fm.cmsFor["447400222222"] = "+CMS ERROR: 1"   // unassigned number
	fm.cmsFor["447400333333"] = "+CMS ERROR: 304" // invalid PDU parameter
	fm.mu.Unlock()

	tests := []struct {
		to        string
		permanent bool
		want      string
	}{
		{"+447400111111", false, "38 (network out of order)"},
		{"+447400222222", true, "1 (unassigned (unallocated) number)"},
		{"+447400333333", true, "304 (invalid PDU mode parameter)"},
	}
	for _, tc := range tests {
		_, err := tr.Send(context.Background(), sdk.Message{To: tc.to, Text: "hi"})
		if err == nil {
			t.Fatalf("Send to %s: no error", tc.to)
		}
		if sdk.IsPermanent(err) != tc.permanent || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Send to %s: %v (permanent=%v), want %q permanent=%v", tc.to, err, sdk.IsPermanent(err), tc.want, tc.permanent)
		}
		// The modem stays in service for the next number.
		res := send(t, tr, "+447400123456", "next one", "gsm7")
		if len(res) != 1 {
			t.Fatalf("next send: %+v", res)
		}
		if err := tr.Health(context.Background()); err != nil {
			t.Errorf("Health after a +CMS ERROR: %v", err)
		}
	}
	// A number that is not E.164 never reaches the modem.
	if _, err := tr.Send(context.Background(), sdk.Message{To: "09012345678", Text: "x"}); !sdk.IsPermanent(err) {
		t.Errorf("national number: %v, want a permanent error", err)
	}
}

func TestIncomingCMT(t *testing.T) {
	fm := newFakeModem(t)
	_, evs := startTransport(t, fm, nil, sdk.Env{DefaultRegion: "JP"})

	tests := []struct {
		name, from string
		ton        tpdu.TypeOfNumber
		text       string
		want       string
	}{
		{"international", "447400123456", tpdu.TonInternational, "Thanks, got it", "+447400123456"},
		{"national in the default region", "09012345678", tpdu.TonUnknown, "はい、了解です 👍", "+819012345678"},
		{"concatenated", "819012345678", tpdu.TonInternational, strings.Repeat("long reply ", 40), "+819012345678"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			from := len(fm.commands())
			pdus := deliverPDUs(t, tc.from, tc.ton, tc.text)
			for _, p := range pdus {
				fm.urc(fmt.Sprintf("+CMT: ,%d", tpduLen(p)), p)
			}
			ev := waitEvent(t, evs, 5*time.Second)
			if ev.Incoming == nil {
				t.Fatalf("event %+v, want incoming", ev)
			}
			if ev.Incoming.From != tc.want || ev.Incoming.Text != tc.text {
				t.Errorf("incoming %+v, want from %s text %q", ev.Incoming, tc.want, tc.text)
			}
			if !ev.Incoming.At.Equal(time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)) {
				t.Errorf("At = %v, want the SC timestamp", ev.Incoming.At)
			}
			if _, err := fm.waitCommand("+CNMA", from, 5*time.Second); err != nil {
				t.Errorf("+CMT not acknowledged: %v", err)
			}
		})
	}
}

func TestIncomingCMTI(t *testing.T) {
	fm := newFakeModem(t)
	_, evs := startTransport(t, fm, nil, sdk.Env{})

	// Two parts of one long message, each stored and announced.
	text := strings.Repeat("stored reply ", 20)
	for _, p := range deliverPDUs(t, "447400123456", tpdu.TonInternational, text) {
		i := fm.storeSMS(p)
		fm.write(fmt.Sprintf(`+CMTI: "SM",%d`, i))
	}
	ev := waitEvent(t, evs, 5*time.Second)
	if ev.Incoming == nil || ev.Incoming.From != "+447400123456" || ev.Incoming.Text != text {
		t.Fatalf("event %+v", ev.Incoming)
	}
	// The two indications are handled in either order, each read before
	// it is deleted.
	for _, i := range []int{1, 2} {
		r, err := fm.waitCommand(fmt.Sprintf("+CMGR=%d", i), 0, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fm.waitCommand(fmt.Sprintf("+CMGD=%d", i), r, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		if err := fm.waitAnswered(fmt.Sprintf("+CMGD=%d", i), 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(fm.stored()); n != 0 {
		t.Errorf("%d messages left in storage", n)
	}
}

func TestStoredAtStart(t *testing.T) {
	fm := newFakeModem(t)
	// A message sent from a phone the SIM was in before: not ours.
	out, err := sms.Encode([]byte("a draft"), sms.To("447400999999"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := out[0].MarshalBinary()
	h, _ := (&pdumode.PDU{TPDU: b}).MarshalHexString()
	fm.set(func(m *fakeModem) { m.store[1], m.storeStat[1] = h, 3 })
	fm.storeSMS(deliverPDUs(t, "447400123456", tpdu.TonInternational, "sent while we were away")[0])

	_, evs := startTransport(t, fm, nil, sdk.Env{})
	ev := waitEvent(t, evs, 5*time.Second)
	if ev.Incoming == nil || ev.Incoming.Text != "sent while we were away" {
		t.Fatalf("event %+v", ev.Incoming)
	}
	if err := fm.waitAnswered("+CMGD=2", 5*time.Second); err != nil {
		t.Error(err)
	}
	noEvent(t, evs, 200*time.Millisecond)
	if _, ok := fm.stored()[1]; !ok || slices.Contains(fm.commands(), "+CMGD=1") {
		t.Error("a stored outgoing SMS was deleted")
	}
}

func TestStatusReports(t *testing.T) {
	fm := newFakeModem(t)
	tr, evs := startTransport(t, fm, nil, sdk.Env{})
	text := strings.Repeat("x", 200) // two parts
	res := send(t, tr, "+447400123456", text, "gsm7")
	if len(res) != 2 {
		t.Fatalf("results %+v", res)
	}
	subs := fm.submitted()

	tests := []struct {
		name      string
		mr        byte
		st        byte
		smsc      bool
		wantRef   string
		wantState string
		wantErr   string
	}{
		{"delivered", byte(subs[0].MR), 0x00, true, res[0].Ref, "delivered", ""},
		{"still trying is not reported", byte(subs[1].MR), 0x21, true, "", "", ""},
		{"failed, no SMSC octet", byte(subs[1].MR), 0x46, false, res[1].Ref, "failed", "validity period expired"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			from := len(fm.commands())
			pdu := statusReportPDU(t, tc.mr, "447400123456", tc.st, tc.smsc)
			n := tpduLen(pdu)
			if !tc.smsc {
				n = len(pdu) / 2 // the whole line is the TPDU
			}
			fm.urc(fmt.Sprintf("+CDS: %d", n), pdu)
			if tc.wantRef == "" {
				noEvent(t, evs, 300*time.Millisecond)
				return
			}
			ev := waitEvent(t, evs, 5*time.Second)
			if ev.Report == nil {
				t.Fatalf("event %+v, want a report", ev)
			}
			r := ev.Report
			if r.Ref != tc.wantRef || r.State != tc.wantState || !strings.Contains(r.Error, tc.wantErr) {
				t.Errorf("report %+v, want ref %s state %s error %q", r, tc.wantRef, tc.wantState, tc.wantErr)
			}
			if !r.At.Equal(time.Date(2025, 3, 4, 5, 6, 9, 0, time.UTC)) {
				t.Errorf("At = %v, want the discharge time", r.At)
			}
			if _, err := fm.waitCommand("+CNMA", from, 5*time.Second); err != nil {
				t.Errorf("+CDS not acknowledged: %v", err)
			}
		})
	}
}

func TestStrayLines(t *testing.T) {
	fm := newFakeModem(t)
	tr, evs := startTransport(t, fm, nil, sdk.Env{})
	idx := fm.storeSMS(deliverPDUs(t, "447400123456", tpdu.TonInternational, "arrived mid-command")[0])
	fm.mu.Lock()
	// Unsolicited lines the modem writes while a command runs; the at
	// package hands them to the indication AND into the reply.
	fm.strayOnCMGS = []string{fmt.Sprintf(`+CMTI: "SM",%d`, idx), "RING"}
	fm.strayOnCMGR = []string{"RING", "+CREG: 1"}
	fm.mu.Unlock()

	res := send(t, tr, "+447400123456", "hello", "gsm7")
	if len(res) != 1 || res[0].Ref != "1:+447400123456" {
		t.Fatalf("results %+v", res)
	}
	ev := waitEvent(t, evs, 5*time.Second)
	if ev.Incoming == nil || ev.Incoming.Text != "arrived mid-command" {
		t.Fatalf("event %+v", ev.Incoming)
	}
	fm.mu.Lock()
	fm.strayOnCMGS = nil
	fm.mu.Unlock()
	if res := send(t, tr, "+447400123456", "again", "gsm7"); res[0].Ref != "2:+447400123456" {
		t.Errorf("second send %+v", res)
	}
}

func TestWatchdogRecovers(t *testing.T) {
	fm := newFakeModem(t)
	tr, evs := startTransport(t, fm, map[string]any{
		"command_timeout":   "2s",
		"watchdog_interval": "2s",
	}, sdk.Env{})
	send(t, tr, "+447400123456", "before", "gsm7")

	// The modem hangs with a submission in flight.
	fm.setSilent(true)
	start := time.Now()
	_, err := tr.Send(context.Background(), sdk.Message{To: "+447400123456", Text: "lost in the hang"})
	if err == nil || sdk.IsPermanent(err) {
		t.Fatalf("Send to a hung modem: %v, want a temporary error", err)
	}
	for tr.Health(context.Background()) == nil {
		if time.Since(start) > 15*time.Second {
			t.Fatal("Health still fine 15s after the modem went silent")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("noticed after %s: %v", time.Since(start).Round(time.Millisecond), tr.Health(context.Background()))
	// Re-opening a modem that still does not answer fails and is retried.
	for {
		err := tr.Health(context.Background())
		if err == nil {
			t.Fatal("Health fine while the modem is still silent")
		}
		if strings.Contains(err.Error(), "reset modem (ATZ)") {
			break
		}
		if time.Since(start) > 20*time.Second {
			t.Fatalf("no failed re-open reported: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	_, err = tr.Send(context.Background(), sdk.Message{To: "+447400123456", Text: "while down"})
	if err == nil || sdk.IsPermanent(err) {
		t.Fatalf("Send while down: %v, want a temporary error", err)
	}

	mark := len(fm.commands())
	fm.setSilent(false)
	deadline := time.Now().Add(15 * time.Second)
	for tr.Health(context.Background()) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("not recovered: %v", tr.Health(context.Background()))
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Re-initialised: reset, PDU mode, and reception set up again.
	z, err := fm.waitCommand("Z", mark, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"+CMGF=0", "+CNMI=2,2,0,1,0", "+CMGL=4"} {
		if _, err := fm.waitCommand(c, z, 5*time.Second); err != nil {
			t.Error(err)
		}
	}
	res := send(t, tr, "+447400123456", "after", "gsm7")
	if len(res) != 1 {
		t.Fatalf("results %+v", res)
	}
	if got := decoded(t, fm.submitted()[len(fm.submitted())-1:]); got != "after" {
		t.Errorf("last submit %q", got)
	}
	// Incoming SMS flow again.
	p := deliverPDUs(t, "447400123456", tpdu.TonInternational, "still there?")[0]
	fm.urc(fmt.Sprintf("+CMT: ,%d", tpduLen(p)), p)
	ev := waitEvent(t, evs, 5*time.Second)
	if ev.Incoming == nil || ev.Incoming.Text != "still there?" {
		t.Fatalf("event after recovery %+v", ev.Incoming)
	}
}

// A modem that opens but does not answer at start is not a configuration
// error: Configure succeeds, Health reports it, and it is picked up later.
func TestSilentAtStart(t *testing.T) {
	fm := newFakeModem(t)
	fm.setSilent(true)
	tr := New(testLogger(t))
	defer tr.Close()
	err := tr.Configure(context.Background(), sdk.Env{Name: "gsm"}, baseSettings(fm, map[string]any{
		"command_timeout": "1s", "watchdog_interval": "2s",
	}))
	if err != nil {
		t.Fatalf("Configure: %v", err)
	}
	if err := tr.Health(context.Background()); err == nil {
		t.Fatal("Health fine for a silent modem")
	}
	fm.setSilent(false)
	deadline := time.Now().Add(15 * time.Second)
	for tr.Health(context.Background()) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("not picked up: %v", tr.Health(context.Background()))
		}
		time.Sleep(10 * time.Millisecond)
	}
	send(t, tr.(*Transport), "+447400123456", "finally", "gsm7")
}

func TestNoCMMS(t *testing.T) {
	fm := newFakeModem(t)
	fm.set(func(m *fakeModem) { m.noCMMS = true })
	tr, _ := startTransport(t, fm, nil, sdk.Env{})
	send(t, tr, "+447400123456", strings.Repeat("y", 300), "gsm7")
	send(t, tr, "+447400123456", "and again", "gsm7")
	n := 0
	for _, c := range fm.commands() {
		if c == "+CMMS=1" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("AT+CMMS=1 sent %d times to a modem that refuses it, want 1", n)
	}
	if got := len(fm.submitted()); got != 3 {
		t.Errorf("%d submits, want 3", got)
	}
}

func TestConfigureErrors(t *testing.T) {
	tests := []struct {
		name     string
		settings map[string]any
		want     string
	}{
		{"no device", map[string]any{}, "device: required"},
		{"missing device", map[string]any{"device": "/nonexistent/ttyUSB9"}, "open /nonexistent/ttyUSB9"},
		{"bad pin", map[string]any{"device": "/dev/null", "pin": "12ab"}, "pin: must be 4 to 8 digits"},
		{"bad smsc", map[string]any{"device": "/dev/null", "smsc": "0044"}, "smsc:"},
		{"unknown key", map[string]any{"device": "/dev/null", "bauds": 9600}, `unknown setting "bauds"`},
		{"bad duration", map[string]any{"device": "/dev/null", "command_timeout": "soon"}, "command_timeout"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := New(nil)
			defer tr.Close()
			err := tr.Configure(context.Background(), sdk.Env{}, tc.settings)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Configure = %v, want %q", err, tc.want)
			}
		})
	}
}

// Neither a host that gives up on Configure nor Close waits out a hung
// modem's timeouts (the tarm-based serial package would block in Close).
func TestHungModemDoesNotBlock(t *testing.T) {
	fm := newFakeModem(t)
	fm.setSilent(true)
	tr := New(testLogger(t))
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := tr.Configure(ctx, sdk.Env{Name: "gsm"}, baseSettings(fm, map[string]any{"command_timeout": "10s"}))
	if err == nil || !strings.Contains(err.Error(), "deadline exceeded") {
		t.Errorf("Configure with an expiring context: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Configure took %s after its context ended", d)
	}
	tr.Close()

	fm.setSilent(false)
	tr2, _ := startTransport(t, fm, map[string]any{"command_timeout": "10s", "watchdog_interval": "1m"}, sdk.Env{})
	fm.setSilent(true)
	start = time.Now()
	tr2.Close()
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("Close of a hung modem took %s", d)
	}
}
