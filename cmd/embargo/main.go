// Command embargo runs a software project's security response process over
// email. `embargo serve` is the daemon; the other commands inspect, check
// and manage it. Run `embargo help` for the list.
//
// This package is the command line only: flags, dispatch, help and output.
// The configuration is cmd/embargo/config, the daemon cmd/embargo/daemon,
// the drill cmd/embargo/drill.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/embargo-project/embargo/cmd/embargo/config"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	os.Exit(runIO(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// command is one row of the command line: it drives dispatch and the usage
// text.
type command struct {
	name     string
	args     string // the synopsis after the name
	synopsis string // what it does, in a few words
	run      func(args []string, s stdio) error
}

// stdio are a command's standard streams.
type stdio struct {
	in       io.Reader
	out, err io.Writer
}

// commands are embargo's commands, in the order of the usage text.
func commands() []command {
	return []command{
		{"serve", "[--config FILE] [--data DIR] [--listen HOST:PORT]", "run the daemon", cmdServe},
		{"check", "--config FILE", "validate a configuration and print its DNS records", cmdCheck},
		{"incident", "list|show ID|export ID|quarantine [MESSAGE] [--config FILE] [--data DIR]", "read incidents and the quarantine from the store", cmdIncident},
		{"keys", "export LIST [--config FILE] [--data DIR]", "print a list's public key", cmdKeys},
		{"cvss", "[VECTOR...]", "score CVSS vectors (one per line on stdin without arguments)", cmdCVSS},
		{"drill", "[--scenario FILE] [--config FILE]", "rehearse an incident on a virtual clock", cmdDrill},
		{"init", "DIR [--domain DOMAIN] [--data DIR] [--demo]", "write a configuration and generate the keys", cmdInit},
		{"status", "[--config FILE] [--data DIR] [--json]", "the daemon, the queue, deadlines, the next release", cmdStatus},
		{"queue", "list|retry ID|drop ID [--config FILE] [--data DIR]", "show and manage the outbound queue", cmdQueue},
		{"release", "list|resume ID [--config FILE] [--data DIR]", "the announce list's releases: show them, resume a held one", cmdRelease},
		{"subscribers", "count|list|export [FILE]|add ADDRESS|remove ADDRESS|import FILE [--all] [--config FILE] [--data DIR]", "the announce list's subscribers: show, add, remove, import", cmdSubscribers},
		{"members", "list [--config FILE] [--data DIR]", "the roster in force: members, keys, origins, open proposals", cmdMembers},
		{"backup", "FILE [--config FILE] [--data DIR]", "copy the store, online", cmdBackup},
		{"restore", "FILE [--config FILE] [--data DIR]", "put a backup in place of the store", cmdRestore},
		{"healthcheck", "[--config FILE] [--addr HOST:PORT]", "exit 0 if SMTP answers", cmdHealthcheck},
		{"version", "", "print the version", cmdVersion},
	}
}

// usage is the text of `embargo help`, made from the command table.
func usage() string {
	var b strings.Builder
	b.WriteString("embargo — a security response process over email\n\nCommands:\n")
	for _, c := range commands() {
		fmt.Fprintf(&b, "  %-12s %s\n", c.name, c.synopsis)
	}
	b.WriteString("\nUsage:\n")
	for _, c := range commands() {
		fmt.Fprintf(&b, "  %s\n", strings.TrimSpace("embargo "+c.name+" "+c.args))
	}
	b.WriteString(`
Run "embargo COMMAND --help" for a command's flags and examples.
With no --config, commands use the embedded development default
(SMTP on 127.0.0.1:2525, domain example.test, state in ./embargo-data).
`)
	return b.String()
}

// run dispatches a command line and returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	return runIO(args, os.Stdin, stdout, stderr)
}

func runIO(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage())
		return 2
	}
	name := args[0]
	switch name {
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage())
		return 0
	case "--version":
		name = "version"
	}
	for _, c := range commands() {
		if c.name == name {
			return exitStatus(c.run(args[1:], stdio{stdin, stdout, stderr}), stderr)
		}
	}
	fmt.Fprintf(stderr, "embargo: unknown command %q\n\n%s", args[0], usage())
	return 2
}

// exitStatus reports err and turns it into the exit status: 0, 1, or 2 for
// a usage error.
func exitStatus(err error, stderr io.Writer) int {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintf(stderr, "embargo: %s\n", err)
	var ue usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

// usageError is a command line that cannot run: exit status 2.
type usageError string

func (e usageError) Error() string { return string(e) }

// commonFlags are the flags every command that reads the configuration takes.
type commonFlags struct {
	config, data, listen string
}

func newFlagSet(name, help string, cf *commonFlags, withListen bool) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.StringVar(&cf.config, "config", "", "configuration file (TOML); default: the embedded development default")
	fs.StringVar(&cf.data, "data", "", "data directory; overrides data_dir")
	if withListen {
		fs.StringVar(&cf.listen, "listen", "", "SMTP listen address HOST:PORT; overrides smtp.listen")
	}
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), help)
		fs.PrintDefaults()
	}
	return fs
}

// load reads the configuration and applies the flags' overrides.
func (cf *commonFlags) load() (*config.Config, error) {
	cfg, err := config.Load(cf.config)
	if err != nil {
		return nil, err
	}
	if cf.data != "" {
		cfg.DataDir = cf.data
	}
	if cf.listen != "" {
		cfg.SMTP.Listen = cf.listen
	}
	if err := cfg.Resolve(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// subcommand splits "SUB [ARGS] [FLAGS]" for commands with subcommands. With
// no arguments it prints the usage and returns need as a usage error; for -h
// or --help it prints the usage and returns an empty sub and no error.
func subcommand(fs *flag.FlagSet, args []string, need string) (sub string, pos []string, err error) {
	if len(args) == 0 {
		fs.Usage()
		return "", nil, usageError(need)
	}
	if args[0] == "-h" || args[0] == "--help" {
		fs.Usage()
		return "", nil, nil
	}
	pos, err = parseInterspersed(fs, args[1:])
	return args[0], pos, err
}

// parseInterspersed lets flags follow positional arguments
// ("embargo incident show SEC-2026-0001 --data DIR").
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}
