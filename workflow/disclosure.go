package workflow

import (
	"strings"
	"time"
)

// The commands that lead to the release: the fix, the date T, the notice to
// the distributors, and what speeds the incident up or slows it down. Each is
// reached from its row of the command table (Commands).

func (m *machine) fixed(Command) (string, bool, error) {
	if err := m.inPhase(PhaseFix, PhaseEmbargo); err != nil {
		return "", false, err
	}
	if !m.inc.FixedAt.IsZero() {
		return "already marked fixed " + FormatInstant(m.inc.FixedAt), false, nil
	}
	m.inc.FixedAt = m.now
	m.reporter("fixed")
	return "fix ready; reporter told", true, nil
}

// noticeRule enforces the 7-day rule: with a CVE, T at least NoticeBefore after
// the distributor notice, or after now when none was sent; not for a public
// incident, a broken embargo, or an emergency.
func (m *machine) noticeRule(t time.Time, emergency bool) error {
	if len(m.inc.CVEs) == 0 || m.inc.sevenDayRuleLifted(emergency) {
		return nil
	}
	if base, what := m.noticeBase(); t.Before(base.Add(NoticeBefore)) {
		return argErr(ErrNoticeRule, "with a CVE, T must be at least 7 days after %s: the earliest slot is %s (or say emergency, or mark the incident /public)",
			what, FormatInstant(NextSlot(base.Add(NoticeBefore), m.env.Holidays)))
	}
	return nil
}

// noticeBase is what the 7-day rule counts from: the distributor notice, or
// now before one.
func (m *machine) noticeBase() (time.Time, string) {
	if !m.inc.NotifiedAt.IsZero() {
		return m.inc.NotifiedAt, "the distributor notice of " + FormatInstant(m.inc.NotifiedAt)
	}
	return m.now, "now (no distributor notice yet)"
}

// cveNoticeRule is the 7-day rule for a CVE that arrives once T is set
// (docs/process.md §3, stage 5: every vulnerability with a CVE gets at least
// 7 days' notice): an incident without a CVE may have been given a shorter
// notice, or a nearer T, than a CVE allows, and the CVE would make the
// release at T break the rule. It is refused, and the receipt says how to
// proceed: move T first, or declare the emergency. Not when T has passed (a
// new T is checked by /disclose), for a public or broken incident or an
// emergency T, nor when a /disclose DATE later in the same message sets T:
// that one checks the rule, CVE included.
//
// again is the command to send again once T moved (cve, or track private
// when leaving a track that lifts the rule).
func (m *machine) cveNoticeRule(again string) error {
	inc := &m.inc
	if inc.T.IsZero() || !inc.T.After(m.now) || inc.sevenDayRuleLifted(inc.Emergency) || m.laterDate() {
		return nil
	}
	base, what := m.noticeBase()
	if !inc.T.Before(base.Add(NoticeBefore)) {
		return nil
	}
	return argErr(ErrNoticeRule, "with a CVE, T must be at least 7 days after %s, and T is %s: first move T with /disclose DATE "+
		"(the earliest slot is %s; in this message or an earlier one), or keep it with /disclose DATE emergency, or mark the incident /public; then send /%s again",
		what, FormatInstant(inc.T), FormatInstant(NextSlot(base.Add(NoticeBefore), m.env.Holidays)), again)
}

