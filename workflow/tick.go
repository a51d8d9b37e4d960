package workflow

import (
	"fmt"
	"strings"
	"time"
)

// FinalNoticeWindow opens the final notice this long before T; it must go out
// by T-24 h (FinalNoticeBefore), so a tick anywhere in the last hour of the
// window still gives distributors their 24 hours.
const FinalNoticeWindow = 25 * time.Hour

// ReleaseGrace is how late after T a tick may still release: the scheduler
// ticks every minute, so a release due longer ago was not made at T by a
// running scheduler (the incident was closed across T and reopened, or the
// daemon was down) and is held for the SRC to confirm: never silently late.
const ReleaseGrace = 10 * time.Minute

// Tick is what the scheduler asks of an open incident at now (docs/design.md §1:
// deadlines live in the store, a tick decides what is due). It returns the
// incident with what it did recorded (so a second tick, or a tick after a
// restart, sends nothing twice) and the mail to send; the caller commits both
// in one transaction. Result.Applied reports whether anything changed.
//
//   - The final distributor notice, with the public text, between T-25 h and
//     T-24 h, once the advisory is approved (embargo phase).
//   - The release at T, when the advisory was approved by T-24 h (and, after a
//     distributor notice, the final notice went out): Release, the reporter
//     told, phase → disclosed.
//   - Otherwise, at T-24 h, the release is held and the SRC alerted, once
//     per T: never early, never silently late. A release due more than
//     ReleaseGrace ago (an incident closed across T and reopened) is held
//     too. A new T (/disclose) re-arms it; /disclose now releases.
//   - Every reminder of the timeline that fell due (Reminders), once per
//     instant it fires at: to the incident commander (the on-call: triage),
//     the Fix Lead, or the whole SRC (escalations). When several reminders
//     about one deadline are due at once (the daemon was down), only the
//     latest is sent: a careful coordinator would not send both.
//
// Tick never changes Updated: its own reminders do not reset staleness.
func Tick(inc Incident, now time.Time, env Env) Result {
	return TickAfterGap(inc, now, env, time.Time{})
}

// TickAfterGap is Tick for a scheduler whose wall clock moved forward from
// gapFrom to now without its monotonic clock seeing the time pass: a clock
// jump, or the daemon was down (docs/threat-model.md G4). A release whose T
// falls in the gap is held, as one not approved in time is: the SRC is
// alerted, the hold is recorded (HeldAt) with the reminders of the same tick,
// and /disclose now, or a new T, releases it. A zero gapFrom is Tick.
func TickAfterGap(inc Incident, now time.Time, env Env, gapFrom time.Time) Result {
	now = now.UTC()
	n := inc.clone()
	t := ticker{n: &n, now: now}
	t.release(gapFrom)
	if noticeIn(t.actions) {
		// The final notice's own note records the tick: n is stored.
		recordNotified(&n, env.Distributors, now)
	}
	t.reminders(env)
	if len(t.what) == 0 {
		return Result{Incident: inc}
	}
	for _, w := range t.what {
		n.History = append(n.History, Change{At: now, Command: "(tick)", What: w})
	}
	n.Version = SchemaVersion
	return Result{Incident: n, Actions: t.actions, Applied: true}
}

// ticker collects what one tick does to an incident.
type ticker struct {
	n       *Incident
	now     time.Time
	actions []Action
	what    []string // for the history, one entry each
}

func (t *ticker) note(w string) { t.what = append(t.what, w) }

func (t *ticker) alert(template string, kv ...string) {
	t.actions = append(t.actions, AlertSRC{Template: template, Fields: alertFields(t.n.ID, kv...)})
}

