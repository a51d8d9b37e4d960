package workflow

import (
	"strings"
	"testing"
	"time"
)

func TestReadVersions(t *testing.T) {
	for _, tt := range []struct {
		line string
		want VersionRange
		read string
	}{
		{"1.0.0 - 1.2.3", VersionRange{Introduced: "1.0.0", LastAffected: "1.2.3"}, "1.0.0 up to and including 1.2.3"},
		{"v1.0.0 - v1.2.3", VersionRange{Introduced: "1.0.0", LastAffected: "1.2.3"}, "1.0.0 up to and including 1.2.3"},
		{"1.0.0 – 1.2.3", VersionRange{Introduced: "1.0.0", LastAffected: "1.2.3"}, "1.0.0 up to and including 1.2.3"},
		{"<= 1.2.3", VersionRange{Introduced: "0", LastAffected: "1.2.3"}, "every version up to and including 1.2.3"},
		{"<=v1.2.3", VersionRange{Introduced: "0", LastAffected: "1.2.3"}, "every version up to and including 1.2.3"},
		{"< 1.2.4", VersionRange{Introduced: "0", Fixed: "1.2.4"}, "every version before 1.2.4"},
		{">= 1.0.0, < 1.2.4", VersionRange{Introduced: "1.0.0", Fixed: "1.2.4"}, "1.0.0 and later, before 1.2.4"},
		{">=v1.0.0,<v1.2.4", VersionRange{Introduced: "1.0.0", Fixed: "1.2.4"}, "1.0.0 and later, before 1.2.4"},
		{">= 1.0.0 <= 1.2.3", VersionRange{Introduced: "1.0.0", LastAffected: "1.2.3"}, "1.0.0 up to and including 1.2.3"},
		{">= 1.0.0", VersionRange{Introduced: "1.0.0"}, "1.0.0 and every later version (no fix yet)"},
		{"all", VersionRange{Introduced: "0"}, "every version (no fix yet)"},
		{"1.2.3", VersionRange{Version: "1.2.3"}, "version 1.2.3 only"},
		{"1.3.0-rc.1 - 1.3.0", VersionRange{Introduced: "1.3.0-rc.1", LastAffected: "1.3.0"}, "1.3.0-rc.1 up to and including 1.3.0"},
		{"kubelet v1.30.0 - v1.30.4", VersionRange{Component: "kubelet", Introduced: "1.30.0", LastAffected: "1.30.4"}, "kubelet: 1.30.0 up to and including 1.30.4"},
		{"k8s.io/client-go < 0.30.2", VersionRange{Component: "k8s.io/client-go", Introduced: "0", Fixed: "0.30.2"}, "k8s.io/client-go: every version before 0.30.2"},
		// Prose: kept as text.
		{"1.2 - 1.3", VersionRange{Prose: true}, "not a version range"},
		{"all versions before the fix", VersionRange{Prose: true}, "not a version range"},
		{"> 1.0.0", VersionRange{Prose: true}, "not a version range"},
		{"< 1.2.4, >= 1.0.0", VersionRange{Prose: true}, "not a version range"},
		{"1.0.0-1.2.3", VersionRange{Version: "1.0.0-1.2.3"}, "version 1.0.0-1.2.3 only"}, // a pre-release, as semver reads it
		{"kubelet", VersionRange{Prose: true}, "not a version range"},
		{"v1.2.3 v1.2.4", VersionRange{Prose: true}, "not a version range"},
	} {
		got := ReadVersions("\n  " + tt.line + "  \n\n")
		if len(got) != 1 {
			t.Errorf("ReadVersions(%q) = %d lines", tt.line, len(got))
			continue
		}
		tt.want.Text = tt.line
		if got[0] != tt.want {
			t.Errorf("ReadVersions(%q) = %+v, want %+v", tt.line, got[0], tt.want)
		}
		if r := got[0].Reading(false); !strings.Contains(r, tt.read) {
			t.Errorf("Reading(%q) = %q, want it to contain %q", tt.line, r, tt.read)
		}
	}
}