func (m *machine) disclose(c Command) (string, bool, error) {
	inc := &m.inc
	if err := m.inPhase(PhaseFix, PhaseEmbargo); err != nil {
		return "", false, err
	}
	emergency := len(c.Args) > 1 && c.Args[1] == "emergency"
	if c.Args[0] == "now" {
		if !inc.Approved {
			return "", false, argErr(ErrGuard, "the advisory is not approved: /approve it first (in the same message if need be)")
		}
		if done, what, changed, err := m.twoPerson(c); !done {
			return what, changed, err
		}
		var what []string
		if !inc.NotifiedAt.IsZero() {
			m.emit(EmbargoLifted{At: m.now})
			what = append(what, "distributors told the embargo is lifted")
		}
		m.emit(Release{At: m.now})
		inc.T, inc.DisclosedAt, inc.Phase = m.now, m.now, PhaseDisclosed
		if emergency {
			inc.Emergency = true
		}
		m.reporter("disclosed", "t", FormatInstant(m.now), "cve", strings.Join(inc.CVEs, ", "), "summary", inc.Advisory.Summary)
		what = append(what, "advisory released "+FormatInstant(m.now), "phase → disclosed", "reporter told")
		return strings.Join(what, "; "), true, nil
	}
	asked, err := ParseInstant(c.Args[0])
	if err != nil {
		return "", false, err
	}
	if asked.Before(m.now) {
		return "", false, argErr(ErrPast, "%s is in the past (now is %s)", FormatInstant(asked), FormatInstant(m.now))
	}
	t := NextSlot(asked, m.env.Holidays)
	if t.After(m.now.Add(MaxEmbargo)) {
		return "", false, argErr(ErrGuard, "T would be %s, more than 90 days ahead", FormatInstant(t))
	}
	if err := m.noticeRule(t, emergency); err != nil {
		return "", false, err
	}
	what := "T = " + FormatInstant(t)
	if !t.Equal(asked) {
		what += " (asked " + FormatInstant(asked) + "; T is 16:00 UTC on the next Monday–Thursday that is not a holiday)"
	}
	if emergency {
		what += "; emergency: no 7-day rule"
	}
	if t.Equal(inc.T) && emergency == inc.Emergency {
		return what + "; unchanged", false, nil
	}
	prev := inc.T
	inc.T, inc.Emergency = t, emergency
	switch {
	case t.Equal(m.before.T):
		// Back to the T the message found (/disclose D1, /disclose T0): the
		// final notice and the hold for it stand.
		inc.FinalNoticeAt, inc.HeldAt = m.before.FinalNoticeAt, m.before.HeldAt
	case !t.Equal(prev): // a new T needs its own final notice, and may release
		inc.FinalNoticeAt, inc.HeldAt = time.Time{}, time.Time{}
	}
	// One message tells the distributors and the reporter once, of its last
	// T: a later /disclose DATE in the same message speaks for this one, and
	// so does a later /notify, which re-sends the notice, to the distributors.
	// (A later /disclose now may only record a signature: this one tells.)
	if m.laterDate() {
		return what + "; the distributors and the reporter hear of the last T of this message", true, nil
	}
	switch {
	case inc.NotifiedAt.IsZero() || t.Equal(inc.NotifiedT):
	case m.later("notify"):
		what += "; the /notify below tells the distributors"
	case m.amendNotice(t):
		what += "; the notice of this message says so"
	default:
		m.emit(DistributorNotice{T: t, Previous: inc.NotifiedT, Renotify: true})
		what += "; distributors re-notified (they had " + FormatInstant(inc.NotifiedT) + ")"
		inc.NotifiedT = t
	}
	if p, ok := inc.LastPreannouncement(); ok && !p.T.Equal(t) && !m.later("preannounce") {
		what += "; the public was pre-announced T = " + FormatInstant(p.T) + ": send /preannounce to tell them the new date"
	} else if inc.Track == TrackPrivate && !m.later("preannounce") {
		what += "; private track: pre-announce with /preannounce between " + FormatInstant(t.Add(-PreannounceFrom)) + " and " + FormatInstant(t.Add(-PreannounceBy))
	}
	if t.Equal(m.before.T) {
		return what + "; as before this message: the reporter is not told again", true, nil
	}
	p := ""
	if !m.before.T.IsZero() {
		p = FormatInstant(m.before.T)
	}
	m.reporter("date", "t", FormatInstant(t), "previous_t", p)
	return what + "; reporter told", true, nil
}

// laterDate reports whether a /disclose DATE follows the running command.
func (m *machine) laterDate() bool {
	for _, c := range m.cmds[m.at+1:] {
		if c.Name == "disclose" && c.arg(0) != "now" {
			return true
		}
	}
	return false
}

