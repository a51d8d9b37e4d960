package record

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"time"

	gocvss31 "github.com/pandatix/go-cvss/31"

	"github.com/embargo-project/embargo/workflow"
)

// CVEDataVersion is the CVE record format version the drafts follow.
const CVEDataVersion = "5.1"

// ErrNoCVE: the incident has no CVE ID, so there is no CVE record to draft.
var ErrNoCVE = errors.New("record: the incident has no CVE ID (/cve)")

// CVERecord is a CVE JSON 5 record (CVE Record Format 5.1, state PUBLISHED)
// with the CNA container only: the draft the CNA member reviews and
// submits. Field names and requirements are the schema's.
type CVERecord struct {
	DataType    string        `json:"dataType"`
	DataVersion string        `json:"dataVersion"`
	CVEMetadata CVEMetadata   `json:"cveMetadata"`
	Containers  CVEContainers `json:"containers"`
}

// CVEMetadata is cveMetadata. AssignerOrgID is left out, not emptied, when
// the project has no org_id: Project.Check reports it.
type CVEMetadata struct {
	CVEID             string `json:"cveId"`
	AssignerOrgID     string `json:"assignerOrgId,omitempty"`
	AssignerShortName string `json:"assignerShortName,omitempty"`
	State             string `json:"state"`
	DatePublished     string `json:"datePublished,omitempty"`
}

// CVEContainers holds the CNA container.
type CVEContainers struct {
	CNA CNAContainer `json:"cna"`
}

// CNAContainer is containers.cna (cnaPublishedContainer).
type CNAContainer struct {
	ProviderMetadata ProviderMetadata `json:"providerMetadata"`
	DatePublic       string           `json:"datePublic,omitempty"`
	Title            string           `json:"title,omitempty"`
	Descriptions     []LangText       `json:"descriptions"`
	Affected         []CVEProduct     `json:"affected"`
	ProblemTypes     []ProblemType    `json:"problemTypes,omitempty"`
	References       []CVEReference   `json:"references,omitempty"`
	Metrics          []CVEMetric      `json:"metrics,omitempty"`
	Workarounds      []LangText       `json:"workarounds,omitempty"`
	Solutions        []LangText       `json:"solutions,omitempty"`
	Credits          []CVECredit      `json:"credits,omitempty"`
	Source           map[string]any   `json:"source,omitempty"`
}

// ProviderMetadata names the CNA.
type ProviderMetadata struct {
	OrgID     string `json:"orgId,omitempty"`
	ShortName string `json:"shortName,omitempty"`
}

// LangText is an English text.
type LangText struct {
	Lang  string `json:"lang"`
	Value string `json:"value"`
}

// CVEProduct is one affected product (one per component).
type CVEProduct struct {
	Vendor        string       `json:"vendor"`
	Product       string       `json:"product"`
	CollectionURL string       `json:"collectionURL,omitempty"`
	PackageName   string       `json:"packageName,omitempty"`
	Modules       []string     `json:"modules,omitempty"`
	Versions      []CVEVersion `json:"versions,omitempty"`
	DefaultStatus string       `json:"defaultStatus"`
}

// CVEVersion is one version or range.
type CVEVersion struct {
	Version         string `json:"version"`
	Status          string `json:"status"`
	VersionType     string `json:"versionType,omitempty"`
	LessThan        string `json:"lessThan,omitempty"`
	LessThanOrEqual string `json:"lessThanOrEqual,omitempty"`
}

// ProblemType is one weakness.
type ProblemType struct {
	Descriptions []ProblemDescription `json:"descriptions"`
}

// ProblemDescription describes a CWE.
type ProblemDescription struct {
	Lang        string `json:"lang"`
	Description string `json:"description"`
	CWEID       string `json:"cweId,omitempty"`
	Type        string `json:"type,omitempty"`
}

// CVEReference is one reference and its tags.
type CVEReference struct {
	URL  string   `json:"url"`
	Tags []string `json:"tags,omitempty"`
}

// CVEMetric is one CVSS score.
type CVEMetric struct {
	Format    string      `json:"format"`
	Scenarios []LangText  `json:"scenarios"`
	CVSSV31   *CVSSMetric `json:"cvssV3_1,omitempty"`
	CVSSV40   *CVSSMetric `json:"cvssV4_0,omitempty"`
}

