package record

import (
	"errors"
	"math"
	"regexp"
	"strconv"
	"strings"
	"unicode"

	"github.com/embargo-project/embargo/workflow"
)

// The CVE data map for the release team (docs/process.md §7.9) is the YAML
// file Kubernetes' release-notes tool reads to put a CVE into the release
// notes: `krel release-notes --maps-from DIR` (and `krel cve edit -f FILE`,
// which checks it and files it under the CVE's ID). krel's format, from
// kubernetes/release:
//
//   - pkg/notes/notes_map.go (ReleaseNotesMap, ParseReleaseNotesMap): a file
//     is a stream of YAML documents, each keyed by `pr`, the number of a
//     pull request; the release notes look maps up by the pull requests in
//     the release's history. Extra data sits under `datafields`.
//   - pkg/cve/cve.go (CVE.ReadRawInterface, CVE.Validate): under
//     `datafields.cve` krel reads the strings `id`, `title`, `description`,
//     `issue` (the tracking issue), `vector` and `rating` (None, Low, Medium,
//     High or Critical), `score` as a YAML float (an integer is not read) and
//     `linkedPRs` as a list of integers. It refuses a map without id, title,
//     description, a CVSS v3.x vector, a score above 0 or a rating.
//   - pkg/cve/impl.go (ValidateCVEMap): every document of a CVE's file
//     must carry that CVE's data.
//
// "Per branch": a branch's release notes see only the pull requests merged
// into that branch (the fix on main and its cherry-picks are different pull
// requests), so the CVE must be mapped from each of them. The references
// do not say which pull request went into which branch, so the map has one
// document per pull request of the references, in their order, each
// carrying the same CVE data and listing every linked pull request: the
// form of krel's own example (pkg/notes/maps/testdata/cve-2020-8555.yaml).

// DataMapFile is the name the release pack gives the map.
const DataMapFile = "cve-data-map.yaml"

// ErrNoPR: the incident's references name no pull request, and krel finds a
// map only by the number of one.
var ErrNoPR = errors.New("record: the incident's references name no pull request (/set references https://…/pull/N)")

// DataMap is one document of the map: the CVE data krel attaches to the
// release note of pull request PR.
type DataMap struct {
	PR  int
	CVE DataMapCVE
}

// DataMapCVE is datafields.cve. Issue is left out when empty; Vector, Score
// and Rating are left out together when Vector is empty (no CVSS vector).
type DataMapCVE struct {
	ID, Title, Description string
	Issue                  string
	Vector, Rating         string
	Score                  float64
	LinkedPRs              []int
}

// pullPattern reads the repository and number of a pull request URL
// (GitHub's form, the one krel's numbers refer to), with or without a tab
// of the pull request after it ("/files", "/commits/…"). At most nine
// digits: any parser holds the number.
var pullPattern = regexp.MustCompile(`^https://([^/?#]+/[^/?#]+/[^/?#]+)/pull/([1-9][0-9]{0,8})(?:[/?#].*)?$`)

// pullRequests are the pull requests among the incident's patch
// references, in order and without repeats. A map serves one repository,
// since krel knows a pull request by its number in the repository it
// writes the notes of: that of the first pull request. others lists the
// pull requests of other repositories, which are left out.
func pullRequests(p Project, inc *workflow.Incident) (repo string, prs []int, others []string) {
	seen := map[int]bool{}
	for _, r := range references(p, inc) {
		m := pullPattern.FindStringSubmatch(r.URL)
		if r.Kind != workflow.RefPatch || m == nil {
			continue
		}
		if repo == "" {
			repo = m[1]
		}
		if !strings.EqualFold(m[1], repo) {
			others = append(others, r.URL)
			continue
		}
		n, _ := strconv.Atoi(m[2])
		if !seen[n] {
			seen[n] = true
			prs = append(prs, n)
		}
	}
	return repo, prs, others
}

// DataMaps builds the documents of the CVE data map of an incident: one per
// pull request of its references. ErrNoCVE without a CVE ID, ErrNoPR without
// a pull request.
func DataMaps(p Project, inc *workflow.Incident) ([]DataMap, error) {
	if len(inc.CVEs) == 0 {
		return nil, ErrNoCVE
	}
	_, prs, _ := pullRequests(p, inc)
	if len(prs) == 0 {
		return nil, ErrNoPR
	}
	p = p.WithDefaults()
	a := inc.Advisory
	c := DataMapCVE{
		ID:          inc.CVEs[0],
		Title:       truncate(clause(a.Summary), 256),
		Description: dataMapDescription(p, a),
		Issue:       trackingIssue(p, inc),
		LinkedPRs:   prs,
	}
	// The incident's own CVSS, as its advisory states it; the rating is
	// the score's (FIRST CVSS v3.1 specification §5), so the two agree.
	if cv, ok := inc.CVSS(); ok {
		c.Vector, c.Score, c.Rating = cv.Vector, cv.Score, cv.Severity().String()
	}
	out := make([]DataMap, len(prs))
	for i, n := range prs {
		out[i] = DataMap{PR: n, CVE: c}
		out[i].CVE.LinkedPRs = append([]int(nil), prs...)
	}
	return out, nil
}

// CVEDataMap is DataMaps as the YAML file the release pack attaches.
func CVEDataMap(p Project, inc *workflow.Incident) ([]byte, error) {
	ms, err := DataMaps(p, inc)
	if err != nil {
		return nil, err
	}
	return EncodeDataMaps(ms), nil
}

