package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func mustParse(t *testing.T, src string) *Config {
	t.Helper()
	c, err := Parse("test.yaml", []byte(src))
	if err != nil {
		t.Fatalf("Parse:\n%s\nerror:\n%v", src, err)
	}
	return c
}

func TestDefaults(t *testing.T) {
	c := mustParse(t, "sms_domains: [sms.example.com]\n")
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	want := &Config{
		Path: "test.yaml",
		Milter: Milter{
			Listen:         "inet:127.0.0.1:8890",
			MaxMessageSize: 1 << 20,
			Timeout:        30 * time.Second,
			MaxConnections: 500,
			DrainTimeout:   25 * time.Second,
			IdleTimeout:    10 * time.Minute,
		},
		HTTP:             HTTP{Listen: "127.0.0.1:8891"},
		Log:              Log{Format: "text", Level: "info"},
		SMSDomains:       []string{"sms.example.com"},
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
		Mail:    Mail{SMTP: "127.0.0.1:25", From: "smsmilter@" + strings.ToLower(host)},
		Replies: Replies{AutoCLIPTTL: 168 * time.Hour, Receipts: "failed", Deliver: []string{"email"}},
		POP3:    POP3{Listen: "127.0.0.1:1110"},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("defaults:\n got %+v\nwant %+v", c, want)
	}
	// Defaults alone differs only in what Parse requires.
	d := Defaults()
	d.Path, d.SMSDomains = "test.yaml", []string{"sms.example.com"}
	if !reflect.DeepEqual(d, want) {
		t.Errorf("Defaults() = %+v", d)
	}
}

// TestAbsentVersusEmpty checks the keys where writing an empty value means
// something else than leaving the key out.
func TestAbsentVersusEmpty(t *testing.T) {
	for _, tc := range []struct {
		src   string
		check func(*Config) bool
	}{
		{`http: {listen: ""}`, func(c *Config) bool { return c.HTTP.Listen == "" }},
		{"http:\n  listen:\n", func(c *Config) bool { return c.HTTP.Listen == "" }},
		{"http: {}", func(c *Config) bool { return c.HTTP.Listen == "127.0.0.1:8891" }},
		{"http:", func(c *Config) bool { return c.HTTP.Listen == "127.0.0.1:8891" }},
		{"sms: {dedupe_window: 0}", func(c *Config) bool { return c.SMS.DedupeWindow == 0 }},
		{"sms: {dedupe_window: 0s}", func(c *Config) bool { return c.SMS.DedupeWindow == 0 }},
		{"sms: {max_parts: 2}", func(c *Config) bool { return c.SMS.DedupeWindow == 10*time.Minute }},
		{"milter: {drain_timeout: 0s}", func(c *Config) bool { return c.Milter.DrainTimeout == 0 }},
		{"pop3: {listen: \"\"}", func(c *Config) bool { return c.POP3.Listen == "" }},
		{"routes: []\ntransports: {o: {plugin: outbox, settings: {path: o}}}",
			func(c *Config) bool { return len(c.Routes) == 1 && c.Routes[0].Transports[0] == "o" }},
	} {
		src := "sms_domains: [sms.example.com]\n" + tc.src + "\n"
		c, err := Parse("test.yaml", []byte(src))
		if err != nil {
			t.Errorf("%q: %v", tc.src, err)
			continue
		}
		if !tc.check(c) {
			t.Errorf("%q: got %+v", tc.src, c)
		}
	}
}

