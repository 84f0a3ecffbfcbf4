package config

import (
	"fmt"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// The decoder walks the yaml.Node tree itself instead of using
// yaml.Node.Decode, because Decode stops at the first problem and cannot
// tell an absent key from an empty one; walking the tree gives every problem
// its line and keeps going.

var (
	durationType = reflect.TypeFor[time.Duration]()
	sizeType     = reflect.TypeFor[Size]()
	settingsType = reflect.TypeFor[map[string]any]()
)

// loc is where a key path was found: the key node (nil for list items and
// the root) and the value node as written (possibly an alias).
type loc struct {
	key, val *yaml.Node
}

type decoder struct {
	file   string
	probs  []Problem
	locs   map[string]loc  // by key path, e.g. "milter.listen", "routes[0].transports[1]"
	merges int             // merge keys expanded so far, see mergeSources
	failed map[string]bool // paths already reported, to avoid knock-on problems
}

func newDecoder(file string) *decoder {
	return &decoder{file: file, locs: make(map[string]loc), failed: make(map[string]bool)}
}

func (d *decoder) addLine(line int, format string, args ...any) {
	if line < 1 {
		line = 1
	}
	d.probs = append(d.probs, Problem{File: d.file, Line: line, Msg: oneLine(fmt.Sprintf(format, args...))})
}

// errf reports a problem with the key at path, prefixing the message with
// the path. A path that is not in the file (a missing required key) is
// reported on the line of its nearest ancestor that is.
func (d *decoder) errf(path, format string, args ...any) {
	d.errAt(path, path, format, args...)
}

// errAt is errf with the message about msgPath but the line of linePath,
// for problems best named by a parent and found in a child.
func (d *decoder) errAt(linePath, msgPath, format string, args ...any) {
	d.failed[linePath] = true
	msg := fmt.Sprintf(format, args...)
	if msgPath != "" {
		msg = msgPath + ": " + msg
	}
	d.addLine(d.line(linePath), "%s", msg)
}

func (d *decoder) line(path string) int {
	for {
		if l, ok := d.locs[path]; ok {
			if l.key != nil {
				return l.key.Line
			}
			if l.val != nil && l.val.Line > 0 {
				return l.val.Line
			}
		}
		if path == "" {
			return 1
		}
		path = parentPath(path)
	}
}

func (d *decoder) present(path string) bool {
	_, ok := d.locs[path]
	return ok
}

// ok reports whether path is in the file and its value was not refused.
func (d *decoder) ok(path string) bool {
	return d.present(path) && !d.failed[path]
}

func parentPath(p string) string {
	i := strings.LastIndexAny(p, ".[")
	if i < 0 {
		return ""
	}
	return p[:i]
}

// join builds a key path; names that are not plain identifiers (only
// possible for transport names, which are then refused) are quoted so the
// path cannot smuggle dots or newlines into a message.
func join(parent, name string) string {
	plain := name != ""
	for i := 0; i < len(name) && plain; i++ {
		c := name[i]
		plain = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
	}
	switch {
	case !plain:
		return parent + "[" + strconv.Quote(name) + "]"
	case parent == "":
		return name
	}
	return parent + "." + name
}

func index(parent string, i int) string {
	return parent + "[" + strconv.Itoa(i) + "]"
}

// resolve follows an alias to the node it names.
func resolve(n *yaml.Node) *yaml.Node {
	// An alias always names an anchored node that is not itself an alias,
	// but a hand-built or damaged tree must not loop forever.
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 16; i++ {
		n = n.Alias
	}
	if n == nil || n.Kind == yaml.AliasNode {
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null"}
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

// describe names what was found, for "expected X, found Y" messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping of keys"
	case yaml.SequenceNode:
		return "a list"
	case yaml.DocumentNode:
		return "a document"
	}
	if isNull(n) {
		return "no value"
	}
	return quote(n.Value)
}

// quote quotes a value for a message, shortened so that a pasted blob does
// not drown the message.
func quote(s string) string {
	if r := []rune(s); len(r) > 60 {
		s = string(r[:57]) + "..."
	}
	return strconv.Quote(s)
}

type pair struct {
	key, val *yaml.Node
}

// pairs lists a mapping's key/value pairs with YAML merge keys (<<: *anchor)
// expanded: explicit keys win over merged ones, and an explicit key written
// twice is a problem (yaml.v3 checks that only when decoding into Go values).
func (d *decoder) pairs(path string, m *yaml.Node) []pair {
	return d.pairsDepth(path, m, 0)
}

func (d *decoder) pairsDepth(path string, m *yaml.Node, depth int) []pair {
	where := "at the top level"
	if path != "" {
		where = "in " + path
	}
	var out, merged []pair
	seen := make(map[string]*yaml.Node)
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.Tag == "!!merge" {
			merged = append(merged, d.mergeSources(path, k, v, depth)...)
			continue
		}
		if k.Kind != yaml.ScalarNode {
			d.addLine(k.Line, "keys must be plain names, found %s %s", describe(resolve(k)), where)
			continue
		}
		if first, ok := seen[k.Value]; ok {
			d.addLine(k.Line, "duplicate key %s %s (first at line %d)", quote(k.Value), where, first.Line)
			continue
		}
		seen[k.Value] = k
		out = append(out, pair{k, v})
	}
	for _, p := range merged {
		if _, ok := seen[p.key.Value]; ok {
			continue
		}
		seen[p.key.Value] = p.key
		out = append(out, p)
	}
	return out
}

