package workflow

import (
	"fmt"
	"strings"
	"time"
)

// The commands that move an incident through its life: accept it, close it
// one way or another, reopen it, and name the people who work it. Each is
// reached from its row of the command table (Commands).

func (m *machine) accept(Command) (string, bool, error) {
	inc := &m.inc
	if err := m.inPhase(PhaseTriage); err != nil {
		return "", false, err
	}
	how := "already Fix Lead"
	if inc.FixLead == "" && !m.later("lead") {
		lead := nextLead(m.env.SRC, m.env.LastLead)
		if lead == "" {
			return "", false, argErr(ErrGuard, "no SRC member to assign round-robin: name a Fix Lead with /lead ADDR")
		}
		inc.FixLead, m.roundRobin, how = lead, lead, "round-robin"
	} else if inc.FixLead == "" {
		how = "named by /lead below"
	}
	inc.Phase, inc.AcceptedAt = PhaseFix, m.now
	if inc.TriagedAt.IsZero() {
		inc.TriagedAt = m.now
	}
	m.reporter("accepted")
	if inc.FixLead == "" {
		return "phase triage → fix; Fix Lead " + how + "; reporter told", true, nil
	}
	return fmt.Sprintf("phase triage → fix; Fix Lead %s (%s); reporter told", inc.FixLead, how), true, nil
}

// nextLead is the member after last in the round-robin order, or the first.
func nextLead(src []string, last string) string {
	if len(src) == 0 {
		return ""
	}
	for i, a := range src {
		if strings.EqualFold(a, last) {
			return strings.ToLower(src[(i+1)%len(src)])
		}
	}
	return strings.ToLower(src[0])
}

func (m *machine) reject(c Command) (string, bool, error) {
	if err := m.inPhase(PhaseTriage, PhaseFix); err != nil {
		return "", false, err
	}
	r := ResolutionNotAVulnerability
	if c.arg(0) == "out-of-scope" {
		r = ResolutionOutOfScope
	}
	what := m.closeAs(r)
	for _, rr := range rejectReasons {
		if rr.reason == c.arg(0) {
			m.reporter(rr.template)
		}
	}
	return what + "; canned reply " + c.arg(0) + " to the reporter", true, nil
}

func (m *machine) duplicate(c Command) (string, bool, error) {
	if err := m.inPhase(PhaseTriage, PhaseFix); err != nil {
		return "", false, err
	}
	if ID(c.arg(0)) == m.inc.ID {
		return "", false, argErr(ErrGuard, "an incident cannot duplicate itself")
	}
	m.inc.DuplicateOf = ID(c.arg(0))
	what := m.closeAs(ResolutionDuplicate)
	m.reporter("duplicate")
	return what + " of " + c.arg(0) + "; reporter told it is already known", true, nil
}

func (m *machine) handoff(c Command) (string, bool, error) {
	if err := m.inPhase(PhaseTriage, PhaseFix); err != nil {
		return "", false, err
	}
	m.inc.HandedOffTo = c.arg(0)
	what := m.closeAs(ResolutionHandedOff)
	m.reporter("handoff", "contact", c.arg(0))
	return what + " to " + c.arg(0) + "; reporter told whom to contact", true, nil
}

func (m *machine) lead(c Command) (string, bool, error) {
	inc := &m.inc
	if err := m.open(); err != nil {
		return "", false, err
	}
	lead := c.arg(0)
	if lead == "me" {
		lead = strings.ToLower(m.by.Email)
		if lead == "" || !(m.by.has(RoleSRC) || m.by.has(RoleAssociate)) {
			return "", false, argErr(ErrGuard, "only a committee member can be Fix Lead")
		}
	} else if !containsFold(m.env.SRC, lead) {
		return "", false, argErr(ErrGuard, "%s is not an SRC member", lead)
	}
	if strings.EqualFold(inc.FixLead, lead) {
		return "Fix Lead already " + lead, false, nil
	}
	was := inc.FixLead
	inc.FixLead = lead
	if was == "" {
		return "Fix Lead " + lead, true, nil
	}
	return fmt.Sprintf("Fix Lead %s (was %s)", lead, was), true, nil
}

func (m *machine) fixTeam(c Command) (string, bool, error) {
	inc := &m.inc
	if err := m.open(); err != nil {
		return "", false, err
	}
	var done []string
	for _, a := range c.Args[1:] {
		if c.arg(0) == "add" {
			if !inc.HasFixTeamMember(a) {
				inc.FixTeam = append(inc.FixTeam, a)
				done = append(done, a)
			}
			continue
		}
		if !inc.HasFixTeamMember(a) {
			return "", false, argErr(ErrGuard, "%s is not on the fix team", a)
		}
		kept := inc.FixTeam[:0:0]
		for _, x := range inc.FixTeam {
			if !strings.EqualFold(x, a) {
				kept = append(kept, x)
			}
		}
		inc.FixTeam = kept
		done = append(done, a)
	}
	if len(done) == 0 {
		return "fix team unchanged: " + strings.Join(inc.FixTeam, ", "), false, nil
	}
	if len(inc.FixTeam) > 0 && inc.FixTeamAt.IsZero() {
		inc.FixTeamAt = m.now
	}
	team := strings.Join(inc.FixTeam, ", ")
	if team == "" {
		team = "nobody"
	}
	verb := "added"
	if c.arg(0) == "remove" {
		verb = "removed"
	}
	return fmt.Sprintf("fix team: %s %s; now %s", strings.Join(done, ", "), verb, team), true, nil
}

func (m *machine) retro(Command) (string, bool, error) {
	if err := m.inPhase(PhaseDisclosed); err != nil {
		return "", false, err
	}
	m.inc.RetroAt = m.now
	return "retrospective recorded; " + m.closeAs(ResolutionFixed), true, nil
}

func (m *machine) close(c Command) (string, bool, error) {
	inc := &m.inc
	if inc.Phase == PhaseEmbargo {
		return "", false, argErr(ErrPhase, "the embargo is running (T %s): /disclose now, or withdraw the date, before closing", FormatInstant(inc.T))
	}
	if err := m.inPhase(PhaseTriage, PhaseFix, PhaseDisclosed); err != nil {
		return "", false, err
	}
	r := ResolutionFixed
	if c.arg(0) != "" {
		r, _ = ParseResolution(c.arg(0))
	} else if inc.Phase != PhaseDisclosed {
		return "", false, argErr(ErrGuard, "give a RESOLUTION: the incident was not disclosed")
	}
	return m.closeAs(r), true, nil
}

// closeAs ends the incident.
func (m *machine) closeAs(r Resolution) string {
	from := m.inc.Phase
	if from == PhaseTriage && m.inc.TriagedAt.IsZero() {
		m.inc.TriagedAt = m.now
	}
	m.inc.Phase, m.inc.Resolution, m.inc.ClosedAt = PhaseClosed, r, m.now
	return fmt.Sprintf("phase %s → closed (%s)", from, r)
}

func (m *machine) reopen(Command) (string, bool, error) {
	inc := &m.inc
	if err := m.inPhase(PhaseClosed); err != nil {
		return "", false, err
	}
	switch {
	case !inc.DisclosedAt.IsZero():
		inc.Phase = PhaseDisclosed
	case !inc.AcceptedAt.IsZero():
		inc.Phase = PhaseFix
	default:
		inc.Phase = PhaseTriage
	}
	was := inc.Resolution
	inc.Resolution, inc.ClosedAt, inc.DuplicateOf, inc.HandedOffTo = ResolutionUnset, time.Time{}, "", ""
	return fmt.Sprintf("reopened (was %s): phase %s", was, inc.Phase), true, nil
}
