package config

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

type settingKind int

const (
	kindString settingKind = iota
	kindHostPort
	kindInt
	kindBool
	kindDuration
	kindEnum
	kindDigits     // a SIM PIN: digits only, leading zeros kept
	kindPlusDigits // an E.164 number: + and digits
)

// setting describes one key of a built-in plugin's settings.
type setting struct {
	name     string
	kind     settingKind
	required bool
	min, max int           // kindInt: range; kindDigits, kindPlusDigits: number of digits
	minDur   time.Duration // kindDuration: the smallest value the plugin accepts
	options  []string      // kindEnum
	def      any           // stored when the key is absent
	help     string        // what the value is, for "is required" messages
}

// builtinSettings is the schema of a built-in plugin's settings, or nil for
// a third-party plugin (whose settings are passed on unchecked). It matches
// what the plugins in transports/ accept, so that a file check-config
// passes is not refused later by the plugin; SMPP 3.4's length limits on
// system_id and password are left to the smpp plugin, which only warns
// because some SMSCs hand out longer credentials.
func builtinSettings(plugin string) []setting {
	switch plugin {
	case pluginSMPP:
		return []setting{
			{name: "address", kind: kindHostPort, required: true, help: "the SMSC's HOST:PORT, e.g. smsc.example.net:2775"},
			{name: "system_id", kind: kindString, required: true, help: "the account name the SMSC gave you"},
			{name: "password", kind: kindString},
			{name: "system_type", kind: kindString},
			{name: "window", kind: kindInt, min: 1, max: 1000, def: 10},
			{name: "bind", kind: kindEnum, options: []string{"transceiver", "transmitter", "receiver"}, def: "transceiver"},
			{name: "enquire_link", kind: kindDuration, minDur: time.Second},
			{name: "registered_delivery", kind: kindBool},
			{name: "submit_timeout", kind: kindDuration, minDur: 100 * time.Millisecond},
		}
	case pluginModem:
		return []setting{
			{name: "device", kind: kindString, required: true, help: "the modem's serial device, e.g. /dev/ttyUSB0"},
			{name: "baud", kind: kindInt, min: 1, max: math.MaxInt32},
			{name: "pin", kind: kindDigits, min: 4, max: 8},
			{name: "smsc", kind: kindPlusDigits, min: 3, max: 15},
			{name: "command_timeout", kind: kindDuration},
			{name: "watchdog_interval", kind: kindDuration},
			{name: "reconnect_min", kind: kindDuration},
			{name: "reconnect_max", kind: kindDuration},
			{name: "reassembly_timeout", kind: kindDuration},
			{name: "status_reports", kind: kindBool},
		}
	case pluginOutbox:
		return []setting{
			{name: "path", kind: kindString, required: true, help: "the file each SMS is appended to as a JSON line"},
			{name: "inbox", kind: kindString},
			{name: "poll_interval", kind: kindDuration},
		}
	}
	return nil
}

// checkSettings validates a transport's settings and replaces them with
// JSON-compatible values for the plugin: for built-ins, typed values with
// defaults filled in; for third-party plugins, the YAML as written.
// Settings is never nil afterwards.
func (d *decoder) checkSettings(tpath string, t *Transport) {
	path := join(tpath, "settings")
	var n *yaml.Node
	if l, ok := d.locs[path]; ok {
		if r := resolve(l.val); r.Kind == yaml.MappingNode {
			n = r
		}
	}
	schema := builtinSettings(t.Plugin)
	if d.failed[path] {
		t.Settings = map[string]any{}
		return
	}
	if schema == nil {
		t.Settings = map[string]any{}
		if n != nil {
			budget := 10000
			t.Settings, _ = d.plain(path, path, n, make(map[*yaml.Node]bool), &budget).(map[string]any)
			if t.Settings == nil {
				t.Settings = map[string]any{}
			}
		}
		return
	}
	out := make(map[string]any)
	if n != nil {
		for _, p := range d.pairs(path, n) {
			i := slices.IndexFunc(schema, func(s setting) bool { return s.name == p.key.Value })
			if i < 0 {
				d.unknownSetting(path, t.Plugin, p.key, schema)
				continue
			}
			kp := join(path, p.key.Value)
			d.locs[kp] = loc{p.key, p.val}
			if v, ok := d.setting(kp, schema[i], resolve(p.val)); ok {
				out[p.key.Value] = v
			}
		}
	}
	for _, s := range schema {
		kp := join(path, s.name)
		switch {
		case d.present(kp):
		case s.required:
			d.errf(kp, "is required for the %s plugin: %s", t.Plugin, s.help)
		case s.def != nil:
			out[s.name] = s.def
		}
	}
	t.Settings = out
}

