package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"regexp/syntax"
	"slices"
	"sort"
	"strings"
	"time"
)

// validate checks the meaning of every decoded value and fills in the
// defaults that depend on other keys (per-transport tps, the default
// route). Values the decoder already refused keep their defaults here, so
// a bad value is reported once, not again as a knock-on problem.
func (d *decoder) validate(c *Config) {
	d.checkMilter(c)
	d.checkGeneral(c)
	d.checkNumbers(c)
	d.checkSMS(c)
	d.checkMail(c)
	d.checkTransports(c)
	d.checkRoutes(c)
	d.checkReplies(c)
	d.checkPOP3(c)
	d.checkListenClashes(c)
}

func (d *decoder) checkMilter(c *Config) {
	m := &c.Milter
	if m.Listen == "" {
		d.errf("milter.listen", "is empty: the milter needs an address (remove the key for inet:127.0.0.1:8890)")
	} else if _, _, err := ParseListen(m.Listen); err != nil {
		d.errf("milter.listen", "%v", err)
	}
	if m.MaxMessageSize <= 0 {
		d.errf("milter.max_message_size", "must be more than 0")
	}
	d.positiveDuration("milter.timeout", m.Timeout)
	d.positiveDuration("milter.idle_timeout", m.IdleTimeout)
	if m.IdleTimeout > 0 && m.Timeout > 0 && m.IdleTimeout < m.Timeout && d.present("milter.idle_timeout") {
		d.errf("milter.idle_timeout", "%s is less than milter.timeout (%s): the wait between commands is at least one step", shortDuration(m.IdleTimeout), shortDuration(m.Timeout))
	}
	d.positiveInt("milter.max_connections", m.MaxConnections)
}

func (d *decoder) checkRetention(c *Config) {
	if !d.present("retention") {
		return
	}
	switch {
	case c.Retention < 48*time.Hour:
		d.errf("retention", "%s is too short: at least 48h (the daily quota counts a day of SMS)", shortDuration(c.Retention))
	case c.Retention < c.SMS.DedupeWindow:
		d.errf("retention", "%s is shorter than sms.dedupe_window (%s)", shortDuration(c.Retention), shortDuration(c.SMS.DedupeWindow))
	}
}

func (d *decoder) checkGeneral(c *Config) {
	d.checkRetention(c)
	d.listenHostPort("http.listen", c.HTTP.Listen, "127.0.0.1:8891")
	d.enum("log.format", c.Log.Format, "text", "json")
	d.enum("log.level", c.Log.Level, "debug", "info", "warn", "error")

	switch {
	case d.failed["sms_domains"]:
	case len(c.SMSDomains) == 0 && d.present("sms_domains"):
		d.errf("sms_domains", "is empty: list the mail domains whose addresses are phone numbers, e.g. [sms.example.com]")
	case len(c.SMSDomains) == 0:
		d.errf("sms_domains", "is required: the mail domains whose addresses are phone numbers, e.g. [sms.example.com]")
	}
	seen := make(map[string]int)
	for i, dom := range c.SMSDomains {
		p := index("sms_domains", i)
		norm, err := checkDomain(dom)
		if err != nil {
			d.errf(p, "%s %v", quote(dom), err)
			continue
		}
		if j, ok := seen[norm]; ok {
			d.errf(p, "%s is already listed at sms_domains[%d]", quote(dom), j)
		}
		seen[norm] = i
		c.SMSDomains[i] = norm
	}

	switch lp := c.VerdictLocalPart; {
	case lp == "":
		d.errf("verdict_local_part", "is empty (remove the key for the default, verdict)")
	case allDigits(strings.TrimPrefix(lp, "+")):
		d.errf("verdict_local_part", "%s looks like a phone number", quote(lp))
	case !validLocalPart(lp):
		d.errf("verdict_local_part", "%s is not a plain local part (letters, digits, ., _ and -)", quote(lp))
	}
	if c.StateDir == "" {
		d.errf("state_dir", "is empty (remove the key for /var/lib/smsmilter)")
	}
	if c.DNS.Resolver != "" {
		d.hostPort("dns.resolver", c.DNS.Resolver, "127.0.0.1:53")
	}
	d.positiveDuration("dns.timeout", c.DNS.Timeout)
	for i, id := range c.Auth.TrustedAuthservIDs {
		if id == "" || strings.ContainsAny(id, " \t;/()\"") {
			d.errf(index("auth.trusted_authserv_ids", i), "%s is not an authserv-id: write the name alone (e.g. mx.example.com), the /QUEUEID part is matched by smsmilter", quote(id))
		}
	}
}