func (d *decoder) mergeSources(path string, k, v *yaml.Node, depth int) []pair {
	// Merges nest only as deep as anchors were written inside anchors; a
	// self-referencing anchor would otherwise recurse forever.
	if depth > 8 {
		d.addLine(k.Line, "merge keys (<<) nested too deeply")
		return nil
	}
	// Anchors merging anchors several times over expand exponentially.
	if d.merges++; d.merges > 200 {
		if d.merges == 201 {
			d.addLine(k.Line, "too many merge keys (<<) to expand")
		}
		return nil
	}
	r := resolve(v)
	switch r.Kind {
	case yaml.MappingNode:
		return d.pairsDepth(path, r, depth+1)
	case yaml.SequenceNode:
		var out []pair
		for _, e := range r.Content {
			if re := resolve(e); re.Kind == yaml.MappingNode {
				out = append(out, d.pairsDepth(path, re, depth+1)...)
			} else {
				d.addLine(e.Line, "<< merges mappings (<<: *anchor), found %s", describe(re))
			}
		}
		return out
	}
	d.addLine(k.Line, "<< merges mappings (<<: *anchor), found %s", describe(r))
	return nil
}

// decode stores the YAML value n (found under key, which is nil for list
// items) into v, which already holds the default.
func (d *decoder) decode(path string, key, n *yaml.Node, v reflect.Value) {
	d.locs[path] = loc{key, n}
	r := resolve(n)
	switch v.Type() {
	case durationType:
		d.duration(path, r, v)
		return
	case sizeType:
		if s, ok := d.scalar(path, r, "a size (e.g. 1MiB, 512KiB, 1000000)"); ok {
			sz, err := ParseSize(s)
			if err != nil {
				d.errf(path, "%v", err)
				return
			}
			v.SetInt(int64(sz))
		}
		return
	case settingsType:
		// Checked once the plugin is known (checkSettings).
		if r.Kind != yaml.MappingNode && !isNull(r) {
			d.errf(path, "expected a mapping of keys, found %s", describe(r))
		}
		return
	}
	switch v.Kind() {
	case reflect.String:
		if r.Kind != yaml.ScalarNode {
			d.errf(path, "expected a single value, found %s", describe(r))
			return
		}
		if isNull(r) {
			v.SetString("")
			return
		}
		// The text as written, whatever YAML would resolve it to: an
		// unquoted +81 or PIN 0123 is meant as the string, not a number.
		v.SetString(r.Value)
	case reflect.Bool:
		if s, ok := d.scalar(path, r, "true or false"); ok {
			var b bool
			if r.Tag != "!!bool" || r.Decode(&b) != nil {
				d.errf(path, "%s is not true or false", quote(s))
				return
			}
			v.SetBool(b)
		}
	case reflect.Int:
		if s, ok := d.scalar(path, r, "a whole number"); ok {
			var i int
			if r.Tag != "!!int" || r.Decode(&i) != nil {
				d.errf(path, "%s is not a whole number", quote(s))
				return
			}
			v.SetInt(int64(i))
		}
	case reflect.Float64:
		if s, ok := d.scalar(path, r, "a number"); ok {
			var f float64
			if r.Tag != "!!int" && r.Tag != "!!float" || r.Decode(&f) != nil || math.IsNaN(f) || math.IsInf(f, 0) {
				d.errf(path, "%s is not a number", quote(s))
				return
			}
			v.SetFloat(f)
		}
	case reflect.Slice:
		d.list(path, r, v)
	case reflect.Struct:
		d.mapping(path, r, v)
	case reflect.Map:
		d.named(path, r, v)
	default:
		panic("config: no decoder for " + v.Type().String())
	}
}

// scalar returns the text of a scalar value, reporting lists, mappings and
// missing values (which, for a number or a duration, almost always mean the
// admin wanted the default).
func (d *decoder) scalar(path string, r *yaml.Node, want string) (string, bool) {
	if r.Kind != yaml.ScalarNode {
		d.errf(path, "expected %s, found %s", want, describe(r))
		return "", false
	}
	if isNull(r) {
		d.errf(path, "has no value (remove the key to get the default)")
		return "", false
	}
	return r.Value, true
}

func (d *decoder) duration(path string, r *yaml.Node, v reflect.Value) {
	s, ok := d.scalar(path, r, "a duration (e.g. 30s, 5m)")
	if !ok {
		return
	}
	t, err := time.ParseDuration(s)
	if err != nil {
		hint := ""
		if strings.HasSuffix(s, "d") {
			hint = "; days are written in hours, 7 days is 168h"
		}
		d.errf(path, "%s is not a duration (e.g. 30s, 5m%s)", quote(s), hint)
		return
	}
	if t < 0 {
		d.errf(path, "%s must not be negative", quote(s))
		return
	}
	v.SetInt(int64(t))
}

