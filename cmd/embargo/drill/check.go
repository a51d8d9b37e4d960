package drill

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	gomessage "github.com/emersion/go-message"
	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/workflow"
)

// --check: the drill's timeline held against the process's invariants
// (workflow.CheckTimeline), so that a committee can rehearse its own edge
// cases and see a broken rule named. The rows the drill prints become the
// checker's neutral events (mapRow); the incidents' records, as the store
// holds them after each operation and each tick, become its states.

// ErrViolations is returned by Run with Check when the timeline broke an
// invariant; the violations are written to the output first.
var ErrViolations = errors.New("the drill's timeline broke the process's invariants")

// mark is a checker event that is not a row: a record stored, or a tick. It
// comes before rows[before] (after every row when before == len(rows)).
type mark struct {
	before int
	ev     workflow.TimelineEvent
}

// snapshot records, after an operation or a tick has settled, each incident
// record whose stored JSON changed since the last snapshot (read as collect
// reads them), as a state of the timeline at at.
func (dr *drill) snapshot(at time.Time) error {
	if !dr.check || dr.d == nil {
		return nil
	}
	if err := dr.learnIncidents(); err != nil {
		return err
	}
	return dr.d.View(func(tx *bolt.Tx) error {
		for _, id := range dr.ids {
			inc, err := incidentdb.Get(tx, id)
			if err != nil {
				return err
			}
			b, err := json.Marshal(inc)
			if err != nil {
				return err
			}
			if bytes.Equal(b, dr.stored[id]) {
				continue
			}
			dr.stored[id] = b
			dr.marks = append(dr.marks, mark{before: len(dr.rows), ev: workflow.TimelineEvent{At: at, Kind: workflow.EventState, Incident: id, State: inc}})
		}
		return nil
	})
}

// tickMark records that the scheduler ticked at at and what it sent has
// been collected.
func (dr *drill) tickMark(at time.Time) {
	if dr.check {
		dr.marks = append(dr.marks, mark{before: len(dr.rows), ev: workflow.TimelineEvent{At: at, Kind: workflow.EventTick}})
	}
}

// timeline merges the rows and the marks into the checker's events, in the
// order they happened.
func (dr *drill) timeline() []workflow.TimelineEvent {
	var evs []workflow.TimelineEvent
	states := map[workflow.ID]*workflow.Incident{}
	released := map[workflow.ID]time.Time{} // the DisclosedAt of each release already in the timeline
	k := 0
	flush := func(upTo int) {
		for ; k < len(dr.marks) && dr.marks[k].before <= upTo; k++ {
			ev := dr.marks[k].ev
			if ev.Kind == workflow.EventState {
				states[ev.Incident] = ev.State
			}
			evs = append(evs, ev)
		}
	}
	for i, r := range dr.rows {
		flush(i)
		// The record the row's operation stored: the next state of its
		// incident at the row's instant, else the last one before.
		id := workflow.ID(r.incident)
		inc := states[id]
		for _, m := range dr.marks[k:] {
			if !m.ev.At.Equal(r.at) {
				break
			}
			if m.ev.Kind == workflow.EventState && m.ev.Incident == id {
				inc = m.ev.State
				break
			}
		}
		ev, ok := dr.mapRow(r, inc)
		if !ok {
			continue
		}
		if ev.Message == workflow.MessageRelease && inc != nil {
			// Every copy of one release is one release, also a channel copy
			// held back until the distributors were told the embargo is
			// lifted (listd.release's notBefore): only a new DisclosedAt
			// is a new release.
			if at, seen := released[id]; seen && at.Equal(inc.DisclosedAt) {
				continue
			}
			released[id] = inc.DisclosedAt
		}
		// Copies of one message go one to each recipient: a recipient with
		// two copies got two messages (two notices of one operation, say).
		for n := maxCopies(r.to); n > 0; n-- {
			evs = append(evs, ev)
		}
	}
	flush(len(dr.rows))
	return evs
}

func maxCopies(to []string) int {
	seen := map[string]int{}
	n := 0
	for _, a := range to {
		seen[strings.ToLower(a)]++
		n = max(n, seen[strings.ToLower(a)])
	}
	return max(n, 1)
}

// mapRow turns one row into the checker's event; false for a row that is not
// part of the timeline: mail in, answers (receipts, /status, /help, acks,
// the copies of a thread's messages, on-call notices, delivery alerts).
func (dr *drill) mapRow(r row, inc *workflow.Incident) (workflow.TimelineEvent, bool) {
	at := r.at
	switch r.dir {
	case "--":
		if r.who == "daemon stopped" {
			return workflow.TimelineEvent{At: at, Kind: workflow.EventDown}, true
		}
		return workflow.TimelineEvent{At: at, Kind: workflow.EventUp}, true
	case "out":
	default:
		return workflow.TimelineEvent{}, false
	}
	ev := workflow.TimelineEvent{At: at, Kind: workflow.EventMessage, Incident: workflow.ID(r.incident)}
	switch kind := r.kind; {
	case kind == "reminder":
		title := r.subject
		if _, after, ok := strings.Cut(title, "] reminder: "); ok {
			title = after
		}
		key, ok := workflow.ReminderKeyOfTitle(title)
		if !ok {
			key = "(unknown: " + title + ")" // the checker names it
		}
		ev.Message, ev.Key, ev.To = workflow.MessageReminder, key, dr.role(r, inc, key)
	case strings.HasPrefix(kind, "alert-"):
		ev.Message, ev.Key, ev.To = workflow.MessageAlert, strings.TrimPrefix(kind, "alert-"), workflow.ToSRC
	case kind == "distributor-notice":
		ev.Message, ev.To = workflow.MessageNotice, workflow.ToDistributors
	case kind == "distributor-final":
		ev.Message, ev.To = workflow.MessageFinalNotice, workflow.ToDistributors
	case kind == "embargo-lifted":
		ev.Message, ev.To = workflow.MessageEmbargoLifted, workflow.ToDistributors
	case strings.HasPrefix(kind, "advisory"):
		ev.Message, ev.To = workflow.MessageRelease, workflow.ToPublic
	case strings.HasPrefix(kind, "reporter-"):
		ev.Message, ev.Key, ev.To = workflow.MessageReporter, strings.TrimPrefix(kind, "reporter-"), workflow.ToReporter
	case kind == "digest":
		ev.Incident, ev.Message, ev.To = "", workflow.MessageDigest, workflow.ToSRC
		ev.Lines = digestLines(dr.plainText(r))
	default:
		return workflow.TimelineEvent{}, false // an answer (isAnswer), or a kind the checker does not know
	}
	return ev, true
}

