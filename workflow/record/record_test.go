package record

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/embargo-project/embargo/workflow"
)

var update = flag.Bool("update", false, "rewrite the golden records")

// example is the project of the README's examples, with every key set.
var example = Project{
	Name: "Example", Domain: "example.org",
	OrgID: "6e8b2c0a-3d4f-4a1b-9c2d-7e5f60718293", ShortName: "example",
	AdvisoryURL: "https://example.org/advisories/",
	AnnounceURL: "https://groups.google.com/g/example-security-announce",
}

var (
	mon     = time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC) // a Monday
	alice   = workflow.Signer{Fingerprint: "A11CE", Email: "alice@example.org", Roles: []string{workflow.RoleSRC}}
	srcEnv  = workflow.Env{SRC: []string{"alice@example.org", "bob@example.org"}}
	readme  = "/accept\n/lead me\n/cvss CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H\n/cve CVE-2026-12345\n/set mitigation <<END\nDisable the parser until you upgrade.\nEND\n/disclose 2026-12-03\n"
	details = "/set summary heap overflow in the parser\n/set actor A remote attacker\n/set impact execute code as the server\n" +
		"/set condition the parser is enabled\n/set component example-parser\n/set affected >= 1.0.0, < 1.2.4\n/set fixed 1.2.4\n" +
		"/set cwe CWE-122\n/set credit Rep Orter\n/set issue-url https://github.com/example/example/issues/122\n" +
		"/set references <<END\nhttps://github.com/example/example/pull/123\nhttps://github.com/example/example/commit/0123456789abcdef0123456789abcdef01234567\nEND\n" +
		"/set detection Look for crashes in the parser log.\n/notify\n/approve\n"
)

// readmeIncident plays the README's example through the command path, then
// lets the scheduler release it at T: the whole incident as the daemon
// would hold it.
func readmeIncident(t *testing.T) workflow.Incident {
	t.Helper()
	inc := workflow.Incident{Version: workflow.SchemaVersion, ID: "SEC-2026-0001", Phase: workflow.PhaseTriage,
		Opened: mon, Updated: mon, Reporter: "reporter@example.net", Subject: "heap overflow in the parser"}
	now := mon.Add(time.Hour)
	for _, text := range []string{readme, details} {
		by := alice
		by.SignedAt = now
		res, err := workflow.Apply(inc, text, by, now, srcEnv)
		if err != nil {
			t.Fatalf("%v\n%s", err, res.Receipt.Text())
		}
		inc, now = res.Incident, now.Add(time.Hour)
	}
	// The scheduler: the final notice at T-24 h, the release at T.
	res := workflow.Tick(inc, inc.T.Add(-workflow.FinalNoticeBefore), srcEnv)
	res = workflow.Tick(res.Incident, inc.T, srcEnv)
	if res.Incident.Phase != workflow.PhaseDisclosed {
		t.Fatalf("not released at T: phase %s", res.Incident.Phase)
	}
	return res.Incident
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test ./record -update)", err)
	}
	if string(got) != string(want) {
		t.Errorf("%s changed (go test ./record -update to accept):\n%s", name, got)
	}
}

// TestReadmeIncidentRecordsAreSchemaValid is the proof: the CVE draft and the
// OSV record of a whole incident pass the official schemas.
func TestReadmeIncidentRecordsAreSchemaValid(t *testing.T) {
	cveSch, osvSch := schemas(t)
	inc := readmeIncident(t)
	cve, err := CVEJSON(example, &inc)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate(cveSch, cve); err != nil {
		t.Errorf("CVE draft fails the CVE schema: %v\n%s", err, cve)
	}
	osv, err := OSVJSON(example, &inc)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate(osvSch, osv); err != nil {
		t.Errorf("OSV record fails the OSV schema: %v\n%s", err, osv)
	}
	golden(t, "readme.cve.json", cve)
	golden(t, "readme.osv.json", osv)
	if gaps := Missing(example, &inc); len(gaps) != 0 {
		t.Errorf("Missing = %v, want nothing", gaps)
	}
	if gaps := example.Check(); len(gaps) != 1 || gaps[0].Key != "osv.ecosystem, osv.package" || gaps[0].Invalid {
		t.Errorf("Check = %v, want only the note that no package is named", gaps)
	}
}

