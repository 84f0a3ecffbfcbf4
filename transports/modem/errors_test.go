package modem

import (
	"strings"
	"testing"
)

// The classification decides whether a job is retried or failed, so every
// row is pinned here against 3GPP TS 24.011 table 8.4, TS 23.040
// §9.2.3.22 and TS 27.005 §3.2.5.
func TestCMSErrorTable(t *testing.T) {
	tests := []struct {
		code      int
		permanent bool
		name      string
	}{
		{1, true, "unassigned (unallocated) number"},
		{8, true, "operator determined barring"},
		{10, true, "call barred"},
		{21, true, "short message transfer rejected"},
		{27, false, "destination out of order"},
		{28, true, "unidentified subscriber"},
		{29, true, "facility rejected"},
		{30, true, "unknown subscriber"},
		{38, false, "network out of order"},
		{41, false, "temporary failure"},
		{42, false, "congestion"},
		{47, false, "resources unavailable, unspecified"},
		{50, true, "requested facility not subscribed"},
		{69, true, "requested facility not implemented"},
		{96, true, "invalid mandatory information"},
		{111, false, "protocol error, unspecified"},
		{127, false, "interworking, unspecified"},
		{0x90, true, "data coding scheme (alphabet) not supported"},
		{0x83, true, "TP-Failure-Cause 0x83"},
		{0xC0, false, "SC busy"},
		{0xC3, true, "invalid SME address"},
		{0xC4, true, "destination SME barred"},
		{0xC5, false, "SM rejected, duplicate SM"},
		{0xFF, false, "unspecified error cause"},
		{300, false, "ME failure"},
		{302, false, "operation not allowed"},
		{304, true, "invalid PDU mode parameter"},
		{305, true, "invalid text mode parameter"},
		{310, false, "(U)SIM not inserted"},
		{322, false, "memory full"},
		{330, false, "SMSC address unknown"},
		{331, false, "no network service"},
		{332, false, "network timeout"},
		{500, false, "unknown error"},
		{530, false, "manufacturer specific"},
		{77, false, "unknown cause"},
	}
	for _, tc := range tests {
		name, permanent := cmsError(tc.code)
		if permanent != tc.permanent || name != tc.name {
			t.Errorf("cmsError(%d) = %q, %v; want %q, %v", tc.code, name, permanent, tc.name, tc.permanent)
		}
	}
}

func TestTPStatus(t *testing.T) {
	tests := []struct {
		st    byte
		state string
		final bool
		text  string
	}{
		{0x00, "delivered", true, "received by the SME"},
		{0x01, "unknown", true, "not confirmed"},
		{0x02, "delivered", true, "replaced"},
		{0x10, "delivered", true, "completed"},
		{0x20, "", false, "still trying"},
		{0x30, "", false, "still trying"},
		{0x41, "failed", true, "incompatible destination"},
		{0x46, "failed", true, "validity period expired"},
		{0x4F, "failed", true, "permanent error (0x4f)"},
		{0x62, "failed", true, "no response from SME"},
		{0x80, "failed", true, "reserved"},
	}
	for _, tc := range tests {
		state, text, final := tpStatus(tc.st)
		if state != tc.state || final != tc.final || !strings.Contains(text, tc.text) {
			t.Errorf("tpStatus(%#x) = %q, %q, %v", tc.st, state, text, final)
		}
	}
}