func TestReadFixedVersions(t *testing.T) {
	got := ReadFixedVersions("1.2.4\nv1.3.1\nkubelet 1.30.5\n< 1.2.4\nthe next release\n")
	want := []VersionRange{
		{Text: "1.2.4", Version: "1.2.4"},
		{Text: "v1.3.1", Version: "1.3.1"},
		{Text: "kubelet 1.30.5", Component: "kubelet", Version: "1.30.5"},
		{Text: "< 1.2.4", Prose: true},
		{Text: "the next release", Prose: true},
	}
	if len(got) != len(want) {
		t.Fatalf("ReadFixedVersions = %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("line %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	if r := got[2].Reading(true); r != "kubelet: fixed in 1.30.5" {
		t.Errorf("Reading = %q", r)
	}
}

func TestCompareSemver(t *testing.T) {
	// semver.org §11.4's example order, then numeric and "v" cases.
	order := []string{"1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2",
		"1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "v1.0.1", "1.2.0", "1.10.0", "2.0.0", "10.0.0"}
	for i := range order {
		for j := range order {
			want := sign(i - j)
			if got := CompareSemver(order[i], order[j]); got != want {
				t.Errorf("CompareSemver(%s, %s) = %d, want %d", order[i], order[j], got, want)
			}
		}
	}
	if CompareSemver("1.0.0+build.1", "v1.0.0") != 0 {
		t.Error("build metadata must not count (§10)")
	}
}

func TestSetAffectedRefusesEmptyRange(t *testing.T) {
	for _, v := range []string{"1.2.3 - 1.0.0", ">= 1.2.4, < 1.2.4", ">= 1.3.0, <= 1.2.9", "kubelet 2.0.0 - 1.0.0"} {
		_, err := Parse("/set affected " + v + "\n")
		if err == nil || !strings.Contains(err.Error(), "so no version is affected") {
			t.Errorf("/set affected %s: err = %v, want a refusal", v, err)
		}
	}
	for _, v := range []string{"1.2.3 - 1.2.3", ">= 1.0.0, <= 1.0.0", "1.0.0 - 1.2 (prose)"} {
		if _, err := Parse("/set affected " + v + "\n"); err != nil {
			t.Errorf("/set affected %s: %v", v, err)
		}
	}
}

func TestSetNewFields(t *testing.T) {
	for _, tt := range []struct{ in, want, err string }{
		{"/set cwe cwe-79, CWE-200 CWE-79\n", "/set cwe CWE-79 CWE-200\n", ""},
		{"/set cwe <<END\nCWE-79\nCWE-200\nEND\n", "/set cwe CWE-79 CWE-200\n", ""},
		{"/set cwe CWE-0\n", "", `"CWE-0" is not a CWE ID`},
		{"/set cwe XSS\n", "", `"XSS" is not a CWE ID`},
		{"/set component kube-apiserver\n", "/set component kube-apiserver\n", ""},
		{"/set component <<END\na\nb\nEND\n", "", "component takes one line"},
		{"/set references <<END\nhttps://github.com/e/e/pull/1\n\nhttps://github.com/e/e/pull/1\nhttps://github.com/e/e/issues/2\nEND\n",
			"/set references <<END\nhttps://github.com/e/e/pull/1\nhttps://github.com/e/e/issues/2\nEND\n", ""},
		{"/set references http://example.org/x\n", "", `"http://example.org/x" is not an https URL`},
		{"/set references <<END\nhttps://example.org/a b\nEND\n", "", "is not an https URL"},
	} {
		cmds, err := Parse(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("Parse(%q) err = %v, want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.in, err)
			continue
		}
		if got := Format(cmds); got != tt.want {
			t.Errorf("Parse(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestClassifyReference(t *testing.T) {
	for url, want := range map[string]RefKind{
		"https://github.com/kubernetes/kubernetes/pull/123":                        RefPatch,
		"https://github.com/kubernetes/kubernetes/commit/0123abc":                  RefPatch,
		"https://gitlab.com/group/proj/-/merge_requests/7":                         RefPatch,
		"https://go-review.googlesource.com/c/go/+/12345":                          RefPatch,
		"https://github.com/kubernetes/kubernetes/issues/122":                      RefIssue,
		"https://gitlab.com/group/proj/-/issues/9":                                 RefIssue,
		"https://bugzilla.redhat.com/show_bug.cgi?id=1":                            RefIssue,
		"https://issues.apache.org/jira/browse/FOO-12":                             RefIssue,
		"https://github.com/kubernetes/kubernetes/security/advisories/GHSA-abcd-1": RefAdvisory,
		"https://example.org/advisories/SEC-2026-0001":                             RefAdvisory,
		"https://groups.google.com/g/kubernetes-security-announce/c/xyz":           RefMailingList,
		"https://www.openwall.com/lists/oss-security/2026/12/03/1":                 RefMailingList,
		"https://lists.example.org/archives/list/announce@example.org/thread/X/":   RefMailingList,
		"https://example.org/blog/the-bug":                                         RefWeb,
	} {
		if got := ClassifyReference(url); got != want {
			t.Errorf("ClassifyReference(%s) = %s, want %s", url, got, want)
		}
	}
}

// TestSetReceiptEchoesReading: the receipt says how every line was read.
func TestSetReceiptEchoesReading(t *testing.T) {
	inc := Incident{Version: SchemaVersion, ID: "SEC-2026-0001", Phase: PhaseFix}
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	by := Signer{Fingerprint: "F", Email: "alice@ex.org", Roles: []string{RoleSRC}, SignedAt: now}
	text := "/set affected <<END\n>= 1.0.0, < 1.2.4\nbefore the fix\nEND\n/set fixed 1.2.4\n/set references <<END\nhttps://github.com/e/e/pull/1\nEND\n"
	res, err := Apply(inc, text, by, now, Env{})
	if err != nil {
		t.Fatal(err)
	}
	receipt := res.Receipt.Text()
	for _, want := range []string{
		"ok: affected set (2 lines)\n  >= 1.0.0, < 1.2.4 → 1.0.0 and later, before 1.2.4\n  before the fix → not a version range: kept as text",
		"ok: fixed set: 1.2.4\n  1.2.4 → fixed in 1.2.4\n",
		"ok: references set: https://github.com/e/e/pull/1\n  https://github.com/e/e/pull/1 → patch\n",
	} {
		if !strings.Contains(receipt, want) {
			t.Errorf("receipt lacks %q:\n%s", want, receipt)
		}
	}
	if res.Incident.Advisory.Affected != ">= 1.0.0, < 1.2.4\nbefore the fix" || res.Incident.Version != SchemaVersion {
		t.Errorf("stored %+v (version %d)", res.Incident.Advisory, res.Incident.Version)
	}
	for _, l := range strings.Split(receipt, "\n") {
		if strings.HasPrefix(l, "/") {
			t.Errorf("receipt line starts with a slash: %q", l)
		}
	}
}