// TestSchemasCatchTheOldDefects: the validator sees the defects the records
// had before (no org_id; an OSV id with an unknown prefix), so the valid
// results above mean something.
func TestSchemasCatchTheOldDefects(t *testing.T) {
	cveSch, osvSch := schemas(t)
	inc := readmeIncident(t)
	p := example
	p.OrgID = ""
	cve, _ := CVEJSON(p, &inc)
	err := validate(cveSch, cve)
	if err == nil || !strings.Contains(err.Error(), "assignerOrgId") || !strings.Contains(err.Error(), "orgId") {
		t.Errorf("CVE draft without org_id: %v, want the missing assignerOrgId and providerMetadata.orgId", err)
	}
	if gaps := p.Check(); len(gaps) == 0 || gaps[0].Key != "cve.org_id" || !gaps[0].Invalid {
		t.Errorf("Check without org_id = %v", gaps)
	}
	noRefs := inc
	noRefs.Advisory.IssueURL, noRefs.Advisory.References = "", ""
	p = example
	p.AdvisoryURL, p.AnnounceURL = "", ""
	cve, _ = CVEJSON(p, &noRefs)
	if err := validate(cveSch, cve); err == nil || !strings.Contains(err.Error(), "references") {
		t.Errorf("CVE draft without references: %v", err)
	}
	if gaps := Missing(p, &noRefs); len(gaps) == 0 || gaps[0].Key != "/set references" {
		t.Errorf("Missing without references = %v", gaps)
	}
	// The OSV id the web server used to give: the incident ID, whose prefix
	// OSV does not know.
	p = example
	p.IDPrefix = "SEC-"
	osv, _ := OSVJSON(p, &inc)
	if err := validate(osvSch, osv); err == nil || !strings.Contains(err.Error(), "/id") {
		t.Errorf("OSV id SEC-2026-0001: %v, want an id error", err)
	}
	if gaps := p.Check(); len(gaps) == 0 || gaps[0].Key != "osv.id_prefix" || !gaps[0].Invalid {
		t.Errorf("Check with prefix SEC- = %v", gaps)
	}
	p.IDPrefix = "KUBE-" // registered with OSV
	osv, _ = OSVJSON(p, &inc)
	if err := validate(osvSch, osv); err != nil {
		t.Errorf("OSV id KUBE-2026-0001: %v", err)
	}
	if gaps := p.Check(); len(gaps) != 1 || gaps[0].Key == "osv.id_prefix" {
		t.Errorf("Check with prefix KUBE- = %v", gaps)
	}
}

// TestRangeTranslation: each accepted form of an affected line, the CVE
// versions entry and the OSV events it becomes.
func TestRangeTranslation(t *testing.T) {
	type ev = OSVEvent
	for _, tt := range []struct {
		line     string
		cve      CVEVersion
		osv      []OSVEvent // nil: not a range
		versions []string   // OSV versions
	}{
		{"1.0.0 - 1.2.3", CVEVersion{Version: "1.0.0", LessThanOrEqual: "1.2.3"}, []ev{{Introduced: "1.0.0"}, {LastAffected: "1.2.3"}}, nil},
		{"v1.0.0 - v1.2.3", CVEVersion{Version: "1.0.0", LessThanOrEqual: "1.2.3"}, []ev{{Introduced: "1.0.0"}, {LastAffected: "1.2.3"}}, nil},
		{"<= 1.2.3", CVEVersion{Version: "0", LessThanOrEqual: "1.2.3"}, []ev{{Introduced: "0"}, {LastAffected: "1.2.3"}}, nil},
		{"< 1.2.4", CVEVersion{Version: "0", LessThan: "1.2.4"}, []ev{{Introduced: "0"}, {Fixed: "1.2.4"}}, nil},
		{"< v1.2.4", CVEVersion{Version: "0", LessThan: "1.2.4"}, []ev{{Introduced: "0"}, {Fixed: "1.2.4"}}, nil},
		{">= 1.0.0, < 1.2.4", CVEVersion{Version: "1.0.0", LessThan: "1.2.4"}, []ev{{Introduced: "1.0.0"}, {Fixed: "1.2.4"}}, nil},
		{">= 1.0.0, <= 1.2.3", CVEVersion{Version: "1.0.0", LessThanOrEqual: "1.2.3"}, []ev{{Introduced: "1.0.0"}, {LastAffected: "1.2.3"}}, nil},
		{">= 1.0.0", CVEVersion{Version: "1.0.0", LessThan: "*"}, []ev{{Introduced: "1.0.0"}}, nil},
		{"all", CVEVersion{Version: "0", LessThan: "*"}, []ev{{Introduced: "0"}}, nil},
		{"1.2.3", CVEVersion{Version: "1.2.3"}, nil, []string{"1.2.3"}},
		{"2.0.0-rc.1 - 2.0.0", CVEVersion{Version: "2.0.0-rc.1", LessThanOrEqual: "2.0.0"}, []ev{{Introduced: "2.0.0-rc.1"}, {LastAffected: "2.0.0"}}, nil},
	} {
		r := workflow.ReadVersions(tt.line)[0]
		got, ok := CVEVersionOf(r)
		tt.cve.Status, tt.cve.VersionType = "affected", "semver"
		if !ok || got != tt.cve {
			t.Errorf("%q: CVE %+v, want %+v", tt.line, got, tt.cve)
		}
		events, ok := OSVEventsOf(r)
		if ok != (tt.osv != nil) || !reflect.DeepEqual(events, tt.osv) {
			t.Errorf("%q: OSV events %+v, want %+v", tt.line, events, tt.osv)
		}
		a := osvAffected(example, group{affected: []workflow.VersionRange{r}})
		if !reflect.DeepEqual(a.Versions, tt.versions) {
			t.Errorf("%q: OSV versions %v, want %v", tt.line, a.Versions, tt.versions)
		}
	}
	r := workflow.ReadVersions("before the 1.2 release")[0]
	if _, ok := CVEVersionOf(r); ok {
		t.Error("prose became a CVE version")
	}
	if _, ok := OSVEventsOf(r); ok {
		t.Error("prose became OSV events")
	}
}

