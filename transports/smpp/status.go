package smpp

import (
	"fmt"

	"github.com/linxGnu/gosmpp/data"
)

// outcome is what Send does with a submit_sm_resp command_status.
type outcome int

const (
	outcomeOK        outcome = iota
	outcomeThrottle          // slow the link down and retry within Send
	outcomeRebind            // the SMSC thinks we are not bound: re-bind, retry
	outcomeTemporary         // return a temporary error; the dispatcher retries
	outcomePermanent         // sdk.Permanent: the same SMS can never succeed
)

// permanentStatus lists the command_status values that fail an SMS for
// good: the message itself is wrong (number, sender, coding, fields), so
// resending it cannot help. Everything not listed here and not a throttle
// is temporary, including vendor codes (0x400-0x4FF) and ESME_RSYSERR:
// an unknown answer must not lose an SMS, and the dispatcher gives up
// after sms.max_age anyway.
var permanentStatus = map[data.CommandStatusType]bool{
	0x01:  true, // ESME_RINVMSGLEN    message length invalid
	0x02:  true, // ESME_RINVCMDLEN    command length invalid
	0x03:  true, // ESME_RINVCMDID     command not supported
	0x06:  true, // ESME_RINVPRTFLG    priority flag
	0x07:  true, // ESME_RINVREGDLVFLG registered_delivery flag
	0x0A:  true, // ESME_RINVSRCADR    source address (sender ID refused)
	0x0B:  true, // ESME_RINVDSTADR    destination address
	0x15:  true, // ESME_RINVSERTYP    service_type
	0x33:  true, // ESME_RINVNUMDESTS
	0x43:  true, // ESME_RINVESMCLASS
	0x48:  true, // ESME_RINVSRCTON
	0x49:  true, // ESME_RINVSRCNPI
	0x50:  true, // ESME_RINVDSTTON
	0x51:  true, // ESME_RINVDSTNPI
	0x61:  true, // ESME_RINVSCHED
	0x62:  true, // ESME_RINVEXPIRY
	0x63:  true, // ESME_RINVDFTMSGID
	0x65:  true, // ESME_RX_P_APPN     permanent application error
	0x66:  true, // ESME_RX_R_APPN     message rejected
	0xC0:  true, // ESME_RINVOPTPARSTREAM
	0xC1:  true, // ESME_ROPTPARNOTALLWD
	0xC2:  true, // ESME_RINVPARLEN
	0xC3:  true, // ESME_RMISSINGOPTPARAM
	0xC4:  true, // ESME_RINVOPTPARAMVAL
	0x100: true, // ESME_RSERTYPUNAUTH  (SMPP 5.0)
	0x101: true, // ESME_RPROHIBITED
	0x103: true, // ESME_RSERTYPDENIED
	0x104: true, // ESME_RINVDCS        data_coding refused
	0x105: true, // ESME_RINVSRCADDRSUBUNIT
	0x106: true, // ESME_RINVDSTADDRSUBUNIT
}

// classify maps a submit_sm_resp command_status to what Send does:
//
//	0x00 ESME_ROK                          accepted
//	0x58 ESME_RTHROTTLED, 0x14 ESME_RMSGQFUL  throttle: halve the window,
//	                                       pause the link, retry in Send
//	0x04 ESME_RINVBNDSTS                   re-bind, retry in Send
//	permanentStatus                        permanent (sdk.Permanent)
//	anything else                          temporary error from Send
func classify(st data.CommandStatusType) outcome {
	switch {
	case st == data.ESME_ROK:
		return outcomeOK
	case st == data.ESME_RTHROTTLED || st == data.ESME_RMSGQFUL:
		return outcomeThrottle
	case st == data.ESME_RINVBNDSTS:
		return outcomeRebind
	case permanentStatus[st]:
		return outcomePermanent
	}
	return outcomeTemporary
}

// statusText names a command_status for people: "ESME_RINVDSTADR (0x0B,
// Invalid Dest Addr)".
func statusText(st data.CommandStatusType) string {
	name, desc := st.String(), st.Desc()
	if name == "" || name[0] != 'E' {
		return fmt.Sprintf("command_status 0x%02X", uint32(st))
	}
	if desc == "" {
		return fmt.Sprintf("%s (0x%02X)", name, uint32(st))
	}
	return fmt.Sprintf("%s (0x%02X, %s)", name, uint32(st), desc)
}

// StatusError is a non-zero command_status the SMSC answered.
type StatusError struct {
	Op     string // "submit_sm", "bind_transceiver"
	Status uint32
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s refused: %s", e.Op, statusText(data.CommandStatusType(e.Status)))
}
