package smpp

import (
	"fmt"
	"math"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"
)

// config is the transport's `settings` block, checked.
type config struct {
	Address            string
	SystemID           string
	Password           string
	SystemType         string
	Window             int
	Bind               string // transceiver | transmitter | receiver
	EnquireLink        time.Duration
	RegisteredDelivery bool
	SubmitTimeout      time.Duration
}

const maxWindow = 1000

// lengthWarnings lists fields longer than SMPP 3.4 §5.2 allows (system_id 16
// octets with the NUL, password 9, system_type 13). They are warnings, not
// errors: some SMSCs hand out longer credentials and accept them.
func (c config) lengthWarnings() []string {
	var w []string
	if len(c.SystemID) > 15 {
		w = append(w, fmt.Sprintf("system_id has %d characters; SMPP 3.4 allows 15", len(c.SystemID)))
	}
	if len(c.Password) > 8 {
		w = append(w, fmt.Sprintf("password has %d characters; SMPP 3.4 allows 8", len(c.Password)))
	}
	if len(c.SystemType) > 12 {
		w = append(w, fmt.Sprintf("system_type has %d characters; SMPP 3.4 allows 12", len(c.SystemType)))
	}
	return w
}

func defaultConfig() config {
	return config{
		Window:             10,
		Bind:               "transceiver",
		EnquireLink:        30 * time.Second,
		RegisteredDelivery: true,
		SubmitTimeout:      30 * time.Second,
	}
}

// parseConfig reads settings as they come from the YAML file through JSON:
// numbers may be int or float64, durations are strings ("30s"). Unknown
// keys are errors, like everywhere else in smsmilter's config.
func parseConfig(settings map[string]any) (config, error) {
	c := defaultConfig()
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys) // report problems in a stable order
	var errs []string
	bad := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	for _, k := range keys {
		v := settings[k]
		var err error
		switch k {
		case "address":
			c.Address, err = asString(v)
		case "system_id":
			c.SystemID, err = asString(v)
		case "password":
			c.Password, err = asString(v)
		case "system_type":
			c.SystemType, err = asString(v)
		case "window":
			c.Window, err = asInt(v)
		case "bind":
			c.Bind, err = asString(v)
		case "enquire_link":
			c.EnquireLink, err = asDuration(v)
		case "registered_delivery":
			c.RegisteredDelivery, err = asBool(v)
		case "submit_timeout":
			c.SubmitTimeout, err = asDuration(v)
		default:
			bad("unknown setting %q (known: address, system_id, password, system_type, window, bind, enquire_link, registered_delivery, submit_timeout)", k)
			continue
		}
		if err != nil {
			bad("%s: %v", k, err)
		}
	}
	if c.Address == "" {
		bad("address: required (host:port of the SMSC)")
	} else if _, port, err := net.SplitHostPort(c.Address); err != nil || port == "" {
		bad("address: %q is not host:port", c.Address)
	}
	if c.SystemID == "" {
		bad("system_id: required")
	}
	if c.Window < 1 || c.Window > maxWindow {
		bad("window: %d, must be 1 to %d", c.Window, maxWindow)
	}
	c.Bind = strings.ToLower(c.Bind)
	switch c.Bind {
	case "transceiver", "transmitter", "receiver":
	default:
		bad("bind: %q, must be transceiver, transmitter or receiver", c.Bind)
	}
	if c.EnquireLink < time.Second {
		bad("enquire_link: %v, must be at least 1s", c.EnquireLink)
	}
	if c.SubmitTimeout < 100*time.Millisecond {
		bad("submit_timeout: %v, must be at least 100ms", c.SubmitTimeout)
	}
	if len(errs) > 0 {
		return c, fmt.Errorf("smpp settings: %s", strings.Join(errs, "; "))
	}
	return c, nil
}

func asString(v any) (string, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case int:
		// An unquoted numeric system_id or password in YAML.
		return strconv.Itoa(x), nil
	case int64:
		return strconv.FormatInt(x, 10), nil
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64), nil
	}
	return "", fmt.Errorf("want a string, got %T", v)
}

func asInt(v any) (int, error) {
	switch x := v.(type) {
	case int:
		return x, nil
	case int64:
		return int(x), nil
	case float64:
		if x != math.Trunc(x) || math.Abs(x) > 1e9 {
			return 0, fmt.Errorf("want a whole number, got %v", x)
		}
		return int(x), nil
	case string:
		n, err := strconv.Atoi(x)
		if err != nil {
			return 0, fmt.Errorf("want a whole number, got %q", x)
		}
		return n, nil
	}
	return 0, fmt.Errorf("want a whole number, got %T", v)
}

func asBool(v any) (bool, error) {
	switch x := v.(type) {
	case bool:
		return x, nil
	case string:
		b, err := strconv.ParseBool(x)
		if err != nil {
			return false, fmt.Errorf("want true or false, got %q", x)
		}
		return b, nil
	}
	return false, fmt.Errorf("want true or false, got %T", v)
}

func asDuration(v any) (time.Duration, error) {
	s, ok := v.(string)
	if !ok {
		// A bare number is ambiguous (seconds? milliseconds?): refuse it.
		return 0, fmt.Errorf("want a duration such as \"30s\", got %v", v)
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("want a duration such as \"30s\", got %q", s)
	}
	return d, nil
}
