// Command smsmilter is the whole product in one binary: the milter daemon
// (serve), the admin CLI that edits the registry the daemon reads, and the
// built-in plugins, which the daemon runs by re-executing this binary as
// `smsmilter plugin NAME`.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// Exit codes (DESIGN.md §10).
const (
	exitOK     = 0 // success
	exitFailed = 1 // a check failed (domain not verified, explain refuses, ...)
	exitUsage  = 2 // bad usage or bad config
)

const defaultConfigPath = "/etc/smsmilter/smsmilter.yaml"

// command is one subcommand. Nested commands ("user add") are looked up by
// their full name.
type command struct {
	name    string // "user add"
	args    string // synopsis of the arguments, e.g. "NAME --sender-id ID [--tps N]"
	summary string // one line for the command list
	help    string // what a mail admin needs to know; printed by --help
	run     func(a *app, args []string) int
}

// commands lists every subcommand; its order is the order of `smsmilter --help`.
func commands() []command {
	var cs []command
	cs = append(cs, serveCommands()...)
	cs = append(cs, registryCommands()...)
	cs = append(cs, reportCommands()...)
	cs = append(cs, explainCommands()...)
	cs = append(cs, pluginCommands()...)
	return cs
}

// app is what every command gets: its streams and the --config path.
// Commands open the config and store themselves (through a's helpers) so
// that `check-config` can report a config that would not load.
type app struct {
	ctx        context.Context
	stdin      io.Reader
	stdout     io.Writer
	stderr     io.Writer
	configPath string
	// env overrides os.Getenv in tests.
	getenv func(string) string
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run parses the command line and runs one subcommand; tests call it directly.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &app{ctx: ctx, stdin: stdin, stdout: stdout, stderr: stderr, configPath: defaultConfigPath, getenv: os.Getenv}
	rest, err := a.takeConfigFlag(args)
	if err != nil {
		fmt.Fprintf(stderr, "smsmilter: %v\n", err)
		return exitUsage
	}
	if len(rest) == 0 || rest[0] == "help" || rest[0] == "-h" || rest[0] == "--help" {
		if len(rest) > 1 && rest[0] == "help" {
			if c, _ := findCommand(rest[1:]); c != nil {
				printCommandHelp(stdout, c)
				return exitOK
			}
		}
		printUsage(stdout)
		if len(rest) == 0 {
			return exitUsage
		}
		return exitOK
	}
	if rest[0] == "version" || rest[0] == "--version" {
		fmt.Fprintf(stdout, "smsmilter %s\n", version)
		return exitOK
	}
	c, cargs := findCommand(rest)
	if c == nil {
		fmt.Fprintf(stderr, "smsmilter: unknown command %q; run `smsmilter --help` for the list\n", strings.Join(rest, " "))
		return exitUsage
	}
	for _, x := range cargs {
		if x == "-h" || x == "--help" || x == "-help" {
			printCommandHelp(stdout, c)
			return exitOK
		}
	}
	return c.run(a, cargs)
}

// version is stamped at build time with -ldflags "-X main.version=...".
var version = "dev"

// takeConfigFlag removes --config FILE (or --config=FILE, -config) from
// anywhere in args: the contract allows it before or after the subcommand.
func (a *app) takeConfigFlag(args []string) ([]string, error) {
	var rest []string
	for i := 0; i < len(args); i++ {
		x := args[i]
		switch {
		case x == "--config" || x == "-config" || x == "-c":
			if i+1 >= len(args) {
				return nil, fmt.Errorf("%s needs a file name", x)
			}
			a.configPath = args[i+1]
			i++
		case strings.HasPrefix(x, "--config="):
			a.configPath = strings.TrimPrefix(x, "--config=")
		case strings.HasPrefix(x, "-config="):
			a.configPath = strings.TrimPrefix(x, "-config=")
		case x == "--":
			rest = append(rest, args[i:]...)
			return rest, nil
		default:
			rest = append(rest, x)
		}
	}
	return rest, nil
}

// findCommand finds the longest command name that prefixes args.
func findCommand(args []string) (*command, []string) {
	cs := commands()
	var best *command
	bestLen := 0
	for i := range cs {
		words := strings.Fields(cs[i].name)
		if len(words) > len(args) || len(words) <= bestLen {
			continue
		}
		match := true
		for j, w := range words {
			if args[j] != w {
				match = false
				break
			}
		}
		if match {
			best, bestLen = &cs[i], len(words)
		}
	}
	if best == nil {
		return nil, nil
	}
	return best, args[bestLen:]
}

func printUsage(w io.Writer) {
	fmt.Fprintf(w, `smsmilter turns email into SMS and SMS replies back into email, as a milter
for Postfix and Sendmail.

Usage: smsmilter [--config FILE] COMMAND [ARGS...]

--config FILE may also follow the command; default %s.
Every command acts on the store the config names, also while the daemon runs.
Exit status: 0 success, 1 a check failed, 2 bad usage or bad config.

Commands:
`, defaultConfigPath)
	cs := commands()
	width := 0
	for _, c := range cs {
		if len(c.name) > width {
			width = len(c.name)
		}
	}
	for _, c := range cs {
		if c.summary == "" {
			continue // internal commands
		}
		fmt.Fprintf(w, "  %-*s  %s\n", width, c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun `smsmilter COMMAND --help` for a command's options.\n")
}

func printCommandHelp(w io.Writer, c *command) {
	fmt.Fprintf(w, "Usage: smsmilter [--config FILE] %s %s\n\n", c.name, c.args)
	if c.summary != "" {
		fmt.Fprintf(w, "%s\n", c.summary)
	}
	if c.help != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(c.help))
	}
}

// parseFlags parses fs from args, allowing options after positional
// arguments ("user add ops --sender-id ACME"), and returns the positional
// ones. On a bad option it prints the error and the command's usage line and
// reports false: the caller exits with exitUsage.
func (a *app) parseFlags(fs *flag.FlagSet, c string, args []string) ([]string, bool) {
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			fmt.Fprintf(a.stderr, "smsmilter %s: %v\nRun `smsmilter %s --help` for usage.\n", c, err, c)
			return nil, false
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, true
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), true
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// usageError prints a usage problem for command c and returns exitUsage.
func (a *app) usageError(c string, format string, args ...any) int {
	fmt.Fprintf(a.stderr, "smsmilter %s: %s\nRun `smsmilter %s --help` for usage.\n", c, fmt.Sprintf(format, args...), c)
	return exitUsage
}