// release sends the final notice in its window, and releases or holds at T.
func (t *ticker) release(gapFrom time.Time) {
	n, now := t.n, t.now
	if n.T.IsZero() || (n.Phase != PhaseEmbargo && n.Phase != PhaseFix) {
		return
	}
	finalBy := n.T.Add(-FinalNoticeBefore)
	notified := !n.NotifiedAt.IsZero()
	if n.Phase == PhaseEmbargo && n.Approved && n.FinalNoticeAt.IsZero() &&
		!now.Before(n.T.Add(-FinalNoticeWindow)) && !now.After(finalBy) {
		n.FinalNoticeAt = now
		t.actions = append(t.actions, DistributorNotice{T: n.T, Previous: n.NotifiedT, Final: true})
		t.note("final notice to the distributors for T = " + FormatInstant(n.T))
	}
	inTime := n.Approved && !n.ApprovedAt.After(finalBy) && (!notified || !n.FinalNoticeAt.IsZero())
	due := !now.Before(n.T) && inTime && n.HeldAt.IsZero()
	switch {
	case due && !gapFrom.IsZero() && n.T.After(gapFrom):
		n.HeldAt = now
		t.alert("release-held", "t", FormatInstant(n.T)+"; the wall clock jumped (or embargo was down) across it. Check the clock, then confirm with /disclose now")
		t.note("release at T = " + FormatInstant(n.T) + " held: the clock moved from " + FormatInstant(gapFrom) +
			" without the scheduler seeing the time pass (a clock jump, or embargo was down); confirm with /disclose now, or set a new T")
	case due && now.Sub(n.T) > ReleaseGrace:
		late := now.Sub(n.T).Round(time.Minute).String()
		n.HeldAt = now
		t.alert("release-held", "t", FormatInstant(n.T)+"; T passed "+late+" ago without a release (the incident was closed, or embargo was down). Confirm with /disclose now, or set a new T")
		t.note("release at T = " + FormatInstant(n.T) + " held: T passed " + late + " ago without a release (the incident was closed then, or embargo was down); confirm with /disclose now, or set a new T")
	case due:
		t.actions = append(t.actions, Release{At: n.T})
		n.DisclosedAt, n.Phase = now, PhaseDisclosed
		t.actions = append(t.actions, ReporterMail{Template: "disclosed", Fields: map[string]string{
			"id": string(n.ID), "t": FormatInstant(n.T), "cve": strings.Join(n.CVEs, ", "), "summary": n.Advisory.Summary}})
		t.note("released at T = " + FormatInstant(n.T) + "; phase → disclosed; reporter told")
	case !now.Before(finalBy) && !inTime && n.HeldAt.IsZero():
		n.HeldAt = now
		t.alert("release-held", "t", FormatInstant(n.T))
		t.note("release at T = " + FormatInstant(n.T) + " held: the advisory was not approved (and the final notice sent) by T-24 h; set a new T with /disclose")
	}
}

// reminders sends what fell due, the latest of each group.
func (t *ticker) reminders(env Env) {
	n, now := t.n, t.now
	var due []Reminder
	for _, r := range Reminders(*n, now, env.Holidays) {
		last, sent := n.Reminded[r.Key]
		// A one-off reminder fires once per instant (a new T moves it, either
		// way); a repeating one's marker is the latest occurrence sent, so an
		// earlier one, which a clock set back would compute, was sent too.
		if now.Before(r.At) || last.Equal(r.At) || (r.repeats && sent && r.At.Before(last)) {
			continue
		}
		due = append(due, r)
	}
	for i, r := range due {
		if n.Reminded == nil {
			n.Reminded = make(map[string]time.Time)
		}
		n.Reminded[r.Key] = r.At
		superseded := false
		for _, later := range due[i+1:] {
			superseded = superseded || later.group == r.group
		}
		if superseded {
			t.note(fmt.Sprintf("reminder %s (due %s) not sent: %s supersedes it", r.Key, FormatInstant(r.Due), groupLatest(due[i+1:], r.group)))
			continue
		}
		f := alertFields(n.ID, "key", r.Key, "deadline", r.Deadline, "what", r.What, "due", FormatInstant(r.Due), "title", r.Title)
		to, role := "", ""
		switch r.To {
		case RecipientCommander:
			to, role = n.Commander, "incident commander"
			if to == "" {
				to, _ = OnCall(env.Rotation, env.OnCallState, now)
				role = "on-call"
			}
		case RecipientFixLead:
			to, role = n.FixLead, "Fix Lead"
		}
		if to == "" {
			t.actions = append(t.actions, AlertSRC{Template: "reminder", Fields: f})
			t.note(fmt.Sprintf("reminder to the SRC: %s (due %s)", r.Key, FormatInstant(r.Due)))
			continue
		}
		f["role"] = role
		t.actions = append(t.actions, Remind{To: to, Role: role, Fields: f})
		t.note(fmt.Sprintf("reminder to %s (%s): %s (due %s)", to, role, r.Key, FormatInstant(r.Due)))
	}
}

func alertFields(id ID, kv ...string) map[string]string {
	f := map[string]string{"id": string(id)}
	for i := 0; i+1 < len(kv); i += 2 {
		f[kv[i]] = kv[i+1]
	}
	return f
}

func groupLatest(rs []Reminder, group string) string {
	k := ""
	for _, r := range rs {
		if r.group == group {
			k = r.Key
		}
	}
	return k
}

