package main

import (
	"fmt"
	"os"

	"github.com/smsmilter/smsmilter/internal/config"
	"github.com/smsmilter/smsmilter/internal/daemon"
)

func serveCommands() []command {
	return []command{
		{name: "serve", args: "", run: cmdServe,
			summary: "run the daemon: milter, dispatcher, transports, replies",
			help: `Runs smsmilter: the milter the MTA talks to (milter.listen), the
dispatcher that sends queued SMS through the transports, the reply router,
the POP3 plugin when pop3.enabled, and /metrics and /healthz on
http.listen.

Signals: SIGHUP reloads the config (a bad one is logged and the old one
keeps running; listen address changes need a restart); SIGTERM stops
accepting, lets open milter sessions finish for milter.drain_timeout,
tempfails the rest, stops the plugins and exits 0.

Exit status 2 means the config is bad (systemd does not restart then).`},
		{name: "check-config", args: "", run: cmdCheckConfig,
			summary: "validate the config file; print every problem as FILE:LINE: message",
			help: `Reads the config file named by --config and reports every problem as
FILE:LINE: message. Exit 0 when the file is good, 2 when it is not.`},
	}
}

func cmdServe(a *app, args []string) int {
	if len(args) > 0 {
		return a.usageError("serve", "serve takes no arguments (got %q)", args[0])
	}
	// The daemon loads the config itself (and again on SIGHUP); checking it
	// here first gives a missing or broken file the CLI's messages.
	if cfg, code := a.loadConfig(); cfg == nil {
		return code
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(a.stderr, "smsmilter: cannot find my own binary to run the built-in plugins: %v\n", err)
		return exitFailed
	}
	return daemon.Run(a.ctx, daemon.Options{ConfigPath: a.configPath, Self: self, Stderr: a.stderr})
}

func cmdCheckConfig(a *app, args []string) int {
	if len(args) > 0 {
		return a.usageError("check-config", "check-config takes no arguments (got %q)", args[0])
	}
	cfg, err := config.Load(a.configPath)
	if err != nil {
		a.configError(err)
		return exitUsage
	}
	fmt.Fprintf(a.stdout, "%s: OK (%d SMS domain(s), %d transport(s), %d route(s))\n", a.configPath, len(cfg.SMSDomains), len(cfg.Transports), len(cfg.Routes))
	return exitOK
}
