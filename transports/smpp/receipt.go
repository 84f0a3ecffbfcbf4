package smpp

import (
	"fmt"
	"strings"
)

// receipt is the text of an SMSC delivery receipt (SMPP 3.4 Appendix B,
// a de facto format that SMSCs vary):
//
//	id:IIIIIIIIII sub:SSS dlvrd:DDD submit date:YYMMDDhhmm done date:YYMMDDhhmm stat:DDDDDDD err:E text:...
type receipt struct {
	ID         string
	Sub        string
	Dlvrd      string
	SubmitDate string
	DoneDate   string
	Stat       string
	Err        string
	Text       string
}

// receiptKeys are matched case-insensitively at a word start. "text:" is
// last in every known layout and takes the rest of the message, which is
// the start of the original SMS and may itself contain "id:" or "stat:".
var receiptKeys = []string{"submit date:", "done date:", "id:", "sub:", "dlvrd:", "stat:", "err:", "text:"}

// parseReceipt reads a receipt text. ok is false when neither an id nor a
// stat is there: the deliver_sm was not a receipt we can use.
func parseReceipt(s string) (r receipt, ok bool) {
	type hit struct {
		key        string
		start, end int // key span; the value runs from end to the next hit
	}
	var hits []hit
	seen := map[string]bool{}
scan:
	for i := 0; i < len(s); i++ {
		if i > 0 && isWordByte(s[i-1]) {
			continue
		}
		for _, k := range receiptKeys {
			if hasPrefixFold(s[i:], k) {
				if seen[k] { // a repeated key belongs to the value before it
					continue
				}
				seen[k] = true
				hits = append(hits, hit{k, i, i + len(k)})
				if k == "text:" {
					break scan
				}
				i += len(k) - 1
				continue scan
			}
		}
	}
	for n, h := range hits {
		end := len(s)
		if n+1 < len(hits) {
			end = hits[n+1].start
		}
		v := s[h.end:end]
		if h.key != "text:" {
			v = strings.TrimSpace(v)
		}
		switch h.key {
		case "id:":
			r.ID = v
		case "sub:":
			r.Sub = v
		case "dlvrd:":
			r.Dlvrd = v
		case "submit date:":
			r.SubmitDate = v
		case "done date:":
			r.DoneDate = v
		case "stat:":
			r.Stat = strings.ToUpper(v)
		case "err:":
			r.Err = v
		case "text:":
			r.Text = v
		}
	}
	return r, r.ID != "" || r.Stat != ""
}

func isWordByte(c byte) bool {
	return c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

// hasPrefixFold is strings.HasPrefix with ASCII case folding. It compares
// bytes, so offsets stay valid whatever the rest of s holds (strings.ToLower
// can change the length of non-ASCII text).
func hasPrefixFold(s, prefix string) bool {
	if len(s) < len(prefix) {
		return false
	}
	for i := 0; i < len(prefix); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != prefix[i] {
			return false
		}
	}
	return true
}

// Report states (sdk.Report.State).
const (
	stateDelivered = "delivered"
	stateFailed    = "failed"
	stateUnknown   = "unknown"
)

// statState maps a receipt's stat field to a report state. final is false
// for intermediate states (ENROUTE, ACCEPTD, SCHEDULED...), which are not
// reported: the SDK reports only outcomes. UNKNOWN is reported as
// "unknown" (the SMSC says it will not learn more); so is any stat this
// table does not know, so that a vendor's odd final state is not lost.
//
//	DELIVRD DELIVERED                                    delivered
//	UNDELIV UNDELIVERABLE REJECTD REJECTED EXPIRED
//	DELETED SKIPPED FAILED                               failed
//	ENROUTE ACCEPTD ACCEPTED SCHEDULED BUFFRED BUFFERED  (not reported)
//	UNKNOWN and anything else                            unknown
func statState(stat string) (state string, final bool) {
	switch strings.ToUpper(strings.TrimSpace(stat)) {
	case "DELIVRD", "DELIVERED":
		return stateDelivered, true
	case "UNDELIV", "UNDELIVERABLE", "REJECTD", "REJECTED", "EXPIRED", "DELETED", "SKIPPED", "FAILED":
		return stateFailed, true
	case "ENROUTE", "ACCEPTD", "ACCEPTED", "SCHEDULED", "BUFFRED", "BUFFERED":
		return "", false
	}
	return stateUnknown, true
}

// messageStateNames are the message_state TLV values (SMPP 3.4 §5.2.28,
// 5.0 adds SKIPPED) by the receipt-text names of the same states.
var messageStateNames = map[byte]string{
	1: "ENROUTE", 2: "DELIVRD", 3: "EXPIRED", 4: "DELETED", 5: "UNDELIV",
	6: "ACCEPTD", 7: "UNKNOWN", 8: "REJECTD", 9: "SKIPPED",
}

// messageStateName names a message_state TLV value.
func messageStateName(v byte) string {
	if n, ok := messageStateNames[v]; ok {
		return n
	}
	return fmt.Sprintf("STATE%d", v)
}
