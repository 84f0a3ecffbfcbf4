package modem

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/warthog618/sms"
	"github.com/warthog618/sms/encoding/pdumode"
	"github.com/warthog618/sms/encoding/tpdu"

	"github.com/smsmilter/smsmilter/internal/testutil"
)

// fakeModem is a scripted AT responder on the far end of a socat pty pair.
// It answers the way a real modem does (echo off, "\r\n<line>\r\n"
// framing, the "> " prompt of AT+CMGS, +CMS/+CME errors) and decodes every
// submitted PDU with warthog618/sms so that tests check what went out.
type fakeModem struct {
	t      testing.TB
	device string // the end the transport opens
	f      *os.File

	wmu sync.Mutex // one response at a time on the wire

	mu          sync.Mutex
	cmds        []string // every command line, in order, without "AT"
	answered    []string // commands whose answer has been written
	silent      bool     // read and ignore everything: a hung modem
	simState    string   // READY, SIM PIN, SIM PUK
	pin         string
	pinTries    int
	noCMMS      bool
	cmsFor      map[string]string // destination digits -> "+CMS ERROR: n"
	mr          int
	submits     []submit
	store       map[int]string // index -> PDU hex (with SMSC octet)
	storeStat   map[int]int    // index -> <stat> when not 0 (received unread)
	mem         string
	strayOnCMGS []string // written between the PDU and the +CMGS answer
	strayOnCMGR []string
	changed     chan struct{} // closed and replaced on every command
}

// submit is one SMS-SUBMIT the transport sent.
type submit struct {
	TPDU tpdu.TPDU
	MR   int
}

