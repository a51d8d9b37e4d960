package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/embargo-project/embargo/cmd/embargo/config"
	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/listd"
)

const serveHelp = `Usage: embargo serve [--config FILE] [--data DIR] [--listen HOST:PORT]

Runs the daemon until SIGINT or SIGTERM. SIGHUP (systemctl reload) reads the
configuration, keys_dir and the TLS certificate again: the members and their
keys, holidays, the on-call rotation, channels, templates and [governance]
take effect for the next message; a file with errors changes nothing (the
log and the SRC say why). Listeners, the data directory, the lists and the
relay need a restart.
Without --config it runs the embedded development default: SMTP on
127.0.0.1:2525, domain example.test, state in ./embargo-data, outbound mail
written to ./embargo-data/outbox/ as a Maildir.

Examples:
  embargo serve
  embargo serve --config /etc/embargo/embargo.toml
  embargo serve --data /tmp/embargo-test --listen 127.0.0.1:2626

Flags:
`

func cmdServe(args []string, s stdio) error {
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
	log := daemon.NewLogger(cfg.LogLevel, s.err)
	gcPercent, memLimit := gcSettings(os.Getenv)
	log.Info("garbage collector", "gogc", gcPercent, "memory_limit_mib", memLimit>>20)
	d := daemon.New(cfg, daemon.Options{Logger: log, Version: version, Commands: storeCommands(), Load: cf.load})
	if err := d.Start(ctx); err != nil {
		return err
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-hup:
			log.Info("SIGHUP: reloading")
			d.Reload() // a failure is logged (and the SRC alerted); what runs stays
		}
	}
	stopCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return d.Stop(stopCtx)
}

const checkHelp = `Usage: embargo check --config FILE

Validates the whole configuration and says what is wrong and how to fix it:
the file, the members' keys, the TLS certificate and the DKIM key. It says
which release records (the CVE draft, the OSV record) the configuration
leaves incomplete, and why, without failing. Then it prints the DNS records
to publish. Exit status 0 when it is valid, 1 otherwise.

Examples:
  embargo check --config /etc/embargo/embargo.toml

Flags:
`

func cmdCheck(args []string, s stdio) error {
	var cf commonFlags
	fs := newFlagSet("check", checkHelp, &cf, false)
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := cf.load()
	if err != nil {
		return err
	}
	r, err := daemon.Check(cfg, time.Now())
	if err != nil {
		return err
	}
	return printReport(s.out, r)
}

// printReport writes what check found; an error says the configuration is
// not usable. Every line is escaped (terminalLines): a member's address or
// a key's user ID in the roster may have come from an outsider's mail
// (an admitted application), and an escape sequence in it must not drive
// the operator's terminal (docs/threat-model.md E5).
func printReport(w io.Writer, r *config.Report) error {
	for _, m := range r.Warnings {
		fmt.Fprintf(w, "warning: %s\n", terminalLines(m))
	}
	for _, line := range r.Records {
		fmt.Fprintf(w, "records: %s\n", terminalLines(line))
	}
	for _, line := range r.Keys {
		fmt.Fprintf(w, "key: %s\n", terminalLines(line))
	}
	if r.KeyErrors > 0 {
		return fmt.Errorf("%d member key problem(s); see above", r.KeyErrors)
	}
	if r.TLS != "" {
		fmt.Fprintf(w, "tls: %s\n", r.TLS)
	}
	if len(r.Errors) > 0 {
		var msgs []string
		for _, e := range r.Errors {
			msgs = append(msgs, terminalLines(e.Error()))
		}
		return fmt.Errorf("%s", strings.Join(msgs, "\n"))
	}
	fmt.Fprintf(w, "%s: configuration is valid (%d members, lists %s)\n", r.Source, r.Members, strings.Join(r.Lists, ", "))
	fmt.Fprintf(w, "\nDNS records to publish for %s (zone-file syntax; merge with what the domain already has):\n", r.Domain)
	for _, rec := range r.DNS {
		fmt.Fprintln(w)
		for _, n := range rec.Notes {
			fmt.Fprintf(w, "; %s\n", n)
		}
		if rec.Name != "" {
			fmt.Fprintf(w, "%s\tIN %s %s\n", rec.Name, rec.Type, rec.Value)
		}
	}
	return nil
}

const keysHelp = `Usage: embargo keys export LIST [--config FILE] [--data DIR]

Prints the armored public key of a list (security, distributors, announce).
Publish the security key so reporters can encrypt to it. The key is generated
at the first start of embargo serve, or by this command if it does not exist.

Examples:
  embargo keys export security > security-key.asc
  embargo keys export announce | gpg --import

Flags:
`

func cmdKeys(args []string, s stdio) error {
	var cf commonFlags
	fs := newFlagSet("keys", keysHelp, &cf, false)
	sub, pos, err := subcommand(fs, args, "keys needs a subcommand: export")
	if sub == "" || err != nil {
		return err
	}
	if sub != "export" {
		return usageError(fmt.Sprintf("unknown keys subcommand %q: use export", sub))
	}
	names := config.ListNames()
	if len(pos) != 1 || !slices.Contains(names, pos[0]) {
		return usageError("usage: embargo keys export LIST, where LIST is one of " + strings.Join(names, ", "))
	}
	cfg, err := cf.load()
	if err != nil {
		return err
	}
	k, _, err := daemon.ListKey(cfg, pos[0], time.Now())
	if err != nil {
		return err
	}
	pub, err := k.ArmoredPublic()
	if err != nil {
		return err
	}
	_, err = s.out.Write(pub)
	return err
}

// terminalLines escapes each line of s with listd.EscapeLine and keeps the
// line breaks between them: a parse error's context spans lines, but a CR,
// an escape sequence or a bidi override inside a line is written as text.
func terminalLines(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = listd.EscapeLine(l)
	}
	return strings.Join(lines, "\n")
}
