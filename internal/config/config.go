// Package config loads and validates smsmilter's YAML configuration file
// (DESIGN.md §9). Every problem is reported as FILE:LINE: message so that a
// mail admin can fix them all in one pass.
//
// Unknown keys are errors. A key that is absent gets its default; a key
// that is present but empty (`listen: ""` or just `listen:`) means empty,
// which turns off http.listen and is an error where a value is needed.
//
// Relative paths (state_dir, the outbox plugin's path and inbox, the POP3
// TLS files) are kept as written and resolved against the daemon's current
// working directory, not the directory of the configuration file.
package config

import "time"

// Size is a byte count written in the file as "1MiB", "512KiB", "10MB" or
// "1000000" (see ParseSize).
type Size int64

// Config is the whole configuration file. Keys absent from the file have the
// defaults of DESIGN.md §9 (see Defaults) once loaded through Load or Parse.
type Config struct {
	// Path is the file the configuration was read from (not a YAML key).
	Path string `yaml:"-"`

	Milter           Milter   `yaml:"milter"`
	HTTP             HTTP     `yaml:"http"`
	Log              Log      `yaml:"log"`
	SMSDomains       []string `yaml:"sms_domains"`        // required; lower-cased, IDNA, no final dot
	VerdictLocalPart string   `yaml:"verdict_local_part"` // default verdict
	StateDir         string   `yaml:"state_dir"`
	// Retention is how long history is kept in the store: finished SMS
	// jobs (as `smsmilter queue` shows them), the event log (`smsmilter
	// log`) and mail given up. Default 720h (30 days); at least 48h (the
	// daily quota counts a day's jobs) and at least sms.dedupe_window.
	Retention  time.Duration        `yaml:"retention"` // default /var/lib/smsmilter; relative = from the working directory
	DNS        DNS                  `yaml:"dns"`
	Auth       Auth                 `yaml:"auth"`
	Numbers    Numbers              `yaml:"numbers"`
	SMS        SMS                  `yaml:"sms"`
	Body       Body                 `yaml:"body"`
	Mail       Mail                 `yaml:"mail"`
	Notify     Notify               `yaml:"notify"`
	Transports map[string]Transport `yaml:"transports"`
	Routes     []Route              `yaml:"routes"`
	Replies    Replies              `yaml:"replies"`
	POP3       POP3                 `yaml:"pop3"`
}

// Milter is the milter listener and its limits.
type Milter struct {
	Listen         string        `yaml:"listen"`           // inet:HOST:PORT or unix:PATH; default inet:127.0.0.1:8890
	MaxMessageSize Size          `yaml:"max_message_size"` // default 1MiB
	Timeout        time.Duration `yaml:"timeout"`          // per milter step; default 30s
	MaxConnections int           `yaml:"max_connections"`  // default 500
	DrainTimeout   time.Duration `yaml:"drain_timeout"`    // on SIGTERM; default 25s
	// IdleTimeout bounds the wait for the MTA's next command between SMTP
	// commands and messages: the MTA legitimately waits there as long as
	// its SMTP client does (Postfix smtpd_timeout is 300s). Default 10m; at
	// least timeout.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
}

// HTTP is the /metrics and /healthz listener; empty Listen turns it off.
type HTTP struct {
	Listen string `yaml:"listen"` // HOST:PORT; default 127.0.0.1:8891; "" = off
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
	TrustedAuthservIDs   []string `yaml:"trusted_authserv_ids"`   // e.g. mx.example.com (without /QUEUEID)
	UpstreamStripsForged bool     `yaml:"upstream_strips_forged"` // the milter before us removes forged A-R
}

// Numbers restricts which phone numbers recipients may name.
type Numbers struct {
	DefaultRegion  string   `yaml:"default_region"`  // ISO 3166 code, e.g. JP; upper-cased
	AllowedRegions []string `yaml:"allowed_regions"` // upper-cased; empty = all
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
	StripPatterns  []string `yaml:"strip_patterns"` // Go regular expressions (checked to compile), matched per line
}

// Mail is how smsmilter itself sends mail (notices, verdicts, replies).
type Mail struct {
	SMTP string `yaml:"smtp"` // host:port; default 127.0.0.1:25
	From string `yaml:"from"` // default smsmilter@<hostname>
}

// Notify names who hears about events that need a person.
type Notify struct {
	Admin string `yaml:"admin"` // email address; empty = nobody is told
}

// Transport is one configured SMS transport plugin. Its name (the key under
// transports:) is lower-case letters, digits, _ and -.
type Transport struct {
	Plugin string  `yaml:"plugin"` // smpp | modem | outbox | absolute path of an executable plugin
	TPS    float64 `yaml:"tps"`    // SMS per second, > 0; default 10

	// Settings are passed to the plugin's Configure, as JSON-compatible
	// values; never nil after loading. For the built-in plugins they are
	// checked (unknown keys are errors) and typed, with defaults filled in:
	//   smpp:   address (HOST:PORT, required), system_id (required),
	//           password, system_type, window (int 1..1000, default 10),
	//           bind (transceiver|transmitter|receiver, default
	//           transceiver), enquire_link (>= 1s), submit_timeout
	//           (>= 100ms), registered_delivery (bool)
	//   modem:  device (required), baud (int), pin (string of 4-8 digits),
	//           smsc ("+digits"), command_timeout, watchdog_interval,
	//           reconnect_min, reconnect_max, reassembly_timeout,
	//           status_reports (bool)
	//   outbox: path (required), inbox, poll_interval; relative paths are
	//           from the working directory
	// Durations stay text as written ("30s"); strings are the text as
	// written even when YAML would read a number (pin: 0123 is "0123").
	// A third-party plugin gets its settings as written.
	Settings map[string]any `yaml:"settings"`
}

// Route sends numbers with a prefix to a list of transports, tried in order;
// the first route whose prefix matches wins. When the file has no routes but
// has transports, Routes holds one route without prefix listing every
// transport in name order.
type Route struct {
	Prefix     string   `yaml:"prefix"`     // "+digits"; empty = every number
	Transports []string `yaml:"transports"` // names under transports:, at least one
}

// Replies routes incoming SMS back to people.
type Replies struct {
	AutoCLIPTTL time.Duration `yaml:"autoclip_ttl"` // default 168h
	Receipts    string        `yaml:"receipts"`     // failed | all | none; default failed
	Deliver     []string      `yaml:"deliver"`      // email and/or pop3 (needs pop3.enabled); default [email]
	Rules       []ReplyRule   `yaml:"rules"`
}

// ReplyRule is one entry of replies.rules; the first match wins.
type ReplyRule struct {
	Transport  string `yaml:"transport"`   // receiving transport; empty = any
	FromPrefix string `yaml:"from_prefix"` // "+digits"; empty = any sender
	Action     string `yaml:"action"`      // autoclip | deliver | drop (required)
	To         string `yaml:"to"`          // email address; required for deliver, fallback for autoclip
}

// POP3 is the POP3 plugin's listener.
type POP3 struct {
	Enabled   bool   `yaml:"enabled"`
	Listen    string `yaml:"listen"`     // HOST:PORT; default 127.0.0.1:1110; "" = no plain listener
	TLSListen string `yaml:"tls_listen"` // implicit TLS, HOST:PORT (e.g. :995); needs TLSCert and TLSKey
	TLSCert   string `yaml:"tls_cert"`   // PEM files, both or neither; relative = from the working directory
	TLSKey    string `yaml:"tls_key"`
}
