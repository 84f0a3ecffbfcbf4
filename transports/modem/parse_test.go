package modem

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/warthog618/sms"
	"github.com/warthog618/sms/encoding/tpdu"
)

// A status report for MR 0x2A to +447400123456 (TON international),
// delivered (TP-Status 0), with an SMSC address octet, as a Huawei E3372
// writes it. Built by hand from TS 23.040 §9.2.2.3.
const cdsPDU = "0791447758100650" + // SMSC +447785016005
	"06" + // SMS-STATUS-REPORT, no more messages
	"2A" + // TP-MR
	"0C91444700214365" + // TP-RA 12 digits international 447400123456
	"52304050607000" + // TP-SCTS 2025-03-04 05:06:07 +00
	"52304050609000" + // TP-DT 2025-03-04 05:06:09 +00
	"00" // TP-ST received by the SME

func TestParseCDS(t *testing.T) {
	bare := cdsPDU[16:] // without the SMSC address
	tests := []struct {
		name    string
		lines   []string
		wantMR  byte
		wantRA  string
		wantErr string
	}{
		{"with SMSC", []string{"+CDS: 25", cdsPDU}, 0x2A, "447400123456", ""},
		{"lower case hex and spaces", []string{"+CDS:  25 ", strings.ToLower(cdsPDU) + " "}, 0x2A, "447400123456", ""},
		{"without SMSC octet", []string{"+CDS: 25", bare}, 0x2A, "447400123456", ""},
		{"text-mode-like header with fields", []string{"+CDS: 6,42,25", cdsPDU}, 0x2A, "447400123456", ""},
		{"length mismatch", []string{"+CDS: 24", cdsPDU}, 0, "", "header said 24"},
		{"no PDU line", []string{"+CDS: 25"}, 0, "", "without its PDU line"},
		{"not hex", []string{"+CDS: 25", "ZZ"}, 0, "", "bad PDU"},
		{"no length", []string{"+CDS:", cdsPDU}, 0, "", "no length"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tp, err := parseCDS(tc.lines)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tp.MR != tc.wantMR || tp.RA.Addr != tc.wantRA || tp.RA.TypeOfNumber() != tpdu.TonInternational {
				t.Errorf("MR %#x RA %+v", tp.MR, tp.RA)
			}
			if !tp.DT.Equal(time.Date(2025, 3, 4, 5, 6, 9, 0, time.UTC)) {
				t.Errorf("DT = %v", tp.DT)
			}
		})
	}
	// An SMS-DELIVER on a +CDS line is refused.
	deliver := deliverPDUs(t, "447400123456", tpdu.TonInternational, "hi")[0]
	if _, err := parseCDS([]string{"+CDS: " + strconv.Itoa(tpduLen(deliver)), deliver}); err == nil || !strings.Contains(err.Error(), "not a status report") {
		t.Errorf("deliver on +CDS: %v", err)
	}
}

func TestParseStoredIndication(t *testing.T) {
	tests := []struct {
		line    string
		mem     string
		index   int
		wantErr bool
	}{
		{`+CMTI: "SM",3`, "SM", 3, false},
		{`+CMTI: "ME",0`, "ME", 0, false},
		{`+CDSI: "SR",12`, "SR", 12, false},
		{`+CMTI:"SM", 7 `, "SM", 7, false},
		{`+CMTI: "SM"`, "", 0, true},
		{`+CMTI: "SM",-1`, "", 0, true},
		{`+CMTI: "SM",99999999`, "", 0, true},
		{`+CMTI: "S\"M",1`, "", 0, true},
		{`+CMTI: "SM;+CMGD=1",1`, "", 0, true},
		{`+CMTI "SM",1`, "", 0, true},
		{`+CMTI: ,1`, "", 0, true},
	}
	for _, tc := range tests {
		mem, index, err := parseStoredIndication(tc.line)
		if (err != nil) != tc.wantErr || mem != tc.mem || index != tc.index {
			t.Errorf("parseStoredIndication(%q) = %q, %d, %v", tc.line, mem, index, err)
		}
	}
}

