package main

import (
	"log/slog"
	"sort"
	"strings"

	"github.com/smsmilter/smsmilter/plugins/sdk"
	"github.com/smsmilter/smsmilter/transports/outbox"
)

// builtinTransports maps the built-in transport names (a transport's
// `plugin:` in the config) to their constructors.
func builtinTransports() map[string]func(*slog.Logger) sdk.Transport {
	return map[string]func(*slog.Logger) sdk.Transport{
		"outbox": outbox.New,
		// "smpp":  smpp.New,  (transports/smpp)
		// "modem": modem.New, (transports/modem)
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
	sort.Strings(s)
	return strings.Join(s, ", ")
}