// CVSSMetric is the required part of the CVSS v3.1 and v4.0 objects.
type CVSSMetric struct {
	Version      string  `json:"version"`
	VectorString string  `json:"vectorString"`
	BaseScore    float64 `json:"baseScore"`
	BaseSeverity string  `json:"baseSeverity"`
}

// CVECredit credits one person or organisation.
type CVECredit struct {
	Lang  string `json:"lang"`
	Value string `json:"value"`
	Type  string `json:"type,omitempty"`
}

// collectionURLs maps OSV ecosystems to the CVE schema's package
// collections (its collectionURL examples; pkg.go.dev as the Go CNA writes).
var collectionURLs = map[string]string{
	"Go": "https://pkg.go.dev", "npm": "https://registry.npmjs.org", "PyPI": "https://pypi.python.org",
	"crates.io": "https://crates.io", "Maven": "https://repo.maven.apache.org/maven2", "RubyGems": "https://rubygems.org",
	"NuGet": "https://nuget.org/packages", "Packagist": "https://packagist.org", "Hex": "https://repo.hex.pm",
	"Pub": "https://pub.dev", "Hackage": "https://hackage.haskell.org", "CRAN": "https://cran.r-project.org",
}

// CVE drafts the CVE record of an incident: state PUBLISHED, published at T
// (at the disclosure instant if T is unset), every field from the incident's
// advisory and the project's metadata. It is schema-valid when Project.Check
// reports nothing invalid and the incident has a reference (Missing).
func CVE(p Project, inc *workflow.Incident) (*CVERecord, error) {
	if len(inc.CVEs) == 0 {
		return nil, ErrNoCVE
	}
	p = p.WithDefaults()
	a := inc.Advisory
	when := stamp(publicAt(inc))
	cna := CNAContainer{
		ProviderMetadata: ProviderMetadata{OrgID: p.OrgID, ShortName: p.ShortName},
		DatePublic:       when,
		Title:            truncate(clause(a.Summary), 256),
		Descriptions:     []LangText{{"en", truncate(Description(p, a), 4096)}},
		Source:           map[string]any{"discovery": "EXTERNAL"},
	}
	gs := groups(a)
	for _, g := range gs {
		cna.Affected = append(cna.Affected, cveProduct(p, g))
	}
	if ids, err := workflow.ParseCWEs(a.CWE); err == nil {
		for _, id := range ids {
			cna.ProblemTypes = append(cna.ProblemTypes, ProblemType{Descriptions: []ProblemDescription{
				{Lang: "en", Description: cweDescription(id), CWEID: id, Type: "CWE"}}})
		}
	}
	for _, r := range references(p, inc) {
		ref := CVEReference{URL: r.URL}
		if t := cveTags[r.Kind]; t != "" {
			ref.Tags = []string{t}
		}
		cna.References = append(cna.References, ref)
	}
	if m, ok := cveMetric(inc); ok {
		cna.Metrics = []CVEMetric{m}
	}
	if w := strings.TrimSpace(a.Mitigation); w != "" {
		cna.Workarounds = []LangText{{"en", w}}
	}
	if s := solution(p, a, gs); s != "" {
		cna.Solutions = []LangText{{"en", s}}
	}
	if c := clause(a.Credit); c != "" {
		cna.Credits = []CVECredit{{Lang: "en", Value: c, Type: "finder"}}
	}
	return &CVERecord{
		DataType:    "CVE_RECORD",
		DataVersion: CVEDataVersion,
		CVEMetadata: CVEMetadata{CVEID: inc.CVEs[0], AssignerOrgID: p.OrgID, AssignerShortName: p.ShortName,
			State: "PUBLISHED", DatePublished: when},
		Containers: CVEContainers{CNA: cna},
	}, nil
}

// CVEJSON is CVE, indented, as the release attaches it.
func CVEJSON(p Project, inc *workflow.Incident) ([]byte, error) {
	r, err := CVE(p, inc)
	if err != nil {
		return nil, err
	}
	return marshal(r)
}