func TestParseStored(t *testing.T) {
	a := deliverPDUs(t, "447400123456", tpdu.TonInternational, "first")[0]
	b := deliverPDUs(t, "819012345678", tpdu.TonInternational, "second")[0]
	la, lb := strconv.Itoa(tpduLen(a)), strconv.Itoa(tpduLen(b))
	tests := []struct {
		name    string
		prefix  string
		info    []string
		indexes []int
		bad     int // messages with Err set
		errs    int
	}{
		{"cmgr", "+CMGR", []string{"+CMGR: 0,," + la, a}, []int{-1}, 0, 0},
		{"cmgr with stray lines", "+CMGR", []string{"RING", "+CMGR: 1,," + la, "+CREG: 1", a, `+CMTI: "SM",4`}, []int{-1}, 0, 0},
		{"cmgl two", "+CMGL", []string{"+CMGL: 1,0,," + la, a, "+CMGL: 4,1,," + lb, b}, []int{1, 4}, 0, 0},
		{"cmgl without alpha field", "+CMGL", []string{"+CMGL: 1,0," + la, a}, []int{1}, 0, 0},
		{"cmgl bad pdu keeps index", "+CMGL", []string{"+CMGL: 2,0,,5", "00FF", "+CMGL: 3,0,," + lb, b}, []int{2, 3}, 1, 0},
		{"cmgl header without pdu", "+CMGL", []string{"+CMGL: 2,0,," + la, "+CMGL: 3,0,," + lb, b}, []int{3}, 0, 1},
		{"cmgl bad index", "+CMGL", []string{"+CMGL: x,0,," + la, a}, nil, 0, 1},
		{"empty", "+CMGL", nil, nil, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			msgs, errs := parseStored(tc.prefix, tc.info)
			var idx []int
			bad := 0
			for _, m := range msgs {
				idx = append(idx, m.Index)
				if m.Err != nil {
					bad++
				}
			}
			if len(idx) != len(tc.indexes) || bad != tc.bad || len(errs) != tc.errs {
				t.Fatalf("indexes %v bad %d errs %v; want %v %d %d", idx, bad, errs, tc.indexes, tc.bad, tc.errs)
			}
			for i := range idx {
				if idx[i] != tc.indexes[i] {
					t.Errorf("indexes %v, want %v", idx, tc.indexes)
				}
			}
		})
	}
}

func TestParseStoredStat(t *testing.T) {
	a := deliverPDUs(t, "447400123456", tpdu.TonInternational, "x")[0]
	l := strconv.Itoa(tpduLen(a))
	tests := []struct {
		prefix, header string
		stat           int
		outgoing       bool
	}{
		{"+CMGR", "+CMGR: 0,," + l, 0, false},
		{"+CMGR", "+CMGR: 1,\"Bob\"," + l, 1, false},
		{"+CMGL", "+CMGL: 7,3,," + l, 3, true},
		{"+CMGL", "+CMGL: 7,2," + l, 2, true},
		{"+CMGL", "+CMGL: 7,9,," + l, -1, false},
		{"+CMGR", "+CMGR: " + l, -1, false},
	}
	for _, tc := range tests {
		msgs, _ := parseStored(tc.prefix, []string{tc.header, a})
		if len(msgs) != 1 || msgs[0].Stat != tc.stat || msgs[0].outgoing() != tc.outgoing {
			t.Errorf("%q: %+v", tc.header, msgs)
		}
	}
}

func TestParseCMGS(t *testing.T) {
	tests := []struct {
		in   string
		mr   int
		fail bool
	}{
		{"5", 5, false},
		{" 255", 255, false},
		{"17,\"25/03/04,05:06:07+00\"", 17, false},
		{"256", 0, true},
		{"", 0, true},
		{"x", 0, true},
	}
	for _, tc := range tests {
		mr, err := parseCMGS(tc.in)
		if (err != nil) != tc.fail || mr != tc.mr {
			t.Errorf("parseCMGS(%q) = %d, %v", tc.in, mr, err)
		}
	}
}

