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

// Tick is what the scheduler asks of an open incident at now (DESIGN.md §1:
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
//   - Otherwise, from T-24 h, the release is held and the SRC alerted, once
//     per T: never early, never silently late. A new T (/disclose) re-arms it.
//   - A reminder to the SRC for every other deadline that fell due
//     (Deadlines), once per due instant: triage, escalation, fix team, fix,
//     notice, approval, retrospective, stale.
func Tick(inc Incident, now time.Time, env Env) Result {
	now = now.UTC()
	n := inc.clone()
	var actions []Action
	var what []string
	note := func(w string) { what = append(what, w) }
	alert := func(template string, kv ...string) {
		f := map[string]string{"id": string(n.ID)}
		for i := 0; i+1 < len(kv); i += 2 {
			f[kv[i]] = kv[i+1]
		}
		actions = append(actions, AlertSRC{Template: template, Fields: f})
	}
	releasing := !n.T.IsZero() && (n.Phase == PhaseEmbargo || n.Phase == PhaseFix)
	if releasing {
		finalBy := n.T.Add(-FinalNoticeBefore)
		notified := !n.NotifiedAt.IsZero()
		if n.Phase == PhaseEmbargo && n.Approved && n.FinalNoticeAt.IsZero() &&
			!now.Before(n.T.Add(-FinalNoticeWindow)) && !now.After(finalBy) {
			n.FinalNoticeAt = now
			actions = append(actions, DistributorNotice{T: n.T, Previous: n.NotifiedT, Final: true})
			note("final notice to the distributors for T = " + FormatInstant(n.T))
		}
		inTime := n.Approved && !n.ApprovedAt.After(finalBy) && (!notified || !n.FinalNoticeAt.IsZero())
		switch {
		case !now.Before(n.T) && inTime:
			actions = append(actions, Release{At: n.T})
			n.DisclosedAt, n.Phase = now, PhaseDisclosed
			actions = append(actions, ReporterMail{Template: "disclosed", Fields: map[string]string{
				"id": string(n.ID), "t": FormatInstant(n.T), "cve": strings.Join(n.CVEs, ", "), "summary": n.Advisory.Summary}})
			note("released at T = " + FormatInstant(n.T) + "; phase → disclosed; reporter told")
		case now.After(finalBy) && !inTime && n.HeldAt.IsZero():
			n.HeldAt = now
			alert("release-held", "t", FormatInstant(n.T))
			note("release at T = " + FormatInstant(n.T) + " held: the advisory was not approved (and the final notice sent) by T-24 h; set a new T with /disclose")
		}
	}
	for _, d := range Deadlines(n, env.Holidays) {
		switch d.Name {
		case "final-notice", "release":
			continue // handled above
		case "approval":
			if !releasing || !n.HeldAt.IsZero() {
				continue
			}
		}
		if !d.Open() || now.Before(d.Due) || n.Reminded[d.Name].Equal(d.Due) {
			continue
		}
		if n.Reminded == nil {
			n.Reminded = make(map[string]time.Time)
		}
		n.Reminded[d.Name] = d.Due
		alert("reminder", "deadline", d.Name, "what", d.What, "due", FormatInstant(d.Due))
		note(fmt.Sprintf("reminder: %s (due %s)", d.Name, FormatInstant(d.Due)))
	}
	if len(what) == 0 {
		return Result{Incident: inc}
	}
	for _, w := range what {
		n.History = append(n.History, Change{At: now, Command: "(tick)", What: w})
	}
	n.Version = SchemaVersion
	return Result{Incident: n, Actions: actions, Applied: true}
}