func newFakeModem(t testing.TB) *fakeModem {
	t.Helper()
	socat := testutil.NeedCmd(t, "socat")
	dir := t.TempDir()
	dev, peer := filepath.Join(dir, "modem"), filepath.Join(dir, "peer")
	var stderr bytes.Buffer
	cmd := exec.Command(socat, "-d", "-d",
		"pty,raw,echo=0,link="+dev, "pty,raw,echo=0,link="+peer)
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start socat: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, e1 := os.Stat(dev)
		_, e2 := os.Stat(peer)
		if e1 == nil && e2 == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("socat made no ptys: %s", stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	f, err := os.OpenFile(peer, os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	m := &fakeModem{
		t:         t,
		device:    dev,
		f:         f,
		simState:  "READY",
		cmsFor:    map[string]string{},
		store:     map[int]string{},
		storeStat: map[int]int{},
		mem:       "SM",
		changed:   make(chan struct{}),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.serve()
	}()
	t.Cleanup(func() {
		f.Close()
		<-done
	})
	return m
}

func (m *fakeModem) serve() {
	buf := make([]byte, 4096)
	var line []byte
	pduLen := -1 // >= 0 while reading the PDU after AT+CMGS
	for {
		n, err := m.f.Read(buf)
		if err != nil {
			return
		}
		for _, c := range buf[:n] {
			m.mu.Lock()
			silent := m.silent
			m.mu.Unlock()
			if silent {
				// A hung modem also forgets what it was in the middle of.
				line, pduLen = line[:0], -1
				continue
			}
			switch {
			case pduLen >= 0 && c == 0x1a: // Ctrl-Z ends the PDU
				m.onPDU(pduLen, string(line))
				line, pduLen = line[:0], -1
			case c == 0x1b: // ESC cancels
				line, pduLen = line[:0], -1
			case pduLen < 0 && c == '\r':
				cmd := strings.TrimSpace(string(line))
				line = line[:0]
				if cmd != "" {
					pduLen = m.onCommand(cmd)
				}
			case c == '\n' && len(line) == 0:
			default:
				line = append(line, c)
			}
		}
	}
}

// urc writes an unsolicited result with its PDU line straight after it,
// as modems frame +CMT and +CDS: "\r\n+CMT: ,<n>\r\n<pdu>\r\n".
func (m *fakeModem) urc(header, pdu string) {
	m.wmu.Lock()
	defer m.wmu.Unlock()
	m.f.Write([]byte("\r\n" + header + "\r\n" + pdu + "\r\n"))
}

// write frames each line as a modem does: "\r\n<line>\r\n".
func (m *fakeModem) write(lines ...string) {
	var b strings.Builder
	for _, l := range lines {
		b.WriteString("\r\n" + l + "\r\n")
	}
	m.wmu.Lock()
	defer m.wmu.Unlock()
	m.f.Write([]byte(b.String()))
}

func (m *fakeModem) onCommand(line string) (pduLen int) {
	if !strings.HasPrefix(strings.ToUpper(line), "AT") {
		m.write("ERROR")
		return -1
	}
	cmd := line[2:]
	if os.Getenv("FAKEMODEM_TRACE") != "" {
		m.t.Logf("fake <- AT%s", cmd)
	}
	m.mu.Lock()
	m.cmds = append(m.cmds, cmd)
	close(m.changed)
	m.changed = make(chan struct{})
	m.mu.Unlock()

	defer func() {
		m.mu.Lock()
		m.answered = append(m.answered, cmd)
		close(m.changed)
		m.changed = make(chan struct{})
		m.mu.Unlock()
	}()
	ok := func(info ...string) { m.write(append(info, "OK")...) }
	switch {
	case cmd == "", cmd == "Z", cmd == "E0", strings.HasPrefix(cmd, "+CMEE="),
		cmd == "+CMGF=0", strings.HasPrefix(cmd, "+CSCA="), cmd == "+CNMA":
		ok()
	case cmd == "+GCAP":
		ok("+GCAP: +CGSM,+DS,+ES")
	case cmd == "+CSMS=1":
		ok("+CSMS: 1,1,1")
	case strings.HasPrefix(cmd, "+CNMI="):
		ok()
	case cmd == "+CMMS=1":
		m.mu.Lock()
		no := m.noCMMS
		m.mu.Unlock()
		if no {
			m.write("ERROR")
		} else {
			ok()
		}
	case cmd == "+CPIN?":
		m.mu.Lock()
		st := m.simState
		m.mu.Unlock()
		ok("+CPIN: " + st)
	case strings.HasPrefix(cmd, "+CPIN="):
		m.mu.Lock()
		m.pinTries++
		got := strings.Trim(strings.TrimPrefix(cmd, "+CPIN="), `"`)
		good := m.simState == "SIM PIN" && got == m.pin
		if good {
			m.simState = "READY"
		}
		m.mu.Unlock()
		if good {
			ok()
		} else {
			m.write("+CME ERROR: 16")
		}
	case strings.HasPrefix(cmd, "+CPMS="):
		m.mu.Lock()
		m.mem = strings.Trim(strings.TrimPrefix(cmd, "+CPMS="), `"`)
		m.mu.Unlock()
		ok("+CPMS: 1,30,1,30,1,30")
	case strings.HasPrefix(cmd, "+CMGS="):
		n, err := strconv.Atoi(strings.TrimPrefix(cmd, "+CMGS="))
		if err != nil {
			m.write("+CMS ERROR: 304")
			return -1
		}
		m.wmu.Lock()
		m.f.Write([]byte("\r\n> "))
		m.wmu.Unlock()
		return n
	case strings.HasPrefix(cmd, "+CMGR="):
		i, _ := strconv.Atoi(strings.TrimPrefix(cmd, "+CMGR="))
		m.mu.Lock()
		pdu, found := m.store[i]
		stray := m.strayOnCMGR
		m.mu.Unlock()
		if !found {
			m.write("+CMS ERROR: 321")
			return -1
		}
		m.write(append(append([]string{fmt.Sprintf("+CMGR: 0,,%d", tpduLen(pdu))}, stray...), pdu, "OK")...)
	case strings.HasPrefix(cmd, "+CMGD="):
		i, _ := strconv.Atoi(strings.TrimPrefix(cmd, "+CMGD="))
		m.mu.Lock()
		delete(m.store, i)
		m.mu.Unlock()
		ok()
	case cmd == "+CMGL=4":
		m.mu.Lock()
		var idx []int
		for i := range m.store {
			idx = append(idx, i)
		}
		sort.Ints(idx)
		var info []string
		for _, i := range idx {
			info = append(info, fmt.Sprintf("+CMGL: %d,%d,,%d", i, m.storeStat[i], tpduLen(m.store[i])), m.store[i])
		}
		m.mu.Unlock()
		ok(info...)
	default:
		m.write("ERROR")
	}
	return -1
}

func (m *fakeModem) onPDU(n int, hexPDU string) {
	pdu, err := pdumode.UnmarshalHexString(strings.TrimSpace(hexPDU))
	if err != nil || len(pdu.TPDU) != n {
		m.write("+CMS ERROR: 304")
		return
	}
	tp := tpdu.TPDU{Direction: tpdu.MO}
	if err := tp.UnmarshalBinary(pdu.TPDU); err != nil || tp.SmsType() != tpdu.SmsSubmit {
		m.write("+CMS ERROR: 304")
		return
	}
	m.mu.Lock()
	cms := m.cmsFor[tp.DA.Addr]
	stray := m.strayOnCMGS
	var mr int
	if cms == "" {
		m.mr = (m.mr + 1) % 256
		mr = m.mr
		m.submits = append(m.submits, submit{TPDU: tp, MR: mr})
	}
	m.mu.Unlock()
	if len(stray) > 0 {
		m.write(stray...)
	}
	if cms != "" {
		m.write(cms)
		return
	}
	m.write(fmt.Sprintf("+CMGS: %d", mr), "OK")
}

func tpduLen(pduHex string) int {
	p, err := pdumode.UnmarshalHexString(pduHex)
	if err != nil {
		return 0
	}
	return len(p.TPDU)
}

// set changes the script under the lock.
func (m *fakeModem) set(f func(m *fakeModem)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f(m)
}

func (m *fakeModem) setSilent(v bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.silent = v
}

// commands returns the command lines received so far.
func (m *fakeModem) commands() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.cmds)
}

