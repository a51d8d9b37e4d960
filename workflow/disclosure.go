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
	if len(m.inc.CVEs) == 0 || m.inc.ASAP() || emergency {
		return nil
	}
	base, what := m.now, "now (no distributor notice yet)"
	if !m.inc.NotifiedAt.IsZero() {
		base, what = m.inc.NotifiedAt, "the distributor notice of "+FormatInstant(m.inc.NotifiedAt)
	}
	if t.Before(base.Add(NoticeBefore)) {
		return argErr(ErrNoticeRule, "with a CVE, T must be at least 7 days after %s: the earliest slot is %s (or say emergency, or mark the incident /public)",
			what, FormatInstant(NextSlot(base.Add(NoticeBefore), m.env.Holidays)))
	}
	return nil
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
	if !t.Equal(prev) { // a new T needs its own final notice, and may release
		inc.FinalNoticeAt, inc.HeldAt = time.Time{}, time.Time{}
	}
	if !inc.NotifiedAt.IsZero() && !t.Equal(inc.NotifiedT) {
		m.emit(DistributorNotice{T: t, Previous: inc.NotifiedT, Renotify: true})
		what += "; distributors re-notified (they had " + FormatInstant(inc.NotifiedT) + ")"
		inc.NotifiedT = t
	}
	p := ""
	if !prev.IsZero() {
		p = FormatInstant(prev)
	}
	m.reporter("date", "t", FormatInstant(t), "previous_t", p)
	return what + "; reporter told", true, nil
}

func (m *machine) notify(Command) (string, bool, error) {
	inc := &m.inc
	if err := m.inPhase(PhaseFix, PhaseEmbargo); err != nil {
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
