// Package config loads and validates smsmilter's YAML configuration file
// (DESIGN.md §9). Every problem is reported as FILE:LINE: message so that a
// mail admin can fix them all in one pass.
package config

import "time"

// Size is a byte count written in the file as "1MiB", "512KiB", "1000000".
type Size int64

// Config is the whole configuration file. Zero values are replaced by the
// defaults of DESIGN.md §9 when loaded through Load.
type Config struct {
	// Path is the file the configuration was read from (not a YAML key).
	Path string `yaml:"-"`

	Milter           Milter               `yaml:"milter"`
	HTTP             HTTP                 `yaml:"http"`
	Log              Log                  `yaml:"log"`
	SMSDomains       []string             `yaml:"sms_domains"`
	VerdictLocalPart string               `yaml:"verdict_local_part"`
	StateDir         string               `yaml:"state_dir"`
	DNS              DNS                  `yaml:"dns"`
	Auth             Auth                 `yaml:"auth"`
	Numbers          Numbers              `yaml:"numbers"`
	SMS              SMS                  `yaml:"sms"`
	Body             Body                 `yaml:"body"`
	Mail             Mail                 `yaml:"mail"`
	Notify           Notify               `yaml:"notify"`
	Transports       map[string]Transport `yaml:"transports"`
	Routes           []Route              `yaml:"routes"`
	Replies          Replies              `yaml:"replies"`
	POP3             POP3                 `yaml:"pop3"`
}

// Milter is the milter listener and its limits.
type Milter struct {
	Listen         string        `yaml:"listen"`           // inet:HOST:PORT or unix:PATH; default inet:127.0.0.1:8890
	MaxMessageSize Size          `yaml:"max_message_size"` // default 1MiB
	Timeout        time.Duration `yaml:"timeout"`          // per milter step; default 30s
	MaxConnections int           `yaml:"max_connections"`  // default 500
	DrainTimeout   time.Duration `yaml:"drain_timeout"`    // on SIGTERM; default 25s
}

// HTTP is the /metrics and /healthz listener; empty Listen turns it off.
type HTTP struct {
	Listen string `yaml:"listen"` // default 127.0.0.1:8891
}

// Log chooses the daemon's log format and level.
type Log struct {
	Format string `yaml:"format"` // text | json; default text
	Level  string `yaml:"level"`  // debug | info | warn | error; default info
}

// DNS configures every DNS lookup smsmilter makes.
type DNS struct {
	Resolver string        `yaml:"resolver"` // host:port; empty = system resolver
	Timeout  time.Duration `yaml:"timeout"`  // per query; default 5s
}

// Auth says which Authentication-Results headers may be believed.
type Auth struct {
	TrustedAuthservIDs   []string `yaml:"trusted_authserv_ids"`
	UpstreamStripsForged bool     `yaml:"upstream_strips_forged"`
}

// Numbers restricts which phone numbers recipients may name.
type Numbers struct {
	DefaultRegion  string   `yaml:"default_region"`  // ISO 3166 code, e.g. JP
	AllowedRegions []string `yaml:"allowed_regions"` // empty = all
}

// SMS limits what one mail may turn into.
type SMS struct {
	MaxParts      int           `yaml:"max_parts"`      // default 4
	Overflow      string        `yaml:"overflow"`       // reject | truncate; default reject
	MaxRecipients int           `yaml:"max_recipients"` // default 50
	DedupeWindow  time.Duration `yaml:"dedupe_window"`  // default 10m; 0 = off
	MaxAge        time.Duration `yaml:"max_age"`        // default 24h
}

// Body controls how a mail body becomes SMS text.
type Body struct {
	IncludeSubject bool     `yaml:"include_subject"`
	StripPatterns  []string `yaml:"strip_patterns"` // Go regular expressions, matched per line
}

// Mail is how smsmilter itself sends mail (notices, verdicts, replies).
type Mail struct {
	SMTP string `yaml:"smtp"` // host:port; default 127.0.0.1:25
	From string `yaml:"from"` // default smsmilter@<hostname>
}

// Notify names who hears about events that need a person.
type Notify struct {
	Admin string `yaml:"admin"`
}

// Transport is one configured SMS transport plugin.
type Transport struct {
	Plugin   string         `yaml:"plugin"` // smpp | modem | outbox | /path/to/plugin
	TPS      float64        `yaml:"tps"`    // default 10
	Settings map[string]any `yaml:"settings"`
}

// Route sends numbers with a prefix to a list of transports, tried in order.
type Route struct {
	Prefix     string   `yaml:"prefix"`
	Transports []string `yaml:"transports"`
}

// Replies routes incoming SMS back to people.
type Replies struct {
	AutoCLIPTTL time.Duration `yaml:"autoclip_ttl"` // default 168h
	Receipts    string        `yaml:"receipts"`     // failed | all | none; default failed
	Deliver     []string      `yaml:"deliver"`      // email and/or pop3; default [email]
	Rules       []ReplyRule   `yaml:"rules"`
}

// ReplyRule is one entry of replies.rules; the first match wins.
type ReplyRule struct {
	Transport  string `yaml:"transport"`
	FromPrefix string `yaml:"from_prefix"`
	Action     string `yaml:"action"` // autoclip | deliver | drop
	To         string `yaml:"to"`
}

// POP3 is the POP3 plugin's listener.
type POP3 struct {
	Enabled   bool   `yaml:"enabled"`
	Listen    string `yaml:"listen"`     // default 127.0.0.1:1110
	TLSListen string `yaml:"tls_listen"` // implicit TLS
	TLSCert   string `yaml:"tls_cert"`
	TLSKey    string `yaml:"tls_key"`
}
