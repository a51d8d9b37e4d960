package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/embargo-project/embargo/cmd/embargo/config"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/announce"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/listd"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/workflow"
)

const statusHelp = `Usage: embargo status [--config FILE] [--data DIR] [--json]

Says whether the daemon runs and summarises the store: the outbound queue
(depth by state, oldest row, next attempt), open incidents by phase, the next
deadlines of every open incident (overdue ones first), the next release, any
announce release held (with why; embargo release resume), and any message
that was being processed when the daemon died (a crash suspect).
Works with the daemon running (through its control socket) or stopped.

Examples:
  embargo status
  embargo status --config /etc/embargo/embargo.toml
  embargo status --json | jq .queue

Flags:
`

// statusData is what the store says; the command adds the clock and the
// holidays from the configuration.
type statusData struct {
	Queue       queue.Counts        `json:"queue"`
	NextAttempt time.Time           `json:"next_attempt,omitzero"` // earliest among queued rows
	Incidents   []workflow.Incident `json:"incidents"`             // those not closed
	Closed      int                 `json:"closed"`
	Suspects    []listd.Suspect     `json:"suspects,omitempty"` // in progress at a death of the process
	Held        []announce.Job      `json:"held,omitempty"`     // announce releases held
}

// statusQuery is the storeCommand behind `embargo status`: JSON, so the
// client renders it with its own configuration (holidays) and clock.
func statusQuery(tx *bolt.Tx, args []string, w io.Writer) error {
	var s statusData
	var err error
	if s.Queue, err = queue.Stats(tx); err != nil {
		return err
	}
	rows, err := queue.List(tx)
	if err != nil {
		return err
	}
	for _, r := range rows {
		if r.State == queue.StateQueued && (s.NextAttempt.IsZero() || r.NextAttempt.Before(s.NextAttempt)) {
			s.NextAttempt = r.NextAttempt
		}
	}
	incs, err := incidentdb.List(tx)
	if err != nil {
		return err
	}
	for _, inc := range incs {
		if inc.Phase == workflow.PhaseClosed {
			s.Closed++
			continue
		}
		s.Incidents = append(s.Incidents, inc)
	}
	s.Suspects = listd.Suspects(tx)
	jobs, err := announce.Jobs(tx)
	if err != nil && !errors.Is(err, announce.ErrNoInit) {
		return err
	}
	for _, j := range jobs {
		if j.State == announce.JobHeld {
			s.Held = append(s.Held, j)
		}
	}
	return json.NewEncoder(w).Encode(s)
}

// statusJSON is the output of --json.
type statusJSON struct {
	Daemon      bool             `json:"daemon_running"`
	Queue       queue.Counts     `json:"queue"`
	NextAttempt time.Time        `json:"next_attempt,omitzero"`
	Open        map[string]int   `json:"open_incidents"`
	Closed      int              `json:"closed_incidents"`
	Deadlines   []statusDeadline `json:"next_deadlines"`
	Release     *statusDeadline  `json:"next_release,omitempty"`
	Held        []statusHeld     `json:"held_releases,omitempty"`
	Suspects    []listd.Suspect  `json:"suspects,omitempty"`
}

// statusHeld is an announce release the fan-out held. Reason may quote a
// relay's reply: it is written with its control and format characters
// escaped (oneLine), in JSON too, which escapes neither a bidi override nor
// an escape sequence for a terminal that jq prints to.
type statusHeld struct {
	Release string    `json:"release"`
	Due     time.Time `json:"due"`
	Reason  string    `json:"reason"`
	Sent    int       `json:"sent"`
	Total   int       `json:"total"`
}

type statusDeadline struct {
	Incident string    `json:"incident"`
	Name     string    `json:"name"`
	What     string    `json:"what"`
	Due      time.Time `json:"due,omitzero"`
	ASAP     bool      `json:"asap,omitempty"`
	Overdue  bool      `json:"overdue,omitempty"`
}

// maxStatusDeadlines bounds the list; `embargo incident show` has the rest.
const maxStatusDeadlines = 10

