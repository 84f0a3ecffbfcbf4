// Package phone reads phone numbers as smsmilter meets them: SMS recipients
// written as the local part of an email address, and numbers that
// transports report for incoming SMS. It is a thin layer over
// libphonenumber (github.com/nyaruka/phonenumbers) that turns its verdicts
// into SMTP answers a person understands.
package phone

import (
	"fmt"
	"slices"
	"strings"

	"github.com/nyaruka/phonenumbers"
	"golang.org/x/text/language"
	"golang.org/x/text/language/display"

	"github.com/smsmilter/smsmilter/internal/smtpreply"
)

// Number is a mobile number accepted as an SMS recipient.
type Number struct {
	E164   string // "+447400123456"
	Region string // ISO 3166 code, "GB"
}

// ParseRecipient reads the local part of an SMS recipient address
// (DESIGN.md §2, §13). It must be "+" and ASCII digits, or ASCII digits
// alone when defaultRegion is set. The number must be a valid mobile number
// (numbers that may be fixed-line or mobile, as in the US, are allowed) in
// an allowed region (empty allowed = all). Errors are 550 5.1.3 replies.
func ParseRecipient(local, defaultRegion string, allowed []string) (Number, error) {
	digits, intl := strings.CutPrefix(local, "+")
	if digits == "" || !asciiDigits(digits) {
		return Number{}, reject("%s: not a phone number: write it as +<country code><number>, digits only", quote(local))
	}
	if !intl && defaultRegion == "" {
		return Number{}, reject("%s: write the number in international form, +<country code><number>", quote(local))
	}
	if len(digits) > 17 {
		return Number{}, reject("%s: too long for a phone number", quote(local))
	}
	region := ""
	if !intl {
		region = strings.ToUpper(defaultRegion)
	}
	num, err := phonenumbers.Parse(local, region)
	if err != nil {
		return Number{}, reject("%s: not a phone number (%s)", quote(local), parseReason(err))
	}
	reg := phonenumbers.GetRegionCodeForNumber(num)
	if reg == "" || reg == "ZZ" {
		reg = phonenumbers.GetRegionCodeForCountryCode(int(num.GetCountryCode()))
	}
	where := regionName(reg)
	switch phonenumbers.IsPossibleNumberWithReason(num) {
	case phonenumbers.TOO_SHORT:
		return Number{}, reject("%s: too short for %s", quote(local), where)
	case phonenumbers.TOO_LONG:
		return Number{}, reject("%s: too long for %s", quote(local), where)
	case phonenumbers.INVALID_COUNTRY_CODE:
		return Number{}, reject("%s: unknown country code", quote(local))
	case phonenumbers.INVALID_LENGTH:
		return Number{}, reject("%s: wrong length for %s", quote(local), where)
	}
	if !phonenumbers.IsValidNumber(num) {
		return Number{}, reject("%s: not a valid number in %s", quote(local), where)
	}
	switch t := phonenumbers.GetNumberType(num); t {
	case phonenumbers.MOBILE, phonenumbers.FIXED_LINE_OR_MOBILE:
	default:
		return Number{}, reject("%s: a %s number in %s, not a mobile number", quote(local), typeName(t), where)
	}
	if len(allowed) > 0 && !slices.ContainsFunc(allowed, func(a string) bool { return strings.EqualFold(a, reg) }) {
		return Number{}, reject("%s: SMS to %s are not allowed here", quote(local), where)
	}
	return Number{E164: phonenumbers.Format(num, phonenumbers.E164), Region: reg}, nil
}

// Incoming reads the number a transport reports for an incoming SMS as
// E.164 (DESIGN.md §6, contract): "+digits" or TON 1 (international)
// digits are international; TON 0 (unknown) digits are international when
// defaultRegion is empty, else national in that region. Other TONs
// (alphanumeric senders, short codes) are returned as given. It returns ""
// when there is nothing to read.
func Incoming(number string, ton byte, defaultRegion string) string {
	number = strings.TrimSpace(number)
	if number == "" {
		return ""
	}
	if digits, ok := strings.CutPrefix(number, "+"); ok {
		if asciiDigits(digits) {
			return number
		}
		return ""
	}
	if !asciiDigits(number) {
		return number // alphanumeric sender: no E.164 form
	}
	switch ton {
	case 1:
		return "+" + number
	case 0:
		if defaultRegion == "" {
			return "+" + number
		}
		if strings.HasPrefix(number, "00") {
			return "+" + number[2:]
		}
		num, err := phonenumbers.Parse(number, strings.ToUpper(defaultRegion))
		if err != nil {
			return ""
		}
		return phonenumbers.Format(num, phonenumbers.E164)
	case 2: // national
		if defaultRegion == "" {
			return number
		}
		num, err := phonenumbers.Parse(number, strings.ToUpper(defaultRegion))
		if err != nil {
			return number
		}
		return phonenumbers.Format(num, phonenumbers.E164)
	}
	return number
}

// RegionName is "Japan (JP)", as the replies show countries.
func regionName(code string) string {
	if code == "" || code == "ZZ" || code == "001" {
		return "this country code"
	}
	r, err := language.ParseRegion(code)
	if err != nil {
		return code
	}
	if n := display.English.Regions().Name(r); n != "" {
		return n + " (" + code + ")"
	}
	return code
}

func typeName(t phonenumbers.PhoneNumberType) string {
	switch t {
	case phonenumbers.FIXED_LINE:
		return "fixed-line"
	case phonenumbers.TOLL_FREE:
		return "toll-free"
	case phonenumbers.PREMIUM_RATE:
		return "premium-rate"
	case phonenumbers.SHARED_COST:
		return "shared-cost"
	case phonenumbers.VOIP:
		return "VoIP"
	case phonenumbers.PERSONAL_NUMBER:
		return "personal"
	case phonenumbers.PAGER:
		return "pager"
	case phonenumbers.UAN:
		return "company (UAN)"
	case phonenumbers.VOICEMAIL:
		return "voicemail"
	}
	return "non-mobile"
}

func parseReason(err error) string {
	switch err {
	case phonenumbers.ErrInvalidCountryCode:
		return "unknown country code"
	case phonenumbers.ErrTooShortNSN, phonenumbers.ErrTooShortAfterIDD:
		return "too short"
	case phonenumbers.ErrNumTooLong:
		return "too long"
	}
	return "unreadable"
}

func asciiDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// quote keeps a hostile local part from breaking the reply line: only
// printable ASCII is echoed, the rest is escaped.
func quote(s string) string {
	if len(s) > 40 {
		s = s[:40] + "..."
	}
	var b strings.Builder
	for _, r := range s {
		if r >= 0x20 && r < 0x7f {
			b.WriteRune(r)
		} else {
			fmt.Fprintf(&b, "\\u%04x", r)
		}
	}
	return b.String()
}

func reject(format string, args ...any) error {
	return smtpreply.New(550, "5.1.3", format, args...)
}
