package modem

import "fmt"

// cmsError describes a +CMS ERROR code: its name and whether retrying the
// same SMS can ever help.
//
// Sources:
//   - 0..127: RP-Cause, 3GPP TS 24.011 §8.2.5.4 table 8.4 and annex E.2
//     (27.005 §3.2.5 passes them through).
//   - 128..255: TP-Failure-Cause, 3GPP TS 23.040 §9.2.3.22.
//   - 300..: 3GPP TS 27.005 §3.2.5 (ME/TA errors); 512.. manufacturer.
//
// The rule: permanent only for causes about this message or this number
// (unassigned or barred number, rejected or malformed PDU). Network, SIM,
// modem and unknown causes are temporary: the dispatcher retries them until
// sms.max_age, which is what an admin who fixes the SIM or the coverage
// wants. 38 "network out of order" is temporary.
func cmsError(code int) (name string, permanent bool) {
	switch code {
	// RP-Cause (TS 24.011 table 8.4, MO causes).
	case 1:
		return "unassigned (unallocated) number", true
	case 8:
		return "operator determined barring", true
	case 10:
		return "call barred", true
	case 21:
		return "short message transfer rejected", true
	case 22:
		return "memory capacity exceeded", false
	case 27:
		return "destination out of order", false
	case 28:
		return "unidentified subscriber", true
	case 29:
		return "facility rejected", true
	case 30:
		return "unknown subscriber", true
	case 38:
		return "network out of order", false
	case 41:
		return "temporary failure", false
	case 42:
		return "congestion", false
	case 47:
		return "resources unavailable, unspecified", false
	case 50:
		return "requested facility not subscribed", true
	case 69:
		return "requested facility not implemented", true
	case 81:
		return "invalid short message transfer reference value", false
	case 95:
		return "invalid message, unspecified", true
	case 96:
		return "invalid mandatory information", true
	case 97:
		return "message type non-existent or not implemented", true
	case 98:
		return "message not compatible with short message protocol state", false
	case 99:
		return "information element non-existent or not implemented", true
	case 111:
		return "protocol error, unspecified", false
	case 127:
		return "interworking, unspecified", false

	// TP-Failure-Cause (TS 23.040 §9.2.3.22).
	case 0x80:
		return "telematic interworking not supported", true
	case 0x81:
		return "short message type 0 not supported", true
	case 0x82:
		return "cannot replace short message", true
	case 0x8F:
		return "unspecified TP-PID error", true
	case 0x90:
		return "data coding scheme (alphabet) not supported", true
	case 0x91:
		return "message class not supported", true
	case 0x9F:
		return "unspecified TP-DCS error", true
	case 0xA0:
		return "command cannot be actioned", true
	case 0xA1:
		return "command unsupported", true
	case 0xAF:
		return "unspecified TP-Command error", true
	case 0xB0:
		return "TPDU not supported", true
	case 0xC0:
		return "SC busy", false
	case 0xC1:
		return "no SC subscription", true
	case 0xC2:
		return "SC system failure", false
	case 0xC3:
		return "invalid SME address", true
	case 0xC4:
		return "destination SME barred", true
	case 0xC5:
		// The SC already holds a message with this MR and destination: a
		// retry gets a fresh MR from the modem and goes out once more,
		// which at-least-once delivery prefers to losing it.
		return "SM rejected, duplicate SM", false
	case 0xC6:
		return "TP-VPF not supported", true
	case 0xC7:
		return "TP-VP not supported", true
	case 0xD0:
		return "(U)SIM SMS storage full", false
	case 0xD1:
		return "no SMS storage capability in (U)SIM", true
	case 0xD2:
		return "error in MS", false
	case 0xD3:
		return "memory capacity exceeded", false
	case 0xD4:
		return "(U)SIM application toolkit busy", false
	case 0xD5:
		return "(U)SIM data download error", false
	case 0xFF:
		return "unspecified error cause", false

	// ME/TA errors (TS 27.005 §3.2.5).
	case 300:
		return "ME failure", false
	case 301:
		return "SMS service of ME reserved", false
	case 302:
		return "operation not allowed", false
	case 303:
		return "operation not supported", false
	case 304:
		return "invalid PDU mode parameter", true
	case 305:
		return "invalid text mode parameter", true
	case 310:
		return "(U)SIM not inserted", false
	case 311:
		return "(U)SIM PIN required", false
	case 312:
		return "PH-(U)SIM PIN required", false
	case 313:
		return "(U)SIM failure", false
	case 314:
		return "(U)SIM busy", false
	case 315:
		return "(U)SIM wrong", false
	case 316:
		return "(U)SIM PUK required", false
	case 317:
		return "(U)SIM PIN2 required", false
	case 318:
		return "(U)SIM PUK2 required", false
	case 320:
		return "memory failure", false
	case 321:
		return "invalid memory index", false
	case 322:
		return "memory full", false
	case 330:
		return "SMSC address unknown", false
	case 331:
		return "no network service", false
	case 332:
		return "network timeout", false
	case 340:
		return "no +CNMA acknowledgement expected", false
	case 500:
		return "unknown error", false
	}
	switch {
	case code >= 0x80 && code <= 0xBF:
		// Reserved values inside the PID, DCS, command and TPDU blocks
		// are errors in what we sent, as the named ones around them.
		return fmt.Sprintf("TP-Failure-Cause %#x", code), true
	case code >= 512:
		return "manufacturer specific", false
	}
	return "unknown cause", false
}

// tpStatus is the meaning of a status report's TP-Status (TS 23.040
// §9.2.3.15). final is false while the SC is still trying (0x20..0x3F):
// those are not reported upward (sdk.Report has no intermediate states).
func tpStatus(st byte) (state, text string, final bool) {
	switch {
	case st == 0x00:
		return "delivered", "received by the SME", true
	case st == 0x01:
		return "unknown", "forwarded to the SME, delivery not confirmed", true
	case st == 0x02:
		return "delivered", "replaced by the SC", true
	case st <= 0x1F:
		return "delivered", fmt.Sprintf("transaction completed (%#02x)", st), true
	case st <= 0x3F:
		return "", fmt.Sprintf("temporary error, SC still trying (%#02x)", st), false
	case st <= 0x7F:
		return "failed", tpStatusText(st), true
	}
	// TS 23.040: reserved values are treated as 0x63 "service rejected".
	return "failed", fmt.Sprintf("reserved status %#02x (service rejected)", st), true
}

func tpStatusText(st byte) string {
	names := map[byte]string{
		0x40: "remote procedure error",
		0x41: "incompatible destination",
		0x42: "connection rejected by SME",
		0x43: "not obtainable",
		0x44: "quality of service not available",
		0x45: "no interworking available",
		0x46: "SM validity period expired",
		0x47: "SM deleted by originating SME",
		0x48: "SM deleted by SC administration",
		0x49: "SM does not exist",
		0x60: "congestion",
		0x61: "SME busy",
		0x62: "no response from SME",
		0x63: "service rejected",
		0x64: "quality of service not available",
		0x65: "error in SME",
	}
	kind := "permanent error"
	if st >= 0x60 {
		kind = "temporary error, SC gave up"
	}
	if n, ok := names[st]; ok {
		return fmt.Sprintf("%s: %s (%#02x)", kind, n, st)
	}
	return fmt.Sprintf("%s (%#02x)", kind, st)
}
