package workflow

import (
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// The process timeline (process.md §2, §3, §6; docs/design.md §2).
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
func staleAfter(inc Incident) time.Duration { return staleFor(inc.Severity(), inc.Deferred) }

// staleBase is when the staleness count started: the last change, or the
// hold of the release if later.
func staleBase(inc Incident) time.Time { return latest(inc.Updated, inc.HeldAt) }

func staleFor(sev Severity, deferred bool) time.Duration {
	if d := StaleAfter(sev); d > 0 {
		return d
	}
	if deferred {
		return DeferredNudgeEvery
	}
	return 0
}

// slots is the release rule as a cron schedule: 16:00 UTC, Monday–Thursday
// (docs/dependencies.md §4: cron as a calendar calculator only; Next is pure).
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
	Name   string    // "triage", "triage-escalation", "fix-team", "fix", "notice", "final-notice", "approval", "release", "retrospective", "stale"
	What   string    // what is due, for /status
	Due    time.Time // when; for an ASAP deadline, the time it became ASAP is not kept: Due is the nominal instant, possibly zero
	ASAP   bool      // public or embargo broken: due as soon as possible
	Done   time.Time // when it was met, or made moot; zero while open
	MootBy Milestone // set when a later milestone made it moot (TimelineRules) rather than met
}

// Open reports whether the deadline still has to be met: it is neither met
// nor moot.
func (d Deadline) Open() bool { return d.Done.IsZero() }

// Deadlines lists the milestones of an incident that apply to it in its
// current state, met, moot or open, in timeline order. A deadline is met
// when its rule's goal is reached, and moot when a later milestone is
// (TimelineRules): moot deadlines are not open, so they are neither
// reminded of, nor ASAP, nor in the digest. When the incident is public or
// its embargo broke, every open deadline before disclosure is ASAP.
func Deadlines(inc Incident, holidays []time.Time) []Deadline {
	var ds []Deadline
	add := func(name, what string, due time.Time) {
		d := Deadline{Name: name, What: what, Due: due}
		d.Done, d.MootBy = deadlineState(inc, name)
		ds = append(ds, d)
	}
	add("triage", "first response by the on-call (1 working day)", AddWorkingDays(inc.Opened, TriageReminderDays, holidays))
	add("triage-escalation", "triage promise to the reporter; escalate to all SRC (3 working days)", AddWorkingDays(inc.Opened, TriageEscalateDays, holidays))
	accepted := !inc.AcceptedAt.IsZero()
	if accepted {
		add("fix-team", "fix team formed (24 h after the report)", inc.Opened.Add(FixTeamWithin))
		add("fix", "CVSS, severity, CVE and fix (7 days after the report)", inc.Opened.Add(FixWithin))
	}
	if !inc.T.IsZero() {
		// The public track has no embargo: no notice is due (/notify is refused).
		if accepted && (len(inc.CVEs) > 0 || !inc.NotifiedAt.IsZero()) && inc.Track != TrackPublic {
			add("notice", "distributor notice (7 days before T)", inc.T.Add(-NoticeBefore))
		}
		if inc.Track == TrackPrivate {
			add("preannounce", "public pre-announcement of T (private track: 3–7 days before T, docs/process.md §9)", inc.T.Add(-PreannounceBy))
		}
		if !inc.NotifiedAt.IsZero() {
			add("final-notice", "final notice with the public text (24 h before T)", inc.T.Add(-FinalNoticeBefore))
		}
		add("approval", "advisory approved (24 h before T), else the release is held", inc.T.Add(-FinalNoticeBefore))
		add("release", "public disclosure at T", inc.T)
	}
	if !inc.DisclosedAt.IsZero() {
		add("retrospective", "retrospective (1–3 days after T)", inc.DisclosedAt.Add(RetroAfterMax))
	}
	sev := SeverityUnset
	if inc.Phase == PhaseFix || inc.Phase == PhaseEmbargo {
		sev = inc.Severity() // parsed once: Tick runs this for every open incident every minute
	}
	if d := staleFor(sev, inc.Deferred); d > 0 && (inc.Phase == PhaseFix || inc.Phase == PhaseEmbargo) {
		what := "reminder to the Fix Lead if nothing changes"
		if StaleAfter(sev) == 0 {
			what = "monthly reminder of the deferred incident to the Fix Lead"
		}
		// Staleness is never met, only moot: an approved advisory with its T
		// waits for the release (the final notice, the hold and the release
		// keep time). A change restarts the count, and so does a hold, after
		// which nothing keeps time but the committee.
		if _, moot := deadlineState(inc, "stale"); moot == 0 {
			add("stale", what, staleBase(inc).Add(d))
		}
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
			if !d.Open() && d.MootBy == MilestoneUnset {
				kept = append(kept, d)
			}
		}
		ds = kept
	}
	return ds
}