func validLocalPart(s string) bool {
	if s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func (d *decoder) checkNumbers(c *Config) {
	n := &c.Numbers
	if n.DefaultRegion != "" {
		r, err := checkRegion(n.DefaultRegion)
		if err != nil {
			d.errf("numbers.default_region", "%s %v", quote(n.DefaultRegion), err)
		} else {
			n.DefaultRegion = r
		}
	}
	seen := make(map[string]bool)
	for i, reg := range n.AllowedRegions {
		p := index("numbers.allowed_regions", i)
		r, err := checkRegion(reg)
		if err != nil {
			d.errf(p, "%s %v", quote(reg), err)
			continue
		}
		if seen[r] {
			d.errf(p, "%s is listed twice", quote(reg))
		}
		seen[r] = true
		n.AllowedRegions[i] = r
	}
}

func (d *decoder) checkSMS(c *Config) {
	s := &c.SMS
	// Concatenated SMS number their parts in one byte.
	if d.positiveInt("sms.max_parts", s.MaxParts) && s.MaxParts > 255 {
		d.errf("sms.max_parts", "%d is more than 255, the most parts a concatenated SMS can have", s.MaxParts)
	}
	d.enum("sms.overflow", s.Overflow, "reject", "truncate")
	d.positiveInt("sms.max_recipients", s.MaxRecipients)
	d.positiveDuration("sms.max_age", s.MaxAge)

	for i, pat := range c.Body.StripPatterns {
		p := index("body.strip_patterns", i)
		if pat == "" {
			d.errf(p, "an empty pattern matches every line (and would strip every SMS to nothing)")
			continue
		}
		if _, err := regexp.Compile(pat); err != nil {
			var se *syntax.Error
			if errors.As(err, &se) {
				err = errors.New(se.Code.String())
			}
			d.errf(p, "%s is not a valid regular expression: %v", quote(pat), err)
		}
	}
}

func (d *decoder) checkMail(c *Config) {
	if c.Mail.SMTP == "" {
		d.errf("mail.smtp", "is empty (remove the key for 127.0.0.1:25)")
	} else {
		d.hostPort("mail.smtp", c.Mail.SMTP, "127.0.0.1:25")
	}
	if c.Mail.From == "" {
		d.errf("mail.from", "is empty (remove the key for smsmilter@<this host's name>)")
	} else {
		d.email("mail.from", c.Mail.From)
	}
	if c.Notify.Admin != "" {
		d.email("notify.admin", c.Notify.Admin)
	}
}

// Built-in transport plugins, run by re-executing smsmilter itself.
const (
	pluginSMPP   = "smpp"
	pluginModem  = "modem"
	pluginOutbox = "outbox"
)

// IsBuiltin reports whether the transport runs a plugin compiled into
// smsmilter (smpp, modem, outbox) rather than a program at a path.
func (t Transport) IsBuiltin() bool {
	switch t.Plugin {
	case pluginSMPP, pluginModem, pluginOutbox:
		return true
	}
	return false
}

// Window is how many SMS the transport may have submitted and not yet
// reported on (an SMPP link's window); 0 when the transport has no such
// limit. The dispatcher keeps no more Sends than that outstanding, so a
// crashed plugin can have sent at most that many SMS it could not report
// (DESIGN.md §13: at most the window are sent again).
func (t Transport) Window() int {
	if t.Plugin != pluginSMPP {
		return 0
	}
	switch w := t.Settings["window"].(type) {
	case int:
		return w
	case int64:
		return int(w)
	case float64:
		return int(w)
	}
	return 10
}

func (d *decoder) checkTransports(c *Config) {
	for _, name := range transportNames(c) {
		t := c.Transports[name]
		p := join("transports", name)
		if !validTransportName(name) {
			d.errAt(p, "transports", "%s is not a valid transport name (lower-case letters, digits, _ and -)", quote(name))
		}
		d.checkPlugin(join(p, "plugin"), t.Plugin)
		if !d.ok(join(p, "tps")) {
			t.TPS = 10
		} else if t.TPS <= 0 {
			d.errf(join(p, "tps"), "must be more than 0 (SMS per second)")
		}
		d.checkSettings(p, &t)
		c.Transports[name] = t
	}
}

func transportNames(c *Config) []string {
	names := make([]string, 0, len(c.Transports))
	for n := range c.Transports {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func validTransportName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func (d *decoder) checkPlugin(path, plugin string) {
	switch {
	case plugin == "":
		d.errf(path, "is required: smpp, modem, outbox or the absolute path of a plugin program")
		return
	case Transport{Plugin: plugin}.IsBuiltin():
		return
	case plugin == "pop3":
		d.errf(path, "pop3 is not a transport: the POP3 plugin is set up under pop3: and chosen with replies.deliver")
		return
	case !filepath.IsAbs(plugin):
		hint := ""
		if s := closest(plugin, []string{pluginModem, pluginOutbox, pluginSMPP}); s != "" {
			hint = fmt.Sprintf(" (did you mean %s?)", s)
		}
		d.errf(path, "%s is not smpp, modem, outbox or an absolute path to a plugin program%s", quote(plugin), hint)
		return
	}
	fi, err := os.Stat(plugin)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		d.errf(path, "%s: no such file", plugin)
	case err != nil:
		d.errf(path, "%s: %v", plugin, errors.Unwrap(err))
	case fi.IsDir():
		d.errf(path, "%s is a directory, not a plugin program", plugin)
	case !fi.Mode().IsRegular():
		d.errf(path, "%s is not a regular file", plugin)
	case fi.Mode().Perm()&0o111 == 0:
		d.errf(path, "%s is not executable (chmod +x it)", plugin)
	}
}

func (d *decoder) checkRoutes(c *Config) {
	if len(c.Routes) > 0 && len(c.Transports) == 0 {
		d.errf("routes", "no transports are configured to route to (add one under transports:)")
	}
	for i, r := range c.Routes {
		p := index("routes", i)
		prefixOK := r.Prefix == ""
		if !prefixOK {
			if err := checkPlusDigits(r.Prefix); err != nil {
				d.errf(join(p, "prefix"), "%s %v", quote(r.Prefix), err)
			} else {
				prefixOK = true
			}
		}
		if j := shadowedBy(c.Routes[:i], r.Prefix); prefixOK && j >= 0 {
			if c.Routes[j].Prefix == "" {
				d.errf(p, "is never used: routes[%d] comes first and, having no prefix, matches every number", j)
			} else {
				d.errf(p, "is never used: routes[%d] (prefix %s) comes first and matches every number this one would", j, quote(c.Routes[j].Prefix))
			}
		}
		if len(r.Transports) == 0 {
			d.errf(join(p, "transports"), "is required: the transports to try in order, e.g. [smsc1]")
		}
		for k, t := range r.Transports {
			tp := index(join(p, "transports"), k)
			if _, ok := c.Transports[t]; !ok && len(c.Transports) > 0 {
				d.errAt(tp, p, "unknown transport %s%s", quote(t), suggest(t, transportNames(c)))
			}
			if slices.Index(r.Transports, t) < k {
				d.errAt(tp, p, "transport %s is listed twice", quote(t))
			}
		}
	}
	// No routes: every number goes to every transport, tried in name order.
	if len(c.Routes) == 0 && len(c.Transports) > 0 {
		c.Routes = []Route{{Transports: transportNames(c)}}
	}
}

// shadowedBy returns the index of an earlier route that matches every
// number a route with prefix would (first match wins), or -1.
func shadowedBy(earlier []Route, prefix string) int {
	for j, e := range earlier {
		if (e.Prefix == "" || checkPlusDigits(e.Prefix) == nil) && strings.HasPrefix(prefix, e.Prefix) {
			return j
		}
	}
	return -1
}

func suggest(name string, candidates []string) string {
	if s := closest(name, candidates); s != "" {
		return fmt.Sprintf(" (did you mean %q?)", s)
	}
	return ""
}

func (d *decoder) checkReplies(c *Config) {
	r := &c.Replies
	d.positiveDuration("replies.autoclip_ttl", r.AutoCLIPTTL)
	d.enum("replies.receipts", r.Receipts, "failed", "all", "none")
	if len(r.Deliver) == 0 {
		d.errf("replies.deliver", "is empty: replies need email, pop3 or both")
	}
	for i, v := range r.Deliver {
		p := index("replies.deliver", i)
		if !d.enum(p, v, "email", "pop3") {
			continue
		}
		if slices.Index(r.Deliver, v) < i {
			d.errf(p, "%s is listed twice", quote(v))
		}
		if v == "pop3" && !c.POP3.Enabled {
			d.errf(p, "pop3 needs the POP3 plugin: set pop3.enabled: true")
		}
	}
	for i, rule := range r.Rules {
		p := index("replies.rules", i)
		if rule.Transport != "" {
			if _, ok := c.Transports[rule.Transport]; !ok {
				d.errf(join(p, "transport"), "unknown transport %s%s", quote(rule.Transport), suggest(rule.Transport, transportNames(c)))
			}
		}
		if rule.FromPrefix != "" {
			if err := checkPlusDigits(rule.FromPrefix); err != nil {
				d.errf(join(p, "from_prefix"), "%s %v", quote(rule.FromPrefix), err)
			}
		}
		switch rule.Action {
		case "":
			d.errf(join(p, "action"), "is required: autoclip, deliver or drop")
		case "deliver":
			if rule.To == "" {
				d.errf(join(p, "to"), "is required for action deliver: the address replies go to")
			}
		case "drop":
			if rule.To != "" {
				d.errf(join(p, "to"), "is not used by action drop (remove it, or use deliver)")
			}
		default:
			d.enum(join(p, "action"), rule.Action, "autoclip", "deliver", "drop")
		}
		if rule.To != "" {
			d.email(join(p, "to"), rule.To)
		}
	}
}

func (d *decoder) checkPOP3(c *Config) {
	p := &c.POP3
	d.listenHostPort("pop3.listen", p.Listen, "127.0.0.1:1110")
	d.listenHostPort("pop3.tls_listen", p.TLSListen, ":995")
	if p.Enabled && p.Listen == "" && p.TLSListen == "" {
		d.errf("pop3", "is enabled but neither listen nor tls_listen is set")
	}
	switch {
	case p.TLSCert != "" && p.TLSKey == "":
		d.errf("pop3.tls_key", "is required with tls_cert")
	case p.TLSKey != "" && p.TLSCert == "":
		d.errf("pop3.tls_cert", "is required with tls_key")
	case p.TLSListen != "" && p.TLSCert == "":
		d.errf("pop3.tls_listen", "needs tls_cert and tls_key")
	}
	d.existingFile("pop3.tls_cert", p.TLSCert)
	d.existingFile("pop3.tls_key", p.TLSKey)
}

// checkListenClashes catches two listeners on one TCP address, which would
// otherwise surface only as "address already in use" at start.
func (d *decoder) checkListenClashes(c *Config) {
	addrs := make(map[string]string)
	claim := func(key, addr string) {
		if addr == "" || strings.HasSuffix(addr, ":0") {
			return
		}
		first, ok := addrs[addr]
		switch {
		case !ok:
			addrs[addr] = key
		case d.present(key):
			d.errf(key, "%s is already used by %s", quote(addr), first)
		default:
			// Report on the line the admin wrote, not on a default.
			d.errf(first, "%s is also where %s listens by default (set %s to another address)", quote(addr), key, key)
		}
	}
	if network, addr, err := ParseListen(c.Milter.Listen); err == nil && network == "tcp" {
		claim("milter.listen", addr)
	}
	claim("http.listen", c.HTTP.Listen)
	if c.POP3.Enabled {
		claim("pop3.listen", c.POP3.Listen)
		claim("pop3.tls_listen", c.POP3.TLSListen)
	}
}

func (d *decoder) existingFile(path, file string) {
	if file == "" {
		return
	}
	fi, err := os.Stat(file)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		d.errf(path, "%s: no such file", file)
	case err != nil:
		d.errf(path, "%s: %v", file, errors.Unwrap(err))
	case !fi.Mode().IsRegular():
		d.errf(path, "%s is not a regular file", file)
	}
}

// The helpers below return whether the value was fine, so that callers can
// skip checks that only make sense for a valid value.

func (d *decoder) enum(path, v string, options ...string) bool {
	if slices.Contains(options, v) {
		return true
	}
	d.errf(path, "%s is not one of %s%s", quote(v), strings.Join(options, ", "), suggest(v, options))
	return false
}

func (d *decoder) positiveInt(path string, v int) bool {
	if v > 0 {
		return true
	}
	if d.present(path) {
		d.errf(path, "must be more than 0")
	}
	return false
}

func (d *decoder) positiveDuration(path string, v time.Duration) {
	if v <= 0 && d.present(path) {
		d.errf(path, "must be more than 0 (e.g. 30s, 5m)")
	}
}

func (d *decoder) hostPort(path, v, example string) {
	if err := checkHostPort(v, false, example); err != nil {
		d.errf(path, "%s: %v", quote(v), err)
	}
}

// listenHostPort checks an optional HOST:PORT listen address; empty turns
// the listener off.
func (d *decoder) listenHostPort(path, v, example string) {
	if v == "" {
		return
	}
	if err := checkHostPort(v, true, example); err != nil {
		d.errf(path, "%s: %v", quote(v), err)
	}
}

func (d *decoder) email(path, v string) {
	if err := checkEmail(v); err != nil {
		d.errf(path, "%s %v", quote(v), err)
	}
}

// shortDuration writes 24h rather than Go's 24h0m0s, as an admin writes it.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