// Remind sends a reminder to one committee member: the incident commander
// (the on-call) or the Fix Lead (Tick). Fields are those of AlertSRC's
// reminder template, with role; Role says why this member gets it.
type Remind struct {
	To     string
	Role   string
	Fields map[string]string
}

func (Remind) Kind() string { return "remind" }
func (Remind) action()      {}

// Recipient says who gets a reminder.
type Recipient int

// The recipients. The zero value means unset.
const (
	RecipientUnset     Recipient = iota
	RecipientSRC                 // the whole committee (and the fix team): an escalation
	RecipientCommander           // the incident commander (else the on-call, else the SRC)
	RecipientFixLead             // the Fix Lead (else the SRC)
)

var recipientNames = [...]string{"unset", "src", "commander", "fix-lead"}

func (r Recipient) String() string {
	if r < 0 || int(r) >= len(recipientNames) {
		return fmt.Sprintf("Recipient(%d)", int(r))
	}
	return recipientNames[r]
}

// Reminder is one nudge of the process timeline (process.md §3, §10).
type Reminder struct {
	Key      string    // the marker in Incident.Reminded: a key fires once per At
	Deadline string    // the deadline it is about (a Deadline name, or "asap")
	Title    string    // a few words for the subject: "fix overdue (7 days)"
	What     string    // what is due, for the message
	Due      time.Time // the deadline's instant, for the message
	At       time.Time // when it fires
	To       Recipient
	group    string // reminders of one group due together: only the latest is sent
	repeats  bool   // stale, asap: At is one occurrence of a period
}

// Reminders lists the reminders of an incident's timeline that apply in its
// current state, sent or not, in the order they fire; now places the
// repeating ones (the latest occurrence at or before now, else the next).
// The reminders, whom they go to and when they give way are the rows of
// TimelineRules with a recipient:
//
//	triage            report + 1 working day   the incident commander (on-call)
//	triage-escalation report + 3 working days  the SRC
//	fix-team          report + 24 h            the Fix Lead
//	fix               report + 7 days          the SRC
//	stale             every 2/7/30 days        the Fix Lead (critical/high/medium; deferred low: monthly) without a change
//	notice-soon       T - 9 days               the Fix Lead (with a CVE, no distributor notice yet)
//	notice            T - 7 days               the SRC
//	preannounce-soon  T - 7 days               the SRC (private track, no pre-announcement of the current T)
//	preannounce       T - 3 days               the SRC (private track, still none)
//	approval-soon     T - 48 h                 the SRC (at T-24 h Tick holds the release instead)
//	retro-reminder    disclosure + 1 day       the Fix Lead
//	retrospective     disclosure + 3 days      the SRC
//	asap              every day                the SRC, while the incident is public or broken and a deadline is open
//
// A reminder is listed only while its deadline is open: neither met nor made
// moot by a later milestone (Deadlines). Reminders before T (notice-soon,
// notice, preannounce-soon, preannounce, approval-soon) are left out when they fall before T was set: the
// /disclose receipt already states them. When the incident is ASAP, the
// reminders of its ASAP deadlines give way to the daily asap reminder, which
// starts a day after /public or /embargo-break (the command itself is the
// first alert).
func Reminders(inc Incident, now time.Time, holidays []time.Time) []Reminder {
	if inc.Phase == PhaseClosed || inc.Phase == PhaseUnset {
		return nil
	}
	dl := map[string]Deadline{}
	var asap []string
	for _, d := range Deadlines(inc, holidays) {
		dl[d.Name] = d
		if d.Open() && d.ASAP {
			asap = append(asap, d.Name)
		}
	}
	tSet := tSetAt(inc)
	var rs []Reminder
	for _, rule := range timelineRules {
		if rule.To == RecipientUnset {
			continue // a notice or alert of Tick's, not a reminder
		}
		r := Reminder{Key: rule.Key, Deadline: rule.Deadline, To: rule.To, group: rule.group, repeats: rule.Key == "stale" || rule.Key == "asap"}
		switch rule.Key {
		case "stale":
			d, ok := dl["stale"]
			if !ok || !d.Open() {
				continue
			}
			base := staleBase(inc)
			p := d.Due.Sub(base) // the period Deadlines found
			r.What, r.At = d.What, every(base, p, 1, now)
			r.Due, r.Title = r.At, fmt.Sprintf("no change for %d days", int(p/(24*time.Hour)))
		case "asap":
			if len(asap) == 0 || rule.moot(inc) {
				continue
			}
			since := asapSince(inc)
			why := "the issue is public"
			if inc.EmbargoBroken {
				why = "the embargo broke"
			}
			r.Deadline, r.Due, r.At = "asap", since, every(since, ASAPNudgeEvery, 1, now)
			r.What = why + ": every open deadline is due as soon as possible: " + strings.Join(asap, ", ")
		default:
			d, ok := dl[rule.Deadline]
			if !ok || !d.Open() || d.ASAP {
				continue
			}
			r.What, r.Due, r.At = d.What, d.Due, d.Due
			if rule.at != nil {
				r.At = rule.at(inc, d.Due)
			}
			if r.At.IsZero() || (rule.beforeT && !tSet.IsZero() && r.At.Before(tSet)) {
				continue
			}
			switch r.Key {
			case "fix":
				r.What = "CVSS, severity, CVE and fix were due 7 days after the report; missing: " + missingForFix(inc)
			case "preannounce-soon":
				r.What = "no public pre-announcement of the release at T = " + FormatInstant(inc.T) +
					" yet; the incident is on the private track, and Go pre-announces 3–7 days ahead (docs/process.md §9): send /preannounce (or /preannounce nosev) in its thread by " +
					FormatInstant(d.Due)
			case "preannounce":
				r.What = "still no public pre-announcement of the release at T = " + FormatInstant(inc.T) +
					"; the incident is on the private track, Go pre-announces 3–7 days ahead (docs/process.md §9), and T is 3 days away: send /preannounce (or /preannounce nosev) in its thread now, or choose another track with /track"
			}
		}
		if r.Title == "" {
			r.Title = reminderTitle(r, inc)
		}
		rs = append(rs, r)
	}
	sortReminders(rs)
	return rs
}

