package listd

import (
	"strings"
	"unicode"

	"github.com/embargo-project/embargo/lists"
	"github.com/embargo-project/embargo/workflow"
)

// advisoryData is what the advisory templates (process.md §7) read. Every
// text field went through safeText: values come from SRC-signed commands
// only (docs/threat-model.md F4), and still cannot change a message's structure.
type advisoryData struct {
	Project, ID, CVE, Summary              string
	Actor, Impact, Condition               string
	Severity, Score, Vector, CalculatorURL string
	Affected, Fixed, Mitigation            string
	ActionRequired, FixImpact, Detection   string
	UpgradeDocs, IssueURL, Credit          string
	T, PreviousNotice, At                  string
	Person, SecurityAddress, AdvisoryText  string
	DistributorsAddress                    string // where a distributor's reply to the notice goes (answers.go)
	Renotify                               bool
	Subscribers, Channels, Distributors    int

	// The release pack's records (release.go): whether the CVE JSON 5 draft
	// is attached, whether the CVE data map is (DataMapNoPR: not for want
	// of a pull request), what the incident's records lack (RecordGaps) and
	// what the configuration leaves out of every record (ConfigGaps), and
	// where the archive publishes the OSV record ("" without a public base
	// URL).
	CVEDraft, DataMap, DataMapNoPR bool
	RecordGaps, ConfigGaps         []string
	OSVURL                         string
}

// safeText keeps a field value inert inside a mail body: LF line ends only,
// no control or bidi characters, and no line that an OpenPGP or MIME parser
// could take for structure (armor headers are dash-escaped as RFC 4880 §7.1
// does; a lone "." or a boundary-like "--" line is indented).
func safeText(s string) string {
	s = strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", "\n"), "\r", "\n")
	s = strings.Map(func(r rune) rune {
		switch {
		case r == '\n' || r == '\t':
			return r
		case unicode.IsControl(r), (r >= 0x202A && r <= 0x202E), (r >= 0x2066 && r <= 0x2069), r == 0x200E, r == 0x200F, r == 0x061C:
			return -1
		}
		return r
	}, s)
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i, l := range lines {
		switch {
		case strings.HasPrefix(l, "-"):
			lines[i] = "- " + l
		case l == ".", strings.HasPrefix(l, "From "):
			lines[i] = " " + l
		}
	}
	return strings.Join(lines, "\n")
}

// advisory builds the template data of an incident.
func (s *Service) advisory(inc *workflow.Incident) advisoryData {
	a := inc.Advisory
	d := advisoryData{
		Project:             s.o.Project,
		ID:                  string(inc.ID),
		CVE:                 strings.Join(inc.CVEs, ", "),
		Summary:             safeText(a.Summary),
		Actor:               safeText(a.Actor),
		Impact:              safeText(a.Impact),
		Condition:           safeText(a.Condition),
		Severity:            inc.Severity().String(),
		Affected:            safeText(a.Affected),
		Fixed:               safeText(a.Fixed),
		Mitigation:          safeText(a.Mitigation),
		ActionRequired:      safeText(a.ActionRequired),
		FixImpact:           safeText(a.FixImpact),
		Detection:           safeText(a.Detection),
		UpgradeDocs:         safeText(a.UpgradeDocs),
		IssueURL:            safeText(a.IssueURL),
		Credit:              safeText(a.Credit),
		SecurityAddress:     s.o.Roster.List(lists.Security).Address,
		DistributorsAddress: s.o.Roster.List(lists.Distributors).Address,
		Person:              "The Fix Lead",
	}
	if d.CVE == "" {
		d.CVE = string(inc.ID)
	}
	if d.Credit == "" {
		d.Credit = "an external reporter"
	}
	if c, ok := inc.CVSS(); ok {
		d.Score, d.Vector = c.ScoreText(), c.Vector
		switch {
		case strings.HasPrefix(c.Vector, "CVSS:3.1/"):
			d.CalculatorURL = "https://www.first.org/cvss/calculator/3.1#" + c.Vector
		case strings.HasPrefix(c.Vector, "CVSS:4.0/"):
			d.CalculatorURL = "https://www.first.org/cvss/calculator/4.0#" + c.Vector
		}
	}
	if !inc.T.IsZero() {
		d.T = workflow.FormatInstant(inc.T)
	}
	if m, ok := s.o.Roster.Member(inc.FixLead); ok && m.Name != "" {
		d.Person = m.Name
	} else if inc.FixLead != "" {
		d.Person = inc.FixLead
	}
	return d
}

// advisorySubject is the public advisory's subject (process.md §7.3).
func advisorySubject(d advisoryData) string {
	return "[Security Advisory] " + d.CVE + ": " + d.Summary
}