// TestEveryFormIsSchemaValid: records with every form at once, several
// components, a CVSS 4.0 vector and a package pass both schemas.
func TestEveryFormIsSchemaValid(t *testing.T) {
	cveSch, osvSch := schemas(t)
	inc := readmeIncident(t)
	inc.CVSSVector = "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N"
	inc.Advisory.Affected = "1.0.0 - 1.2.3\n<= 0.9.9\n< 1.3.1\n>= 1.4.0, < 1.4.2\n>= 1.5.0, <= 1.5.1\n>= 2.0.0\n1.6.0\nkubelet all\nkubectl v0.30.0 - v0.30.4"
	inc.Advisory.Fixed = "1.2.4\n1.3.1\nkubectl v0.30.5"
	inc.Advisory.CWE = "CWE-79 CWE-1333"
	for _, p := range []Project{example, {Name: "Kubernetes", Domain: "kubernetes.io", OrgID: example.OrgID, Ecosystem: "Go", Package: "k8s.io/kubernetes"},
		{Domain: "example.org", OrgID: example.OrgID, Ecosystem: "PyPI", Package: "example"}} {
		cve, err := CVEJSON(p, &inc)
		if err != nil {
			t.Fatal(err)
		}
		if err := validate(cveSch, cve); err != nil {
			t.Errorf("%s: CVE: %v\n%s", p.Name, err, cve)
		}
		osv, _ := OSVJSON(p, &inc)
		if err := validate(osvSch, osv); err != nil {
			t.Errorf("%s: OSV: %v\n%s", p.Name, err, osv)
		}
	}
	rec, _ := CVE(example, &inc)
	if n := len(rec.Containers.CNA.Affected); n != 3 {
		t.Errorf("%d affected products, want one per component (example-parser, kubelet, kubectl)", n)
	}
	if m := rec.Containers.CNA.Metrics; len(m) != 1 || m[0].CVSSV40 == nil || m[0].CVSSV40.BaseScore != 9.3 || m[0].CVSSV40.BaseSeverity != "CRITICAL" {
		t.Errorf("metrics = %+v", m)
	}
	osv := OSV(Project{Domain: "example.org", Ecosystem: "PyPI", Package: "example"}, &inc)
	if osv.Affected[0].Ranges[0].Type != "ECOSYSTEM" || osv.Severity[0].Type != "CVSS_V4" {
		t.Errorf("PyPI ranges %+v, severity %+v", osv.Affected[0].Ranges, osv.Severity)
	}
	go_ := OSV(Project{Domain: "kubernetes.io", Ecosystem: "Go", Package: "k8s.io/kubernetes"}, &inc)
	if go_.ID != "x_KUBERNETES-2026-0001" || go_.Affected[0].Ranges[0].Type != "SEMVER" || go_.Affected[0].Package.Name != "k8s.io/kubernetes" {
		t.Errorf("Go record: id %s, affected %+v", go_.ID, go_.Affected[0])
	}
}