// isAnswer reports whether a row's kind is an answer to someone's message,
// or a copy, not a step of the timeline: receipts, /status and /help, the
// reporter's acknowledgement, the copies of a thread's messages to the SRC
// and the fix team, distributors' posts and their copies, on-call notices,
// the release pack (a copy of the release for the SRC), and delivery
// failure alerts.
func isAnswer(kind string) bool {
	switch kind {
	case "receipt", "status", "help", "ack", "oncall", "release-pack", "distributors-post", "alert":
		return true
	}
	return strings.HasSuffix(kind, "-copy")
}

// role names who got a reminder, as the checker does: "SRC" is the whole
// committee; one member is the Fix Lead or the incident commander the record
// names (the one the reminder's rule asks for, when they are the same
// member), else the on-call.
func (dr *drill) role(r row, inc *workflow.Incident, key string) string {
	if len(r.to) != 1 || len(dr.src) == 1 {
		return workflow.ToSRC
	}
	to := strings.ToLower(r.to[0])
	if inc == nil {
		return workflow.ToOnCall
	}
	lead, commander := strings.EqualFold(inc.FixLead, to), strings.EqualFold(inc.Commander, to)
	for _, rule := range workflow.TimelineRules() {
		if rule.Key == key && rule.To == workflow.RecipientCommander && commander {
			return workflow.ToCommander
		}
	}
	switch {
	case lead:
		return workflow.ToFixLead
	case commander:
		return workflow.ToCommander
	}
	return workflow.ToOnCall
}

// plainText is the text of a row's first copy a drill member can decrypt.
func (dr *drill) plainText(r row) string {
	for i, to := range r.to {
		k := dr.members[strings.ToLower(to)]
		if k == nil || i >= len(r.raw) {
			continue
		}
		dec, err := keys.Decrypt(r.raw[i], k, dr.lists, keys.Options{Now: func() time.Time { return r.at }})
		if err != nil {
			continue
		}
		e, _ := gomessage.Read(bytes.NewReader(dec.Inner)) // an unknown charset still reads
		if e == nil {
			return ""
		}
		var out strings.Builder
		e.Walk(func(_ []int, p *gomessage.Entity, _ error) error {
			if t, _, _ := p.Header.ContentType(); t == "text/plain" || t == "" {
				body, _ := io.ReadAll(p.Body)
				out.Write(body)
			}
			return nil
		})
		return out.String()
	}
	return ""
}

// digestLines are the deadline lines of a digest's text: the indented lines
// under "Deadlines this week" (the digest template), up to a blank line.
func digestLines(text string) []string {
	var out []string
	in := false
	for _, l := range strings.Split(strings.ReplaceAll(text, "\r\n", "\n"), "\n") {
		switch {
		case strings.HasPrefix(l, "Deadlines this week"):
			in = true
		case in && strings.TrimSpace(l) == "":
			return out
		case in && strings.TrimSpace(l) != "none":
			out = append(out, strings.TrimSpace(l))
		}
	}
	return out
}

// report writes what --check found: each violation, or a one-line summary.
func (dr *drill) report(w io.Writer) error {
	evs := dr.timeline()
	if dr.doctor != nil {
		evs = dr.doctor(evs)
	}
	vs := workflow.CheckTimeline(evs, dr.cfg.HolidayTimes())
	messages := 0
	for _, r := range dr.rows {
		if r.dir == "out" {
			messages++
		}
	}
	n := len(workflow.Invariants())
	if len(vs) == 0 {
		_, err := fmt.Fprintf(w, "embargo drill --check: scenario %s: %d incidents, %d messages, %d invariants checked: none broken\n",
			dr.sc.name, len(dr.ids), messages, n)
		return err
	}
	fmt.Fprintf(w, "embargo drill --check: scenario %s: %d incidents, %d messages, %d invariants checked: %d broken\n\n",
		dr.sc.name, len(dr.ids), messages, n, len(vs))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "RULE\tINCIDENT\tWHEN (UTC)\tWHAT HAPPENED")
	rules := map[string]bool{}
	var names []string
	for _, v := range vs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", v.Rule, dash(string(v.Incident)), v.At.UTC().Format("2006-01-02 15:04 Mon"), v.Detail)
		if !rules[v.Rule] {
			rules[v.Rule] = true
			names = append(names, v.Rule)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nThe rules are listed in the README, \"Drills\"; run the drill without --check to see the whole timeline.")
	return fmt.Errorf("%w: %s", ErrViolations, strings.Join(names, ", "))
}