// executable makes a file that passes the plugin path check.
func executable(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "smsmilter-plugin-acme")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestValid(t *testing.T) {
	plugin := executable(t)
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for _, f := range []string{cert, key} {
		if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name  string
		src   string
		check func(t *testing.T, c *Config)
	}{
		{"normalised", `
sms_domains: [SMS.Example.COM, "sms2.example.com."]
numbers: {default_region: jp, allowed_regions: [jp, Gb]}
`, func(t *testing.T, c *Config) {
			if !reflect.DeepEqual(c.SMSDomains, []string{"sms.example.com", "sms2.example.com"}) {
				t.Errorf("sms_domains = %q", c.SMSDomains)
			}
			if c.Numbers.DefaultRegion != "JP" || !reflect.DeepEqual(c.Numbers.AllowedRegions, []string{"JP", "GB"}) {
				t.Errorf("numbers = %+v", c.Numbers)
			}
		}},
		{"international domain", "sms_domains: [sms.bücher.example]\n", func(t *testing.T, c *Config) {
			if c.SMSDomains[0] != "sms.xn--bcher-kva.example" {
				t.Errorf("sms_domains = %q", c.SMSDomains)
			}
		}},
		{"values", `
milter:
  listen: unix:/run/smsmilter/milter.sock
  max_message_size: 512KiB
  timeout: 1m30s
  max_connections: 20
http: {listen: "[::1]:9000"}
log: {format: json, level: debug}
sms_domains: [sms.example.com]
verdict_local_part: check-me
state_dir: ./var
dns: {resolver: "127.0.0.1:5353", timeout: 2s}
auth: {trusted_authserv_ids: [mx.example.com], upstream_strips_forged: true}
sms: {max_parts: 1, overflow: truncate, max_recipients: 5, max_age: 1h}
body: {include_subject: true, strip_patterns: ['^CONFIDENTIAL', '(?i)sent from my \w+']}
mail: {smtp: "mail.example.com:587", from: sms@example.com}
notify: {admin: postmaster@example.com}
`, func(t *testing.T, c *Config) {
			m := c.Milter
			if m.Listen != "unix:/run/smsmilter/milter.sock" || m.MaxMessageSize != 512<<10 || m.Timeout != 90*time.Second || m.MaxConnections != 20 || m.DrainTimeout != 25*time.Second {
				t.Errorf("milter = %+v", m)
			}
			if c.HTTP.Listen != "[::1]:9000" || c.Log.Format != "json" || c.StateDir != "./var" || c.DNS.Resolver != "127.0.0.1:5353" || c.DNS.Timeout != 2*time.Second {
				t.Errorf("config = %+v", c)
			}
			if !c.Auth.UpstreamStripsForged || c.SMS.Overflow != "truncate" || !c.Body.IncludeSubject || len(c.Body.StripPatterns) != 2 {
				t.Errorf("config = %+v", c)
			}
			if c.Mail.From != "sms@example.com" || c.Notify.Admin != "postmaster@example.com" {
				t.Errorf("mail = %+v notify = %+v", c.Mail, c.Notify)
			}
		}},
		{"sizes", "milter: {max_message_size: 10MB}\nsms_domains: [a.example]\n", func(t *testing.T, c *Config) {
			if c.Milter.MaxMessageSize != 10_000_000 {
				t.Errorf("size = %d", c.Milter.MaxMessageSize)
			}
		}},
		{"default route in name order", `
sms_domains: [sms.example.com]
transports:
  zz: {plugin: outbox, settings: {path: ./var/z.jsonl}}
  aa: {plugin: outbox, tps: 0.5, settings: {path: ./var/a.jsonl}}
`, func(t *testing.T, c *Config) {
			if want := []Route{{Transports: []string{"aa", "zz"}}}; !reflect.DeepEqual(c.Routes, want) {
				t.Errorf("routes = %+v, want %+v", c.Routes, want)
			}
			if c.Transports["zz"].TPS != 10 || c.Transports["aa"].TPS != 0.5 {
				t.Errorf("tps = %v, %v", c.Transports["zz"].TPS, c.Transports["aa"].TPS)
			}
		}},
		{"built-in settings typed, defaults filled", `
sms_domains: [sms.example.com]
transports:
  smsc:
    plugin: smpp
    settings:
      address: smsc.example.net:2775
      system_id: acme
      password: 0123
      enquire_link: 30s
      registered_delivery: true
  gsm:
    plugin: modem
    settings: {device: /dev/ttyUSB0, baud: 115200, pin: 0042, smsc: +447785016005}
  out:
    plugin: outbox
    settings: {path: ./var/outbox.jsonl, inbox: ./var/inbox.jsonl}
  none:
    plugin: outbox
    settings: {path: out.jsonl}
routes:
  - {prefix: +44, transports: [gsm, smsc]}
  - {transports: [smsc]}
`, func(t *testing.T, c *Config) {
			want := map[string]map[string]any{
				"smsc": {"address": "smsc.example.net:2775", "system_id": "acme", "password": "0123",
					"enquire_link": "30s", "registered_delivery": true, "window": 10, "bind": "transceiver"},
				"gsm":  {"device": "/dev/ttyUSB0", "baud": 115200, "pin": "0042", "smsc": "+447785016005"},
				"out":  {"path": "./var/outbox.jsonl", "inbox": "./var/inbox.jsonl"},
				"none": {"path": "out.jsonl"},
			}
			for name, w := range want {
				if got := c.Transports[name].Settings; !reflect.DeepEqual(got, w) {
					t.Errorf("%s settings = %#v, want %#v", name, got, w)
				}
			}
			if c.Routes[0].Prefix != "+44" {
				t.Errorf("routes = %+v", c.Routes)
			}
		}},
		{"third-party plugin settings as written", `
sms_domains: [sms.example.com]
transports:
  acme:
    plugin: ` + plugin + `
    settings:
      api_key: "k"
      retries: 3
      ratio: 0.5
      regions: [GB, JP]
      nested: {a: {b: null}}
  empty:
    plugin: ` + plugin + `
`, func(t *testing.T, c *Config) {
			want := map[string]any{"api_key": "k", "retries": 3, "ratio": 0.5, "regions": []any{"GB", "JP"},
				"nested": map[string]any{"a": map[string]any{"b": nil}}}
			if got := c.Transports["acme"].Settings; !reflect.DeepEqual(got, want) {
				t.Errorf("settings = %#v", got)
			}
			if s := c.Transports["empty"].Settings; s == nil || len(s) != 0 {
				t.Errorf("empty settings = %#v, want an empty map", s)
			}
		}},
		{"anchors and merge keys", `
sms_domains: &d [sms.example.com]
transports:
  a: &base {plugin: smpp, settings: {address: "smsc.example.net:2775", system_id: a}}
  b:
    <<: *base
    tps: 2
`, func(t *testing.T, c *Config) {
			if b := c.Transports["b"]; b.Plugin != "smpp" || b.TPS != 2 || b.Settings["system_id"] != "a" {
				t.Errorf("b = %+v", b)
			}
		}},
		{"replies and pop3", `
sms_domains: [sms.example.com]
transports:
  out: {plugin: outbox, settings: {path: ./var/outbox.jsonl}}
replies:
  autoclip_ttl: 24h
  receipts: all
  deliver: [pop3, email]
  rules:
    - {transport: out, from_prefix: "+81", action: deliver, to: jp-ops@example.com}
    - {from_prefix: +44, action: drop}
    - {action: autoclip, to: ops@example.com}
pop3:
  enabled: true
  listen: ""
  tls_listen: ":995"
  tls_cert: ` + cert + `
  tls_key: ` + key + `
`, func(t *testing.T, c *Config) {
			if len(c.Replies.Rules) != 3 || c.Replies.Rules[1].FromPrefix != "+44" || c.Replies.Receipts != "all" {
				t.Errorf("replies = %+v", c.Replies)
			}
			if c.POP3.Listen != "" || c.POP3.TLSListen != ":995" || c.POP3.TLSCert != cert {
				t.Errorf("pop3 = %+v", c.POP3)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.check(t, mustParse(t, tc.src))
		})
	}
}

func TestParseListen(t *testing.T) {
	for _, tc := range []struct {
		in, network, addr string
		err               string
	}{
		{"inet:127.0.0.1:8890", "tcp", "127.0.0.1:8890", ""},
		{"inet:[::1]:8890", "tcp", "[::1]:8890", ""},
		{"inet:localhost:8890", "tcp", "localhost:8890", ""},
		{"inet::8890", "tcp", ":8890", ""},
		{"inet:127.0.0.1:0", "tcp", "127.0.0.1:0", ""},
		{"unix:/run/smsmilter/milter.sock", "unix", "/run/smsmilter/milter.sock", ""},
		{"unix:milter.sock", "", "", "absolute path"},
		{"local:/run/m.sock", "", "", "write unix:/run/m.sock"},
		{"inet:8890@127.0.0.1", "", "", "Sendmail"},
		{"inet:127.0.0.1", "", "", "HOST:PORT"},
		{"inet:127.0.0.1:http", "", "", "not a number"},
		{"127.0.0.1:8890", "", "", "write inet:127.0.0.1:8890"},
		{"/run/m.sock", "", "", "write unix:/run/m.sock"},
		{"tcp:127.0.0.1:8890", "", "", "is not inet:HOST:PORT"},
		{"", "", "", "is not inet:HOST:PORT"},
	} {
		n, a, err := ParseListen(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseListen(%q) error = %v, want one containing %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || n != tc.network || a != tc.addr {
			t.Errorf("ParseListen(%q) = %q, %q, %v; want %q, %q", tc.in, n, a, err, tc.network, tc.addr)
		}
	}
}

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Size
		ok   bool
	}{
		{"1MiB", 1 << 20, true},
		{"512KiB", 512 << 10, true},
		{"512 kib", 512 << 10, true},
		{"10MB", 10_000_000, true},
		{"1000000", 1_000_000, true},
		{"2GiB", 2 << 30, true},
		{"1.5MiB", 3 << 19, true},
		{"", 0, false},
		{"-1", 0, false},
		{"MiB", 0, false},
		{"1 megabyte", 0, false},
		{"99999999999EiB", 0, false},
		{"١٠", 0, false},
	} {
		got, err := ParseSize(tc.in)
		if tc.ok != (err == nil) || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
	for s, want := range map[Size]string{1 << 20: "1MiB", 512 << 10: "512KiB", 1500: "1500", 0: "0", 3 << 30: "3GiB"} {
		if got := s.String(); got != want {
			t.Errorf("Size(%d).String() = %q, want %q", int64(s), got, want)
		}
	}
	var v struct {
		S Size `yaml:"s"`
	}
	if err := yaml.Unmarshal([]byte("s: 2MiB"), &v); err != nil || v.S != 2<<20 {
		t.Errorf("yaml.Unmarshal Size = %d, %v", v.S, err)
	}
	if err := yaml.Unmarshal([]byte("s: lots"), &v); err == nil {
		t.Error("yaml.Unmarshal accepted a bad Size")
	}
}

func TestListenChanged(t *testing.T) {
	base := func() *Config { c := Defaults(); return c }
	for _, tc := range []struct {
		name   string
		change func(c *Config)
		want   []string
	}{
		{"nothing", func(c *Config) {}, nil},
		{"other keys", func(c *Config) { c.SMS.MaxParts = 9; c.Milter.Timeout = time.Second }, nil},
		{"milter", func(c *Config) { c.Milter.Listen = "unix:/run/m.sock" }, []string{"milter.listen"}},
		{"http off", func(c *Config) { c.HTTP.Listen = "" }, []string{"http.listen"}},
		{"pop3 disabled listen", func(c *Config) { c.POP3.Listen = "127.0.0.1:1111" }, nil},
		{"pop3 enabled", func(c *Config) { c.POP3.Enabled = true }, []string{"pop3.listen"}},
		{"pop3 enabled tls", func(c *Config) { c.POP3.Enabled = true; c.POP3.Listen = ""; c.POP3.TLSListen = ":995" }, []string{"pop3.tls_listen"}},
		{"all", func(c *Config) {
			c.Milter.Listen, c.HTTP.Listen, c.POP3.Enabled, c.POP3.TLSListen = "inet::1", ":2", true, ":3"
		}, []string{"milter.listen", "http.listen", "pop3.listen", "pop3.tls_listen"}},
	} {
		c := base()
		tc.change(c)
		if got := c.ListenChanged(base()); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: ListenChanged = %q, want %q", tc.name, got, tc.want)
		}
	}
	if got := Defaults().ListenChanged(nil); got != nil {
		t.Errorf("ListenChanged(nil) = %q", got)
	}
}

