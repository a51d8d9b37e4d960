package config

import (
	"fmt"
	"strings"
	"unicode"

	"github.com/embargo-project/embargo/workflow/record"
)

// RecordProject is what the release records (workflow/record) say about the
// project: the names, the CNA, the OSV prefix and package, and where the
// advisory pages are published: <http.base_url>/advisories when the HTTP
// listener serves them at a public origin, else nowhere the records could
// link to.
func (c *Config) RecordProject() record.Project {
	p := record.Project{
		Name: c.Project, Domain: c.Domain,
		OrgID: c.CVE.OrgID, ShortName: c.CVE.ShortName, Vendor: c.CVE.Vendor, Product: c.CVE.Product,
		IDPrefix: c.OSV.IDPrefix, Ecosystem: c.OSV.Ecosystem, Package: c.OSV.Package,
	}
	if c.HTTP.Listen != "" && c.HTTP.BaseURL != "" {
		p.AdvisoryURL = strings.TrimRight(c.HTTP.BaseURL, "/") + "/advisories"
	}
	return p
}

// validateRecords checks the names and the record keys. A value that is
// plainly wrong is an error; what only makes the records poorer is for
// RecordGaps.
func (c *Config) validateRecords(p *problems) {
	for _, f := range []struct {
		key, value string
		max        int
	}{
		{"project", c.Project, 100},
		{"cve.vendor", c.CVE.Vendor, 512},   // the CVE schema's maxLength
		{"cve.product", c.CVE.Product, 512}, // (2048 for product; a name is shorter)
		{"osv.ecosystem", c.OSV.Ecosystem, 100},
		{"osv.package", c.OSV.Package, 512},
	} {
		if msg := nameProblem(f.value, f.max); msg != "" {
			p.add("%s %q %s", f.key, f.value, msg)
		}
	}
	if id := c.CVE.OrgID; id != "" && !record.ValidOrgID(id) {
		p.add("cve.org_id %q is not a UUID like \"6e8b2c0a-3d4f-4a1b-9c2d-7e5f60718293\": use your CNA's organisation ID (CVE Services: cve org), or remove the key", id)
	}
	if n := len([]rune(c.CVE.ShortName)); c.CVE.ShortName != "" && (n < 2 || n > 32) {
		p.add("cve.short_name %q must be 2 to 32 characters (the CNA's short name, e.g. \"kubernetes\")", c.CVE.ShortName)
	}
	if !record.ValidIDPrefix(c.OSV.IDPrefix) {
		p.add("osv.id_prefix %q: an OSV id starts with \"x_\" and letters, digits, \".\", \"_\" or \"-\" for a local database (e.g. \"x_EXAMPLE-\"), or with a prefix OSV registered for the project (e.g. \"KUBE-\")", c.OSV.IDPrefix)
	}
}

// nameProblem says what is wrong with a name used in texts and headers'
// display names: it must be one line of printable characters.
func nameProblem(v string, max int) string {
	switch {
	case strings.ContainsFunc(v, func(r rune) bool { return unicode.IsControl(r) || !unicode.IsPrint(r) && r != ' ' }):
		return "must be one line of printable characters"
	case strings.TrimSpace(v) != v:
		return "has white space at either end"
	case len([]rune(v)) > max:
		return fmt.Sprintf("is longer than %d characters", max)
	}
	return ""
}

// RecordGaps says which release records will be incomplete or refused by
// their schemas, and why: `embargo check` prints them, the daemon does not
// refuse to start over them (each incident's own gaps are listed in its
// release pack).
func (c *Config) RecordGaps() []string {
	var out []string
	for _, g := range c.RecordProject().Check() {
		which := strings.ReplaceAll(g.Record, ", ", " and ")
		kind := "incomplete"
		if g.Invalid {
			kind = "refused by their schema"
		}
		out = append(out, fmt.Sprintf("%s records will be %s (%s): %s", which, kind, g.Key, g.Why))
	}
	return out
}
