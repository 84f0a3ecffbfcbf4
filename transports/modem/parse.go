package modem

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/warthog618/sms/encoding/pdumode"
	"github.com/warthog618/sms/encoding/tpdu"
)

// These parsers read what the modem writes, which is untrusted input from a
// serial line (fuzzed in parse_test.go): they never panic and reject what
// they cannot read instead of guessing.

// maxIndex bounds a storage index; real SIM and modem stores hold a few
// hundred messages.
const maxIndex = 65535

// parseStoredIndication reads `+CMTI: "SM",3` (a new SMS stored at index 3
// of memory SM) and `+CDSI: "SR",1` (the same for a status report).
func parseStoredIndication(line string) (mem string, index int, err error) {
	_, rest, ok := strings.Cut(line, ":")
	if !ok {
		return "", 0, fmt.Errorf("no ':' in %q", line)
	}
	i := strings.LastIndexByte(rest, ',')
	if i < 0 {
		return "", 0, fmt.Errorf("no storage index in %q", line)
	}
	mem = strings.Trim(strings.TrimSpace(rest[:i]), `"`)
	index, err = strconv.Atoi(strings.TrimSpace(rest[i+1:]))
	if err != nil || index < 0 || index > maxIndex {
		return "", 0, fmt.Errorf("bad storage index in %q", line)
	}
	if !validMem(mem) {
		return "", 0, fmt.Errorf("bad memory name in %q", line)
	}
	return mem, index, nil
}

// validMem accepts storage names such as SM, ME, MT, SR, BM: we send the
// name back in AT+CPMS="...", so nothing that could break the command line
// passes.
func validMem(mem string) bool {
	if mem == "" || len(mem) > 4 {
		return false
	}
	for _, c := range mem {
		if c < 'A' || c > 'Z' {
			return false
		}
	}
	return true
}

// parsePDULine decodes a hex PDU line as the modem writes it after +CMT,
// +CDS, +CMGR and +CMGL, where length is the TPDU length in octets the
// header line announced. The line normally starts with the SMSC address
// (27.005); some modems leave it out of status reports, so a line whose
// whole length equals the announced length is read as a bare TPDU.
func parsePDULine(length int, hexLine string) (tpdu.TPDU, error) {
	var tp tpdu.TPDU
	hexLine = strings.TrimSpace(hexLine)
	if length <= 0 || length > 255 {
		return tp, fmt.Errorf("bad PDU length %d", length)
	}
	pdu, err := pdumode.UnmarshalHexString(hexLine)
	if err != nil {
		return tp, fmt.Errorf("bad PDU %q: %w", short(hexLine), err)
	}
	raw := pdu.TPDU
	if len(raw) != length {
		if len(hexLine) != 2*length {
			return tp, fmt.Errorf("PDU length %d, header said %d", len(raw), length)
		}
		raw, _ = hex.DecodeString(hexLine) // pdumode decoded it already: valid hex
	}
	// Direction MT (the zero value): what the modem hands us is an
	// SMS-DELIVER (MTI 0) or an SMS-STATUS-REPORT (MTI 2).
	if err := tp.UnmarshalBinary(raw); err != nil {
		return tpdu.TPDU{}, fmt.Errorf("bad TPDU: %w", err)
	}
	return tp, nil
}

// parseCDS reads a +CDS indication: the line `+CDS: <length>` and the PDU
// line after it. gsm.UnmarshalTPDU cannot, as it expects the +CMT layout.
func parseCDS(lines []string) (tpdu.TPDU, error) {
	if len(lines) < 2 {
		return tpdu.TPDU{}, errors.New("+CDS without its PDU line")
	}
	length, err := lastIntField(lines[0])
	if err != nil {
		return tpdu.TPDU{}, fmt.Errorf("+CDS header %q: %w", short(lines[0]), err)
	}
	tp, err := parsePDULine(length, lines[1])
	if err != nil {
		return tp, err
	}
	if tp.SmsType() != tpdu.SmsStatusReport {
		return tpdu.TPDU{}, fmt.Errorf("+CDS carries a %s, not a status report", tp.SmsType())
	}
	return tp, nil
}