func TestPluginNotExecutable(t *testing.T) {
	p := filepath.Join(t.TempDir(), "plugin")
	if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Parse("t.yaml", []byte("sms_domains: [a.example]\ntransports:\n  x: {plugin: "+p+"}\n"))
	if want := "t.yaml:3: transports.x.plugin: " + p + " is not executable (chmod +x it)"; err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
}

// TestExamples loads the shipped example configurations; they name only
// built-in plugins and no files, so they validate on any machine.
func TestExamples(t *testing.T) {
	for _, f := range []string{"quickstart.yaml", "smsmilter.yaml"} {
		path := filepath.Join("..", "..", "examples", f)
		c, err := Load(path)
		if err != nil {
			var errs *Errors
			errors.As(err, &errs)
			t.Errorf("%s:\n%v", f, err)
			continue
		}
		if len(c.Transports) == 0 || len(c.Routes) == 0 {
			t.Errorf("%s: no transports or routes: %+v", f, c)
		}
	}
	c, err := Load(filepath.Join("..", "..", "examples", "quickstart.yaml"))
	if err != nil {
		return
	}
	out := c.Transports["outbox"]
	if c.Milter.Listen != "inet:127.0.0.1:8890" || c.HTTP.Listen != "127.0.0.1:8891" || c.StateDir != "./var" ||
		out.Plugin != "outbox" || out.Settings["path"] != "./var/outbox.jsonl" || out.Settings["inbox"] != "./var/inbox.jsonl" ||
		c.Mail.From != "smsmilter@example.com" || c.Notify.Admin != "postmaster@example.com" ||
		!reflect.DeepEqual(c.SMSDomains, []string{"sms.example.com"}) {
		t.Errorf("quickstart = %+v", c)
	}
}