func cmdStatus(args []string, s stdio) error {
	var cf commonFlags
	fs := newFlagSet("status", statusHelp, &cf, false)
	asJSON := fs.Bool("json", false, "print JSON instead of text")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usageError("status takes no arguments; see embargo status --help")
	}
	cfg, err := cf.load()
	if err != nil {
		return err
	}
	running := daemon.Running(cfg.DataDir)
	var buf bytes.Buffer
	if err := readStore(cfg.DataDir, "status", nil, &buf); err != nil {
		return err
	}
	var sd statusData
	if err := json.Unmarshal(buf.Bytes(), &sd); err != nil {
		return fmt.Errorf("status: %w", err)
	}
	st := buildStatus(sd, cfg.HolidayTimes(), time.Now())
	st.Daemon = running
	if *asJSON {
		enc := json.NewEncoder(s.out)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	return writeStatus(s.out, st, cfg, time.Now())
}

func buildStatus(sd statusData, holidays []time.Time, now time.Time) statusJSON {
	st := statusJSON{Queue: sd.Queue, NextAttempt: sd.NextAttempt, Open: map[string]int{}, Closed: sd.Closed, Suspects: sd.Suspects}
	for _, j := range sd.Held {
		st.Held = append(st.Held, statusHeld{Release: j.ID, Due: j.At, Reason: oneLine(j.Held, maxReasonBytes), Sent: j.Sent, Total: j.Total})
	}
	var all []statusDeadline
	for _, inc := range sd.Incidents {
		st.Open[inc.Phase.String()]++
		for _, d := range workflow.Deadlines(inc, holidays) {
			if !d.Open() || (d.Due.IsZero() && !d.ASAP) {
				continue
			}
			sdl := statusDeadline{Incident: string(inc.ID), Name: d.Name, What: d.What, Due: d.Due, ASAP: d.ASAP,
				Overdue: !d.Due.IsZero() && d.Due.Before(now)}
			all = append(all, sdl)
			if d.Name == "release" && (st.Release == nil || d.Due.Before(st.Release.Due)) {
				r := sdl
				st.Release = &r
			}
		}
	}
	// ASAP and overdue first, then by due time.
	slices.SortStableFunc(all, func(a, b statusDeadline) int {
		ua, ub := a.ASAP || a.Overdue, b.ASAP || b.Overdue
		if ua != ub {
			if ua {
				return -1
			}
			return 1
		}
		return a.Due.Compare(b.Due)
	})
	if len(all) > maxStatusDeadlines {
		all = all[:maxStatusDeadlines]
	}
	st.Deadlines = all
	return st
}