// storedPDU is one message read from modem storage by +CMGR or +CMGL.
type storedPDU struct {
	Index int // -1 for +CMGR, which names no index in its answer
	Stat  int // 0 received unread, 1 received read, 2/3 stored outgoing; -1 unknown
	TPDU  tpdu.TPDU
	Err   error // the PDU did not decode; Index still names it
}

// parseStored reads the info lines of AT+CMGR=<i> (prefix "+CMGR") or
// AT+CMGL=4 (prefix "+CMGL"): a header line `+CMGR: <stat>,[<alpha>],<length>`
// or `+CMGL: <index>,<stat>,[<alpha>],<length>` followed by the PDU line.
// Lines that are neither are stray unsolicited results the at package
// passed into the reply (NOTES.md) and are skipped. A message whose PDU does
// not decode is returned with Err set, so that the caller can still delete
// it instead of reading it again at every start; errs lists headers that
// could not be read at all.
func parseStored(prefix string, info []string) (msgs []storedPDU, errs []error) {
	for i := 0; i < len(info); i++ {
		line := info[i]
		if !strings.HasPrefix(line, prefix+":") {
			continue
		}
		index, stat := -1, -1
		f := strings.Split(strings.TrimPrefix(line, prefix+":"), ",")
		if prefix == "+CMGL" {
			n, err := strconv.Atoi(strings.TrimSpace(f[0]))
			if err != nil || n < 0 || n > maxIndex {
				errs = append(errs, fmt.Errorf("bad index in %q", short(line)))
				continue
			}
			index = n
			f = f[1:]
		}
		if len(f) > 1 {
			if n, err := strconv.Atoi(strings.TrimSpace(f[0])); err == nil && n >= 0 && n <= 3 {
				stat = n
			}
		}
		length, err := lastIntField(line)
		if err != nil {
			errs = append(errs, fmt.Errorf("%q: %w", short(line), err))
			continue
		}
		// The PDU is the next line that is not a stray indication.
		j := i + 1
		for j < len(info) && !isHex(strings.TrimSpace(info[j])) {
			if strings.HasPrefix(info[j], prefix+":") {
				break
			}
			j++
		}
		if j >= len(info) || !isHex(strings.TrimSpace(info[j])) {
			errs = append(errs, fmt.Errorf("%q without its PDU line", short(line)))
			continue
		}
		tp, err := parsePDULine(length, info[j])
		i = j
		msgs = append(msgs, storedPDU{Index: index, Stat: stat, TPDU: tp, Err: err})
	}
	return msgs, errs
}

// outgoing reports a stored SMS-SUBMIT (a draft or a message sent from
// a phone the SIM was in): not ours to read or delete.
func (s storedPDU) outgoing() bool { return s.Stat == 2 || s.Stat == 3 }

// parseCMGS reads the message reference from `+CMGS: <mr>[,<scts|ackpdu>]`.
func parseCMGS(mr string) (int, error) {
	f, _, _ := strings.Cut(mr, ",")
	n, err := strconv.Atoi(strings.TrimSpace(f))
	if err != nil || n < 0 || n > 255 {
		return 0, fmt.Errorf("bad message reference %q", short(mr))
	}
	return n, nil
}

// parseCPIN reads the SIM state from the info of AT+CPIN?: "READY",
// "SIM PIN", "SIM PUK", ...
func parseCPIN(info []string) (string, bool) {
	for _, l := range info {
		if v, ok := strings.CutPrefix(l, "+CPIN:"); ok {
			return strings.ToUpper(strings.Trim(strings.TrimSpace(v), `"`)), true
		}
	}
	return "", false
}

func lastIntField(line string) (int, error) {
	_, rest, ok := strings.Cut(line, ":")
	if !ok {
		return 0, errors.New("no ':'")
	}
	f := rest
	if i := strings.LastIndexByte(rest, ','); i >= 0 {
		f = rest[i+1:]
	}
	n, err := strconv.Atoi(strings.TrimSpace(f))
	if err != nil {
		return 0, errors.New("no length")
	}
	return n, nil
}

func isHex(s string) bool {
	if s == "" || len(s)%2 != 0 {
		return false
	}
	for _, c := range s {
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'f', c >= 'A' && c <= 'F':
		default:
			return false
		}
	}
	return true
}

// short keeps log and error lines readable when a modem sends garbage.
func short(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
