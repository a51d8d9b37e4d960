// Package record builds the machine-readable records of a disclosed
// incident: the CVE JSON 5 draft the CNA member reviews and submits and the
// CVE data map for the release team (docs/process.md §7.9), and the OSV
// record served beside the published advisory. It is pure, like workflow:
// an incident and the project's metadata in, bytes out; no I/O, no clock.
//
// Both builders are checked against the official schemas in the tests
// (testdata/schema/README.md).
package record

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/embargo-project/embargo/workflow"
)

// Project is what the records say about the project itself. The
// configuration fills it; WithDefaults fills what it left empty.
type Project struct {
	// Name is the project's name in every text ("Example"), default Domain.
	Name string
	// Domain is the configured mail domain ("example.org"): the fallback
	// name and the source of the default IDPrefix.
	Domain string

	// CVE: the CNA. OrgID is its UUID (cveMetadata.assignerOrgId and
	// containers.cna.providerMetadata.orgId, both required by the schema);
	// ShortName its short name (2–32 characters). Vendor and Product name
	// the affected product, default Name.
	OrgID, ShortName string
	Vendor, Product  string

	// OSV: IDPrefix starts each record's id, default "x_" + the domain's
	// first label upper-cased + "-" ("x_EXAMPLE-"): the OSV schema accepts
	// "x_" for a local database, or a prefix OSV has registered for it.
	// Ecosystem and Package name the package the project ships through, if
	// any ("Go", "k8s.io/kubernetes"): without them scanners cannot match
	// the record to an installed package.
	IDPrefix           string
	Ecosystem, Package string

	// AdvisoryURL is the base URL of the published advisories: the page of
	// SEC-2026-0001 is AdvisoryURL + "/SEC-2026-0001" (the daemon's web
	// server serves them under <origin>/advisories). AnnounceURL is the
	// public archive of the announce list, if it has one.
	AdvisoryURL, AnnounceURL string
}

// WithDefaults returns p with the defaults filled in.
func (p Project) WithDefaults() Project {
	p.AdvisoryURL = strings.TrimRight(p.AdvisoryURL, "/")
	if p.Name == "" {
		p.Name = p.Domain
	}
	if p.Vendor == "" {
		p.Vendor = p.Name
	}
	if p.Product == "" {
		p.Product = p.Name
	}
	if p.IDPrefix == "" {
		p.IDPrefix = DefaultIDPrefix(p.Domain, p.Name)
	}
	return p
}

// DefaultIDPrefix is "x_" + the domain's first label upper-cased + "-"
// ("example.org" → "x_EXAMPLE-"), or from the name when there is no domain.
func DefaultIDPrefix(domain, name string) string {
	label, _, _ := strings.Cut(domain, ".")
	if label == "" {
		label = name
	}
	var b strings.Builder
	for _, r := range strings.ToUpper(label) {
		if r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' {
			b.WriteRune(r)
		}
	}
	if b.Len() == 0 {
		b.WriteString("SEC")
	}
	return "x_" + b.String() + "-"
}

// AdvisoryPage is the URL of an incident's published advisory, or "".
func (p Project) AdvisoryPage(id string) string {
	if p.AdvisoryURL == "" {
		return ""
	}
	return strings.TrimRight(p.AdvisoryURL, "/") + "/" + id
}

// ValidOrgID reports whether id has the form of a CNA's organisation ID: a
// version 4 UUID, the CVE schema's uuidType.
func ValidOrgID(id string) bool { return uuidPattern.MatchString(id) }

// ValidIDPrefix reports whether an OSV id may start with prefix: "x_" and
// letters, digits, ".", "_" or "-" (a local database), or a prefix OSV
// registered for a database ("KUBE-").
func ValidIDPrefix(prefix string) bool { return prefixPattern.MatchString(prefix) }

