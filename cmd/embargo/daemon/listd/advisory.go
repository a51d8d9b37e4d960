package listd

import (
	"encoding/json"
	"strings"
	"unicode"

	"github.com/embargo-project/embargo/lists"
	"github.com/embargo-project/embargo/workflow"
)

// advisoryData is what the advisory templates (process.md §7) read. Every
// text field went through safeText: values come from SRC-signed commands
// only (threats.md F4), and still cannot change a message's structure.
type advisoryData struct {
	Project, ID, CVE, Summary              string
	Actor, Impact, Condition               string
	Severity, Score, Vector, CalculatorURL string
	Affected, Fixed, Mitigation            string
	ActionRequired, FixImpact, Detection   string
	UpgradeDocs, IssueURL, Credit          string
	T, PreviousNotice, At                  string
	Person, SecurityAddress, AdvisoryText  string
	Renotify                               bool
	Subscribers, Channels, Distributors    int
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
		Project:         s.o.Project,
		ID:              string(inc.ID),
		CVE:             strings.Join(inc.CVEs, ", "),
		Summary:         safeText(a.Summary),
		Actor:           safeText(a.Actor),
		Impact:          safeText(a.Impact),
		Condition:       safeText(a.Condition),
		Severity:        inc.Severity().String(),
		Affected:        safeText(a.Affected),
		Fixed:           safeText(a.Fixed),
		Mitigation:      safeText(a.Mitigation),
		ActionRequired:  safeText(a.ActionRequired),
		FixImpact:       safeText(a.FixImpact),
		Detection:       safeText(a.Detection),
		UpgradeDocs:     safeText(a.UpgradeDocs),
		IssueURL:        safeText(a.IssueURL),
		Credit:          safeText(a.Credit),
		SecurityAddress: s.o.Roster.List(lists.Security).Address,
		Person:          "The Fix Lead",
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

// cveRecord drafts a CVE JSON 5 record (process.md §7.9) for the CNA member
// to review and publish.
func cveRecord(d advisoryData, inc *workflow.Incident) ([]byte, error) {
	type text struct {
		Lang  string `json:"lang"`
		Value string `json:"value"`
	}
	type version struct {
		Version     string `json:"version"`
		Status      string `json:"status"`
		VersionType string `json:"versionType,omitempty"`
	}
	type affected struct {
		Vendor   string    `json:"vendor"`
		Product  string    `json:"product"`
		Versions []version `json:"versions"`
	}
	type ref struct {
		URL  string   `json:"url"`
		Tags []string `json:"tags,omitempty"`
	}
	var versions []version
	for _, l := range strings.Split(d.Affected, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			versions = append(versions, version{Version: l, Status: "affected", VersionType: "custom"})
		}
	}
	for _, l := range strings.Split(d.Fixed, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			versions = append(versions, version{Version: l, Status: "unaffected", VersionType: "custom"})
		}
	}
	if len(versions) == 0 {
		versions = []version{{Version: "0", Status: "affected", VersionType: "semver"}}
	}
	cna := map[string]any{
		"title":        d.Summary,
		"descriptions": []text{{"en", d.Actor + " may be able to " + d.Impact + "."}},
		"affected":     []affected{{Vendor: d.Project, Product: d.Project, Versions: versions}},
		"credits":      []map[string]string{{"lang": "en", "value": d.Credit, "type": "finder"}},
		"source":       map[string]string{"discovery": "EXTERNAL"},
	}
	if d.Mitigation != "" {
		cna["workarounds"] = []text{{"en", d.Mitigation}}
	}
	var refs []ref
	if d.IssueURL != "" {
		refs = append(refs, ref{URL: d.IssueURL, Tags: []string{"issue-tracking"}})
	}
	if len(refs) > 0 {
		cna["references"] = refs
	}
	if c, ok := inc.CVSS(); ok {
		sev := strings.ToUpper(c.Severity().String())
		switch {
		case strings.HasPrefix(c.Vector, "CVSS:3.1/"):
			cna["metrics"] = []any{map[string]any{"cvssV3_1": map[string]any{"version": "3.1", "vectorString": c.Vector, "baseScore": c.Score, "baseSeverity": sev}}}
		case strings.HasPrefix(c.Vector, "CVSS:4.0/"):
			cna["metrics"] = []any{map[string]any{"cvssV4_0": map[string]any{"version": "4.0", "vectorString": c.Vector, "baseScore": c.Score, "baseSeverity": sev}}}
		}
	}
	rec := map[string]any{
		"dataType":    "CVE_RECORD",
		"dataVersion": "5.1",
		"cveMetadata": map[string]string{"cveId": firstCVE(inc), "assignerShortName": d.Project, "state": "PUBLISHED"},
		"containers":  map[string]any{"cna": cna},
	}
	return json.MarshalIndent(rec, "", "  ")
}

func firstCVE(inc *workflow.Incident) string {
	if len(inc.CVEs) > 0 {
		return inc.CVEs[0]
	}
	return "CVE-RESERVE-ME"
}