// dataMapDescription is the CVE description followed by the affected and
// fixed versions as written: krel prints it as Markdown under the CVE's
// heading, so the versions are list items in code spans.
func dataMapDescription(p Project, a workflow.Advisory) string {
	s := Description(p, a)
	if l := markdownList(a.Affected); l != "" {
		s += "\n\nAffected versions:\n\n" + l
	}
	if l := markdownList(a.Fixed); l != "" {
		s += "\n\nFixed versions:\n\n" + l
	}
	return s
}

// trackingIssue is the issue URL, else the first issue reference.
func trackingIssue(p Project, inc *workflow.Incident) string {
	for _, r := range references(p, inc) {
		if r.Kind == workflow.RefIssue {
			return r.URL
		}
	}
	return ""
}

// DataMapGaps lists why krel will refuse the incident's data map, or what
// the map leaves out, for the release pack. Nothing when there is no map
// (DataMaps says why).
func DataMapGaps(p Project, inc *workflow.Incident) []Gap {
	ms, err := DataMaps(p, inc)
	if err != nil {
		return nil
	}
	c := ms[0].CVE
	var gaps []Gap
	add := func(key string, invalid bool, why string) {
		gaps = append(gaps, Gap{Record: "CVE data map", Key: key, Invalid: invalid, Why: why})
	}
	cv, ok := inc.CVSS()
	switch {
	case !ok:
		add("/cvss", true, "no CVSS vector: the map has no vector, score or rating, which krel requires; the release team adds them")
	case cv.Version != "3.1":
		add("/cvss", true, "krel reads CVSS v3.x vectors only and refuses this "+cv.Version+" vector; the release team gives a 3.1 vector, its score and rating")
	case c.Score == 0:
		add("/cvss", true, "the score is 0.0, which krel takes for no score and refuses")
	}
	if c.Title == "" {
		add("/set summary", true, "no summary: the map has no title, which krel requires")
	}
	if repo, _, others := pullRequests(p, inc); len(others) > 0 {
		add("/set references", false, "pull requests of other repositories than "+repo+" are left out ("+strings.Join(others, ", ")+"): krel knows a pull request by its number in the repository it writes the notes of")
	}
	return gaps
}

// dataMapHeader opens the file: what it is and who reads it. Fixed text:
// no value reaches a comment.
const dataMapHeader = `# CVE data map for the release notes (docs/process.md §7.9), drafted by
# embargo at the release: Kubernetes' release-notes tool reads it with
# krel release-notes --maps-from DIR. One document per pull request that
# fixed the issue, each with the same CVE data. Review it before use.
`

// EncodeDataMaps writes the documents as a YAML stream (YAML 1.2 §9.2,
// "---" before each document). It is written by hand, not by a YAML library:
// every string is double-quoted and escaped (yamlQuote), the keys are
// literals and the numbers are formatted here, so no value, whoever wrote
// it, can add a key, a document or a comment to a file a machine reads
// (docs/threat-model.md B10).
func EncodeDataMaps(ms []DataMap) []byte {
	var b strings.Builder
	b.WriteString(dataMapHeader)
	for _, m := range ms {
		c := m.CVE
		b.WriteString("---\npr: " + strconv.Itoa(m.PR) + "\ndatafields:\n  cve:\n")
		field := func(key, value string) { b.WriteString("    " + key + ": " + value + "\n") }
		field("id", yamlQuote(c.ID))
		field("title", yamlQuote(c.Title))
		field("description", yamlQuote(c.Description))
		if c.Issue != "" {
			field("issue", yamlQuote(c.Issue))
		}
		if c.Vector != "" {
			field("vector", yamlQuote(c.Vector))
			field("score", yamlFloat(c.Score))
			field("rating", yamlQuote(c.Rating))
		}
		if len(c.LinkedPRs) == 0 {
			field("linkedPRs", "[]")
			continue
		}
		b.WriteString("    linkedPRs:\n")
		for _, n := range c.LinkedPRs {
			b.WriteString("      - " + strconv.Itoa(n) + "\n")
		}
	}
	return []byte(b.String())
}

// yamlFloat writes a score with one decimal, so that YAML reads a float
// (YAML 1.2 §10.2.1.4) and krel its score: "9.0", never "9". A value that is
// not a finite number is written 0.0, which krel refuses as no score.
func yamlFloat(f float64) string {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		f = 0
	}
	return strconv.FormatFloat(f, 'f', 1, 64)
}

// yamlQuote writes s as a YAML double-quoted scalar (YAML 1.2 §7.3.1) that
// reads back as s: `"` and `\` escaped, and every character that is not
// plainly printable written as an escape (§5.7): line breaks and tabs as
// \n, \r and \t, other C0 and C1 controls and DEL as \xNN, and the
// characters YAML 1.1 parsers take for line breaks (U+2028, U+2029), format
// characters (bidi controls, zero-width characters, the byte order mark)
// and the non-characters U+FFFE and U+FFFF as \uNNNN (\UNNNNNNNN beyond
// U+FFFF). A YAML stream is Unicode (§5.1): bytes that are not UTF-8 become
// U+FFFD.
func yamlQuote(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range strings.ToValidUTF8(s, "\uFFFD") {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20 || r >= 0x7F && r <= 0x9F:
			b.WriteString(`\x` + string(hex[r>>4]) + string(hex[r&0xF]))
		case r == 0x2028 || r == 0x2029 || r == 0xFFFE || r == 0xFFFF || unicode.Is(unicode.Cf, r):
			digits := 4
			if r > 0xFFFF {
				b.WriteString(`\U`)
				digits = 8
			} else {
				b.WriteString(`\u`)
			}
			for shift := 4 * (digits - 1); shift >= 0; shift -= 4 {
				b.WriteByte(hex[(r>>shift)&0xF])
			}
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
