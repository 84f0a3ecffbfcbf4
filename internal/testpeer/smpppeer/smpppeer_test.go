package smpppeer_test

import (
	"testing"
	"time"

	"github.com/linxGnu/gosmpp"
	"github.com/linxGnu/gosmpp/data"
	"github.com/linxGnu/gosmpp/pdu"

	"github.com/smsmilter/smsmilter/internal/testpeer/smpppeer"
)

// TestPeer drives the peer with a bare gosmpp client: the wrapper's own
// plumbing (reports, commands, acks), not smsmilter's transport.
func TestPeer(t *testing.T) {
	p := smpppeer.Start(t, smpppeer.Options{SystemID: "client", Password: "pw"})
	resps := make(chan *pdu.SubmitSMResp, 10)
	delivers := make(chan *pdu.DeliverSM, 10)
	settings := gosmpp.Settings{
		ReadTimeout: 10 * time.Second, WriteTimeout: 5 * time.Second,
		OnPDU: func(pp pdu.PDU, _ bool) {
			switch x := pp.(type) {
			case *pdu.SubmitSMResp:
				resps <- x
			case *pdu.DeliverSM:
				delivers <- x
			}
		},
	}
	auth := gosmpp.Auth{SMSC: p.Addr(), SystemID: "client", Password: "pw"}
	sess, err := gosmpp.NewSession(gosmpp.TRXConnector(gosmpp.NonTLSDialer, auth), settings, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	p.WaitBinds(1, 5*time.Second)

	submit := func(to string) *pdu.SubmitSMResp {
		t.Helper()
		sm := pdu.NewSubmitSM().(*pdu.SubmitSM)
		sm.SourceAddr, _ = pdu.NewAddressWithTonNpiAddr(5, 0, "ACME")
		sm.DestAddr, _ = pdu.NewAddressWithTonNpiAddr(1, 1, to)
		sm.RegisteredDelivery = 1
		_ = sm.Message.SetMessageWithEncoding("hello", data.GSM7BIT)
		if err := sess.Transceiver().Submit(sm); err != nil {
			t.Fatal(err)
		}
		select {
		case r := <-resps:
			return r
		case <-time.After(5 * time.Second):
			t.Fatal("no submit_sm_resp")
			return nil
		}
	}

	r := submit("447400123456")
	s := p.WaitSubmits(1, 5*time.Second)[0]
	if r.CommandStatus != 0 || s.MessageID != r.MessageID || s.DestAddr != "447400123456" || s.DestTON != 1 ||
		s.SourceAddr != "ACME" || s.SourceTON != 5 || s.Text != "hello" || s.ShortMessageHex != "68656c6c6f" || s.SystemID != "client" {
		t.Errorf("resp %+v, submit %+v", r, s)
	}
	select {
	case d := <-delivers:
		if d.EsmClass&0x04 == 0 {
			t.Errorf("receipt esm_class %#x", d.EsmClass)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no delivery receipt")
	}

	p.FailNumber("+447400123457", smpppeer.StatusInvDstAdr)
	if r := submit("447400123457"); r.CommandStatus != data.ESME_RINVDSTADR {
		t.Errorf("failed number answered %v", r.CommandStatus)
	}
	p.Throttle(1)
	if r := submit("447400123456"); r.CommandStatus != data.ESME_RTHROTTLED {
		t.Errorf("throttled submit answered %v", r.CommandStatus)
	}
	p.InjectMO("+447400123456", "12345", "reply")
	select {
	case d := <-delivers:
		if d.SourceAddr.Address() != "447400123456" || d.SourceAddr.Ton() != 1 {
			t.Errorf("MO from %q TON %d", d.SourceAddr.Address(), d.SourceAddr.Ton())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no MO")
	}
	if st := p.Stats(); st.Submits != 3 || st.Sessions != 1 || st.Binds != 1 {
		t.Errorf("stats %+v", st)
	}
	p.DropLinks()
	deadline := time.Now().Add(5 * time.Second)
	for p.Stats().Sessions != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if st := p.Stats(); st.Sessions != 0 {
		t.Errorf("sessions after DropLinks: %d", st.Sessions)
	}
}