// deadlineState is when the named deadline was met (its rule's goal
// reached), or made moot and by what (the first of its rule's later
// milestones reached); zero while it is open.
func deadlineState(inc Incident, name string) (time.Time, Milestone) {
	r, ok := ruleFor(name)
	if !ok {
		return time.Time{}, MilestoneUnset
	}
	if at := r.Goal.ReachedAt(inc); !at.IsZero() {
		return at, MilestoneUnset
	}
	for _, m := range r.MootBy {
		if at := m.ReachedAt(inc); !at.IsZero() {
			return at, m
		}
	}
	return time.Time{}, MilestoneUnset
}

// FormatInstant writes an instant as every receipt and status does: absolute,
// in UTC, with the weekday: "2026-12-03 16:00 UTC (Thursday)".
func FormatInstant(t time.Time) string {
	if t.IsZero() {
		return "not set"
	}
	return t.UTC().Format("2006-01-02 15:04 UTC (Monday)")
}

// Milestone is a step of the process an incident reaches (process.md §3,
// §10). Each deadline, and each reminder of it, asks for one milestone, its
// goal, and gives way once the goal is reached or a later milestone makes it
// moot (TimelineRules).
type Milestone int

// The milestones, in process order. The zero value means none.
const (
	MilestoneUnset        Milestone = iota
	MilestoneTriaged                // accepted, rejected, a duplicate, handed off, or closed out of triage
	MilestoneFixTeam                // the first fix-team member added
	MilestoneFixed                  // /fixed: the fix is ready
	MilestoneAssessed               // fix ready, severity (CVSS) and CVE all known: fix development done (process.md §3, stage 3)
	MilestoneDeferred               // /defer: a low-severity incident waits for the next patch release
	MilestoneNotified               // the first distributor notice
	MilestonePreannounced           // the current T pre-announced (/preannounce; a new T needs a new one)
	MilestoneApproved               // the advisory approved (a withdrawn approval is not reached)
	MilestoneScheduled              // approved with its T set and not held: the release keeps time
	MilestoneHeld                   // the release at the current T held: not approved by T-24 h
	MilestoneFinalNotice            // the final notice for the current T
	MilestoneDisclosed              // released
	MilestoneRetro                  // the retrospective recorded
	MilestoneClosed                 // closed (a /reopen undoes it)
)

var milestoneNames = [...]string{"none", "triaged", "fix team formed", "fix ready", "CVSS, CVE and fix", "deferred",
	"distributors notified", "pre-announced", "advisory approved", "approved and waiting for T", "release held", "final notice sent",
	"disclosed", "retrospective done", "closed"}

func (m Milestone) String() string {
	if m < 0 || int(m) >= len(milestoneNames) {
		return fmt.Sprintf("Milestone(%d)", int(m))
	}
	return milestoneNames[m]
}