// FuzzParseIndications feeds modem output (lines separated by \n) to every
// parser of unsolicited and stored-message lines: none may panic, and what
// they accept must be sane.
func FuzzParseIndications(f *testing.F) {
	seeds := []string{
		"+CDS: 25\n" + cdsPDU,
		"+CDS: 25\n" + cdsPDU[16:],
		"+CDS: 0\n00",
		"+CDS: 255\nFF",
		"+CDS: 7\n0006FF0C91",
		`+CMTI: "SM",3`,
		`+CDSI: "SR",0`,
		"+CMTI: \"SM\",\x00",
		"+CMGR: 0,,25\n" + cdsPDU,
		"+CMGL: 1,0,,25\n" + cdsPDU + "\n+CMGL: 2,0,,3\n000000",
		"RING\n+CMGR: 1,,\n\n",
		"+CMGL: 65535,0,,1\n0000",
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		lines := strings.Split(s, "\n")
		if tp, err := parseCDS(lines); err == nil {
			if tp.SmsType() != tpdu.SmsStatusReport {
				t.Fatalf("parseCDS accepted a %v", tp.SmsType())
			}
			state, _, final := tpStatus(tp.ST)
			if final && state == "" {
				t.Fatalf("final status %#x without a state", tp.ST)
			}
		}
		for _, l := range lines {
			if mem, i, err := parseStoredIndication(l); err == nil {
				if i < 0 || i > maxIndex || !validMem(mem) {
					t.Fatalf("parseStoredIndication(%q) = %q, %d", l, mem, i)
				}
			}
		}
		for _, prefix := range []string{"+CMGR", "+CMGL"} {
			msgs, _ := parseStored(prefix, lines)
			for _, m := range msgs {
				if prefix == "+CMGL" && (m.Index < 0 || m.Index > maxIndex) {
					t.Fatalf("index %d", m.Index)
				}
			}
		}
		_, _ = parseCMGS(s)
		_, _ = parseCPIN(lines)
	})
}

func TestParseSettings(t *testing.T) {
	s, err := parseSettings(map[string]any{
		"device":            "/dev/ttyUSB2",
		"baud":              float64(9600), // JSON numbers arrive as float64
		"pin":               float64(1234), // an unquoted PIN in YAML
		"smsc":              "+447785016005",
		"command_timeout":   float64(20), // bare seconds
		"watchdog_interval": "1m",
		"status_reports":    false,
		"max_tps":           float64(5), // the dispatcher's
	})
	if err != nil {
		t.Fatal(err)
	}
	want := settings{
		Device: "/dev/ttyUSB2", Baud: 9600, PIN: "1234", SMSC: "+447785016005",
		CommandTimeout: 20 * time.Second, WatchdogInterval: time.Minute,
		ReconnectMin: time.Second, ReconnectMax: time.Minute, ReassemblyTimeout: time.Hour,
		StatusReports: false,
	}
	if s != want {
		t.Errorf("settings\n got %+v\nwant %+v", s, want)
	}
	d, _ := parseSettings(map[string]any{"device": "/dev/ttyUSB2"})
	if d.Baud != 115200 || d.CommandTimeout != 10*time.Second || d.WatchdogInterval != 30*time.Second || !d.StatusReports {
		t.Errorf("defaults %+v", d)
	}
	for _, bad := range []map[string]any{
		{"device": "/dev/x", "baud": -1},
		{"device": "/dev/x", "baud": 1.5},
		{"device": "/dev/x", "command_timeout": "-1s"},
		{"device": "/dev/x", "status_reports": "yes"},
		{"device": "/dev/x", "pin": "123"},
		{"device": "/dev/x", "smsc": "+12"},
		{"device": []any{"a"}},
	} {
		if _, err := parseSettings(bad); err == nil {
			t.Errorf("parseSettings(%v) accepted", bad)
		}
	}
}

func TestEncoderSRR(t *testing.T) {
	for _, srr := range []bool{true, false} {
		pdus, err := newEncoder(srr).Encode([]byte("x"), sms.To("+447400123456"))
		if err != nil {
			t.Fatal(err)
		}
		if pdus[0].FirstOctet.SRR() != srr || pdus[0].SmsType() != tpdu.SmsSubmit {
			t.Errorf("srr=%v: first octet %#x", srr, pdus[0].FirstOctet)
		}
	}
}