func (d *decoder) unknownSetting(path, plugin string, k *yaml.Node, schema []setting) {
	names := make([]string, len(schema))
	for i, s := range schema {
		names[i] = s.name
	}
	hint := suggest(k.Value, names)
	if k.Value == "tps" {
		hint = fmt.Sprintf(" (tps belongs under %s, next to plugin: check the indentation)", parentPath(path))
	}
	if hint == "" {
		hint = fmt.Sprintf(" (the %s plugin knows %s)", plugin, strings.Join(names, ", "))
	}
	d.addLine(k.Line, "unknown key %s in %s%s", quote(k.Value), path, hint)
}

// setting checks one built-in setting and returns the value to store.
func (d *decoder) setting(path string, s setting, r *yaml.Node) (any, bool) {
	if r.Kind != yaml.ScalarNode {
		d.errf(path, "expected a single value, found %s", describe(r))
		return nil, false
	}
	// Text as written, as for string keys: an unquoted PIN 0123 or SMSC
	// +447785016005 is meant literally, not as a YAML number.
	v := r.Value
	if isNull(r) {
		v = ""
	}
	switch s.kind {
	case kindString:
		if v == "" && s.required {
			d.errf(path, "must not be empty: %s", s.help)
			return nil, false
		}
		return v, true
	case kindHostPort:
		if err := checkHostPort(v, false, "smsc.example.net:2775"); err != nil {
			d.errf(path, "%s: %v", quote(v), err)
			return nil, false
		}
		return v, true
	case kindInt:
		var i int
		if isNull(r) || r.Tag != "!!int" || r.Decode(&i) != nil {
			d.errf(path, "%s is not a whole number", quote(v))
			return nil, false
		}
		if i < s.min || i > s.max {
			d.errf(path, "%d is not from %d to %d", i, s.min, s.max)
			return nil, false
		}
		return i, true
	case kindBool:
		var b bool
		if r.Tag != "!!bool" || r.Decode(&b) != nil {
			d.errf(path, "%s is not true or false", quote(v))
			return nil, false
		}
		return b, true
	case kindDuration:
		t, err := time.ParseDuration(v)
		switch {
		case err != nil:
			d.errf(path, "%s is not a duration (e.g. 30s, 5m)", quote(v))
			return nil, false
		case t <= 0 || t < s.minDur:
			d.errf(path, "%s is too short: at least %v", quote(v), max(s.minDur, time.Nanosecond))
			return nil, false
		}
		return v, true
	case kindEnum:
		if !d.enum(path, v, s.options...) {
			return nil, false
		}
		return v, true
	case kindDigits:
		if !allDigits(v) || len(v) < s.min || len(v) > s.max {
			// Never echo a PIN: check-config output ends up in logs.
			d.errf(path, "must be %d to %d digits", s.min, s.max)
			return nil, false
		}
		return v, true
	case kindPlusDigits:
		if err := checkPlusDigits(v); err != nil {
			d.errf(path, "%s %v", quote(v), err)
			return nil, false
		}
		if n := len(v) - 1; n < s.min || n > s.max {
			d.errf(path, "%s must have %d to %d digits after the +", quote(v), s.min, s.max)
			return nil, false
		}
		return v, true
	}
	panic("config: unknown setting kind")
}

// plain converts YAML to JSON-compatible Go values (map[string]any, []any,
// string, int, float64, bool, nil) for a third-party plugin. An alias that
// refers to a node it is inside of is refused (JSON cannot hold a cycle),
// and budget bounds the values produced, since aliases can make a small
// file expand exponentially ("billion laughs").
func (d *decoder) plain(root, path string, n *yaml.Node, inside map[*yaml.Node]bool, budget *int) any {
	const exhausted = math.MinInt
	r := resolve(n)
	if inside[r] {
		d.errf(path, "refers to a value it is part of (through an alias)")
		return nil
	}
	if *budget == exhausted {
		return nil
	}
	if *budget--; *budget < 0 || len(inside) >= 64 {
		d.errAt(path, root, "nests too deeply or expands (through aliases) to too many values")
		*budget = exhausted
		return nil
	}
	switch r.Kind {
	case yaml.MappingNode:
		inside[r] = true
		defer delete(inside, r)
		m := make(map[string]any)
		for _, p := range d.pairs(path, r) {
			m[p.key.Value] = d.plain(root, join(path, p.key.Value), p.val, inside, budget)
		}
		return m
	case yaml.SequenceNode:
		inside[r] = true
		defer delete(inside, r)
		l := make([]any, len(r.Content))
		for i, e := range r.Content {
			l[i] = d.plain(root, index(path, i), e, inside, budget)
		}
		return l
	}
	switch r.Tag {
	case "!!null":
		return nil
	case "!!bool":
		var b bool
		if r.Decode(&b) == nil {
			return b
		}
	case "!!int":
		var i int
		if r.Decode(&i) == nil {
			return i
		}
		var f float64
		if r.Decode(&f) == nil {
			return f
		}
	case "!!float":
		var f float64
		// JSON has no NaN or infinity; such a value stays text.
		if r.Decode(&f) == nil && !math.IsNaN(f) && !math.IsInf(f, 0) {
			return f
		}
	}
	return r.Value
}
