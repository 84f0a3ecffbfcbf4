package modem

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
)

// settings is the transport's `settings:` block from the config file, read
// and checked once by Configure.
type settings struct {
	Device string // serial device, e.g. /dev/ttyUSB2
	Baud   int
	PIN    string // SIM PIN; empty when the SIM has none
	SMSC   string // "+digits"; empty keeps the SIM's service centre

	// CommandTimeout bounds one AT command. Real modems take seconds to
	// answer AT+CMGS (the network round trip); the library's 1 s default
	// turns slow but good submissions into failures.
	CommandTimeout time.Duration
	// WatchdogInterval is how often an idle modem is probed with "AT".
	WatchdogInterval time.Duration
	// ReconnectMin and ReconnectMax bound the backoff between attempts
	// to re-open and re-initialise a modem that stopped answering.
	ReconnectMin time.Duration
	ReconnectMax time.Duration
	// ReassemblyTimeout is how long the parts of a concatenated incoming
	// SMS are waited for; what has arrived by then is delivered.
	ReassemblyTimeout time.Duration
	// StatusReports sets the status report request (SRR) bit on every
	// part. Some operators charge for reports; they can be turned off.
	StatusReports bool
}

// knownKeys lists every accepted key. max_tps and tps are the
// dispatcher's business (pacing happens before Send), so they are accepted
// and ignored here.
func knownKeys() []string {
	return []string{
		"device", "baud", "pin", "smsc",
		"command_timeout", "watchdog_interval",
		"reconnect_min", "reconnect_max", "reassembly_timeout",
		"status_reports", "max_tps", "tps",
	}
}

func parseSettings(raw map[string]any) (settings, error) {
	s := settings{
		Baud:              115200,
		CommandTimeout:    10 * time.Second,
		WatchdogInterval:  30 * time.Second,
		ReconnectMin:      time.Second,
		ReconnectMax:      time.Minute,
		ReassemblyTimeout: time.Hour,
		StatusReports:     true,
	}
	var errs []error
	known := map[string]bool{}
	for _, k := range knownKeys() {
		known[k] = true
	}
	var unknown []string
	for k := range raw {
		if !known[k] {
			unknown = append(unknown, k)
		}
	}
	sort.Strings(unknown)
	for _, k := range unknown {
		errs = append(errs, fmt.Errorf("unknown setting %q (known: %s)", k, strings.Join(knownKeys(), ", ")))
	}

	str := func(key string, dst *string) {
		v, ok := raw[key]
		if !ok || v == nil {
			return
		}
		switch x := v.(type) {
		case string:
			*dst = strings.TrimSpace(x)
		case float64, int, int64:
			// A PIN written without quotes in YAML arrives as a number.
			*dst = fmt.Sprint(x)
		default:
			errs = append(errs, fmt.Errorf("%s: want a string, got %T", key, v))
		}
	}
	dur := func(key string, dst *time.Duration) {
		v, ok := raw[key]
		if !ok || v == nil {
			return
		}
		d, err := toDuration(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", key, err))
			return
		}
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s: must be positive, got %s", key, d))
			return
		}
		*dst = d
	}

	str("device", &s.Device)
	str("pin", &s.PIN)
	str("smsc", &s.SMSC)
	if v, ok := raw["baud"]; ok && v != nil {
		n, err := toInt(v)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("baud: %w", err))
		case n <= 0:
			errs = append(errs, fmt.Errorf("baud: must be positive, got %d", n))
		default:
			s.Baud = n
		}
	}
	dur("command_timeout", &s.CommandTimeout)
	dur("watchdog_interval", &s.WatchdogInterval)
	dur("reconnect_min", &s.ReconnectMin)
	dur("reconnect_max", &s.ReconnectMax)
	dur("reassembly_timeout", &s.ReassemblyTimeout)
	if v, ok := raw["status_reports"]; ok && v != nil {
		b, isBool := v.(bool)
		if !isBool {
			errs = append(errs, fmt.Errorf("status_reports: want true or false, got %v", v))
		}
		s.StatusReports = b
	}

	if s.Device == "" {
		errs = append(errs, errors.New("device: required (the modem's serial port, e.g. /dev/ttyUSB2)"))
	}
	if s.PIN != "" && (len(s.PIN) < 4 || len(s.PIN) > 8 || !digits(s.PIN)) {
		// Never echo the PIN itself into an error that lands in logs.
		errs = append(errs, errors.New("pin: must be 4 to 8 digits"))
	}
	if d, ok := strings.CutPrefix(s.SMSC, "+"); s.SMSC != "" && (!ok || len(d) < 3 || len(d) > 20 || !digits(d)) {
		errs = append(errs, fmt.Errorf("smsc: %q is not an international number (+digits)", s.SMSC))
	}
	if s.ReconnectMax < s.ReconnectMin {
		s.ReconnectMax = s.ReconnectMin
	}
	return s, errors.Join(errs...)
}

// toDuration reads "10s"-style strings; bare numbers are seconds, which is
// what a YAML author writing `command_timeout: 10` means.
func toDuration(v any) (time.Duration, error) {
	switch x := v.(type) {
	case string:
		d, err := time.ParseDuration(strings.TrimSpace(x))
		if err != nil {
			return 0, fmt.Errorf("want a duration like 10s: %w", err)
		}
		return d, nil
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) || x > 1e9 {
			return 0, fmt.Errorf("bad number of seconds %v", x)
		}
		return time.Duration(x * float64(time.Second)), nil
	case int:
		return time.Duration(x) * time.Second, nil
	case int64:
		return time.Duration(x) * time.Second, nil
	}
	return 0, fmt.Errorf("want a duration like 10s, got %T", v)
}

func toInt(v any) (int, error) {
	switch x := v.(type) {
	case int:
		return x, nil
	case int64:
		return int(x), nil
	case float64:
		if x != math.Trunc(x) || x > math.MaxInt32 || x < math.MinInt32 {
			return 0, fmt.Errorf("want a whole number, got %v", x)
		}
		return int(x), nil
	case string:
		n, err := strconv.Atoi(strings.TrimSpace(x))
		if err != nil {
			return 0, fmt.Errorf("want a whole number: %w", err)
		}
		return n, nil
	}
	return 0, fmt.Errorf("want a whole number, got %T", v)
}
