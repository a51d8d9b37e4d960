package config

import (
	"strings"
	"testing"
)

// TestRecordKeys: project and the [cve] and [osv] keys decode, take their
// defaults from the project and the domain, and fill record.Project.
func TestRecordKeys(t *testing.T) {
	cfg, err := Parse([]byte(`domain = "kubernetes.io"
project = "Kubernetes"
[http]
listen   = "127.0.0.1:8025"
base_url = "https://security.kubernetes.io/"
[cve]
org_id     = "6e8b2c0a-3d4f-4a1b-9c2d-7e5f60718293"
short_name = "kubernetes"
[osv]
ecosystem = "Go"
package   = "k8s.io/kubernetes"
`), "t.toml")
	if err != nil {
		t.Fatal(err)
	}
	p := cfg.RecordProject()
	if p.Name != "Kubernetes" || p.Vendor != "Kubernetes" || p.Product != "Kubernetes" || p.IDPrefix != "x_KUBERNETES-" ||
		p.OrgID != "6e8b2c0a-3d4f-4a1b-9c2d-7e5f60718293" || p.ShortName != "kubernetes" ||
		p.Ecosystem != "Go" || p.Package != "k8s.io/kubernetes" || p.AdvisoryURL != "https://security.kubernetes.io/advisories" {
		t.Errorf("RecordProject() = %+v", p)
	}
	if gaps := cfg.RecordGaps(); len(gaps) != 0 {
		t.Errorf("a complete configuration has record gaps: %q", gaps)
	}

	// Nothing set: the domain names the project, and check says what the
	// records will lack.
	cfg, err = Parse([]byte("domain = \"example.org\"\n"), "t.toml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Project != "example.org" || cfg.CVE.Vendor != "example.org" || cfg.CVE.Product != "example.org" || cfg.OSV.IDPrefix != "x_EXAMPLE-" {
		t.Errorf("defaults: project %q, vendor %q, product %q, prefix %q", cfg.Project, cfg.CVE.Vendor, cfg.CVE.Product, cfg.OSV.IDPrefix)
	}
	if p := cfg.RecordProject(); p.AdvisoryURL != "" {
		t.Errorf("advisory URL without http.base_url: %q", p.AdvisoryURL)
	}
	gaps := strings.Join(cfg.RecordGaps(), "\n")
	for _, want := range []string{
		"CVE records will be refused by their schema (cve.org_id): not set",
		"CVE records will be incomplete (cve.short_name)",
		"OSV records will be incomplete (osv.ecosystem, osv.package)",
		"CVE and OSV records will be incomplete (http.base_url)",
	} {
		if !strings.Contains(gaps, want) {
			t.Errorf("record gaps lack %q:\n%s", want, gaps)
		}
	}
	if r := cfg.Report(); len(r.Records) != 4 || !r.OK() {
		t.Errorf("report: records %q, OK %v: the gaps are warnings, not errors", r.Records, r.OK())
	}
	// Vendor and product default to the project, not the domain.
	cfg, _ = Parse([]byte("domain = \"example.org\"\nproject = \"Example\"\n[cve]\nproduct = \"Example Parser\"\n"), "t.toml")
	if cfg.CVE.Vendor != "Example" || cfg.CVE.Product != "Example Parser" || cfg.OSV.IDPrefix != "x_EXAMPLE-" {
		t.Errorf("vendor %q, product %q, prefix %q", cfg.CVE.Vendor, cfg.CVE.Product, cfg.OSV.IDPrefix)
	}
}

// TestRecordKeyErrors: a value that is plainly wrong is an error naming the
// key and the right form.
func TestRecordKeyErrors(t *testing.T) {
	for _, tt := range []struct{ toml, want string }{
		{"[cve]\norg_id = \"not-a-uuid\"\n", `cve.org_id "not-a-uuid" is not a UUID`},
		{"[cve]\norg_id = \"6e8b2c0a-3d4f-1a1b-9c2d-7e5f60718293\"\n", "cve.org_id"}, // version 1, not 4
		{"[cve]\nshort_name = \"x\"\n", "cve.short_name \"x\" must be 2 to 32 characters"},
		{"[osv]\nid_prefix = \"SEC-\"\n", `osv.id_prefix "SEC-": an OSV id starts with "x_"`},
		{"[osv]\nid_prefix = \"x_EX AMPLE-\"\n", "osv.id_prefix"},
		{"project = \"Example\\nBcc: x@y\"\n", "project \"Example\\nBcc: x@y\" must be one line"},
		{"project = \"Ex\u202Eample\"\n", "project"},
		{"project = \" Example\"\n", "white space at either end"},
		{"[cve]\nvendor = \"" + strings.Repeat("v", 513) + "\"\n", "longer than 512 characters"},
		{"[cve]\norgid = \"x\"\n", `unknown key "cve.orgid"`},
	} {
		toml := "domain = \"example.org\"\n" + tt.toml
		if strings.HasPrefix(tt.toml, "project") {
			toml = tt.toml + "domain = \"example.org\"\n"
		}
		_, err := Parse([]byte(toml), "t.toml")
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: %v, want an error containing %q", tt.toml, err, tt.want)
		}
	}
	// A prefix OSV registered is accepted.
	if _, err := Parse([]byte("domain = \"kubernetes.io\"\n[osv]\nid_prefix = \"KUBE-\"\n"), "t.toml"); err != nil {
		t.Errorf("id_prefix KUBE-: %v", err)
	}
}
