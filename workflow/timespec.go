package workflow

import (
	"strings"
	"time"
)

// spec is CheckTimeline's own reading of the timeline: the README's table
// written again from the record's fields, apart from Deadlines, Reminders and
// TimelineRules, so the two can be held against each other.
type spec struct{ holidays []time.Time }

// The spec's instants, written again from docs/process.md §3, §6, not taken
// from the constants the code uses.
const (
	specNotice    = 7 * 24 * time.Hour // distributor notice at least this long before T
	specFinalFrom = 25 * time.Hour     // the final notice from T-25 h …
	specFinalBy   = 24 * time.Hour     // … to T-24 h
)

// expectation is what the spec says of one reminder of an incident.
type expectation struct {
	due     time.Time       // the instant it reminds of; for a repeating one, the occurrence at or before the send
	why     string          // not "": it must not be sent, because
	to      map[string]bool // whom it may go to
	unknown bool
}

// The one-off reminders, which the spec expects at their instant, and their
// groups: of a group due at once only the latest need go out.
var (
	oneOffReminders = []string{"triage", "triage-escalation", "fix-team", "fix", "notice-soon", "notice", "preannounce-soon", "preannounce",
		"approval-soon", "retro-reminder", "retrospective"}
	specGroup = map[string]string{"triage": "triage", "triage-escalation": "triage", "fix-team": "fix-team", "fix": "fix",
		"notice-soon": "notice", "notice": "notice", "preannounce-soon": "preannounce", "preannounce": "preannounce",
		"approval-soon": "approval", "retro-reminder": "retro", "retrospective": "retro"}
	specDeadline = map[string]string{"triage": "triage", "triage-escalation": "triage-escalation", "fix-team": "fix-team", "fix": "fix",
		"notice-soon": "notice", "notice": "notice", "preannounce-soon": "preannounce", "preannounce": "preannounce",
		"approval-soon": "approval", "retro-reminder": "retrospective", "retrospective": "retrospective"}
)

func (s spec) reminder(inc Incident, key string, at time.Time) expectation {
	e := expectation{to: map[string]bool{ToSRC: true}}
	lead := func() {
		if inc.FixLead != "" {
			e.to = map[string]bool{ToFixLead: true}
		}
	}
	switch key {
	case "stale":
		lead()
		p := specStalePeriod(inc)
		switch {
		case inc.Phase == PhaseClosed:
			e.why = "the incident is closed"
		case inc.Phase != PhaseFix && inc.Phase != PhaseEmbargo:
			e.why = "the incident is in phase " + inc.Phase.String()
		case p == 0:
			e.why = "its severity has no staleness nudge"
		case inc.Approved && !inc.T.IsZero() && inc.HeldAt.IsZero():
			e.why = "the advisory is approved and T set: it waits for the release"
		}
		if p > 0 {
			base := inc.Updated
			if inc.HeldAt.After(base) {
				base = inc.HeldAt // a hold restarts the count
			}
			e.due = occurrence(base, p, at)
		}
		return e
	case "asap":
		switch {
		case inc.Phase == PhaseClosed:
			e.why = "the incident is closed"
		case !inc.DisclosedAt.IsZero():
			e.why = "it was disclosed"
		case !inc.ASAP():
			e.why = "it is neither public nor broken"
		case !s.openBeforeDisclosure(inc):
			e.why = "no deadline before disclosure is open"
		}
		since := inc.Updated
		for _, h := range inc.History {
			if h.Command == "/public" || h.Command == "/embargo-break" {
				since = h.At
				break
			}
		}
		e.due = occurrence(since, 24*time.Hour, at)
		return e
	}
	dl, ok := specDeadline[key]
	if !ok {
		return expectation{unknown: true}
	}
	switch key {
	case "triage":
		e.to = map[string]bool{ToOnCall: true, ToSRC: true}
		if inc.Commander != "" {
			e.to = map[string]bool{ToCommander: true}
		}
		e.due = s.addWorkingDays(inc.Opened, 1)
	case "triage-escalation":
		e.due = s.addWorkingDays(inc.Opened, 3)
	case "fix-team":
		lead()
		e.due = inc.Opened.Add(24 * time.Hour)
	case "fix":
		e.due = inc.Opened.Add(7 * 24 * time.Hour)
	case "notice-soon":
		lead()
		e.due = inc.T.Add(-9 * 24 * time.Hour)
	case "notice":
		e.due = inc.T.Add(-7 * 24 * time.Hour)
	case "preannounce-soon": // the private track: Go pre-announces 3–7 days ahead (docs/process.md §9)
		e.due = inc.T.Add(-7 * 24 * time.Hour)
	case "preannounce":
		e.due = inc.T.Add(-3 * 24 * time.Hour)
	case "approval-soon":
		e.due = inc.T.Add(-48 * time.Hour)
	case "retro-reminder":
		lead()
		e.due = inc.DisclosedAt.Add(24 * time.Hour)
	case "retrospective":
		e.due = inc.DisclosedAt.Add(72 * time.Hour)
	}
	if e.why = s.deadlineClosed(inc, dl); e.why != "" {
		return e
	}
	if inc.ASAP() && dl != "retrospective" {
		e.why = "the incident is public or broken: the daily ASAP nudge replaces it"
		return e
	}
	if set := specTSet(inc); (dl == "notice" || dl == "approval" || dl == "preannounce") && e.due.Before(set) {
		e.why = "T was set " + FormatInstant(set) + ", after it fell due"
	}
	return e
}

