package workflow

import (
	"fmt"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// This file holds what the /set fields need beyond "a line" or "an https
// URL": the CWE list, the references, and the version ranges of affected and
// fixed (versions.go). parseSet calls checkField to validate and canonicalise
// a value; the set command calls setResult for its receipt line, which echoes
// how each line was read, so the signer sees at once whether "1.0.0 - 1.2.3"
// became a range or stayed prose.

// setHelp is the help of /set (the command table, /help, docs/commands.md).
var setHelp = "Set an advisory field. FIELD: " + strings.Join(fieldNames(), ", ") + ". " +
	"A one-line value may follow FIELD; otherwise give a here-document: <<END, the lines (blank lines allowed), then END alone on a line. An empty here-document clears the field. " +
	"affected takes one version range a line, optionally after a component name and with or without a leading v: " +
	"\"1.0.0 - 1.2.3\" (both included), \"<= 1.2.3\", \"< 1.2.4\", \">= 1.0.0, < 1.2.4\", \">= 1.0.0\" (no fix yet), \"1.2.3\" (that version) or \"all\". " +
	"fixed takes the fixed release of each branch, one a line (\"1.2.4\"). " +
	"The receipt says how each line was read; a line that is not a range stays as text, and the CVE and OSV records then give the status of other versions as unknown. " +
	"component names the affected component (e.g. kube-apiserver); cwe takes one or more CWE IDs (CWE-NNN); " +
	"references takes https URLs, one a line, each tagged by its form: a pull request or commit is a patch, an issue is issue-tracking, an advisory or mailing-list archive is one, anything else a web page. " +
	"Refused while the advisory is approved (/approve withdraw first)."

// setExamples are the examples of /set; each must parse (TestExamplesParse).
var setExamples = []string{
	"/set summary Node authorizer bypass via crafted requests",
	"/set mitigation <<END\nDisable the NodeRestriction feature gate:\n\n  --feature-gates=NodeRestriction=false\nEND",
	"/set affected <<END\n>= 1.0.0, < 1.2.4\nkubelet v1.30.0 - v1.30.4\nEND",
	"/set fixed <<END\n1.2.4\n1.3.1\nEND",
	"/set component kube-apiserver",
	"/set cwe CWE-287 CWE-862",
	"/set references <<END\nhttps://github.com/example/example/pull/123\nhttps://github.com/example/example/issues/122\nEND",
}

// The fields added with schema version 3 (Advisory.Component, CWE, References).
var newFields = []field{
	{"component", "the affected component, e.g. kube-apiserver", true, false, func(a *Advisory) *string { return &a.Component }},
	{"cwe", "the weaknesses: one or more CWE IDs (CWE-NNN)", false, false, func(a *Advisory) *string { return &a.CWE }},
	{"references", "https URLs, one a line: patches, issues, advisories", false, false, func(a *Advisory) *string { return &a.References }},
}

// MaxReferences bounds the references field.
const MaxReferences = 50

// checkField validates a /set value beyond the generic checks and returns its
// canonical form (parseSet: Parse(String()) must give the same command back).
func checkField(name, value string) (string, error) {
	if value == "" {
		return value, nil
	}
	switch name {
	case "cwe":
		ids, err := ParseCWEs(value)
		if err != nil {
			return "", err
		}
		return strings.Join(ids, " "), nil
	case "references":
		refs, err := ParseReferences(value)
		if err != nil {
			return "", err
		}
		urls := make([]string, len(refs))
		for i, r := range refs {
			urls[i] = r.URL
		}
		return strings.Join(urls, "\n"), nil
	case "affected":
		for _, r := range ReadVersions(value) {
			if err := r.check(); err != nil {
				return "", argErr(ErrSyntax, "affected: %v", err)
			}
		}
	}
	return value, nil
}

// setResult is the receipt line of a /set that changed the field.
func setResult(name, value string) string {
	n := strings.Count(value, "\n") + 1
	var s string
	switch {
	case value == "":
		return name + " cleared"
	case n == 1:
		s = name + " set: " + value
	default:
		s = fmt.Sprintf("%s set (%d lines)", name, n)
	}
	var lines []string
	switch name {
	case "affected", "fixed":
		rs := ReadVersions(value)
		if name == "fixed" {
			rs = ReadFixedVersions(value)
		}
		for _, r := range rs {
			lines = append(lines, r.Text+" → "+r.Reading(name == "fixed"))
		}
	case "references":
		refs, _ := ParseReferences(value)
		for _, r := range refs {
			lines = append(lines, r.URL+" → "+string(r.Kind))
		}
	}
	for _, l := range lines {
		// Indented: a receipt line never starts with "/" or ">" (docs/threat-model.md E5).
		s += "\n  " + l
	}
	return s
}

var cweToken = regexp.MustCompile(`^CWE-[1-9][0-9]{0,6}$`)

// ParseCWEs reads one or more CWE IDs separated by white space or commas, in
// any letter case, and returns them upper-cased, without repeats, in order.
func ParseCWEs(s string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' }) {
		id := strings.ToUpper(f)
		if !cweToken.MatchString(id) {
			return nil, argErr(ErrSyntax, "cwe: %q is not a CWE ID (CWE-NNN, e.g. CWE-79)", f)
		}
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	if len(out) == 0 {
		return nil, argErr(ErrSyntax, "cwe: give one or more CWE IDs (CWE-NNN)")
	}
	return out, nil
}

// RefKind is what a reference URL points at, read from its form.
type RefKind string

// The kinds of reference.
const (
	RefPatch       RefKind = "patch"          // a pull request, merge request or commit
	RefIssue       RefKind = "issue-tracking" // an issue or bug
	RefAdvisory    RefKind = "advisory"       // a security advisory
	RefMailingList RefKind = "mailing-list"   // a mailing-list archive
	RefWeb         RefKind = "web"            // anything else
)

// Reference is one line of the references field.
type Reference struct {
	URL  string
	Kind RefKind
}

// refForms maps URL forms to kinds, first match wins. They are the forms of
// GitHub, GitLab, Gitea, Bugzilla, Jira, Gerrit and the usual list archives.
var refForms = []struct {
	kind RefKind
	re   *regexp.Regexp
}{
	{RefPatch, regexp.MustCompile(`/(pull|pulls|commit|commits|merge_requests|compare)/|/\+/[0-9a-f]{7,40}$|/c/.+/\+/[0-9]+`)},
	{RefIssue, regexp.MustCompile(`/issues?/|show_bug\.cgi|/browse/[A-Z][A-Z0-9]+-[0-9]+|/bugs?/`)},
	{RefAdvisory, regexp.MustCompile(`(?i)/security/advisories/|/advisor(y|ies)/|GHSA-[0-9a-z]{4}-|/security-advisor`)},
	{RefMailingList, regexp.MustCompile(`^https://(groups\.google\.com|lists\.|lore\.kernel\.org|www\.mail-archive\.com|seclists\.org)|/pipermail/|/mailman/|openwall\.com/lists/`)},
}

// ClassifyReference reads what a URL points at from its form.
func ClassifyReference(url string) RefKind {
	for _, f := range refForms {
		if f.re.MatchString(url) {
			return f.kind
		}
	}
	return RefWeb
}

// ParseReferences reads the references field: one https URL a line, blank
// lines skipped, repeats dropped.
func ParseReferences(s string) ([]Reference, error) {
	var out []Reference
	seen := map[string]bool{}
	for _, l := range strings.Split(s, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || seen[l] {
			continue
		}
		if !urlPattern.MatchString(l) {
			return nil, argErr(ErrSyntax, "references: %q is not an https URL (one URL a line)", l)
		}
		seen[l] = true
		out = append(out, Reference{URL: l, Kind: ClassifyReference(l)})
	}
	if len(out) > MaxReferences {
		return nil, argErr(ErrSyntax, "references: more than %d URLs", MaxReferences)
	}
	return out, nil
}

// Clause makes a field read inside a sentence: white space runs become one
// space and a final full stop goes ("to read any secret." → "to read any
// secret"), so "…, only if " + Clause(condition) + "." ends once.
func Clause(s string) string {
	return strings.TrimRight(strings.Join(strings.Fields(s), " "), ".")
}

// InSentence lower-cases the first word of an actor when it is a common word
// ("A remote attacker" → "a remote attacker", as in "allows a remote
// attacker to …"). Other words keep their case: they may be names ("GitHub
// Actions", "Kubernetes admins").
func InSentence(actor string) string {
	actor = Clause(actor)
	w, rest, found := strings.Cut(actor, " ")
	switch {
	case !leadWords[strings.ToLower(w)]:
		return actor
	case found:
		return strings.ToLower(w) + " " + rest
	}
	return strings.ToLower(w)
}

// SentenceStart upper-cases the first letter of a field that starts a
// sentence ("an authenticated user may be able to …"), unless its first word
// looks like an identifier ("kube-apiserver", "etcd.io").
func SentenceStart(s string) string {
	s = Clause(s)
	w, _, _ := strings.Cut(s, " ")
	if s == "" || strings.ContainsAny(w, "-./_:") || w != strings.ToLower(w) && w[1:] != strings.ToLower(w[1:]) {
		return s
	}
	r, n := utf8.DecodeRuneInString(s)
	return string(unicode.ToUpper(r)) + s[n:]
}

var leadWords = map[string]bool{"a": true, "an": true, "the": true, "any": true, "some": true, "every": true,
	"each": true, "all": true, "anyone": true, "someone": true, "users": true, "attackers": true, "clients": true,
	"remote": true, "local": true, "authenticated": true, "unauthenticated": true, "malicious": true,
	"privileged": true, "unprivileged": true, "low-privileged": true}
