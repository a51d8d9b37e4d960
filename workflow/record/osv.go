package record

import (
	"strings"

	"github.com/embargo-project/embargo/workflow"
)

// OSVSchemaVersion is the OSV schema version the records follow.
const OSVSchemaVersion = "1.7.5"

// OSVRecord is an OSV record (https://ossf.github.io/osv-schema/).
type OSVRecord struct {
	SchemaVersion    string         `json:"schema_version"`
	ID               string         `json:"id"`
	Modified         string         `json:"modified"`
	Published        string         `json:"published,omitempty"`
	Aliases          []string       `json:"aliases,omitempty"`
	Summary          string         `json:"summary,omitempty"`
	Details          string         `json:"details,omitempty"`
	Severity         []OSVSeverity  `json:"severity,omitempty"`
	Affected         []OSVAffected  `json:"affected,omitempty"`
	References       []OSVReference `json:"references,omitempty"`
	Credits          []OSVCredit    `json:"credits,omitempty"`
	DatabaseSpecific map[string]any `json:"database_specific,omitempty"`
}

// OSVSeverity is one CVSS vector.
type OSVSeverity struct {
	Type  string `json:"type"`
	Score string `json:"score"`
}

// OSVAffected is one affected package (one per component).
type OSVAffected struct {
	Package          *OSVPackage    `json:"package,omitempty"`
	Ranges           []OSVRange     `json:"ranges,omitempty"`
	Versions         []string       `json:"versions,omitempty"`
	DatabaseSpecific map[string]any `json:"database_specific,omitempty"`
}

// OSVPackage names a package in an ecosystem.
type OSVPackage struct {
	Ecosystem string `json:"ecosystem"`
	Name      string `json:"name"`
}

// OSVRange is one range of versions.
type OSVRange struct {
	Type   string     `json:"type"`
	Events []OSVEvent `json:"events"`
}

// OSVEvent is one event of a range; exactly one field is set.
type OSVEvent struct {
	Introduced   string `json:"introduced,omitempty"`
	Fixed        string `json:"fixed,omitempty"`
	LastAffected string `json:"last_affected,omitempty"`
}

// OSVReference is one reference.
type OSVReference struct {
	Type string `json:"type"`
	URL  string `json:"url"`
}

// OSVCredit credits one person or organisation.
type OSVCredit struct {
	Name string `json:"name"`
	Type string `json:"type,omitempty"`
}

// osvRefTypes are the OSV reference types of each kind of reference. An
// announcement on a list is the advisory itself.
var osvRefTypes = map[workflow.RefKind]string{
	workflow.RefPatch: "FIX", workflow.RefIssue: "REPORT", workflow.RefAdvisory: "ADVISORY",
	workflow.RefMailingList: "ADVISORY", workflow.RefWeb: "WEB",
}

// semverEcosystems enforce SemVer 2.0, so their ranges are SEMVER; the
// others only recommend it, and OSV asks for ECOSYSTEM ranges there.
var semverEcosystems = map[string]bool{"Go": true, "crates.io": true, "npm": true, "Hex": true, "Pub": true, "SwiftURL": true}

// OSVID is the record's id: the project's prefix and the incident's number
// ("x_EXAMPLE-" + "2026-0001").
func OSVID(p Project, id workflow.ID) string {
	return p.WithDefaults().IDPrefix + strings.TrimPrefix(string(id), "SEC-")
}

