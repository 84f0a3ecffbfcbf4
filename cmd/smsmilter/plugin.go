package main

import (
	"log/slog"
	"sort"
	"strings"

	pop3plugin "github.com/smsmilter/smsmilter/plugins/pop3"
	"github.com/smsmilter/smsmilter/plugins/sdk"
	"github.com/smsmilter/smsmilter/transports/modem"
	"github.com/smsmilter/smsmilter/transports/outbox"
	"github.com/smsmilter/smsmilter/transports/smpp"
)

// builtinTransports maps the built-in transport names (a transport's
// `plugin:` in the config) to their constructors.
func builtinTransports() map[string]func(*slog.Logger) sdk.Transport {
	return map[string]func(*slog.Logger) sdk.Transport{
		"outbox": outbox.New,
		"smpp":   smpp.New,
		"modem":  modem.New,
	}
}

func pluginCommands() []command {
	return []command{
		// summary "" keeps it out of the command list: only the daemon runs it.
		{name: "plugin", args: "NAME", run: cmdPlugin,
			help: `Internal: runs a built-in plugin. smsmilter serve starts one process per
configured transport this way (hashicorp/go-plugin over gRPC), so that a
failing driver cannot take the milter down. Run by hand, it only explains
that it is a plugin and exits 1.`},
	}
}

func cmdPlugin(a *app, args []string) int {
	transports := builtinTransports()
	if len(args) == 1 && args[0] == "pop3" {
		return a.servePOP3()
	}
	if len(args) != 1 {
		return a.usageError("plugin", "plugin takes one NAME: %s", names(transports))
	}
	newTransport, ok := transports[args[0]]
	if !ok {
		return a.usageError("plugin", "no built-in plugin %q; built-in: %s", args[0], names(transports))
	}
	// The plugin logs JSON lines on stderr, which the daemon reads into its
	// own log. SIGTERM is caught by main and ignored here: the daemon
	// stops its plugins itself, after draining, even when systemd signals
	// the whole unit.
	sdk.Serve(newTransport(sdk.Logger()))
	return exitOK
}

func names(m map[string]func(*slog.Logger) sdk.Transport) string {
	var s []string
	for k := range m {
		s = append(s, k)
	}
	s = append(s, "pop3")
	sort.Strings(s)
	return strings.Join(s, ", ")
}

// servePOP3 runs the POP3 plugin. Unlike transports it reads the config
// (passed by the daemon as --config) to open the store for the mailbox
// passwords, which `smsmilter mailbox passwd` writes there.
func (a *app) servePOP3() int {
	log := sdk.Logger()
	cfg, code := a.loadConfig()
	if cfg == nil {
		return code
	}
	st, code := a.openStore(cfg)
	if st == nil {
		return code
	}
	defer st.Close()
	pop3plugin.Serve(st, log)
	return exitOK
}
