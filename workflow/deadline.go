package workflow

import (
	"time"

	"github.com/robfig/cron/v3"
)

// The process timeline (process.md §2, §3, §6; DESIGN.md §2).
const (
	TriageReminderDays = 1                   // working days from the report: remind the on-call
	TriageEscalateDays = 3                   // working days from the report: escalate to all SRC
	FixTeamWithin      = 24 * time.Hour      // fix team formed after the report
	FixWithin          = 7 * 24 * time.Hour  // CVSS, severity, CVE and fix after the report
	NoticeBefore       = 7 * 24 * time.Hour  // distributor notice at least this long before T (with a CVE)
	FinalNoticeBefore  = 24 * time.Hour      // final notice with the public text, and approval, before T
	RetroAfterMin      = 24 * time.Hour      // retrospective window after T: from
	RetroAfterMax      = 3 * 24 * time.Hour  // … to
	MaxEmbargo         = 90 * 24 * time.Hour // T at most this far ahead of the /disclose command
	SignatureMaxAge    = 24 * time.Hour      // a command signature older than this is refused
	SignatureMaxSkew   = 5 * time.Minute     // … and one dated further ahead than this

	// Reminders ahead of a deadline, and repeated nudges (Reminders).
	NoticeRemindBefore   = NoticeBefore + 48*time.Hour // the Fix Lead is reminded of the distributor notice two days before it is due
	ApprovalRemindBefore = 48 * time.Hour              // the SRC is reminded to approve the advisory at T-48 h
	RetroRemindAfter     = RetroAfterMin               // the Fix Lead is reminded of the retrospective at T+1 d; the SRC at T+3 d
	DeferredNudgeEvery   = 30 * 24 * time.Hour         // a deferred low-severity incident is nudged monthly
	ASAPNudgeEvery       = 24 * time.Hour              // a public or broken incident is nudged daily while a deadline is open
)

// StaleAfter is how long an open incident of a severity may sit without a
// change before its Fix Lead is reminded (process.md §2): critical 2 days,
// high 7, medium 30; low and unrated incidents are not chased.
func StaleAfter(s Severity) time.Duration {
	switch s {
	case SeverityCritical:
		return 2 * 24 * time.Hour
	case SeverityHigh:
		return 7 * 24 * time.Hour
	case SeverityMedium:
		return 30 * 24 * time.Hour
	}
	return 0
}

// staleAfter is the staleness period of an incident: StaleAfter of its
// severity, or DeferredNudgeEvery for a deferred (low-severity) one.
func staleAfter(inc Incident) time.Duration {
	if d := StaleAfter(inc.Severity()); d > 0 {
		return d
	}
	if inc.Deferred {
		return DeferredNudgeEvery
	}
	return 0
}

// slots is the release rule as a cron schedule: 16:00 UTC, Monday–Thursday
// (libraries.md §4: cron as a calendar calculator only; Next is pure).
var slots = func() cron.Schedule {
	s, err := cron.ParseStandard("0 16 * * 1-4")
	if err != nil {
		panic(err) // a constant spec
	}
	return s
}()

// NextSlot returns the first release slot at or after t: 16:00 UTC on a
// Monday–Thursday that is not one of the holidays (dates, compared in UTC).
// Exactly 16:00 on such a day is its own slot; 16:00:01 is not.
func NextSlot(t time.Time, holidays []time.Time) time.Time {
	// Schedule.Next returns the first activation strictly after its argument,
	// at whole minutes: ask from one nanosecond before t.
	s := slots.Next(t.UTC().Add(-time.Nanosecond))
	for isHoliday(s, holidays) {
		s = slots.Next(s)
	}
	return s
}

func isHoliday(t time.Time, holidays []time.Time) bool {
	y, m, d := t.UTC().Date()
	for _, h := range holidays {
		hy, hm, hd := h.UTC().Date()
		if y == hy && m == hm && d == hd {
			return true
		}
	}
	return false
}

// IsWorkingDay reports whether t falls on a Monday–Friday, UTC, that is not a
// holiday.
func IsWorkingDay(t time.Time, holidays []time.Time) bool {
	wd := t.UTC().Weekday()
	return wd != time.Saturday && wd != time.Sunday && !isHoliday(t, holidays)
}

// AddWorkingDays moves t forward by n working days (Monday–Friday minus
// holidays), keeping the time of day: Friday 15:00 plus one is Monday 15:00,
// and so is Saturday 10:00 plus one … at 10:00.
func AddWorkingDays(t time.Time, n int, holidays []time.Time) time.Time {
	t = t.UTC()
	for n > 0 {
		t = t.AddDate(0, 0, 1)
		if IsWorkingDay(t, holidays) {
			n--
		}
	}
	return t
}

