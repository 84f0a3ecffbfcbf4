package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Load reads and validates the configuration file at path. Problems with
// the file's content come back as *Errors naming path as the file; a file
// that cannot be read at all is a plain error wrapping the os error (so
// errors.Is(err, fs.ErrNotExist) works).
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data)
}

// Parse validates the YAML in data as a configuration file called name
// (used as FILE in FILE:LINE: message). On any problem it returns a nil
// Config and an *Errors listing every problem found, in line order.
//
// Parse reads the file system only to check that files the configuration
// names exist (plugin programs, TLS certificate and key).
func Parse(name string, data []byte) (*Config, error) {
	d := newDecoder(name)
	cfg := Defaults()
	cfg.Path = name
	if root := d.parseYAML(data); root != nil {
		// The root is decoded without recording a location so that problems
		// about the file as a whole (a missing sms_domains) land on line 1.
		if d.mapping("", resolve(root), reflect.ValueOf(cfg).Elem()) {
			d.validate(cfg)
		}
	}
	if len(d.probs) == 0 {
		return cfg, nil
	}
	sortProblems(d.probs)
	return nil, &Errors{Problems: dedupe(d.probs)}
}

// dedupe drops repeated problems: a value reached through several YAML
// aliases would otherwise be reported once per alias.
func dedupe(ps []Problem) []Problem {
	type key struct {
		line int
		msg  string
	}
	seen := make(map[key]bool, len(ps))
	out := ps[:0]
	for _, p := range ps {
		k := key{p.Line, p.Msg}
		if !seen[k] {
			seen[k] = true
			out = append(out, p)
		}
	}
	return out
}

// Defaults returns the configuration of DESIGN.md §9 with every default
// filled in and nothing else: no sms_domains (which Parse requires), no
// transports.
func Defaults() *Config {
	return &Config{
		Milter: Milter{
			Listen:         "inet:127.0.0.1:8890",
			MaxMessageSize: 1 * mib,
			Timeout:        30 * time.Second,
			MaxConnections: 500,
			DrainTimeout:   25 * time.Second,
			IdleTimeout:    10 * time.Minute,
		},
		HTTP:             HTTP{Listen: "127.0.0.1:8891"},
		Log:              Log{Format: "text", Level: "info"},
		VerdictLocalPart: "verdict",
		StateDir:         "/var/lib/smsmilter",
		Retention:        720 * time.Hour,
		DNS:              DNS{Timeout: 5 * time.Second},
		SMS: SMS{
			MaxParts:      4,
			Overflow:      "reject",
			MaxRecipients: 50,
			DedupeWindow:  10 * time.Minute,
			MaxAge:        24 * time.Hour,
		},
		Mail: Mail{SMTP: "127.0.0.1:25", From: "smsmilter@" + hostname()},
		Replies: Replies{
			AutoCLIPTTL: 168 * time.Hour,
			Receipts:    "failed",
			Deliver:     []string{"email"},
		},
		POP3: POP3{Listen: "127.0.0.1:1110"},
	}
}

// hostname is the domain for the default mail.from. A host whose name is
// not usable in an address (unset, or with characters a domain cannot
// have) falls back to localhost rather than making every config invalid.
func hostname() string {
	h, err := os.Hostname()
	if err != nil {
		return "localhost"
	}
	d, err := checkDomain(h)
	if err != nil {
		return "localhost"
	}
	return d
}

