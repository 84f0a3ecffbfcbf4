package modem

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warthog618/modem/at"
	"github.com/warthog618/modem/gsm"
	"go.bug.st/serial"
)

// readPoll is the serial read timeout. Close already wakes a pending read
// (go.bug.st/serial signals it through a pipe); the timeout is a second
// guarantee that a reader on a dead port notices the close.
const readPoll = 500 * time.Millisecond

// port adapts a go.bug.st/serial port to the io.ReadWriter at.New needs: a
// read timeout there is (0, nil), which bufio.Scanner in the at package
// would take for a broken reader after 100 of them, so Read waits for data
// or for Close, and reports Close as io.EOF (which closes the at.AT).
type port struct {
	p      serial.Port
	closed atomic.Bool
}

func openPort(device string, baud int) (*port, error) {
	p, err := serial.Open(device, &serial.Mode{BaudRate: baud})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", device, err)
	}
	if err := p.SetReadTimeout(readPoll); err != nil {
		p.Close()
		return nil, fmt.Errorf("set read timeout on %s: %w", device, err)
	}
	return &port{p: p}, nil
}

func (p *port) Read(b []byte) (int, error) {
	for {
		n, err := p.p.Read(b)
		if p.closed.Load() {
			return 0, io.EOF
		}
		if n > 0 || err != nil {
			return n, err
		}
	}
}

func (p *port) Write(b []byte) (int, error) {
	if p.closed.Load() {
		return 0, io.ErrClosedPipe
	}
	return p.p.Write(b)
}

// Close does not block on a hung modem: go.bug.st/serial wakes the
// pending Read.
func (p *port) Close() error {
	if p.closed.Swap(true) {
		return nil
	}
	return p.p.Close()
}

// link is one opened and initialised connection to the modem. A modem that
// stops answering gets a new link; nothing of the old one is reused.
type link struct {
	port   *port
	g      *gsm.GSM
	noCMMS atomic.Bool // AT+CMMS answered ERROR: do not send it again

	rxMu sync.Mutex // one stored-message read (CMGR/CMGL/CMGD) at a time
	mem  string     // storage last selected with AT+CPMS; under rxMu
}

func (l *link) close() { l.port.Close() }

// cnmiChoices are tried in order. mt=2 routes SMS-DELIVERs as +CMT (no
// storage round trip), mt=1 stores them and says +CMTI; ds=1 routes status
// reports as +CDS. Modems differ in what they accept.
func cnmiChoices() []string {
	return []string{"2,2,0,1,0", "1,2,0,1,0", "2,1,0,1,0", "1,1,0,1,0", "2,1,0,2,0", "1,1,0,2,0"}
}

// connect opens the port and initialises the modem; on error nothing is
// left open.
func (t *Transport) connect() (*link, error) {
	p, err := openPort(t.cfg.Device, t.cfg.Baud)
	if err != nil {
		return nil, openError{err}
	}
	t.mu.Lock()
	select {
	case <-t.done:
		t.mu.Unlock()
		p.Close()
		return nil, errClosed
	default:
	}
	t.connecting = p
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		t.connecting = nil
		t.mu.Unlock()
	}()

	a := at.New(p, at.WithTimeout(t.cfg.CommandTimeout))
	l := &link{port: p, g: gsm.New(a, gsm.WithNumericErrors)}
	if err := t.initLink(l); err != nil {
		p.Close()
		return nil, err
	}
	return l, nil
}

