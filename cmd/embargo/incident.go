package main

import (
	"bufio"
	"bytes"
	"encoding/json"
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

const incidentHelp = `Usage: embargo incident list|show ID|export ID|quarantine [MESSAGE] [--json] [--config FILE] [--data DIR]

Reads incidents from the store, through the running daemon if there is one.

  list         one line per incident
  show ID      what /status says (severity and CVSS, CVEs, T, the
               distributors the notice reached and their answers, pending
               two-person approvals, every deadline as an absolute UTC
               instant), then every advisory field with the version ranges
               and references as read, the milestones, the history (who,
               when, what changed) and the messages
  export ID    every message of the incident as an mbox on stdout
  quarantine   the messages kept in quarantine: those embargo could not
               process (note poison: a panic, or the process died while
               processing it, twice) and the refused distributor posts
               (note quarantine); with a MESSAGE number, that message as
               received, on stdout

With --json, show prints one JSON document instead. Its fields stay stable
(new ones may be added); instants are RFC 3339 in UTC, an instant that has
not happened is null, an empty list is []:

  id, phase, as_of       the incident, its phase, the clock it was read at
  subject, reporter      the report's subject and sender
  commander, fix_lead    addresses ("" when none); fix_team: [addresses]
  severity               None, Low, Medium, High, Critical or unset
  severity_override      true when the Fix Lead set it (/severity)
  cvss                   {vector, version, score, severity}, or null
  cves                   [CVE IDs]
  t, notified_t          the disclosure instant; the T distributors were told
  flags                  {public, embargo_broken, deferred, emergency, approved}
  resolution             fixed, duplicate, … ("" while open); duplicate_of,
                         handed_off_to
  advisory               {FIELD: value} for every /set FIELD, "" when unset
  affected_versions,     [{text, component, version, introduced, fixed,
  fixed_versions          last_affected, prose, reading}]: each line as read
  cwes                   [CWE IDs]; references: [{url, kind}]
  milestones             {reported, triaged, accepted, fix_team, fixed,
                         approved, notified, final_notice, held, disclosed,
                         retro, closed, last_change: instant}, only those
                         that happened
  deadlines              [{name, what, due, done, asap, overdue}]
  pending_approvals      [{command, signers: [{email, fingerprint, at,
                         message_id}], expires, quorum, emergency}]
  distributors           [{email, notified_at, status, at, note}]: each
                         distributor the notice reached and their answer
                         (/affected: yes, no, unknown, fixed; "" for none)
  history                [{at, email, fingerprint, message_id, command, what}]
  messages               [{seq, received, message_id, envelope_from, sender,
                         size, sha256, note}]

Examples:
  embargo incident list
  embargo incident show SEC-2026-0001
  embargo incident show SEC-2026-0001 --json | jq .deadlines
  embargo incident export SEC-2026-0001 > SEC-2026-0001.mbox
  embargo incident quarantine
  embargo incident quarantine 42 > quarantined-42.eml

Flags:
`

func cmdIncident(args []string, s stdio) error {
	var cf commonFlags
	fs := newFlagSet("incident", incidentHelp, &cf, false)
	asJSON := fs.Bool("json", false, "show: print one JSON document (fields above) instead of text")
	sub, pos, err := subcommand(fs, args, "incident needs a subcommand: list, show, export or quarantine")
	if sub == "" || err != nil {
		return err
	}
	name := "incident " + sub
	if _, ok := storeCommands()[name]; !ok {
		return usageError(fmt.Sprintf("unknown incident subcommand %q: use list, show, export or quarantine", sub))
	}
	if *asJSON && sub != "show" {
		return usageError("--json goes with incident show only")
	}
	cfg, err := cf.load()
	if err != nil {
		return err
	}
	if sub != "show" {
		return readStore(cfg.DataDir, name, pos, s.out)
	}
	var buf bytes.Buffer
	if err := readStore(cfg.DataDir, name, pos, &buf); err != nil {
		return err
	}
	var sd showData
	if err := json.Unmarshal(buf.Bytes(), &sd); err != nil {
		return fmt.Errorf("incident show: %w", err)
	}
	now := time.Now()
	if *asJSON {
		enc := json.NewEncoder(s.out)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false) // "affected": ">= 1.0.0" reads as written
		return enc.Encode(buildIncidentDoc(sd, cfg.HolidayTimes(), now))
	}
	return writeIncidentText(s.out, sd, cfg.HolidayTimes(), now)
}

// storeCommands are the admin commands that read the store. Each runs
// in-process when no daemon holds the file, or inside the daemon behind its
// control socket (bbolt locks its file against a second opener): serve hands
// them to the daemon.
func storeCommands() map[string]daemon.ReadCommand {
	return map[string]daemon.ReadCommand{
		"incident list":       incidentList,
		"incident show":       incidentShow,
		"incident export":     incidentExport,
		"incident quarantine": incidentQuarantine, // quarantine.go
		"queue list":          queueList,          // queuecmd.go
		"release list":        releaseList,        // releasecmd.go
		"status":              statusQuery,        // status.go
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
