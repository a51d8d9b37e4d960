package workflow

import (
	"fmt"
	"strings"
)

// The commands that write the advisory and rate the incident, and /approve,
// which locks them (editable). Each is reached from its row of the command
// table (Commands).

func (m *machine) cvss(c Command) (string, bool, error) {
	if err := m.editable(); err != nil {
		return "", false, err
	}
	cv, err := ParseCVSS(c.arg(0))
	if err != nil {
		return "", false, err
	}
	m.inc.CVSSVector = cv.Vector
	what := fmt.Sprintf("CVSS %s: score %s, %s", cv.Vector, cv.ScoreText(), cv.Severity())
	if m.inc.SeverityOverride != SeverityUnset {
		what += fmt.Sprintf("; the override keeps the severity at %s", m.inc.SeverityOverride)
	}
	return what, true, nil
}

func (m *machine) severity(c Command) (string, bool, error) {
	inc := &m.inc
	if err := m.editable(); err != nil {
		return "", false, err
	}
	if c.arg(0) == "auto" {
		inc.SeverityOverride = SeverityUnset
		return "severity override removed; severity " + inc.Severity().String(), true, nil
	}
	s, _ := ParseSeverity(c.arg(0))
	inc.SeverityOverride = s
	if cv, ok := inc.CVSS(); ok && cv.Severity() != s {
		return fmt.Sprintf("severity %s (override; CVSS %s says %s)", s, cv.ScoreText(), cv.Severity()), true, nil
	}
	return "severity " + s.String(), true, nil
}

func (m *machine) cve(c Command) (string, bool, error) {
	if err := m.editable(); err != nil {
		return "", false, err
	}
	if err := m.cveNoticeRule("cve"); err != nil {
		return "", false, err
	}
	m.inc.CVEs = append([]string(nil), c.Args...)
	return "CVE " + strings.Join(c.Args, ", "), true, nil
}

func (m *machine) set(c Command) (string, bool, error) {
	if err := m.editable(); err != nil {
		return "", false, err
	}
	f, _ := lookupField(c.arg(0))
	p := f.ptr(&m.inc.Advisory)
	if *p == c.Value {
		return f.name + " unchanged", false, nil
	}
	*p = c.Value
	return setResult(f.name, c.Value), true, nil
}

func (m *machine) approve(c Command) (string, bool, error) {
	inc := &m.inc
	if err := m.inPhase(PhaseFix, PhaseEmbargo); err != nil {
		return "", false, err
	}
	if c.arg(0) == "withdraw" {
		if !inc.Approved {
			return "the advisory was not approved", false, nil
		}
		inc.Approved = false
		return "approval withdrawn: the advisory may change; approve it again by T-24 h or the release is held", true, nil
	}
	if missing := m.missingForApproval(); len(missing) > 0 {
		return "", false, argErr(ErrGuard, "the advisory lacks %s", strings.Join(missing, ", "))
	}
	if inc.Approved {
		return "already approved " + FormatInstant(inc.ApprovedAt), false, nil
	}
	inc.Approved, inc.ApprovedAt = true, m.now
	return "advisory approved and locked", true, nil
}

// missingForApproval lists what the advisory needs before /approve.
func (m *machine) missingForApproval() []string {
	a := m.inc.Advisory
	var missing []string
	for _, f := range []struct{ name, v string }{{"summary", a.Summary}, {"actor", a.Actor}, {"impact", a.Impact}, {"affected", a.Affected}} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if m.inc.Severity() == SeverityUnset {
		missing = append(missing, "a severity (/cvss or /severity)")
	}
	if a.Fixed == "" && a.Mitigation == "" {
		missing = append(missing, "fixed versions or a mitigation")
	}
	return missing
}