func (t *Transport) initLink(l *link) error {
	g := l.g
	// Escape any half-sent SMS, reset (ATZ), echo off.
	if err := g.AT.Init(); err != nil {
		return fmt.Errorf("reset modem (ATZ): %w", err)
	}
	// A modem coming back from a hang may still be answering commands of
	// the previous connection: get in step before relying on any answer.
	if err := t.sync(l, 3); err != nil {
		return err
	}
	// Numeric +CME/+CMS errors, so that the PIN check and the send error
	// table can read them. gsm.Init sets it again after its ATZ. Only a
	// missing answer is fatal here: an ignored timeout would leave every
	// later answer one command late.
	if _, err := g.Command("+CMEE=1"); isLinkError(err) {
		return fmt.Errorf("AT+CMEE=1: %w", err)
	}
	if err := t.unlockSIM(l); err != nil {
		return err
	}
	// ATZ, ATE0, +GCAP (GSM capable?), PDU mode, numeric errors.
	if err := g.Init(); err != nil {
		return fmt.Errorf("initialise modem: %w", err)
	}
	if t.cfg.SMSC != "" {
		if _, err := g.Command(`+CSCA="` + t.cfg.SMSC + `",145`); err != nil {
			return fmt.Errorf("set SMSC %s (AT+CSCA): %w", t.cfg.SMSC, err)
		}
	}
	if err := t.startRx(l); err != nil {
		return err
	}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		t.drainStored(l)
	}()
	return nil
}

