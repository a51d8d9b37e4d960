package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/announce"
)

const subscribersHelp = `Usage: embargo subscribers count|list|export [FILE]|add ADDRESS|remove ADDRESS|import FILE [--all] [--config FILE] [--data DIR]

Shows and changes the subscribers of the announce list. Works with the
daemon running (through its control socket) or stopped (on the store; the
notices then leave when the daemon starts).

  count          the number of active subscribers (--all: per state)
  list           the active subscribers: address, name, since, how they
                 joined (--all: also those pending a confirmation and those
                 disabled after bounces)
  export [FILE]  the active subscribers as a Mailman members listing, one
                 per line, "Display Name <address>" when the name is known:
                 what import reads, and what Mailman's addmembers reads.
                 Written to FILE (mode 0600), or to stdout.
  add ADDRESS    subscribe one address ("Display Name <address>" also
                 works), without a confirmation: it gets one signed notice
                 saying where advisories come from and how to leave. Also
                 brings back an address that left or was disabled.
  remove ADDRESS remove one address, whatever its state. Nothing is sent to
                 it, and an import will not add it again. An address that
                 left already is answered saying when and how (exit 0).
  import FILE    subscribe every address of FILE ("-": stdin): the output of
                 Mailman 3's "mailman members LIST" (or an export of this
                 command), or a Google Groups member export (CSV), told
                 apart by their content. Each address new to the list gets
                 one signed notice (with its one-click unsubscribe link when
                 lists.announce.one_click is on) and is never asked to
                 confirm; addresses already subscribed get nothing.
                 Invalid lines, duplicates, members who had not joined the
                 group and addresses that left this list are reported with
                 their line and skipped. Running an import again changes
                 nothing.

Examples:
  mailman members security-announce@lists.example.org > members.txt
  embargo subscribers import members.txt
  embargo subscribers import "security-announce members.csv"
  embargo subscribers add "Alice Example <alice@example.net>"
  embargo subscribers list --all
  embargo subscribers export backup.txt

Flags:
`

func cmdSubscribers(args []string, s stdio) error {
	var cf commonFlags
	fs := newFlagSet("subscribers", subscribersHelp, &cf, false)
	all := fs.Bool("all", false, "count and list: every state, not only the active subscribers")
	sub, pos, err := subcommand(fs, args, "subscribers needs a subcommand: count, list, export, add, remove or import")
	if sub == "" || err != nil {
		return err
	}
	switch sub {
	case "count", "list":
		if len(pos) != 0 {
			return usageError(fmt.Sprintf("embargo subscribers %s takes no arguments (--all for every state)", sub))
		}
		cfg, err := cf.load()
		if err != nil {
			return err
		}
		var a []string
		if *all {
			a = []string{"--all"}
		}
		return readStore(cfg.DataDir, "subscribers "+sub, a, s.out)
	case "export":
		return subscribersExport(&cf, pos, s)
	case "add", "remove":
		if len(pos) != 1 {
			return usageError(fmt.Sprintf("usage: embargo subscribers %s ADDRESS", sub))
		}
		cmd := daemon.CtlSubscribersAdd
		if sub == "remove" {
			cmd = daemon.CtlSubscribersRemove
		}
		return subscribersChange(&cf, cmd, pos, nil, s)
	case "import":
		if len(pos) != 1 {
			return usageError("usage: embargo subscribers import FILE (- for stdin)")
		}
		data, err := readInput(pos[0], s.in)
		if err != nil {
			return err
		}
		return subscribersChange(&cf, daemon.CtlSubscribersImport, []string{pos[0]}, data, s)
	}
	return usageError(fmt.Sprintf("unknown subscribers subcommand %q: use count, list, export, add, remove or import", sub))
}

// readInput reads the file to import, "-" meaning stdin, here on the
// operator's side: the daemon may not be allowed to read it.
func readInput(name string, stdin io.Reader) ([]byte, error) {
	var r io.Reader = stdin
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, announce.MaxListingBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(b) > announce.MaxListingBytes {
		return nil, fmt.Errorf("%s is larger than %d bytes: split it and import the parts", name, announce.MaxListingBytes)
	}
	return b, nil
}

