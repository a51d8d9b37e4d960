package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/workflow"
)

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

func cmdIncident(args []string, s stdio) error {
	var cf commonFlags
	fs := newFlagSet("incident", incidentHelp, &cf, false)
	sub, pos, err := subcommand(fs, args, "incident needs a subcommand: list, show or export")
	if sub == "" || err != nil {
		return err
	}
	name := "incident " + sub
	if _, ok := storeCommands()[name]; !ok {
		return usageError(fmt.Sprintf("unknown incident subcommand %q: use list, show or export", sub))
	}
	cfg, err := cf.load()
	if err != nil {
		return err
	}
	return readStore(cfg.DataDir, name, pos, s.out)
}

// storeCommands are the admin commands that read the store. Each runs
// in-process when no daemon holds the file, or inside the daemon behind its
// control socket (bbolt locks its file against a second opener): serve hands
// them to the daemon.
func storeCommands() map[string]daemon.ReadCommand {
	return map[string]daemon.ReadCommand{
		"incident list":   incidentList,
		"incident show":   incidentShow,
		"incident export": incidentExport,
		"queue list":      queueList,   // queuecmd.go
		"status":          statusQuery, // status.go
		// subscribers.go
		"subscribers count":  subscribersCount,
		"subscribers list":   subscribersList,
		"subscribers export": subscribersExportTx,
	}
}

// readStore runs one of storeCommands, through the daemon if it runs.
func readStore(dataDir, name string, args []string, w io.Writer) error {
	return daemon.Read(dataDir, storeCommands(), name, args, w)
}

func incidentList(tx *bolt.Tx, args []string, w io.Writer) error {
	if len(args) != 0 {
		return usageError("embargo incident list takes no arguments")
	}
	incs, err := incidentdb.List(tx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tPHASE\tOPENED (UTC)\tUPDATED (UTC)\tMESSAGES")
	for _, inc := range incs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\n", inc.ID, inc.Phase, inc.Opened.UTC().Format(time.DateTime), inc.Updated.UTC().Format(time.DateTime), inc.Messages)
	}
	return tw.Flush()
}

func incidentArg(args []string, cmd string) (workflow.ID, error) {
	if len(args) != 1 {
		return "", usageError(fmt.Sprintf("usage: embargo incident %s SEC-YYYY-NNNN", cmd))
	}
	id, ok := workflow.ParseID(args[0])
	if !ok {
		return "", usageError(fmt.Sprintf("%q is not an incident ID; they look like SEC-2026-0001", args[0]))
	}
	return id, nil
}

func loadIncident(tx *bolt.Tx, id workflow.ID) (*workflow.Incident, error) {
	inc, err := incidentdb.Get(tx, id)
	if errors.Is(err, incidentdb.ErrNotFound) {
		return nil, fmt.Errorf("no incident %s; `embargo incident list` shows them all", id)
	}
	return inc, err
}

func incidentShow(tx *bolt.Tx, args []string, w io.Writer) error {
	id, err := incidentArg(args, "show")
	if err != nil {
		return err
	}
	inc, err := loadIncident(tx, id)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "ID:\t%s\n", inc.ID)
	fmt.Fprintf(tw, "Phase:\t%s\n", inc.Phase)
	fmt.Fprintf(tw, "Opened:\t%s\n", inc.Opened.UTC().Format(time.RFC3339))
	fmt.Fprintf(tw, "Updated:\t%s\n", inc.Updated.UTC().Format(time.RFC3339))
	fmt.Fprintf(tw, "Reporter:\t%s\n", inc.Reporter)
	fmt.Fprintf(tw, "Subject:\t%s\n", inc.Subject)
	if inc.FixLead != "" {
		fmt.Fprintf(tw, "Fix lead:\t%s\n", inc.FixLead)
	}
	for _, a := range inc.FixTeam {
		fmt.Fprintf(tw, "Fix team:\t%s\n", a)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	recs, err := incidentdb.Messages(tx, id)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "\nMessages (%d):\n", len(recs))
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tRECEIVED (UTC)\tSENDER\tSIZE\tMESSAGE-ID")
	for _, r := range recs {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t<%s>\n", r.Seq, r.Received.UTC().Format(time.DateTime), r.Sender, r.Size, r.MessageID)
	}
	return tw.Flush()
}

// incidentExport writes the incident's messages as an mbox (the mboxrd variant:
// ">From " quoting is reversible) with LF line ends, as mail tools expect.
func incidentExport(tx *bolt.Tx, args []string, w io.Writer) error {
	id, err := incidentArg(args, "export")
	if err != nil {
		return err
	}
	if _, err := loadIncident(tx, id); err != nil {
		return err
	}
	recs, err := incidentdb.Messages(tx, id)
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(w)
	for _, r := range recs {
		raw, err := incidentdb.Raw(tx, r.Seq)
		if err != nil {
			return err
		}
		from := r.EnvelopeFrom
		if from == "" {
			from = "MAILER-DAEMON"
		}
		fmt.Fprintf(bw, "From %s %s\n", from, r.Received.UTC().Format("Mon Jan _2 15:04:05 2006"))
		raw = bytes.ReplaceAll(raw, []byte("\r\n"), []byte("\n"))
		for line := range bytes.Lines(raw) {
			if isFromLine(line) {
				bw.WriteByte('>')
			}
			bw.Write(line)
		}
		if !bytes.HasSuffix(raw, []byte("\n")) {
			bw.WriteByte('\n')
		}
		bw.WriteByte('\n')
	}
	return bw.Flush()
}

// isFromLine matches /^>*From / (mboxrd).
func isFromLine(l []byte) bool {
	return bytes.HasPrefix(bytes.TrimLeft(l, ">"), []byte("From "))
}