// Gap is one reason a record will be incomplete or refused.
type Gap struct {
	Record  string // "CVE", "OSV" or "CVE, OSV"
	Key     string // the configuration key (or /set field) that fills it
	Invalid bool   // the record fails its schema (not merely poorer)
	Why     string // a sentence: what is missing, what follows, how to fix it
}

func (g Gap) String() string {
	kind := "incomplete"
	if g.Invalid {
		kind = "invalid"
	}
	return fmt.Sprintf("%s record %s (%s): %s", g.Record, kind, g.Key, g.Why)
}

var (
	uuidPattern = regexp.MustCompile(`^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-4[0-9A-Fa-f]{3}-[89ABab][0-9A-Fa-f]{3}-[0-9A-Fa-f]{12}$`)
	httpsURL    = regexp.MustCompile(`^https://[A-Za-z0-9.-]+(:[0-9]+)?(/[!-~]*)?$`)
	// A local prefix ("x_…"), or one OSV registered for a database: the list
	// of the OSV schema (validation/schema.json, $defs prefix), which grows;
	// update it with testdata/schema/osv-schema.json.
	prefixPattern = regexp.MustCompile(`^(x_[A-Za-z0-9._-]*|(ASB-A|PUB-A|ALPINE|ALSA|ALBA|ALEA|AZL|BELL|BIT|CGA|CLEANSTART|CLSA|CURL|CVE|DEBIAN|DHI|DRUPAL|DSA|DLA|ELA|DTSA|ECHO|EEF|FreeBSD|GHSA|GO|GSD|HSEC|JLSEC|KUBE|LBSEC|LSN|MAL|MINI|MGASA|OESA|OSEC|OSV|openSUSE-SU|PHSA|PSF|PYSEC|RHBA|RHEA|RHSA|RLSA|RXSA|RSEC|ROOT|RUSTSEC|SUSE-[SRFO]U|UBUNTU|USN|V8)-)$`)
	// The ecosystems of the OSV schema (validation/schema.json, $defs
	// ecosystemWithSuffix), each optionally followed by ":suffix".
	ecosystemPattern = regexp.MustCompile(`^(AlmaLinux|Alpaquita|Alpine|Android|Azure Linux|BellSoft Hardened Containers|Bioconductor|Bitnami|Chainguard|CleanStart|ConanCenter|CRAN|crates\.io|Debian|Docker Hardened Images|Echo|FreeBSD|GHC|GitHub Actions|Go|Hackage|Hex|Julia|Kubernetes|Linux|Mageia|Maven|MinimOS|npm|NuGet|opam|openEuler|openSUSE|OSS-Fuzz|Packagist|Photon OS|Pub|PyPI|Red Hat|Rocky Linux|Root|RubyGems|SUSE|SwiftURL|TuxCare|Ubuntu|VSCode|Wolfi|GIT)(:.+)?$`)
)