// Deadline is one milestone of an incident and when it is due.
type Deadline struct {
	Name string    // "triage", "triage-escalation", "fix-team", "fix", "notice", "final-notice", "release", "retrospective", "stale"
	What string    // what is due, for /status
	Due  time.Time // when; for an ASAP deadline, the time it became ASAP is not kept: Due is the nominal instant, possibly zero
	ASAP bool      // public or embargo broken: due as soon as possible
	Done time.Time // when it was met; zero while open
}

// Open reports whether the deadline still has to be met.
func (d Deadline) Open() bool { return d.Done.IsZero() }

// Deadlines lists the milestones of an incident that apply to it in its
// current state, met or not, in timeline order. When the incident is public
// or its embargo broke, every open deadline before disclosure is ASAP.
func Deadlines(inc Incident, holidays []time.Time) []Deadline {
	var ds []Deadline
	add := func(name, what string, due, done time.Time) {
		ds = append(ds, Deadline{Name: name, What: what, Due: due, Done: done})
	}
	triaged := inc.TriagedAt
	if triaged.IsZero() && inc.Phase > PhaseTriage {
		triaged = inc.AcceptedAt
	}
	add("triage", "first response by the on-call (1 working day)", AddWorkingDays(inc.Opened, TriageReminderDays, holidays), triaged)
	add("triage-escalation", "triage promise to the reporter; escalate to all SRC (3 working days)", AddWorkingDays(inc.Opened, TriageEscalateDays, holidays), triaged)
	accepted := !inc.AcceptedAt.IsZero()
	if accepted {
		add("fix-team", "fix team formed (24 h after the report)", inc.Opened.Add(FixTeamWithin), inc.FixTeamAt)
		add("fix", "CVSS, severity, CVE and fix (7 days after the report)", inc.Opened.Add(FixWithin), inc.FixedAt)
	}
	if !inc.T.IsZero() {
		if accepted && (len(inc.CVEs) > 0 || !inc.NotifiedAt.IsZero()) {
			add("notice", "distributor notice (7 days before T)", inc.T.Add(-NoticeBefore), inc.NotifiedAt)
		}
		if !inc.NotifiedAt.IsZero() {
			add("final-notice", "final notice with the public text (24 h before T)", inc.T.Add(-FinalNoticeBefore), inc.FinalNoticeAt)
		}
		add("approval", "advisory approved (24 h before T), else the release is held", inc.T.Add(-FinalNoticeBefore), approvedAt(inc))
		add("release", "public disclosure at T", inc.T, inc.DisclosedAt)
	}
	if !inc.DisclosedAt.IsZero() {
		add("retrospective", "retrospective (1–3 days after T)", inc.DisclosedAt.Add(RetroAfterMax), inc.RetroAt)
	}
	// An approved advisory with its T set waits for the release: nothing is
	// stale about it (the final notice, the hold and the release keep time).
	waiting := inc.Approved && !inc.T.IsZero()
	if d := staleAfter(inc); d > 0 && (inc.Phase == PhaseFix || inc.Phase == PhaseEmbargo) && !waiting {
		what := "reminder to the Fix Lead if nothing changes"
		if StaleAfter(inc.Severity()) == 0 {
			what = "monthly reminder of the deferred incident to the Fix Lead"
		}
		add("stale", what, inc.Updated.Add(d), time.Time{})
	}
	if inc.ASAP() {
		for i := range ds {
			if ds[i].Open() && ds[i].Name != "retrospective" && ds[i].Name != "stale" {
				ds[i].ASAP = true
			}
		}
	}
	if inc.Phase == PhaseClosed {
		// Nothing is due any more: keep what was met.
		kept := ds[:0]
		for _, d := range ds {
			if !d.Open() {
				kept = append(kept, d)
			}
		}
		ds = kept
	}
	return ds
}

func approvedAt(inc Incident) time.Time {
	if inc.Approved {
		return inc.ApprovedAt
	}
	return time.Time{}
}

// FormatInstant writes an instant as every receipt and status does: absolute,
// in UTC, with the weekday: "2026-12-03 16:00 UTC (Thursday)".
func FormatInstant(t time.Time) string {
	if t.IsZero() {
		return "not set"
	}
	return t.UTC().Format("2006-01-02 15:04 UTC (Monday)")
}