func (m *fakeModem) submitted() []submit {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.submits)
}

// waitCommand waits until a command equal to cmd arrives at or after
// position from of the log, and returns its position.
func (m *fakeModem) waitCommand(cmd string, from int, timeout time.Duration) (int, error) {
	return m.waitIn(func(m *fakeModem) []string { return m.cmds }, cmd, from, timeout)
}

// waitAnswered waits until the fake has answered cmd.
func (m *fakeModem) waitAnswered(cmd string, timeout time.Duration) error {
	_, err := m.waitIn(func(m *fakeModem) []string { return m.answered }, cmd, 0, timeout)
	return err
}

func (m *fakeModem) waitIn(list func(*fakeModem) []string, cmd string, from int, timeout time.Duration) (int, error) {
	deadline := time.After(timeout)
	for {
		m.mu.Lock()
		l := list(m)
		for i := from; i < len(l); i++ {
			if l[i] == cmd {
				m.mu.Unlock()
				return i, nil
			}
		}
		ch := m.changed
		m.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			return 0, fmt.Errorf("no AT%s after command %d; got %q", cmd, from, m.commands()[min(from, len(m.commands())):])
		}
	}
}

// storeSMS puts a PDU into storage and returns its index.
func (m *fakeModem) storeSMS(pduHex string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	i := 1
	for m.store[i] != "" {
		i++
	}
	m.store[i] = pduHex
	return i
}

func (m *fakeModem) stored() map[int]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[int]string{}
	for k, v := range m.store {
		out[k] = v
	}
	return out
}

// deliverPDUs encodes text as SMS-DELIVER PDUs (hex, with an empty SMSC
// octet) from the number with the given TON.
func deliverPDUs(t testing.TB, from string, ton tpdu.TypeOfNumber, text string) []string {
	t.Helper()
	pdus, err := sms.Encode([]byte(text), sms.AsDeliver, sms.From(from))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range pdus {
		p.OA.SetTypeOfNumber(ton)
		p.SCTS = tpdu.Timestamp{Time: time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)}
		b, err := p.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		h, err := (&pdumode.PDU{TPDU: b}).MarshalHexString()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, h)
	}
	return out
}

// statusReportPDU builds an SMS-STATUS-REPORT for MR mr to the
// international number ra (digits) with TP-Status st.
func statusReportPDU(t testing.TB, mr byte, ra string, st byte, withSMSC bool) string {
	t.Helper()
	tp := tpdu.TPDU{
		FirstOctet: tpdu.FirstOctet(0x06), // MTI status report, no more messages
		MR:         mr,
		RA:         tpdu.NewAddress(tpdu.FromNumber(ra)),
		SCTS:       tpdu.Timestamp{Time: time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)},
		DT:         tpdu.Timestamp{Time: time.Date(2025, 3, 4, 5, 6, 9, 0, time.UTC)},
		ST:         st,
	}
	b, err := tp.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if !withSMSC {
		return strings.ToUpper(hex.EncodeToString(b))
	}
	h, err := (&pdumode.PDU{TPDU: b}).MarshalHexString()
	if err != nil {
		t.Fatal(err)
	}
	return strings.ToUpper(h)
}