// OSV builds the OSV record of a disclosed incident. Published is the
// disclosure instant (T when not disclosed yet); modified the last change of
// the incident, never before published.
func OSV(p Project, inc *workflow.Incident) *OSVRecord {
	p = p.WithDefaults()
	a := inc.Advisory
	pub := inc.DisclosedAt
	if pub.IsZero() {
		pub = inc.T
	}
	mod := inc.Updated
	if mod.IsZero() {
		mod = inc.Opened
	}
	if mod.Before(pub) {
		mod = pub
	}
	rec := &OSVRecord{
		SchemaVersion: OSVSchemaVersion,
		ID:            OSVID(p, inc.ID),
		Modified:      stamp(mod),
		Published:     stamp(pub),
		Aliases:       append([]string(nil), inc.CVEs...),
		Summary:       clause(a.Summary),
		Details:       Details(p, a),
		DatabaseSpecific: map[string]any{
			"embargo_id": string(inc.ID),
		},
	}
	if c, ok := inc.CVSS(); ok {
		t := "CVSS_V3"
		if c.Version == "4.0" {
			t = "CVSS_V4"
		}
		rec.Severity = []OSVSeverity{{Type: t, Score: c.Vector}}
	}
	if s := inc.Severity(); s != workflow.SeverityUnset {
		rec.DatabaseSpecific["severity"] = strings.ToUpper(s.String())
	}
	if ids, err := workflow.ParseCWEs(a.CWE); err == nil {
		rec.DatabaseSpecific["cwe_ids"] = ids
	}
	if u := p.AdvisoryPage(string(inc.ID)); u != "" {
		rec.DatabaseSpecific["url"] = u
	}
	for _, g := range groups(a) {
		rec.Affected = append(rec.Affected, osvAffected(p, g))
	}
	for _, r := range references(p, inc) {
		rec.References = append(rec.References, OSVReference{Type: osvRefTypes[r.Kind], URL: r.URL})
	}
	for _, c := range inc.CVEs {
		rec.References = append(rec.References, OSVReference{Type: "ADVISORY", URL: "https://www.cve.org/CVERecord?id=" + c})
	}
	if c := clause(a.Credit); c != "" {
		rec.Credits = []OSVCredit{{Name: c, Type: "FINDER"}}
	}
	return rec
}

// OSVJSON is OSV, indented, as the web server serves it.
func OSVJSON(p Project, inc *workflow.Incident) ([]byte, error) {
	return marshal(OSV(p, inc))
}

func osvAffected(p Project, g group) OSVAffected {
	var out OSVAffected
	if p.Ecosystem != "" && p.Package != "" {
		out.Package = &OSVPackage{Ecosystem: p.Ecosystem, Name: p.Package}
	}
	typ := "SEMVER"
	if out.Package != nil && !semverEcosystems[ecosystemBase(p.Ecosystem)] {
		typ = "ECOSYSTEM"
	}
	db := map[string]any{}
	if g.component != "" {
		db["component"] = g.component
	}
	var affected, fixed []string
	for _, r := range g.affected {
		affected = append(affected, r.Text)
		if r.Version != "" {
			out.Versions = append(out.Versions, r.Version)
			continue
		}
		if ev, ok := OSVEventsOf(r); ok {
			out.Ranges = append(out.Ranges, OSVRange{Type: typ, Events: ev})
		}
	}
	for _, r := range g.fixed {
		fixed = append(fixed, r.Text)
	}
	// The lines as written, prose included: what the ranges could not say.
	if len(affected) > 0 {
		db["affected"] = affected
	}
	if len(fixed) > 0 {
		db["fixed"] = fixed
	}
	if len(db) > 0 {
		out.DatabaseSpecific = db
	}
	return out
}

// OSVEventsOf translates one parsed range into OSV events: introduced, then
// fixed ("<") or last_affected ("<=", "A - B"). A single version is not a
// range (OSV lists it in versions); ok is false for it and for prose.
func OSVEventsOf(r workflow.VersionRange) ([]OSVEvent, bool) {
	if r.Prose || r.Version != "" {
		return nil, false
	}
	ev := []OSVEvent{{Introduced: r.Introduced}}
	switch {
	case r.Fixed != "":
		ev = append(ev, OSVEvent{Fixed: r.Fixed})
	case r.LastAffected != "":
		ev = append(ev, OSVEvent{LastAffected: r.LastAffected})
	}
	return ev, true
}
