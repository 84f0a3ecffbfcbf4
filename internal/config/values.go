package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/mail"
	"net/netip"
	"strconv"
	"strings"

	"github.com/dustin/go-humanize"
	"github.com/nyaruka/phonenumbers"
	"golang.org/x/net/idna"
	"gopkg.in/yaml.v3"
)

const (
	kib = 1 << 10
	mib = 1 << 20
	gib = 1 << 30
)

// ParseSize reads a byte count: a plain number of bytes ("1000000"), or a
// number with a decimal (kB, MB, GB) or binary (KiB, MiB, GiB) unit, case
// insensitive, with or without a space ("10MB", "512 KiB").
func ParseSize(s string) (Size, error) {
	t := strings.TrimSpace(s)
	// humanize skips a leading sign silently in some forms; sizes are never
	// negative, so refuse anything that does not start with a digit.
	if t == "" || t[0] < '0' || t[0] > '9' {
		return 0, fmt.Errorf("%q is not a size (e.g. 1MiB, 512KiB, 1000000)", s)
	}
	n, err := humanize.ParseBytes(t)
	if err != nil {
		if strings.HasPrefix(err.Error(), "too large") {
			return 0, fmt.Errorf("%q is too large", s)
		}
		return 0, fmt.Errorf("%q is not a size (e.g. 1MiB, 512KiB, 1000000)", s)
	}
	if n > math.MaxInt64 {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return Size(n), nil
}

// UnmarshalYAML lets a Size be decoded directly with yaml.v3 as well.
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: expected a size (e.g. 1MiB, 512KiB, 1000000)", n.Line)
	}
	v, err := ParseSize(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*s = v
	return nil
}

// String writes the size the way an admin would, in the largest binary unit
// that divides it exactly ("1MiB", "1500B" stays "1500").
func (s Size) String() string {
	switch {
	case s != 0 && s%gib == 0:
		return strconv.FormatInt(int64(s/gib), 10) + "GiB"
	case s != 0 && s%mib == 0:
		return strconv.FormatInt(int64(s/mib), 10) + "MiB"
	case s != 0 && s%kib == 0:
		return strconv.FormatInt(int64(s/kib), 10) + "KiB"
	}
	return strconv.FormatInt(int64(s), 10)
}

// ParseListen reads a milter listen address as Postfix writes it in
// smtpd_milters: inet:HOST:PORT (HOST may be empty for every address, an
// IPv6 HOST is bracketed) or unix:/absolute/path. It returns the network
// and address for net.Listen: ("tcp", "HOST:PORT") or ("unix", "/path").
func ParseListen(s string) (network, address string, err error) {
	kind, rest, ok := strings.Cut(s, ":")
	switch {
	case ok && kind == "inet":
		if strings.Contains(rest, "@") {
			return "", "", fmt.Errorf("%q is Sendmail's PORT@HOST form: write inet:HOST:PORT", s)
		}
		if err := checkHostPort(rest, true, "127.0.0.1:8890"); err != nil {
			return "", "", fmt.Errorf("%q: %w", s, err)
		}
		return "tcp", rest, nil
	case ok && (kind == "unix" || kind == "local"):
		if !strings.HasPrefix(rest, "/") {
			return "", "", fmt.Errorf("%q: the socket needs an absolute path (unix:/run/smsmilter/milter.sock)", s)
		}
		if kind == "local" {
			return "", "", fmt.Errorf("%q: write unix:%s", s, rest)
		}
		return "unix", rest, nil
	}
	hint := ""
	if checkHostPort(s, true, "") == nil {
		hint = " (write inet:" + s + ")"
	} else if strings.HasPrefix(s, "/") {
		hint = " (write unix:" + s + ")"
	}
	return "", "", fmt.Errorf("%q is not inet:HOST:PORT or unix:/absolute/path%s", s, hint)
}

// checkHostPort checks HOST:PORT. A listen address may leave HOST empty (all
// addresses) and use port 0 (any free port, which tests use); an address
// to connect to needs both. example is shown when the form is wrong.
func checkHostPort(s string, listen bool, example string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("expected HOST:PORT (e.g. %s)", example)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return fmt.Errorf("port %q is not a number from 1 to 65535", port)
	}
	if p == 0 && !listen {
		return errors.New("port 0 cannot be connected to")
	}
	if host == "" {
		if listen {
			return nil
		}
		return errors.New("the host is missing")
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return nil
	}
	if _, err := checkDomain(host); err != nil {
		return fmt.Errorf("host %q is not an IP address or a host name", host)
	}
	return nil
}

// checkDomain validates a domain name and returns it in the form smsmilter
// compares: lower case ASCII (IDNA for international names), no final dot.
func checkDomain(s string) (string, error) {
	d := strings.TrimSuffix(s, ".")
	if d == "" {
		return "", errors.New("is empty")
	}
	if _, err := netip.ParseAddr(d); err == nil {
		return "", errors.New("is an IP address, not a domain name")
	}
	for i := 0; i < len(d); i++ {
		if d[i] >= 0x80 {
			a, err := idna.Lookup.ToASCII(d)
			if err != nil {
				return "", errors.New("is not a valid international domain name")
			}
			d = a
			break
		}
	}
	d = strings.ToLower(d)
	if len(d) > 253 {
		return "", errors.New("is longer than 253 characters")
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 {
			return "", errors.New("is not a domain name (empty or over-long label)")
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return "", errors.New("is not a domain name (a label starts or ends with -)")
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return "", errors.New("is not a domain name (letters, digits, - and . only)")
			}
		}
	}
	// An all-numeric last label is never a real top-level domain, but is
	// what a mistyped IP address looks like.
	if allDigits(d[strings.LastIndexByte(d, '.')+1:]) {
		return "", errors.New("is not a domain name (the last label is a number)")
	}
	return d, nil
}

// checkEmail accepts a bare address (local@domain). Display names and angle
// brackets are refused: the value is used as an envelope address too.
func checkEmail(s string) error {
	a, err := mail.ParseAddress(s)
	if err != nil || a.Name != "" || a.Address != s || strings.HasPrefix(s, "<") {
		return errors.New("is not an email address (e.g. postmaster@example.com)")
	}
	at := strings.LastIndexByte(s, '@')
	if _, err := checkDomain(s[at+1:]); err != nil {
		return errors.New("is not an email address: its domain " + strconv.Quote(s[at+1:]) + " " + err.Error())
	}
	return nil
}

// checkRegion validates a region code against the regions libphonenumber
// has metadata for, and returns it upper-cased.
func checkRegion(s string) (string, error) {
	r := strings.ToUpper(s)
	if phonenumbers.GetSupportedRegions()[r] {
		return r, nil
	}
	// The two codes people reach for that ISO 3166 spells differently.
	switch r {
	case "UK":
		return "", errors.New(`is not an ISO 3166 region code (the United Kingdom is "GB")`)
	case "EL":
		return "", errors.New(`is not an ISO 3166 region code (Greece is "GR")`)
	}
	return "", errors.New("is not a region code libphonenumber supports (ISO 3166 alpha-2, e.g. GB, JP, US)")
}

// checkPlusDigits validates an E.164 prefix or number: "+" then 1 to 15
// ASCII digits.
func checkPlusDigits(s string) error {
	digits, ok := strings.CutPrefix(s, "+")
	if ok && len(digits) >= 1 && len(digits) <= 15 && allDigits(digits) {
		return nil
	}
	if allDigits(s) && s != "" {
		return fmt.Errorf(`must start with + (write "+%s")`, s)
	}
	return errors.New(`must be + and up to 15 digits, e.g. "+81"`)
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