// Check lists why the records built for p will be incomplete or refused by
// their schemas, for `embargo check`. Nothing listed: both records are
// complete as far as the configuration goes (Missing covers each incident).
func (p Project) Check() []Gap {
	p = p.WithDefaults()
	var gaps []Gap
	add := func(record, key string, invalid bool, format string, a ...any) {
		gaps = append(gaps, Gap{Record: record, Key: key, Invalid: invalid, Why: fmt.Sprintf(format, a...)})
	}
	if p.Name == "" {
		add("CVE, OSV", "project", false, "no project name (and no domain): the texts name no product; set project")
	}
	switch {
	case p.OrgID == "":
		add("CVE", "cve.org_id", true, "not set: the draft has no cveMetadata.assignerOrgId and no containers.cna.providerMetadata.orgId, which the CVE schema requires; set it to your CNA's organisation UUID (CVE Services: cve org)")
	case !uuidPattern.MatchString(p.OrgID):
		add("CVE", "cve.org_id", true, "%q is not a version 4 UUID, the form of a CNA's organisation ID", p.OrgID)
	}
	if n := len(p.ShortName); p.ShortName != "" && (n < 2 || n > 32) {
		add("CVE", "cve.short_name", true, "%q must be 2 to 32 characters", p.ShortName)
	} else if p.ShortName == "" {
		add("CVE", "cve.short_name", false, "not set: the draft names the CNA by its UUID only; set the CNA's short name")
	}
	if !prefixPattern.MatchString(p.IDPrefix) {
		add("OSV", "osv.id_prefix", true, "%q: an OSV id starts with x_ (a local database, e.g. x_EXAMPLE-) or with a prefix OSV registered for a database (e.g. KUBE-); other ids fail the OSV schema", p.IDPrefix)
	}
	switch {
	case p.Ecosystem == "" && p.Package == "":
		add("OSV", "osv.ecosystem, osv.package", false, "not set: affected[] names no package, so scanners such as osv-scanner cannot match the record to what is installed; set both if the project ships through a package ecosystem (e.g. Go and k8s.io/kubernetes)")
	case p.Ecosystem == "" || p.Package == "":
		add("OSV", "osv.ecosystem, osv.package", true, "set both or neither: a package needs its ecosystem and its name")
	case !ecosystemPattern.MatchString(p.Ecosystem):
		add("OSV", "osv.ecosystem", true, "%q is not an OSV ecosystem (e.g. Go, npm, PyPI, crates.io, Maven)", p.Ecosystem)
	}
	switch {
	case p.AdvisoryURL == "":
		add("CVE, OSV", "http.base_url", false, "not set: neither record links the published advisory, and a CVE draft without an issue URL or references then has no reference, which the CVE schema requires; set http.listen and http.base_url, the public https origin that serves /advisories")
	case !httpsURL.MatchString(p.AdvisoryURL):
		add("CVE, OSV", "http.base_url", true, "%q is not an https URL: the records link only https pages", p.AdvisoryURL)
	}
	if p.AnnounceURL != "" && !httpsURL.MatchString(p.AnnounceURL) {
		add("CVE, OSV", "announce_url", true, "%q is not an https URL", p.AnnounceURL)
	}
	return gaps
}

// Missing lists why the records of one incident will be incomplete or
// invalid, beyond the configuration (Check): for the release pack and the
// /approve receipt.
func Missing(p Project, inc *workflow.Incident) []Gap {
	p = p.WithDefaults()
	a := inc.Advisory
	var gaps []Gap
	add := func(record, key string, invalid bool, why string) {
		gaps = append(gaps, Gap{Record: record, Key: key, Invalid: invalid, Why: why})
	}
	if len(inc.CVEs) == 0 {
		add("CVE", "/cve", true, "no CVE ID: there is no CVE record to draft")
	}
	if len(references(p, inc)) == 0 {
		add("CVE", "/set references", true, "no reference: the CVE schema requires one; set issue-url or references (or http.base_url in the configuration)")
	}
	parsed := false
	for _, g := range groups(a) {
		if g.parsed() {
			parsed = true
		} else if len(g.affected) > 0 {
			add("CVE, OSV", "/set affected", false, "a line is not a version range: the records give other versions' status as unknown")
		}
	}
	if !parsed && strings.TrimSpace(a.Affected) == "" {
		add("CVE, OSV", "/set affected", false, "no affected versions: the records give every version's status as unknown")
	}
	if strings.TrimSpace(a.CWE) == "" {
		add("CVE", "/set cwe", false, "no CWE: the draft has no problemTypes")
	}
	if _, ok := inc.CVSS(); !ok {
		add("CVE, OSV", "/cvss", false, "no CVSS vector: the records have no severity")
	}
	if strings.TrimSpace(a.Actor) == "" || strings.TrimSpace(a.Impact) == "" {
		add("CVE, OSV", "/set actor, /set impact", false, "the description cannot say who may do what")
	}
	return gaps
}
