package main

import (
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/announce"
)

const releaseHelp = `Usage: embargo release list|resume ID [--config FILE] [--data DIR]

Shows and resumes the announce list's releases: at T each advisory goes to
every subscriber from one stored, signed message. The announce fan-out
holds a release when the wall clock jumped ahead across T, when the message
no longer verifies against the list key, or when the relay refuses the
message itself; the SRC is alerted, and nothing more goes to the
subscribers until it is resumed here. The outside channels, the
distributors and the release pack go through the outbound queue instead
(embargo queue). Works with the daemon running (through its control
socket) or stopped.

  list        every release: ID, state (scheduled, releasing, held,
              released), T (UTC), copies sent of the subscribers it covers
              (fixed when it starts), and why it is held
  resume ID   resume a held release once its cause is fixed: check the
              clock, fix the relay, or report a message that no longer
              verifies as a bug. Held before it started, it leaves at T, at
              once if T has passed; held while releasing, it goes on from
              where it stopped. A release resumed already is answered
              saying when and where it stands (exit 0); one that was
              never held is refused.

Examples:
  embargo release list
  embargo release resume SEC-2026-0001
  embargo release resume SEC-2026-0001 --config /etc/embargo/embargo.toml

Flags:
`

func cmdRelease(args []string, s stdio) error {
	var cf commonFlags
	fs := newFlagSet("release", releaseHelp, &cf, false)
	sub, pos, err := subcommand(fs, args, "release needs a subcommand: list or resume")
	if sub == "" || err != nil {
		return err
	}
	switch sub {
	case "list":
		cfg, err := cf.load()
		if err != nil {
			return err
		}
		return readStore(cfg.DataDir, "release list", pos, s.out)
	case "resume":
		if len(pos) != 1 {
			return usageError("usage: embargo release resume ID, with ID from `embargo release list`")
		}
		if !announce.ValidJobID(pos[0]) {
			return usageError(fmt.Sprintf("%q is not a release ID; `embargo release list` shows them", pos[0]))
		}
		cfg, err := cf.load()
		if err != nil {
			return err
		}
		out, err := daemon.ReleaseResume(cfg.DataDir, pos[0], time.Now())
		if err != nil {
			return err
		}
		_, err = io.WriteString(s.out, out)
		return err
	}
	return usageError(fmt.Sprintf("unknown release subcommand %q: use list or resume", sub))
}

// releaseList is the storeCommand behind `embargo release list`.
func releaseList(tx *bolt.Tx, args []string, w io.Writer) error {
	if len(args) != 0 {
		return usageError("embargo release list takes no arguments")
	}
	jobs, err := announce.Jobs(tx)
	if err != nil && !errors.Is(err, announce.ErrNoInit) {
		return err
	}
	return writeReleases(w, jobs)
}

// maxReasonBytes bounds a hold reason on its row: a clock jump's is about
// 200 bytes, a relay's reply may be longer.
const maxReasonBytes = 400

// writeReleases writes one row per release. A hold reason may quote the
// relay's reply: oneLine escapes its control and format characters
// (docs/threat-model.md B10).
func writeReleases(w io.Writer, jobs []announce.Job) error {
	if len(jobs) == 0 {
		_, err := io.WriteString(w, "No announce releases.\n")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tT (UTC)\tSENT\tHELD BECAUSE")
	for _, j := range jobs {
		sent := "-"
		if !j.Started.IsZero() {
			sent = fmt.Sprintf("%d/%d", j.Sent, j.Total)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", j.ID, j.State, j.At.UTC().Format(time.DateTime), sent, orDash(oneLine(j.Held, maxReasonBytes)))
	}
	return tw.Flush()
}