func (d *decoder) list(path string, r *yaml.Node, v reflect.Value) {
	if isNull(r) {
		v.Set(reflect.MakeSlice(v.Type(), 0, 0))
		return
	}
	if r.Kind != yaml.SequenceNode {
		hint := ""
		if r.Kind == yaml.ScalarNode && v.Type().Elem().Kind() == reflect.String {
			hint = " (a list of one is written [" + r.Value + "])"
		}
		d.errf(path, "expected a list, found %s%s", describe(r), hint)
		return
	}
	s := reflect.MakeSlice(v.Type(), len(r.Content), len(r.Content))
	for i, e := range r.Content {
		d.decode(index(path, i), nil, e, s.Index(i))
	}
	v.Set(s)
}

// mapping decodes a section; it returns false if the value is not one.
func (d *decoder) mapping(path string, r *yaml.Node, v reflect.Value) bool {
	if isNull(r) {
		return true
	}
	if r.Kind != yaml.MappingNode {
		if path == "" {
			d.addLine(r.Line, "expected a mapping of keys at the top level (milter:, sms_domains:, ...), found %s", describe(r))
			return false
		}
		d.errf(path, "expected a mapping of keys, found %s", describe(r))
		return false
	}
	fields := fieldsOf(v.Type())
	for _, p := range d.pairs(path, r) {
		name := p.key.Value
		i, ok := fields[name]
		if !ok {
			d.unknownKey(path, p.key, v.Type())
			continue
		}
		d.decode(join(path, name), p.key, p.val, v.Field(i))
	}
	return true
}

// named decodes a mapping of user-chosen names (transports).
func (d *decoder) named(path string, r *yaml.Node, v reflect.Value) {
	if isNull(r) {
		return
	}
	if r.Kind != yaml.MappingNode {
		d.errf(path, "expected a mapping of names, found %s", describe(r))
		return
	}
	m := reflect.MakeMap(v.Type())
	for _, p := range d.pairs(path, r) {
		e := reflect.New(v.Type().Elem()).Elem()
		d.decode(join(path, p.key.Value), p.key, p.val, e)
		m.SetMapIndex(reflect.ValueOf(p.key.Value), e)
	}
	v.Set(m)
}

// fieldsOf maps yaml key names to field indexes.
func fieldsOf(t reflect.Type) map[string]int {
	m := make(map[string]int, t.NumField())
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if name != "" && name != "-" {
			m[name] = i
		}
	}
	return m
}

func keysOf(t reflect.Type) []string {
	var ks []string
	for k := range fieldsOf(t) {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func (d *decoder) unknownKey(path string, k *yaml.Node, t reflect.Type) {
	where := ""
	if path != "" {
		where = " in " + path
	}
	hint := ""
	if s := closest(k.Value, keysOf(t)); s != "" {
		hint = fmt.Sprintf(" (did you mean %q?)", s)
	} else if homes := homesOf(k.Value); len(homes) > 0 && len(homes) <= 3 {
		hint = fmt.Sprintf(" (it belongs under %s: check the indentation)", strings.Join(homes, " or "))
		if len(homes) == 1 && homes[0] == "the top level" {
			hint = " (it is a top-level key: check the indentation)"
		}
	}
	d.addLine(k.Line, "unknown key %s%s%s", quote(k.Value), where, hint)
}

// homesOf lists the sections of the file where a key name is valid, for
// keys that ended up at the wrong indentation level.
func homesOf(name string) []string {
	var homes []string
	var walk func(t reflect.Type, at string)
	walk = func(t reflect.Type, at string) {
		for _, k := range keysOf(t) {
			f := t.Field(fieldsOf(t)[k])
			if k == name {
				if at == "" {
					homes = append(homes, "the top level")
				} else {
					homes = append(homes, at)
				}
			}
			ft := f.Type
			sub := join(at, k)
			switch {
			case ft.Kind() == reflect.Struct && ft != durationType:
				walk(ft, sub)
			case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
				walk(ft.Elem(), sub+"[N]")
			case ft.Kind() == reflect.Map && ft != settingsType:
				walk(ft.Elem(), sub+".NAME")
			}
		}
	}
	walk(reflect.TypeFor[Config](), "")
	return homes
}

// closest returns the candidate a misspelt name most likely meant, or "" if
// none is close enough to be worth suggesting.
func closest(name string, candidates []string) string {
	best, bestD := "", 3
	for _, c := range candidates {
		dist := editDistance(strings.ToLower(name), c)
		limit := 2
		if len(c) <= 4 {
			limit = 1
		}
		if dist <= limit && dist < bestD {
			best, bestD = c, dist
		}
	}
	return best
}

// editDistance is the optimal string alignment distance: Levenshtein plus
// transposition of neighbours, the commonest typo ("tiemout").
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	if len(ra) > 64 || len(rb) > 64 {
		return 1 << 30 // long keys are never typos of ours; keep this cheap
	}
	d := make([][]int, len(ra)+1)
	for i := range d {
		d[i] = make([]int, len(rb)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(ra); i++ {
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(ra)][len(rb)]
}