// reminderTitle names a reminder in a few words, for the subject line.
func reminderTitle(r Reminder, inc Incident) string {
	switch r.Key {
	case "triage":
		return "triage due (1 working day)"
	case "triage-escalation":
		return "triage overdue (3 working days)"
	case "fix-team":
		return "fix team not formed (24 h)"
	case "fix":
		return "fix overdue (7 days)"
	case "notice-soon":
		return "distributor notice due " + FormatInstant(r.Due)
	case "notice":
		return "distributor notice overdue (T-7 days)"
	case "preannounce-soon":
		return "pre-announcement due (T-7 days)"
	case "preannounce":
		return "pre-announcement still missing (T-3 days)"
	case "approval-soon":
		return "advisory not approved (T-48 h)"
	case "stale":
		return fmt.Sprintf("no change for %d days", int(staleAfter(inc)/(24*time.Hour)))
	case "retro-reminder":
		return "retrospective due (T+1 day)"
	case "retrospective":
		return "retrospective overdue (T+3 days)"
	case "asap":
		return "every deadline is ASAP"
	}
	return r.Deadline
}

// every returns the occurrence base + k·period, k ≥ min, that is the latest
// at or before now, or the first one after it.
func every(base time.Time, period time.Duration, min int, now time.Time) time.Time {
	k := min
	if n := int(now.Sub(base) / period); n > k {
		k = n
	}
	return base.Add(time.Duration(k) * period)
}

// tSetAt is when the current T was set: the last /disclose DATE applied.
func tSetAt(inc Incident) time.Time {
	for i := len(inc.History) - 1; i >= 0; i-- {
		if c := inc.History[i].Command; strings.HasPrefix(c, "/disclose ") && !strings.HasPrefix(c, "/disclose now") {
			return inc.History[i].At
		}
	}
	return time.Time{}
}

// asapSince is when the incident became ASAP: the first /public or
// /embargo-break applied (else its last change).
func asapSince(inc Incident) time.Time {
	for _, h := range inc.History {
		if h.Command == "/public" || h.Command == "/embargo-break" {
			return h.At
		}
	}
	return inc.Updated
}

func missingForFix(inc Incident) string {
	var m []string
	if inc.Severity() == SeverityUnset {
		m = append(m, "CVSS or severity (/cvss)")
	}
	if len(inc.CVEs) == 0 {
		m = append(m, "CVE (/cve)")
	}
	if inc.FixedAt.IsZero() {
		m = append(m, "fix (/fixed)")
	}
	return strings.Join(m, ", ")
}

func sortReminders(rs []Reminder) {
	for i := 1; i < len(rs); i++ {
		for j := i; j > 0 && rs[j].At.Before(rs[j-1].At); j-- {
			rs[j], rs[j-1] = rs[j-1], rs[j]
		}
	}
}