func writeStatus(w io.Writer, st statusJSON, cfg *config.Config, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if st.Daemon {
		fmt.Fprintf(tw, "Daemon:\trunning (%s)\n", cfg.DataDir)
	} else {
		fmt.Fprintf(tw, "Daemon:\tnot running (read from %s)\n", cfg.DataDir)
	}
	q := st.Queue
	line := fmt.Sprintf("%d queued, %d sending, %d failed", q.Queued, q.Sending, q.Failed)
	if !q.Oldest.IsZero() {
		line += fmt.Sprintf("; oldest from %s (%s ago)", q.Oldest.UTC().Format("2006-01-02 15:04 UTC"), ago(now.Sub(q.Oldest)))
	}
	if !st.NextAttempt.IsZero() {
		if st.NextAttempt.After(now) {
			line += fmt.Sprintf("; next attempt in %s", ago(st.NextAttempt.Sub(now)))
		} else {
			line += "; next attempt due now"
		}
	}
	fmt.Fprintf(tw, "Queue:\t%s\n", line)
	if q.Failed > 0 {
		fmt.Fprintf(tw, "\t`embargo queue list` shows why rows failed; `embargo queue retry ID` sends one again\n")
	}
	open := 0
	var phases []string
	for _, p := range []workflow.Phase{workflow.PhaseTriage, workflow.PhaseFix, workflow.PhaseEmbargo, workflow.PhaseDisclosed} {
		if n := st.Open[p.String()]; n > 0 {
			open += n
			phases = append(phases, fmt.Sprintf("%s %d", p, n))
		}
	}
	inc := fmt.Sprintf("%d open", open)
	if len(phases) > 0 {
		inc += " (" + strings.Join(phases, ", ") + ")"
	}
	fmt.Fprintf(tw, "Incidents:\t%s, %d closed\n", inc, st.Closed)
	if st.Release != nil {
		fmt.Fprintf(tw, "Next release:\t%s at %s%s\n", st.Release.Incident, workflow.FormatInstant(st.Release.Due), inWhen(st.Release.Due, now))
	} else {
		fmt.Fprintf(tw, "Next release:\tnone scheduled\n")
	}
	// A release the announce fan-out held stays held until an operator
	// resumes it: the incident is disclosed, so no deadline shows it.
	for _, h := range st.Held {
		sent := "nothing sent yet"
		if h.Total > 0 {
			sent = fmt.Sprintf("%d of %d sent", h.Sent, h.Total)
		}
		fmt.Fprintf(tw, "Held release:\t%s to the announce list (due %s; %s): %s\n", h.Release, workflow.FormatInstant(h.Due), sent, h.Reason)
		fmt.Fprintf(tw, "\tfix the cause, then `embargo release resume %s`\n", h.Release)
	}
	// Work in progress when the process died (docs/threat-model.md A6): a
	// crash loop in the making, before the quarantine, the failed row or
	// the skipped tick ends it.
	for _, x := range st.Suspects {
		fmt.Fprintf(tw, "Crash suspect:\t%s, in progress at %d death(s) of the process, the last %s; %s\n",
			suspectName(x), x.Deaths, workflow.FormatInstant(x.Last), suspectFate(x))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(st.Deadlines) == 0 {
		_, err := io.WriteString(w, "Next deadlines: none\n")
		return err
	}
	io.WriteString(w, "Next deadlines:\n")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, d := range st.Deadlines {
		due := workflow.FormatInstant(d.Due)
		switch {
		case d.ASAP:
			due = "ASAP"
		case d.Overdue:
			due += " OVERDUE"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", due, d.Incident, d.Name, d.What)
	}
	return tw.Flush()
}

func inWhen(t, now time.Time) string {
	if t.Before(now) {
		return fmt.Sprintf(" (%s ago)", ago(now.Sub(t)))
	}
	return fmt.Sprintf(" (in %s)", ago(t.Sub(now)))
}

// ago renders a duration the way people read it: 3d4h, 5h12m, 40s.
func ago(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
	case d >= time.Hour:
		return fmt.Sprintf("%dh%dm", int(d.Hours()), int(d.Minutes())%60)
	case d >= time.Minute:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	}
	return fmt.Sprintf("%ds", int(d.Seconds()))
}

// suspectName names a crash suspect by its kind: a message by its SHA-256,
// a queue row by its ID (and its kind and incident while the queue has it),
// a tick by its incident.
func suspectName(x listd.Suspect) string {
	switch x.Kind {
	case "row":
		name := fmt.Sprintf("queue row %d", x.Row)
		var of []string
		if x.RowKind != "" {
			of = append(of, x.RowKind)
		}
		if x.Incident != "" {
			of = append(of, x.Incident)
		}
		if len(of) > 0 {
			name += " (" + strings.Join(of, ", ") + ")"
		}
		return name
	case "tick":
		return "tick of " + x.Incident
	case "batch":
		return fmt.Sprintf("announce batch %s of release %s", x.Batch, x.Release)
	case "governance":
		return "governance tick (state " + x.State + ")"
	case "digest":
		return "weekly digest (week and state " + x.State + ")"
	}
	return "message sha256 " + x.SHA256
}

// suspectFate says what becomes of a suspect at its kind's limit:
// listd.PoisonDeaths, listd.RowPoisonDeaths for a row,
// announce.BatchPoisonDeaths for a batch.
func suspectFate(x listd.Suspect) string {
	switch {
	case x.Kind == "row" && x.Deaths >= listd.RowPoisonDeaths:
		return "failed without an attempt (`embargo queue retry` tries it once more)"
	case x.Kind == "row":
		return fmt.Sprintf("sent alone, failed at %d", listd.RowPoisonDeaths)
	case x.Kind == "batch" && x.Deaths >= announce.BatchPoisonDeaths:
		return "set aside, the release held once the rest is sent (`embargo release resume` sends it once more)"
	case x.Kind == "batch":
		return fmt.Sprintf("sent alone, set aside at %d", announce.BatchPoisonDeaths)
	case (x.Kind == "governance" || x.Kind == "digest") && x.Deaths >= listd.PoisonDeaths:
		return "skipped until what it reads changes"
	case x.Kind == "governance" || x.Kind == "digest":
		return fmt.Sprintf("run alone, skipped at %d", listd.PoisonDeaths)
	case x.Kind == "tick" && x.Deaths >= listd.PoisonDeaths:
		return "skipped until the incident changes"
	case x.Kind == "tick":
		return fmt.Sprintf("run alone, skipped at %d", listd.PoisonDeaths)
	}
	return fmt.Sprintf("quarantined on arrival at %d", listd.PoisonDeaths)
}