// ReachedAt returns when inc reached the milestone, read from its record;
// zero when it has not, or no longer has (a withdrawn approval, a new T, a
// reopened incident).
func (m Milestone) ReachedAt(inc Incident) time.Time {
	switch m {
	case MilestoneTriaged:
		if inc.TriagedAt.IsZero() && inc.Phase > PhaseTriage {
			return inc.AcceptedAt
		}
		return inc.TriagedAt
	case MilestoneFixTeam:
		return inc.FixTeamAt
	case MilestoneFixed:
		return inc.FixedAt
	case MilestoneAssessed:
		if inc.FixedAt.IsZero() || inc.Severity() == SeverityUnset || len(inc.CVEs) == 0 {
			return time.Time{}
		}
		return latest(inc.FixedAt, lastCommand(inc, "/cvss", "/severity"), lastCommand(inc, "/cve"))
	case MilestoneDeferred:
		if inc.Deferred {
			return latest(lastCommand(inc, "/defer"), inc.Opened)
		}
	case MilestoneNotified:
		return inc.NotifiedAt
	case MilestonePreannounced:
		return inc.PreannouncedForT()
	case MilestoneApproved:
		if inc.Approved {
			return inc.ApprovedAt
		}
	case MilestoneScheduled:
		if inc.Approved && !inc.T.IsZero() && inc.HeldAt.IsZero() {
			return latest(inc.ApprovedAt, tSetAt(inc))
		}
	case MilestoneHeld:
		return inc.HeldAt
	case MilestoneFinalNotice:
		return inc.FinalNoticeAt
	case MilestoneDisclosed:
		return inc.DisclosedAt
	case MilestoneRetro:
		return inc.RetroAt
	case MilestoneClosed:
		if inc.Phase == PhaseClosed {
			return latest(inc.ClosedAt, inc.Opened)
		}
	}
	return time.Time{}
}

func latest(ts ...time.Time) time.Time {
	var l time.Time
	for _, t := range ts {
		if t.After(l) {
			l = t
		}
	}
	return l
}

// lastCommand is when one of the named commands last changed the incident.
func lastCommand(inc Incident, names ...string) time.Time {
	for i := len(inc.History) - 1; i >= 0; i-- {
		c := inc.History[i].Command
		for _, n := range names {
			if c == n || strings.HasPrefix(c, n+" ") {
				return inc.History[i].At
			}
		}
	}
	return time.Time{}
}

// TimelineRule is one row of the process timeline (process.md §3, §6, §10):
// a reminder, notice or alert that Tick sends, the deadline it is about, who
// gets it, and when it gives way: once its goal is reached, or once a later
// milestone makes it moot. The rules are the one place this is decided:
// Deadlines, Reminders and Tick follow them, /status and the digest show
// their deadlines, and the timeline table of the README states them
// (TestReadmeTimelineTable checks it does).
type TimelineRule struct {
	Key      string      // the reminder's marker in Incident.Reminded, or the message: "final-notice", "release-held", "release", "digest"
	Deadline string      // the Deadline it is about; "" for asap and the digest
	When     string      // when it fires, in words
	What     string      // what it is, in words
	Who      string      // who gets it, in words
	To       Recipient   // for a reminder, who gets it; RecipientUnset for the other rows
	Goal     Milestone   // reached: the deadline is met and the reminder gives way
	MootBy   []Milestone // reached first: the deadline is moot, and the reminder gives way
	Also     string      // what else holds it back, in words

	group   string                                      // reminders of one group due together: only the latest is sent
	beforeT bool                                        // a reminder ahead of T: not sent when T was set after it
	at      func(inc Incident, due time.Time) time.Time // when it fires, from its deadline's due instant; nil: at the due instant
}

// GivesWay states when the row gives way, as the README's timeline table
// does: "GOAL, or moot once A, B or C; ALSO".
func (r TimelineRule) GivesWay() string {
	var s string
	if r.Goal != MilestoneUnset {
		s = r.Goal.String()
	}
	if n := len(r.MootBy); n > 0 {
		var names []string
		for _, m := range r.MootBy {
			names = append(names, m.String())
		}
		list := names[0]
		if n > 1 {
			list = strings.Join(names[:n-1], ", ") + " or " + names[n-1]
		}
		if s != "" {
			s += ", or "
		}
		s += "moot once " + list
	}
	if r.Also != "" {
		if s != "" {
			s += "; "
		}
		s += r.Also
	}
	return s
}