// ListenChanged lists the keys whose new value needs a restart, because
// their sockets are opened once at start: milter.listen, http.listen,
// pop3.listen and pop3.tls_listen (a POP3 listener counts as changed when
// pop3.enabled is switched). A reload applies everything else.
func (c *Config) ListenChanged(old *Config) []string {
	if old == nil {
		return nil
	}
	pop3 := func(cfg *Config, addr string) string {
		if !cfg.POP3.Enabled {
			return ""
		}
		return addr
	}
	var keys []string
	for _, k := range []struct {
		key      string
		new, old string
	}{
		{"milter.listen", c.Milter.Listen, old.Milter.Listen},
		{"http.listen", c.HTTP.Listen, old.HTTP.Listen},
		{"pop3.listen", pop3(c, c.POP3.Listen), pop3(old, old.POP3.Listen)},
		{"pop3.tls_listen", pop3(c, c.POP3.TLSListen), pop3(old, old.POP3.TLSListen)},
	} {
		if k.new != k.old {
			keys = append(keys, k.key)
		}
	}
	return keys
}

// parseYAML returns the root node of the single document in data, or nil
// after reporting why there is none.
func (d *decoder) parseYAML(data []byte) *yaml.Node {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			d.addLine(1, "the file is empty: at least sms_domains is needed")
		} else {
			d.syntax(data, err)
		}
		return nil
	}
	if len(doc.Content) == 0 || isNull(resolve(doc.Content[0])) {
		d.addLine(1, "the file is empty: at least sms_domains is needed")
		return nil
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
	case err != nil:
		d.syntax(data, err)
		return nil
	case len(extra.Content) > 0 && !isNull(resolve(extra.Content[0])):
		d.addLine(extra.Line, "a second YAML document (after ---): the configuration is a single document")
	}
	return doc.Content[0]
}

// syntax reports a YAML syntax error. yaml.v3 names a line only sometimes
// (and for some errors the line where the enclosing block began); the two
// errors admins hit most, a tab in the indentation and an undefined
// *alias, are located here from the text instead.
func (d *decoder) syntax(data []byte, err error) {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 1
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if n, m, ok := strings.Cut(rest, ": "); ok {
			if l, err := strconv.Atoi(n); err == nil {
				line, msg = l, m
				// yaml.v3 adds 1 to the 0-based line for scanner errors
				// but not for parser errors.
				if parserError(msg) {
					line++
				}
			}
		}
	}
	if tab := firstTabIndent(data, line); tab > 0 &&
		(strings.Contains(msg, "tab character") || strings.Contains(msg, "cannot start any token") && tab == line) {
		d.addLine(tab, "a tab in the indentation: YAML indents with spaces only")
		return
	}
	if name, ok := strings.CutPrefix(msg, "unknown anchor '"); ok {
		name, _, _ = strings.Cut(name, "'")
		if i := bytes.Index(data, []byte("*"+name)); i >= 0 {
			line = bytes.Count(data[:i], []byte("\n")) + 1
		}
		d.addLine(line, "*%s refers to an anchor &%s that is not defined before it", name, name)
		return
	}
	hint := ""
	switch msg {
	case "mapping values are not allowed in this context":
		hint = " (a value containing \": \" must be quoted)"
	case "found character that cannot start any token":
		hint = " (a value starting with @, ` or % must be quoted)"
	}
	d.addLine(line, "YAML syntax error: %s%s", msg, hint)
}

// parserError reports whether msg is one of the errors of yaml.v3's
// parser (parserc.go), as opposed to its scanner.
func parserError(msg string) bool {
	switch msg {
	case "did not find expected ',' or ']'", "did not find expected ',' or '}'",
		"did not find expected '-' indicator", "did not find expected <document start>",
		"did not find expected <stream-start>", "did not find expected key",
		"did not find expected node content", "found duplicate %TAG directive",
		"found duplicate %YAML directive", "found incompatible YAML document",
		"found undefined tag handle":
		return true
	}
	return false
}

// firstTabIndent returns the 1-based number of the first line from line
// 'from' on whose indentation contains a tab, or 0.
func firstTabIndent(data []byte, from int) int {
	for i, l := range bytes.Split(data, []byte("\n")) {
		if i+1 < from {
			continue
		}
		for _, c := range l {
			if c == '\t' {
				return i + 1
			}
			if c != ' ' {
				break
			}
		}
	}
	return 0
}