func subscribersChange(cf *commonFlags, cmd string, args []string, input []byte, s stdio) error {
	cfg, err := cf.load()
	if err != nil {
		return err
	}
	out, err := daemon.Subscribers(cfg, cmd, args, input)
	if err != nil {
		return err
	}
	_, err = io.WriteString(s.out, out)
	return err
}

func subscribersExport(cf *commonFlags, pos []string, s stdio) error {
	if len(pos) > 1 {
		return usageError("usage: embargo subscribers export [FILE]")
	}
	cfg, err := cf.load()
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return readStore(cfg.DataDir, "subscribers export", nil, s.out)
	}
	var b bytes.Buffer
	if err := readStore(cfg.DataDir, "subscribers export", nil, &b); err != nil {
		return err
	}
	// Addresses are personal data: 0600, complete or not at all.
	tmp, err := os.CreateTemp(filepath.Dir(pos[0]), ".export-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b.Bytes()); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), pos[0]); err != nil {
		return err
	}
	_, err = fmt.Fprintf(s.err, "Wrote %d subscribers to %s.\n", bytes.Count(b.Bytes(), []byte("\n")), pos[0])
	return err
}

// allFlag reads the --all the command line passes to a read command.
func allFlag(args []string, cmd string) (bool, error) {
	switch {
	case len(args) == 0:
		return false, nil
	case len(args) == 1 && args[0] == "--all":
		return true, nil
	}
	return false, usageError(fmt.Sprintf("embargo subscribers %s takes no arguments (--all for every state)", cmd))
}

// subscribersCount is the storeCommand behind `embargo subscribers count`.
func subscribersCount(tx *bolt.Tx, args []string, w io.Writer) error {
	all, err := allFlag(args, "count")
	if err != nil {
		return err
	}
	if !all {
		n, err := announce.Count(tx)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(w, n)
		return err
	}
	by := map[announce.State]int{}
	if err := announce.ForEach(tx, func(sub announce.Subscriber) error { by[sub.State]++; return nil }); err != nil {
		return err
	}
	for _, st := range []announce.State{announce.StateActive, announce.StatePending, announce.StateDisabled} {
		fmt.Fprintf(w, "%-9s %d\n", st, by[st])
	}
	return nil
}

// subscribersList is the storeCommand behind `embargo subscribers list`.
func subscribersList(tx *bolt.Tx, args []string, w io.Writer) error {
	all, err := allFlag(args, "list")
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprint(tw, "ADDRESS\tNAME\t")
	if all {
		fmt.Fprint(tw, "STATE\t")
	}
	fmt.Fprintln(tw, "SINCE (UTC)\tVIA\tBOUNCES")
	n := 0
	err = announce.ForEach(tx, func(sub announce.Subscriber) error {
		if !all && sub.State != announce.StateActive {
			return nil
		}
		n++
		since := sub.Subscribed
		if since.IsZero() {
			since = sub.Created
		}
		fmt.Fprintf(tw, "%s\t%s\t", sub.Address, orDash(strings.ReplaceAll(sub.Name, "\t", " ")))
		if all {
			fmt.Fprintf(tw, "%s\t", sub.State)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\n", since.UTC().Format(time.DateTime), orDash(sub.Via), sub.Bounces)
		return nil
	})
	if err != nil {
		return err
	}
	if n == 0 {
		_, err := io.WriteString(w, "No subscribers.\n")
		return err
	}
	return tw.Flush()
}

// subscribersExportTx is the storeCommand behind `embargo subscribers
// export`: what `embargo subscribers import` and Mailman's addmembers read.
func subscribersExportTx(tx *bolt.Tx, args []string, w io.Writer) error {
	if len(args) != 0 {
		return usageError("embargo subscribers export takes at most a FILE")
	}
	return announce.ForEach(tx, func(sub announce.Subscriber) error {
		if sub.State != announce.StateActive {
			return nil
		}
		_, err := fmt.Fprintln(w, announce.FormatAddress(sub.Name, sub.Address))
		return err
	})
}
