// Command embargo runs a software project's security response process over
// email. `embargo serve` is the daemon; the other subcommands inspect and
// check it. Run `embargo help` for the list.
package main

import (
	"context"
	"github.com/embargo-project/embargo/cmd/embargo/config"
	"path/filepath"
	"slices"
	"time"

	"errors"
	"flag"
	"fmt"
	"github.com/embargo-project/embargo/keys"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

const usage = `embargo — a security response process over email

Usage:
  embargo serve [--config FILE] [--data DIR] [--listen HOST:PORT]
  embargo check --config FILE
  embargo incident list|show ID|export ID [--config FILE] [--data DIR]
  embargo keys export LIST [--config FILE] [--data DIR]
  embargo cvss [VECTOR...]          (or one vector per line on stdin)
  embargo drill [--scenario FILE] [--config FILE]   (rehearse an incident on a virtual clock)
  embargo init DIR [--domain DOMAIN] [--data DIR] [--demo]
  embargo status [--config FILE] [--data DIR] [--json]
  embargo queue list|retry ID|drop ID [--config FILE] [--data DIR]
  embargo backup FILE [--config FILE] [--data DIR]
  embargo restore FILE [--config FILE] [--data DIR]
  embargo healthcheck [--config FILE] [--addr HOST:PORT]
  embargo version

Run "embargo COMMAND --help" for a command's flags and examples.
With no --config, commands use the embedded development default
(SMTP on 127.0.0.1:2525, domain example.test, state in ./embargo-data).
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches a command line and returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	return runIO(args, os.Stdin, stdout, stderr)
}

func runIO(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = cmdServe(args[1:], stderr)
	case "check":
		err = cmdCheck(args[1:], stdout)
	case "incident":
		err = cmdIncident(args[1:], stdout)
	case "keys":
		err = cmdKeys(args[1:], stdout)
	case "drill":
		err = cmdDrill(args[1:], stdout, stderr) // drill.go
	case "cvss":
		if len(args) > 1 && (args[1] == "-h" || args[1] == "--help") {
			fmt.Fprint(stdout, cvssHelp)
			return 0
		}
		err = cmdCVSS(args[1:], stdin, stdout, stderr)
	case "init":
		err = cmdInit(args[1:], stdout)
	case "status":
		err = cmdStatus(args[1:], stdout)
	case "queue":
		err = cmdQueue(args[1:], stdout)
	case "backup":
		err = cmdBackup(args[1:], stdout)
	case "restore":
		err = cmdRestore(args[1:], stdout)
	case "healthcheck":
		err = cmdHealthcheck(args[1:], stdout)
	case "version", "--version":
		err = cmdVersion(args[1:], stdout)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "embargo: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if err == nil {
		return 0
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "embargo: %s\n", err)
		return 2
	}
	fmt.Fprintf(stderr, "embargo: %s\n", err)
	return 1
}

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

const serveHelp = `Usage: embargo serve [--config FILE] [--data DIR] [--listen HOST:PORT]

Runs the daemon until SIGINT or SIGTERM. Without --config it runs the embedded
development default: SMTP on 127.0.0.1:2525, domain example.test, state in
./embargo-data, outbound mail written to ./embargo-data/outbox/ as a Maildir.

Examples:
  embargo serve
  embargo serve --config /etc/embargo/embargo.toml
  embargo serve --data /tmp/embargo-test --listen 127.0.0.1:2626

Flags:
`

func cmdServe(args []string, stderr io.Writer) error {
	var cf commonFlags
	fs := newFlagSet("serve", serveHelp, &cf, true)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usageError("serve takes no arguments; see embargo serve --help")
	}
	cfg, err := cf.load()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d, err := start(ctx, cfg, newLogger(cfg.LogLevel, stderr))
	if err != nil {
		return err
	}
	d.waitSignals(ctx) // until SIGINT/SIGTERM; SIGHUP reloads (tls.go)
	return d.Stop()
}

const checkHelp = `Usage: embargo check --config FILE

Validates the whole configuration and says what is wrong and how to fix it.
Exit status 0 when it is valid, 1 otherwise.

Examples:
  embargo check --config /etc/embargo/embargo.toml

Flags:
`

func cmdCheck(args []string, stdout io.Writer) error {
	var cf commonFlags
	fs := newFlagSet("check", checkHelp, &cf, false)
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := cf.load()
	if err != nil {
		return err
	}
	warnings := cfg.Report().Warnings
	for _, w := range warnings {
		fmt.Fprintf(stdout, "warning: %s\n", w)
	}
	// Member keys: pinned, present, usable (issue: keys). List keys are not
	// generated by check.
	ks, err := loadKeys(cfg, time.Now(), false)
	if err != nil {
		return err
	}
	bad := 0
	for _, p := range ks.problems {
		if !p.Warning {
			bad++
		}
	}
	for _, line := range ks.problemLines() {
		fmt.Fprintf(stdout, "key: %s\n", line)
	}
	if bad > 0 {
		return fmt.Errorf("%d member key problem(s); see above", bad)
	}
	if err := checkOps(cfg, stdout); err != nil { // checkops.go: TLS, LMTP, DKIM
		return err
	}
	fmt.Fprintf(stdout, "%s: configuration is valid (%d members, lists %s)\n", cfg.Source, len(cfg.Members), listSummary(cfg))
	printDNS(cfg, stdout) // dkim.go
	return nil
}

func listSummary(cfg *config.Config) string {
	var s []string
	for _, n := range config.ListNames() {
		s = append(s, cfg.Lists[n].Address)
	}
	return strings.Join(s, ", ")
}

const cvssHelp = `Usage: embargo cvss [VECTOR...]

Scores CVSS 3.1 and 4.0 vectors as the FIRST calculators do. Prints
VECTOR<TAB>SCORE<TAB>SEVERITY per vector; reads one vector per line from
standard input when none is given. A bad vector gets a line on stderr naming
the bad metric, and the exit status is 1.

Examples:
  embargo cvss CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H
  embargo cvss < vectors.txt
`

const keysHelp = `Usage: embargo keys export LIST [--config FILE] [--data DIR]

Prints the armored public key of a list (security, distributors, announce).
Publish the security key so reporters can encrypt to it. The key is generated
at the first start of embargo serve, or by this command if it does not exist.

Examples:
  embargo keys export security > security-key.asc
  embargo keys export announce | gpg --import

Flags:
`

func cmdKeys(args []string, stdout io.Writer) error {
	var cf commonFlags
	fs := newFlagSet("keys", keysHelp, &cf, false)
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fs.Usage()
		if len(args) == 0 {
			return usageError("keys needs a subcommand: export")
		}
		return nil
	}
	if args[0] != "export" {
		return usageError(fmt.Sprintf("unknown keys subcommand %q: use export", args[0]))
	}
	pos, err := parseInterspersed(fs, args[1:])
	if err != nil {
		return err
	}
	if len(pos) != 1 || !slices.Contains(config.ListNames(), pos[0]) {
		return usageError("usage: embargo keys export LIST, where LIST is one of " + strings.Join(config.ListNames(), ", "))
	}
	cfg, err := cf.load()
	if err != nil {
		return err
	}
	pass, err := passphrase(cfg)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(cfg.DataDir, "keys"), 0o700); err != nil {
		return err
	}
	k, _, err := keys.LoadOrCreateListKey(cfg.ListKeyPath(pos[0]), cfg.Domain+" "+pos[0]+" list", cfg.Lists[pos[0]].Address, pass, keys.Options{})
	if err != nil {
		return err
	}
	pub, err := k.ArmoredPublic()
	if err != nil {
		return err
	}
	_, err = stdout.Write(pub)
	return err
}

const incidentHelp = `Usage: embargo incident list|show ID|export ID [--config FILE] [--data DIR]

Reads incidents from the store, through the running daemon if there is one.

  list         one line per incident
  show ID      the incident's fields and its messages
  export ID    every message of the incident as an mbox on stdout

Examples:
  embargo incident list
  embargo incident show SEC-2026-0001
  embargo incident export SEC-2026-0001 > SEC-2026-0001.mbox

Flags:
`

func cmdIncident(args []string, stdout io.Writer) error {
	var cf commonFlags
	fs := newFlagSet("incident", incidentHelp, &cf, false)
	sub, pos, err := subcommand(fs, args, "incident needs a subcommand: list, show or export")
	if sub == "" || err != nil {
		return err
	}
	name := "incident " + sub
	if _, ok := storeCommands[name]; !ok {
		return usageError(fmt.Sprintf("unknown incident subcommand %q: use list, show or export", sub))
	}
	cfg, err := cf.load()
	if err != nil {
		return err
	}
	return runStoreCommand(cfg.DataDir, name, pos, stdout)
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
