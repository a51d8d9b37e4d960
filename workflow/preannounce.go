package workflow

import (
	"fmt"
	"strings"
	"time"
)

// Preannouncement is one public pre-announcement of an incident's release
// (/preannounce, docs/process.md §9: OpenSSL tells the public a week ahead,
// Go 3–7 days ahead, without details). It records what was published: the
// T announced and the severity named, nothing else.
type Preannouncement struct {
	At       time.Time `json:"at"`                   // when it was queued
	T        time.Time `json:"t"`                    // the T it announced
	Severity Severity  `json:"severity,omitzero"`    // the severity it named; unset with nosev
	Job      string    `json:"job"`                  // the announce list's release that carries it (PreannounceJob)
	Previous time.Time `json:"previous,omitzero"`    // the T announced before, when it said the release was rescheduled
	Sent     int       `json:"subscribers,omitzero"` // active subscribers when it was queued: the caller fills it in
}

// Preannounce queues the public pre-announcement of the release on the
// announce list. It carries the only incident facts a pre-announcement may
// publish before T (docs/threat-model.md G8): T, the severity (unset with
// /preannounce nosev) and, when the release moved since the last one, the
// T announced before. The caller renders it from these fields alone, with
// the project's name, never from the incident.
type Preannounce struct {
	Job      string    // the announce release ID: PreannounceJob(incident, n)
	T        time.Time // the release instant announced
	Severity Severity  // SeverityUnset: leave the severity out (nosev)
	Previous time.Time // zero for the first; else the T announced before ("rescheduled")
}

func (Preannounce) Kind() string { return "preannounce" }
func (Preannounce) action()      {}

// preannounceSuffix joins an incident ID and the number of its
// pre-announcement in the announce release ID: SEC-2026-0001-pre1. The
// release at T is the incident ID alone, so the two never meet in the
// announce list's jobs or bounce addresses (announce+bounces-<id>@).
const preannounceSuffix = "-pre"

// PreannounceJob is the announce release ID of the nth (from 1)
// pre-announcement of incident id.
func PreannounceJob(id ID, n int) string { return fmt.Sprintf("%s%s%d", id, preannounceSuffix, n) }

// PreannounceIncident reads the incident ID out of an announce release ID
// made by PreannounceJob; ok is false for any other ID (the release at T
// is the incident ID itself).
func PreannounceIncident(job string) (ID, bool) {
	i := strings.LastIndex(strings.ToLower(job), preannounceSuffix)
	if i < 0 {
		return "", false
	}
	n := job[i+len(preannounceSuffix):]
	if n == "" || n[0] == '0' || strings.Trim(n, "0123456789") != "" {
		return "", false
	}
	return ParseID(job[:i])
}

// LastPreannouncement is the incident's latest pre-announcement; ok is
// false when there was none.
func (inc *Incident) LastPreannouncement() (Preannouncement, bool) {
	if len(inc.Preannounced) == 0 {
		return Preannouncement{}, false
	}
	return inc.Preannounced[len(inc.Preannounced)-1], true
}

func parsePreannounce(l Line) (Command, error) {
	switch strings.ToLower(strings.TrimSpace(l.Args)) {
	case "":
		return Command{Name: "preannounce"}, nil
	case "nosev":
		return Command{Name: "preannounce", Args: []string{"nosev"}}, nil
	}
	return Command{}, argErr(ErrSyntax, "%q: the only option is nosev (leave the severity out)", l.Args)
}

// preannounce runs /preannounce: the public is told that a release is
// planned at T, once per T.
func (m *machine) preannounce(c Command) (string, bool, error) {
	inc := &m.inc
	if err := m.trackRefusal("preannounce"); err != nil {
		return "", false, err
	}
	switch inc.Phase {
	case PhaseFix, PhaseEmbargo:
	case PhaseTriage:
		return "", false, argErr(ErrPhase, "the incident is in triage: /accept it and set T with /disclose DATE first")
	case PhaseDisclosed:
		return "", false, argErr(ErrPhase, "the incident was disclosed %s: the release is public, there is nothing left to pre-announce", FormatInstant(inc.DisclosedAt))
	default:
		return "", false, argErr(ErrPhase, "the incident is %s: /preannounce works in phase fix or embargo", inc.Phase)
	}
	if inc.T.IsZero() {
		return "", false, argErr(ErrGuard, "T is not set: set T first with /disclose DATE (in this message, before /preannounce, if you like)")
	}
	if !inc.T.After(m.now) {
		return "", false, argErr(ErrPast, "T %s has passed: set a new one with /disclose DATE", FormatInstant(inc.T))
	}
	if !m.env.Announce {
		return "", false, argErr(ErrGuard, "the announce list cannot send (no announce list key or fan-out is configured): nothing can be pre-announced")
	}
	last, again := inc.LastPreannouncement()
	if again && last.T.Equal(inc.T) {
		to := ""
		if last.Sent > 0 {
			to = fmt.Sprintf(" to %d subscribers", last.Sent)
		}
		return "", false, argErr(ErrGuard, "T = %s was already pre-announced %s%s (%s): once per T; a new T with /disclose DATE may be pre-announced again",
			FormatInstant(inc.T), FormatInstant(last.At), to, last.Job)
	}
	sev := SeverityUnset
	if c.arg(0) != "nosev" {
		if sev = inc.Severity(); sev == SeverityUnset {
			return "", false, argErr(ErrGuard, "the incident has no severity to pre-announce: rate it with /cvss or /severity first, or send /preannounce nosev to leave the severity out")
		}
	}
	p := Preannouncement{At: m.now, T: inc.T, Severity: sev, Job: PreannounceJob(inc.ID, len(inc.Preannounced)+1)}
	if again {
		p.Previous = last.T
	}
	inc.Preannounced = append(inc.Preannounced, p)
	m.emit(Preannounce{Job: p.Job, T: p.T, Severity: p.Severity, Previous: p.Previous})
	what := "pre-announcement of the release at T = " + FormatInstant(p.T)
	if again {
		what = "pre-announcement that the release moved from " + FormatInstant(p.Previous) + " to T = " + FormatInstant(p.T)
	}
	if sev != SeverityUnset {
		what += ", severity " + sev.String()
	} else {
		what += ", without the severity"
	}
	return what + ", queued to the announce list (" + p.Job + "); it says nothing else about the incident", true, nil
}

// preannouncedLines are /status's lines about the pre-announcements.
func preannouncedLines(inc Incident) []string {
	var out []string
	for _, p := range inc.Preannounced {
		s := FormatInstant(p.At) + ": T = " + FormatInstant(p.T)
		if !p.Previous.IsZero() {
			s += " (rescheduled from " + FormatInstant(p.Previous) + ")"
		}
		if p.Severity != SeverityUnset {
			s += ", severity " + p.Severity.String()
		} else {
			s += ", no severity"
		}
		if p.Sent > 0 {
			s += fmt.Sprintf(", %d subscribers", p.Sent)
		}
		out = append(out, s+" ("+p.Job+")")
	}
	return out
}