const asapAlso = "public or embargo broken: the daily ASAP nudge instead"

// timelineRules is the table. Rows that share a deadline share its goal and
// moot milestones (TestTimelineRulesConsistent).
var timelineRules = []TimelineRule{
	{Key: "triage", Deadline: "triage", When: "report + 1 working day", What: "triage reminder", Who: "the incident commander (the on-call)",
		To: RecipientCommander, Goal: MilestoneTriaged, MootBy: []Milestone{MilestoneClosed}, group: "triage"},
	{Key: "triage-escalation", Deadline: "triage-escalation", When: "report + 3 working days", What: "triage escalation", Who: "the SRC",
		To: RecipientSRC, Goal: MilestoneTriaged, MootBy: []Milestone{MilestoneClosed}, group: "triage"},
	{Key: "fix-team", Deadline: "fix-team", When: "report + 24 h", What: "fix team not formed", Who: "the Fix Lead",
		To: RecipientFixLead, Goal: MilestoneFixTeam, MootBy: []Milestone{MilestoneFixed, MilestoneNotified, MilestoneApproved, MilestoneDisclosed, MilestoneClosed},
		Also: asapAlso, group: "fix-team"},
	{Key: "fix", Deadline: "fix", When: "report + 7 days", What: "CVSS, CVE or fix missing", Who: "the SRC",
		To: RecipientSRC, Goal: MilestoneAssessed, MootBy: []Milestone{MilestoneDeferred, MilestoneNotified, MilestoneApproved, MilestoneDisclosed, MilestoneClosed},
		Also: asapAlso, group: "fix"},
	{Key: "stale", Deadline: "stale", When: "every 2 / 7 / 30 days without a change", What: "staleness nudge (critical / high / medium; deferred low: monthly)", Who: "the Fix Lead",
		To: RecipientFixLead, MootBy: []Milestone{MilestoneScheduled, MilestoneDisclosed, MilestoneClosed},
		Also: "a change, or a hold, restarts the count", group: "stale"},
	{Key: "notice-soon", Deadline: "notice", When: "T − 9 days", What: "the distributor notice is due at T − 7 days", Who: "the Fix Lead",
		To: RecipientFixLead, Goal: MilestoneNotified, MootBy: []Milestone{MilestoneHeld, MilestoneDisclosed, MilestoneClosed},
		Also: "none without a CVE; not sent when T was set after it; " + asapAlso, group: "notice", beforeT: true,
		at: func(inc Incident, _ time.Time) time.Time { return inc.T.Add(-NoticeRemindBefore) }},
	{Key: "notice", Deadline: "notice", When: "T − 7 days", What: "distributor notice overdue", Who: "the SRC",
		To: RecipientSRC, Goal: MilestoneNotified, MootBy: []Milestone{MilestoneHeld, MilestoneDisclosed, MilestoneClosed},
		Also: "none without a CVE; not sent when T was set after it; " + asapAlso, group: "notice", beforeT: true},
	{Key: "preannounce-soon", Deadline: "preannounce", When: "T − 7 days", What: "pre-announcement due (Go pre-announces 3–7 days ahead)", Who: "the SRC",
		To: RecipientSRC, Goal: MilestonePreannounced, MootBy: []Milestone{MilestoneHeld, MilestoneDisclosed, MilestoneClosed},
		Also: "private track only; a new T re-arms it; not sent when T was set after it; " + asapAlso, group: "preannounce", beforeT: true,
		at: func(inc Incident, _ time.Time) time.Time { return inc.T.Add(-PreannounceFrom) }},
	{Key: "preannounce", Deadline: "preannounce", When: "T − 3 days", What: "pre-announcement still missing", Who: "the SRC",
		To: RecipientSRC, Goal: MilestonePreannounced, MootBy: []Milestone{MilestoneHeld, MilestoneDisclosed, MilestoneClosed},
		Also: "private track only; a new T re-arms it; not sent when T was set after it; " + asapAlso, group: "preannounce", beforeT: true},
	{Key: "approval-soon", Deadline: "approval", When: "T − 48 h", What: "advisory not approved", Who: "the SRC",
		To: RecipientSRC, Goal: MilestoneApproved, MootBy: []Milestone{MilestoneHeld, MilestoneDisclosed, MilestoneClosed},
		Also: "not sent when T was set after it; " + asapAlso, group: "approval", beforeT: true,
		at: func(inc Incident, _ time.Time) time.Time { return inc.T.Add(-ApprovalRemindBefore) }},
	{Key: "final-notice", Deadline: "final-notice", When: "T − 25 h … T − 24 h", What: "final notice with the public text", Who: "the distributors",
		Goal: MilestoneFinalNotice, MootBy: []Milestone{MilestoneHeld, MilestoneDisclosed, MilestoneClosed},
		Also: "only after a first notice, once approved; a new T needs a new one"},
	{Key: "release-held", Deadline: "approval", When: "T − 24 h, not approved (or after T: a clock jump, downtime, or a /reopen across T)", What: "release held", Who: "the SRC",
		Goal: MilestoneApproved, MootBy: []Milestone{MilestoneHeld, MilestoneDisclosed, MilestoneClosed},
		Also: "once per T; /disclose now, or a new T, releases"},
	{Key: "release", Deadline: "release", When: "T", What: "release", Who: "announce, channels, distributors, SRC, reporter",
		Goal: MilestoneDisclosed, MootBy: []Milestone{MilestoneClosed},
		Also: "held unless approved by T − 24 h (and, after a notice, the final notice sent)"},
	{Key: "retro-reminder", Deadline: "retrospective", When: "T + 1 day", What: "retrospective reminder", Who: "the Fix Lead",
		To: RecipientFixLead, Goal: MilestoneRetro, MootBy: []Milestone{MilestoneClosed}, group: "retrospective",
		at: func(inc Incident, _ time.Time) time.Time { return inc.DisclosedAt.Add(RetroRemindAfter) }},
	{Key: "retrospective", Deadline: "retrospective", When: "T + 3 days", What: "retrospective escalation", Who: "the SRC",
		To: RecipientSRC, Goal: MilestoneRetro, MootBy: []Milestone{MilestoneClosed}, group: "retrospective"},
	{Key: "asap", When: "daily, from a day after /public or /embargo-break", What: "every open deadline is ASAP", Who: "the SRC",
		To: RecipientSRC, MootBy: []Milestone{MilestoneDisclosed, MilestoneClosed},
		Also: "only while a deadline before disclosure is open", group: "asap"},
	{Key: "digest", When: "Mondays 00:00 UTC", What: "digest: on-call, open incidents, this week's deadlines, member keys expiring within 30 days", Who: "the SRC",
		Also: "lists the open deadlines of open incidents only: met or moot ones leave it"},
}

// TimelineRules returns the rules of the timeline, in the order of the
// README's table.
func TimelineRules() []TimelineRule {
	out := make([]TimelineRule, len(timelineRules))
	for i, r := range timelineRules {
		r.MootBy = append([]Milestone(nil), r.MootBy...)
		out[i] = r
	}
	return out
}

// moot reports whether a milestone that makes the rule moot is reached.
func (r TimelineRule) moot(inc Incident) bool {
	for _, m := range r.MootBy {
		if !m.ReachedAt(inc).IsZero() {
			return true
		}
	}
	return false
}

// ruleFor returns the first rule about the named deadline.
func ruleFor(deadline string) (TimelineRule, bool) {
	for _, r := range timelineRules {
		if r.Deadline == deadline {
			return r, true
		}
	}
	return TimelineRule{}, false
}
