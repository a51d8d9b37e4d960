package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/listd"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
)

const queueHelp = `Usage: embargo queue list|retry ID|drop ID [--config FILE] [--data DIR]

Shows and manages the outbound queue: one row per message and recipient.
Works with the daemon running (through its control socket) or stopped.

  list        every row: state, kind, incident, recipients, attempts, next
              attempt and last error (never the message itself)
  retry ID    make a queued or failed row due now, with a fresh attempt count
              and a fresh queue lifetime (after fixing the relay, a member's
              key, ...). A row being delivered at that moment is refused: try
              again when the attempt has ended.
  drop ID     delete a row for good, in any state. If it is being delivered
              at that moment, that one attempt may still reach the recipient.

Examples:
  embargo queue list
  embargo queue retry 42
  embargo queue drop 42 --config /etc/embargo/embargo.toml

Flags:
`

func cmdQueue(args []string, s stdio) error {
	var cf commonFlags
	fs := newFlagSet("queue", queueHelp, &cf, false)
	sub, pos, err := subcommand(fs, args, "queue needs a subcommand: list, retry or drop")
	if sub == "" || err != nil {
		return err
	}
	switch sub {
	case "list":
		cfg, err := cf.load()
		if err != nil {
			return err
		}
		return readStore(cfg.DataDir, "queue list", pos, s.out)
	case "retry", "drop":
		id, err := queueArg(pos)
		if err != nil {
			return err
		}
		cfg, err := cf.load()
		if err != nil {
			return err
		}
		var out string
		if sub == "retry" {
			out, err = daemon.QueueRetry(cfg.DataDir, id, time.Now())
		} else {
			out, err = daemon.QueueDrop(cfg.DataDir, id)
		}
		if err != nil {
			return err
		}
		_, err = io.WriteString(s.out, out)
		return err
	}
	return usageError(fmt.Sprintf("unknown queue subcommand %q: use list, retry or drop", sub))
}

func queueArg(args []string) (uint64, error) {
	if len(args) != 1 {
		return 0, usageError("usage: embargo queue retry|drop ID, with ID from `embargo queue list`")
	}
	id, err := strconv.ParseUint(args[0], 10, 64)
	if err != nil || id == 0 {
		return 0, usageError(fmt.Sprintf("%q is not a queue row ID; `embargo queue list` shows them", args[0]))
	}
	return id, nil
}

// queueList is the storeCommand behind `embargo queue list`.
func queueList(tx *bolt.Tx, args []string, w io.Writer) error {
	if len(args) != 0 {
		return usageError("embargo queue list takes no arguments")
	}
	rows, err := queue.List(tx)
	if err != nil {
		return err
	}
	if len(rows) == 0 {
		_, err := io.WriteString(w, "The queue is empty.\n")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tKIND\tINCIDENT\tTO\tSIZE\tCREATED (UTC)\tATTEMPTS\tNEXT ATTEMPT (UTC)\tLAST ERROR")
	for _, r := range rows {
		next := "-"
		if r.State != queue.StateFailed && !r.NextAttempt.IsZero() {
			next = r.NextAttempt.UTC().Format(time.DateTime)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%s\t%d\t%s\t%s\n", r.ID, r.State, orDash(r.Kind), orDash(r.Incident),
			strings.Join(r.To, ","), r.Size, r.Created.UTC().Format(time.DateTime), r.Attempts, next, orDash(oneLine(r.LastError, 80)))
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// oneLine keeps a relay's reply on one table row, at most max bytes of it
// before the escapes. The reply is a remote server's text, passed on by the
// relay: listd.EscapeLine writes its control and format characters and
// invalid bytes as Go escapes, so that they cannot drive the operator's
// terminal (docs/threat-model.md B10).
func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) <= max {
		return listd.EscapeLine(s)
	}
	return listd.EscapeLine(s[:max]) + "…"
}
