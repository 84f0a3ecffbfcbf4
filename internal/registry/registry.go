// Package registry checks what a mail admin asks to add to the registry —
// forwarding users and address, domain and ip rules (DESIGN.md §4) — and
// turns it into store records with the defaults filled in. The CLI and the
// CSV import share it, so a rule is judged the same way however it arrives.
package registry

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/mail"
	"net/netip"
	"regexp"
	"strings"

	"github.com/smsmilter/smsmilter/internal/store"
)

// Security types (DESIGN.md §4).
var securityTypes = []string{"spf", "google", "office365", "ip", "auth", "none"}

// Levels a threshold may take, lowest verdict still allowed.
var levels = []string{"pass", "gray", "fail"}

// RuleSpec is a rule as the admin writes it; empty fields take defaults.
type RuleSpec struct {
	Kind     string // store.KindAddress, KindDomain, KindIP
	Pattern  string // email, domain or CIDR
	User     string
	Security string
	IPs      []string
	DKIM     string
	SPF      string
	DMARC    string
}

// Rule checks a spec and returns the rule to store. Defaults: address and
// domain rules check spf with every threshold gray; an ip rule's IP match
// is its security and its thresholds default to fail.
func Rule(s RuleSpec) (store.Rule, error) {
	r := store.Rule{Kind: s.Kind, User: strings.TrimSpace(s.User)}
	if r.User == "" {
		return r, fmt.Errorf("a forwarding user is needed (--user NAME)")
	}
	var err error
	switch s.Kind {
	case store.KindAddress:
		r.Pattern, err = Address(s.Pattern)
	case store.KindDomain:
		r.Pattern, err = Domain(s.Pattern)
	case store.KindIP:
		r.Pattern, err = CIDR(s.Pattern)
	default:
		err = fmt.Errorf("unknown rule kind %q", s.Kind)
	}
	if err != nil {
		return r, err
	}
	def := "gray"
	r.Security = strings.ToLower(strings.TrimSpace(s.Security))
	if s.Kind == store.KindIP {
		def = "fail"
		if r.Security != "" && r.Security != "ip" {
			return r, fmt.Errorf("an ip rule's security is its IP match; --security %s does not apply", r.Security)
		}
		r.Security = "ip"
		r.IPs = []string{r.Pattern}
		if len(s.IPs) > 0 {
			return r, fmt.Errorf("an ip rule is its own IP list; --ips does not apply")
		}
	} else {
		if r.Security == "" {
			r.Security = "spf"
		}
		if !contains(securityTypes, r.Security) {
			return r, fmt.Errorf("unknown security type %q (want one of %s)", s.Security, strings.Join(securityTypes, ", "))
		}
		for _, c := range s.IPs {
			p, err := CIDR(c)
			if err != nil {
				return r, err
			}
			r.IPs = append(r.IPs, p)
		}
		if r.Security == "ip" && len(r.IPs) == 0 {
			return r, fmt.Errorf("security ip needs the servers' addresses: --ips CIDR,...")
		}
		if r.Security != "ip" && len(r.IPs) > 0 {
			return r, fmt.Errorf("--ips is only used with --security ip")
		}
	}
	for _, t := range []struct {
		name string
		in   string
		out  *string
	}{{"dkim", s.DKIM, &r.DKIM}, {"spf", s.SPF, &r.SPF}, {"dmarc", s.DMARC, &r.DMARC}} {
		v := strings.ToLower(strings.TrimSpace(t.in))
		if v == "" {
			v = def
		}
		if !contains(levels, v) {
			return r, fmt.Errorf("--%s %q: want pass, gray or fail", t.name, t.in)
		}
		*t.out = v
	}
	if s.Kind == store.KindDomain {
		r.Token = NewToken()
	}
	return r, nil
}

// Address checks an exact email address and returns it lower-cased.
func Address(s string) (string, error) {
	in := strings.TrimSpace(s)
	a, err := mail.ParseAddress(in)
	if err != nil || a.Name != "" || a.Address != in || strings.ContainsAny(in, "<>") {
		return "", fmt.Errorf("%q is not an email address", s)
	}
	local, domain, _ := strings.Cut(a.Address, "@")
	if local == "" {
		return "", fmt.Errorf("%q is not an email address", s)
	}
	if _, err := Domain(domain); err != nil {
		return "", fmt.Errorf("%q is not an email address: %v", s, err)
	}
	return strings.ToLower(a.Address), nil
}

var labelRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// Domain checks a domain name and returns it lower-cased, without a
// trailing dot.
func Domain(s string) (string, error) {
	d := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(s)), ".")
	if d == "" || len(d) > 253 || !strings.Contains(d, ".") {
		return "", fmt.Errorf("%q is not a domain name", s)
	}
	for _, l := range strings.Split(d, ".") {
		if !labelRE.MatchString(l) {
			return "", fmt.Errorf("%q is not a domain name", s)
		}
	}
	return d, nil
}

// CIDR checks an address or prefix ("192.0.2.0/24", "2001:db8::1") and
// returns it in canonical prefix form. Host bits must be zero: "10.0.0.1/8"
// is most likely a typing mistake.
func CIDR(s string) (string, error) {
	in := strings.TrimSpace(s)
	if !strings.Contains(in, "/") {
		a, err := netip.ParseAddr(in)
		if err != nil {
			return "", fmt.Errorf("%q is not an IP address or CIDR", s)
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()).String(), nil
	}
	p, err := netip.ParsePrefix(in)
	if err != nil {
		return "", fmt.Errorf("%q is not an IP address or CIDR", s)
	}
	if p.Masked() != p {
		return "", fmt.Errorf("%q has host bits set; did you mean %s?", s, p.Masked())
	}
	return p.String(), nil
}

var userRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// User checks a forwarding user.
func User(u store.User) error {
	if !userRE.MatchString(u.Name) {
		return fmt.Errorf("user name %q: use letters, digits, '.', '_' and '-' (up to 64)", u.Name)
	}
	if err := SenderID(u.SenderID); err != nil {
		return err
	}
	if u.TPS < 0 {
		return fmt.Errorf("--tps %v: must not be negative", u.TPS)
	}
	if u.Daily < 0 {
		return fmt.Errorf("--daily %d: must not be negative", u.Daily)
	}
	return nil
}

var alnumSender = regexp.MustCompile(`^[A-Za-z0-9 ._&-]{1,11}$`)

// SenderID checks a sender ID: a number (+ and up to 15 digits, replies
// can reach it) or an alphanumeric name of up to 11 characters (the GSM
// limit; replies cannot reach it).
func SenderID(s string) error {
	if s == "" {
		return fmt.Errorf("a sender ID is needed (--sender-id): a number like +447400123456 or a name of up to 11 characters")
	}
	digits := strings.TrimPrefix(s, "+")
	if allDigits(digits) {
		if len(digits) > 15 {
			return fmt.Errorf("sender ID %q: a number has at most 15 digits", s)
		}
		return nil
	}
	if strings.HasPrefix(s, "+") || !alnumSender.MatchString(s) || strings.TrimSpace(s) != s {
		return fmt.Errorf("sender ID %q: use up to 11 letters, digits, spaces or . _ & -, or a number", s)
	}
	return nil
}

// NumericSenderID reports whether replies can reach the sender ID.
func NumericSenderID(s string) bool { return allDigits(strings.TrimPrefix(s, "+")) }

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// NewToken is a domain verification token: 32 hex digits.
func NewToken() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b[:])
}

// TXTPrefix starts the TXT record that proves control of a domain.
const TXTPrefix = "smsmilter-verification="

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