// marshal indents a record and leaves "<", ">" and "&" as they are: the
// records are JSON files, not HTML, and version ranges are full of them.
func marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func cveProduct(p Project, g group) CVEProduct {
	prod := CVEProduct{Vendor: p.Vendor, Product: p.Product, DefaultStatus: "unknown"}
	if p.Package != "" {
		if u, ok := collectionURLs[ecosystemBase(p.Ecosystem)]; ok {
			prod.CollectionURL, prod.PackageName = u, p.Package
		}
	}
	if g.component != "" {
		prod.Modules = []string{g.component}
	}
	for _, r := range g.affected {
		if v, ok := CVEVersionOf(r); ok {
			prod.Versions = append(prod.Versions, v)
		}
	}
	if g.parsed() {
		prod.DefaultStatus = "unaffected"
	}
	return prod
}

// CVEVersionOf translates one parsed range into a CVE versions entry
// (semver ranges: version ≤ v < lessThan, or ≤ lessThanOrEqual; "*" is
// unbounded). ok is false for prose.
func CVEVersionOf(r workflow.VersionRange) (CVEVersion, bool) {
	v := CVEVersion{Status: "affected", VersionType: "semver"}
	switch {
	case r.Prose:
		return CVEVersion{}, false
	case r.Version != "":
		v.Version = r.Version
	case r.Fixed != "":
		v.Version, v.LessThan = r.Introduced, r.Fixed
	case r.LastAffected != "":
		v.Version, v.LessThanOrEqual = r.Introduced, r.LastAffected
	default:
		v.Version, v.LessThan = r.Introduced, "*"
	}
	return v, true
}

// cveMetric is the CVSS metric of the incident's vector. The CVE schema
// wants the v3.1 base score; the incident's score includes any temporal or
// environmental metrics, so the base score is computed here. A v4.0 vector
// has one score.
func cveMetric(inc *workflow.Incident) (CVEMetric, bool) {
	c, ok := inc.CVSS()
	if !ok {
		return CVEMetric{}, false
	}
	m := CVEMetric{Format: "CVSS", Scenarios: []LangText{{"en", "GENERAL"}}}
	switch c.Version {
	case "3.1":
		v, err := gocvss31.ParseVector(c.Vector)
		if err != nil {
			return CVEMetric{}, false
		}
		base := v.BaseScore()
		m.CVSSV31 = &CVSSMetric{Version: "3.1", VectorString: c.Vector, BaseScore: base,
			BaseSeverity: strings.ToUpper(workflow.SeverityOf(base).String())}
	case "4.0":
		m.CVSSV40 = &CVSSMetric{Version: "4.0", VectorString: c.Vector, BaseScore: c.Score,
			BaseSeverity: strings.ToUpper(c.Severity().String())}
	default:
		return CVEMetric{}, false
	}
	return m, true
}

// cveTags are the CVE reference tags of each kind of reference.
var cveTags = map[workflow.RefKind]string{
	workflow.RefPatch: "patch", workflow.RefIssue: "issue-tracking", workflow.RefAdvisory: "vendor-advisory",
	workflow.RefMailingList: "mailing-list",
}

// references lists the incident's references, without repeats: the
// published advisory, the announce archive, the tracking issue, then the
// references field in order.
func references(p Project, inc *workflow.Incident) []workflow.Reference {
	var out []workflow.Reference
	seen := map[string]bool{}
	add := func(url string, kind workflow.RefKind) {
		if url != "" && httpsURL.MatchString(url) && !seen[url] {
			seen[url] = true
			out = append(out, workflow.Reference{URL: url, Kind: kind})
		}
	}
	add(p.AdvisoryPage(string(inc.ID)), workflow.RefAdvisory)
	add(p.AnnounceURL, workflow.RefMailingList)
	add(inc.Advisory.IssueURL, workflow.RefIssue)
	refs, _ := workflow.ParseReferences(inc.Advisory.References)
	for _, r := range refs {
		add(r.URL, r.Kind)
	}
	return out
}

// publicAt is when the incident goes (or went) public: T, else the
// disclosure instant; zero if neither is known.
func publicAt(inc *workflow.Incident) time.Time {
	if !inc.T.IsZero() {
		return inc.T
	}
	return inc.DisclosedAt
}

// stamp formats an instant as the schemas want it (RFC 3339, UTC, no
// fraction), or "" for the zero time.
func stamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Truncate(time.Second).Format(time.RFC3339)
}

func ecosystemBase(e string) string {
	b, _, _ := strings.Cut(e, ":")
	return b
}