// deadlineClosed says why a deadline of the README's table is not open: not
// applicable, met, or moot; "" when it is open.
func (s spec) deadlineClosed(inc Incident, name string) string {
	accepted := !inc.AcceptedAt.IsZero()
	notified := !inc.NotifiedAt.IsZero()
	if inc.Phase == PhaseClosed {
		return "the incident is closed"
	}
	switch name {
	case "triage", "triage-escalation":
		if inc.Phase != PhaseTriage || !inc.TriagedAt.IsZero() {
			return "the report was triaged"
		}
	case "fix-team", "fix":
		switch {
		case !accepted:
			return "the report is not accepted"
		case name == "fix-team" && !inc.FixTeamAt.IsZero():
			return "the fix team was formed"
		case name == "fix-team" && !inc.FixedAt.IsZero():
			return "the fix is ready"
		case name == "fix" && !inc.FixedAt.IsZero() && len(inc.CVEs) > 0 && inc.Severity() != SeverityUnset:
			return "CVSS, CVE and fix are done"
		case name == "fix" && inc.Deferred:
			return "it was deferred"
		case notified:
			return "the distributors were notified"
		case inc.Approved:
			return "the advisory is approved"
		}
	case "notice":
		switch {
		case inc.T.IsZero():
			return "T is not set"
		case !accepted:
			return "the report is not accepted"
		case notified:
			return "the distributors were notified"
		case len(inc.CVEs) == 0:
			return "without a CVE no notice is due"
		case inc.Track == TrackPublic:
			return "the public track has no embargo: no notice is due"
		case !inc.HeldAt.IsZero():
			return "the release was held: a notice needs a new T"
		}
	case "preannounce":
		announced := false
		for _, p := range inc.Preannounced {
			announced = announced || p.T.Equal(inc.T)
		}
		switch {
		case inc.T.IsZero():
			return "T is not set"
		case inc.Track != TrackPrivate:
			return "only the private track is pre-announced"
		case announced:
			return "T was pre-announced"
		case !inc.HeldAt.IsZero():
			return "the release was held: a pre-announcement needs a new T"
		}
	case "final-notice":
		switch {
		case inc.T.IsZero():
			return "T is not set"
		case !notified:
			return "the distributors were never notified"
		case !inc.FinalNoticeAt.IsZero():
			return "the final notice went out"
		case !inc.HeldAt.IsZero():
			return "the release was held: a final notice needs a new T"
		}
	case "approval":
		switch {
		case inc.T.IsZero():
			return "T is not set"
		case inc.Approved:
			return "the advisory is approved"
		case !inc.HeldAt.IsZero():
			return "the release was held"
		}
	case "release":
		if inc.T.IsZero() {
			return "T is not set"
		}
	case "retrospective":
		switch {
		case inc.DisclosedAt.IsZero():
			return "it was not disclosed"
		case !inc.RetroAt.IsZero():
			return "the retrospective was recorded"
		}
		return ""
	default:
		return "there is no deadline " + name
	}
	if !inc.DisclosedAt.IsZero() {
		return "it was disclosed"
	}
	return ""
}

// openBeforeDisclosure: a deadline before the release is open.
func (s spec) openBeforeDisclosure(inc Incident) bool {
	for _, n := range []string{"triage", "triage-escalation", "fix-team", "fix", "notice", "preannounce", "final-notice", "approval", "release"} {
		if s.deadlineClosed(inc, n) == "" {
			return true
		}
	}
	return false
}

func (s spec) holiday(t time.Time) bool {
	y, m, d := t.UTC().Date()
	for _, h := range s.holidays {
		if hy, hm, hd := h.UTC().Date(); hy == y && hm == m && hd == d {
			return true
		}
	}
	return false
}

// isSlot: 16:00:00 UTC on a Monday–Thursday that is not a holiday.
func (s spec) isSlot(t time.Time) bool {
	t = t.UTC()
	wd := t.Weekday()
	return t.Hour() == 16 && t.Minute() == 0 && t.Second() == 0 && t.Nanosecond() == 0 &&
		wd >= time.Monday && wd <= time.Thursday && !s.holiday(t)
}

// addWorkingDays counts n Monday–Fridays that are not holidays after t, at
// t's time of day.
func (s spec) addWorkingDays(t time.Time, n int) time.Time {
	t = t.UTC()
	for n > 0 {
		t = t.AddDate(0, 0, 1)
		if wd := t.Weekday(); wd != time.Saturday && wd != time.Sunday && !s.holiday(t) {
			n--
		}
	}
	return t
}

// specStalePeriod: critical 2 days, high 7, medium 30, deferred low 30
// (process.md §2).
func specStalePeriod(inc Incident) time.Duration {
	switch inc.Severity() {
	case SeverityCritical:
		return 2 * 24 * time.Hour
	case SeverityHigh:
		return 7 * 24 * time.Hour
	case SeverityMedium:
		return 30 * 24 * time.Hour
	}
	if inc.Deferred {
		return 30 * 24 * time.Hour
	}
	return 0
}

// occurrence is base + k·p, k ≥ 1, the latest at or before at (else the first).
func occurrence(base time.Time, p time.Duration, at time.Time) time.Time {
	k := int64(1)
	if n := int64(at.Sub(base) / p); n > k {
		k = n
	}
	return base.Add(time.Duration(k) * p)
}

// specTSet is when T was last set by /disclose with a date.
func specTSet(inc Incident) time.Time {
	for i := len(inc.History) - 1; i >= 0; i-- {
		c := inc.History[i].Command
		if strings.HasPrefix(c, "/disclose ") && !strings.HasPrefix(c, "/disclose now") {
			return inc.History[i].At
		}
	}
	return time.Time{}
}