// unlockSIM enters the PIN when the SIM asks for one. A rejected PIN is
// never sent again by this process: a SIM locks after three wrong PINs and
// then needs the PUK.
func (t *Transport) unlockSIM(l *link) error {
	g := l.g
	state, err := simState(g)
	if err != nil {
		return err
	}
	switch state {
	case "READY":
		return nil
	case "SIM PIN":
	case "SIM PUK":
		return fatalError{errors.New("the SIM is blocked and needs its PUK (too many wrong PINs): unblock it in a phone, then set pin")}
	default:
		return fatalError{fmt.Errorf("the SIM asks for %q, which smsmilter cannot enter", state)}
	}
	if t.cfg.PIN == "" {
		return fatalError{errors.New("the SIM needs a PIN: set pin in this transport's settings")}
	}
	t.mu.Lock()
	rejected := t.pinRejected
	t.mu.Unlock()
	if rejected {
		return fatalError{errors.New("the SIM rejected the configured PIN earlier; it is not sent again (three wrong PINs lock the SIM): fix pin and restart")}
	}
	if _, err := g.Command(`+CPIN="` + t.cfg.PIN + `"`); err != nil {
		// Whatever went wrong, the attempt may have counted: do not risk
		// a second one automatically.
		t.mu.Lock()
		t.pinRejected = true
		t.mu.Unlock()
		var cme at.CMEError
		if errors.As(err, &cme) && (string(cme) == "16" || strings.Contains(strings.ToLower(string(cme)), "incorrect")) {
			return fatalError{errors.New("the SIM rejected the PIN (+CME ERROR: 16, incorrect password); it is not retried, as three wrong PINs lock the SIM: fix pin in the settings")}
		}
		return fatalError{fmt.Errorf("entering the SIM PIN failed; it is not retried, as three wrong PINs lock the SIM: %w", err)}
	}
	t.log.Info("SIM PIN accepted")
	// The SIM takes a moment to become ready after the PIN.
	deadline := time.Now().Add(max(10*time.Second, t.cfg.CommandTimeout))
	for {
		state, err := simState(g)
		if err == nil && state == "READY" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("SIM not ready after the PIN (state %q): %v", state, err)
		}
		select {
		case <-t.done:
			return errClosed
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func simState(g *gsm.GSM) (string, error) {
	info, err := g.Command("+CPIN?")
	if err != nil {
		var cme at.CMEError
		if errors.As(err, &cme) {
			switch string(cme) {
			case "10":
				return "", fatalError{errors.New("no SIM inserted (+CME ERROR: 10)")}
			case "13", "15":
				return "", fatalError{fmt.Errorf("SIM failure (+CME ERROR: %s)", string(cme))}
			}
		}
		return "", fmt.Errorf("read SIM state (AT+CPIN?): %w", err)
	}
	state, ok := parseCPIN(info)
	if !ok {
		return "", fmt.Errorf("AT+CPIN? answered without +CPIN: %q", info)
	}
	return state, nil
}

// supervise is the watchdog: it probes the live link, replaces a dead one,
// and keeps trying while the modem is down.
func (t *Transport) supervise() {
	defer t.wg.Done()
	tick := time.NewTicker(t.cfg.WatchdogInterval)
	defer tick.Stop()
	for {
		t.mu.Lock()
		l := t.link
		t.mu.Unlock()
		if l == nil {
			if !t.reconnect() {
				return
			}
			continue
		}
		select {
		case <-t.done:
			return
		case <-l.g.Closed():
			t.linkDown(l, errors.New("serial port closed"))
		case <-tick.C:
			if err := t.probe(l); err != nil {
				t.linkDown(l, err)
			}
		case <-t.kick:
			if err := t.probe(l); err != nil {
				t.linkDown(l, err)
			}
		}
	}
}

// probe checks that the modem answers, and answers in step. It uses
// AT+GCAP rather than a bare AT: its reply has an info line of its own, so
// a reply without one is the late answer to an earlier command that timed
// out (the at package would otherwise hand every later command the answer
// of the one before). Between tries no command is pending, and the at
// package discards whatever late lines arrive then. One lost answer is not
// a hung modem: it takes three failed tries.
func (t *Transport) probe(l *link) error {
	return t.sync(l, 3)
}

func (t *Transport) sync(l *link, tries int) error {
	timeout := max(min(t.cfg.CommandTimeout, t.cfg.WatchdogInterval/4), 50*time.Millisecond)
	quiet := min(t.cfg.CommandTimeout, time.Second)
	var err error
	for i := range tries {
		if i > 0 {
			select {
			case <-t.done:
				return errClosed
			case <-time.After(quiet):
			}
		}
		var info []string
		info, err = l.g.Command("+GCAP", at.WithTimeout(timeout))
		switch {
		case err == nil && hasInfo(info, "+GCAP:"):
			return nil
		case err == nil:
			err = fmt.Errorf("late answer %q to an earlier command", info)
		case errors.Is(err, at.ErrClosed):
			return fmt.Errorf("modem stopped answering: %w", err)
		case !isLinkError(err):
			// ERROR or +CME ERROR: alive, but is it in step? Try again.
		}
	}
	return fmt.Errorf("modem stopped answering: AT+GCAP: %w", err)
}

func hasInfo(info []string, prefix string) bool {
	for _, l := range info {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}

func (t *Transport) linkDown(l *link, err error) {
	t.mu.Lock()
	if t.link == l {
		t.link = nil
		t.downErr = err
		t.downSince = time.Now()
	}
	t.mu.Unlock()
	t.log.Warn("modem down; re-opening it", "err", err)
	l.close()
}

// reconnect opens and initialises the modem until it works, with
// exponential backoff and jitter. It returns false when the transport is
// closing.
func (t *Transport) reconnect() bool {
	backoff := t.cfg.ReconnectMin
	for attempt := 1; ; attempt++ {
		select {
		case <-t.done:
			return false
		default:
		}
		l, err := t.connect()
		if err == nil {
			t.mu.Lock()
			select {
			case <-t.done:
				t.mu.Unlock()
				l.close()
				return false
			default:
			}
			t.link = l
			t.downErr = nil
			t.downSince = time.Time{}
			t.mu.Unlock()
			t.log.Info("modem re-initialised", "attempt", attempt)
			return true
		}
		if errors.Is(err, errClosed) {
			return false
		}
		t.setDown(err)
		wait := backoff/2 + rand.N(backoff/2+1)
		t.log.Warn("modem still down", "attempt", attempt, "retry_in", wait, "err", err)
		select {
		case <-t.done:
			return false
		case <-time.After(wait):
		}
		backoff = min(2*backoff, t.cfg.ReconnectMax)
	}
}

// suspect asks the watchdog to probe now.
func (t *Transport) suspect() {
	select {
	case t.kick <- struct{}{}:
	default:
	}
}