// TestProseFallsBackToUnknown: a line that is not a range keeps its text,
// and the records no longer claim the other versions are unaffected.
func TestProseFallsBackToUnknown(t *testing.T) {
	cveSch, osvSch := schemas(t)
	inc := readmeIncident(t)
	inc.Advisory.Affected = ">= 1.0.0, < 1.2.4\nevery build from the 2025 branch"
	rec, _ := CVE(example, &inc)
	prod := rec.Containers.CNA.Affected[0]
	if prod.DefaultStatus != "unknown" || len(prod.Versions) != 1 || prod.Versions[0].LessThan != "1.2.4" {
		t.Errorf("product = %+v", prod)
	}
	desc := rec.Containers.CNA.Descriptions[0].Value
	if !strings.Contains(desc, "Affected versions: every build from the 2025 branch.") || strings.Contains(desc, "before 1.2.4") {
		t.Errorf("description = %q", desc)
	}
	o := OSV(example, &inc)
	if got := o.Affected[0].DatabaseSpecific["affected"]; !reflect.DeepEqual(got, []string{">= 1.0.0, < 1.2.4", "every build from the 2025 branch"}) {
		t.Errorf("OSV keeps %v", got)
	}
	cve, _ := json.Marshal(rec)
	osv, _ := json.Marshal(o)
	if err := validate(cveSch, cve); err != nil {
		t.Error(err)
	}
	if err := validate(osvSch, osv); err != nil {
		t.Error(err)
	}
}

func TestDescriptionAndSolution(t *testing.T) {
	a := workflow.Advisory{Actor: "An authenticated node", Impact: "to read any secret.", Condition: "NodeRestriction is off.",
		Component: "kube-apiserver", Affected: "1.30.0 - 1.30.4\n< 1.29.9", Fixed: "1.30.5\n1.29.9", UpgradeDocs: "https://example.org/upgrade"}
	p := Project{Name: "Kubernetes"}
	want := "kube-apiserver in Kubernetes from 1.30.0 through 1.30.4 and before 1.29.9 allows an authenticated node to read any secret, only if NodeRestriction is off."
	if got := Description(p, a); got != want {
		t.Errorf("Description =\n%q, want\n%q", got, want)
	}
	if got := solution(p.WithDefaults(), a, groups(a)); got != "Upgrade kube-apiserver to 1.30.5 and 1.29.9, or a later release of the same branch. See https://example.org/upgrade." {
		t.Errorf("solution = %q", got)
	}
	a.Component, a.Actor = "", "GitHub Actions"
	if got := Description(p, a); !strings.HasPrefix(got, "Kubernetes from 1.30.0 through 1.30.4 and before 1.29.9 allows GitHub Actions to") {
		t.Errorf("Description = %q", got)
	}
	d := Details(p, a)
	if !strings.Contains(d, "### Affected versions\n\n- `1.30.0 - 1.30.4`\n- `< 1.29.9`\n") || strings.Contains(d, "Hello") || strings.Contains(d, "Thank you") {
		t.Errorf("Details =\n%s", d)
	}
}

func TestProjectDefaultsAndCheck(t *testing.T) {
	p := Project{Domain: "example.org"}.WithDefaults()
	if p.Name != "example.org" || p.Vendor != "example.org" || p.IDPrefix != "x_EXAMPLE-" {
		t.Errorf("defaults = %+v", p)
	}
	if got := (Project{Name: "My Project"}).WithDefaults().IDPrefix; got != "x_MYPROJECT-" {
		t.Errorf("prefix from name = %q", got)
	}
	for _, tt := range []struct {
		p   Project
		key string
	}{
		{Project{Domain: "e.org", OrgID: "not-a-uuid"}, "cve.org_id"},
		{Project{Domain: "e.org", OrgID: example.OrgID, ShortName: "x"}, "cve.short_name"},
		{Project{Domain: "e.org", OrgID: example.OrgID, IDPrefix: "SEC"}, "osv.id_prefix"},
		{Project{Domain: "e.org", OrgID: example.OrgID, Ecosystem: "Go"}, "osv.ecosystem, osv.package"},
		{Project{Domain: "e.org", OrgID: example.OrgID, Ecosystem: "Golang", Package: "x"}, "osv.ecosystem"},
		{Project{Domain: "e.org", OrgID: example.OrgID, AdvisoryURL: "http://e.org/advisories"}, "http.base_url"},
	} {
		found := false
		for _, g := range tt.p.Check() {
			if g.Key == tt.key && g.Invalid {
				found = true
			}
		}
		if !found {
			t.Errorf("Check(%+v) = %v, want %s invalid", tt.p, tt.p.Check(), tt.key)
		}
	}
	full := example
	full.Ecosystem, full.Package = "Go", "example.org/example"
	if gaps := full.Check(); len(gaps) != 0 {
		t.Errorf("Check(complete) = %v", gaps)
	}
}

func TestNoCVE(t *testing.T) {
	inc := readmeIncident(t)
	inc.CVEs = nil
	if _, err := CVE(example, &inc); err != ErrNoCVE {
		t.Errorf("CVE without an ID: %v", err)
	}
}