// amendNotice moves the distributor notice an earlier /notify of the same
// message queued to T = t: the distributors get one notice, of the
// message's last T. It reports whether there was one.
func (m *machine) amendNotice(t time.Time) bool {
	for i, a := range m.actions {
		if n, ok := a.(DistributorNotice); ok && !n.Final {
			n.T = t
			m.actions[i] = n
			m.inc.NotifiedT = t
			return true
		}
	}
	return false
}

func (m *machine) notify(Command) (string, bool, error) {
	inc := &m.inc
	if err := m.inPhase(PhaseFix, PhaseEmbargo); err != nil {
		return "", false, err
	}
	if err := m.trackRefusal("notify"); err != nil {
		return "", false, err
	}
	var missing []string
	if inc.Severity() == SeverityUnset {
		missing = append(missing, "a severity (/cvss or /severity)")
	}
	if inc.FixedAt.IsZero() && inc.Advisory.Mitigation == "" {
		missing = append(missing, "a fix (/fixed) or a mitigation (/set mitigation)")
	}
	if inc.T.IsZero() {
		missing = append(missing, "T (/disclose DATE)")
	}
	if len(missing) > 0 {
		return "", false, argErr(ErrGuard, "the notice needs %s", strings.Join(missing, ", "))
	}
	if !inc.T.After(m.now) {
		return "", false, argErr(ErrPast, "T %s has passed: set a new one with /disclose", FormatInstant(inc.T))
	}
	if inc.NotifiedAt.IsZero() {
		if err := m.noticeRule(inc.T, inc.Emergency); err != nil {
			return "", false, err
		}
		inc.NotifiedAt, inc.NotifiedT, inc.Phase = m.now, inc.T, PhaseEmbargo
		m.emit(DistributorNotice{T: inc.T})
		return "distributors notified of T = " + FormatInstant(inc.T) + "; phase fix → embargo", true, nil
	}
	if m.amendNotice(inc.T) {
		return "the notice of this message already tells the distributors T = " + FormatInstant(inc.T), false, nil
	}
	m.emit(DistributorNotice{T: inc.T, Previous: inc.NotifiedT, Renotify: true})
	inc.NotifiedT = inc.T
	return "distributors notified again of T = " + FormatInstant(inc.T), true, nil
}

func (m *machine) public(c Command) (string, bool, error) {
	if err := m.open(); err != nil {
		return "", false, err
	}
	if m.inc.Public {
		return "already public", false, nil
	}
	if done, what, changed, err := m.twoPerson(c); !done {
		return what, changed, err
	}
	m.inc.Public = true
	return "marked public: every deadline is now ASAP; no 7-day notice rule", true, nil
}

func (m *machine) embargoBreak(c Command) (string, bool, error) {
	if err := m.inPhase(PhaseFix, PhaseEmbargo); err != nil {
		return "", false, err
	}
	if m.inc.EmbargoBroken {
		return "embargo already recorded as broken", false, nil
	}
	if done, what, changed, err := m.twoPerson(c); !done {
		return what, changed, err
	}
	m.inc.EmbargoBroken = true
	m.emit(AlertSRC{Template: "embargo-break", Fields: map[string]string{"id": string(m.inc.ID), "by": m.by.Email}})
	return "embargo broken: every deadline is now ASAP; SRC alerted; pull T in with /disclose", true, nil
}

// deferLow runs /defer (a Go keyword, hence the name).
func (m *machine) deferLow(Command) (string, bool, error) {
	if err := m.inPhase(PhaseFix, PhaseEmbargo); err != nil {
		return "", false, err
	}
	if s := m.inc.Severity(); s != SeverityLow && s != SeverityNone {
		return "", false, argErr(ErrGuard, "only a Low (or None) incident may be deferred; this one is rated %s", s)
	}
	if m.inc.Deferred {
		return "already deferred", false, nil
	}
	m.inc.Deferred = true
	return "deferred (low severity: next patch release)", true, nil
}
