package record

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/embargo-project/embargo/workflow"
)

// ReadDataMaps reads a CVE data map back as krel does (kubernetes/release
// pkg/notes/notes_map.go ParseReleaseNotesMap: a stream of documents;
// pkg/cve/cve.go ReadRawInterface: each key of datafields.cve by its YAML
// type), with a real YAML parser of krel's lineage (go-yaml v3; krel uses
// v4). It is stricter than krel: a key krel does not read, a value of
// another type or a missing key is an error, so the tests see every
// difference.
func readDataMaps(data []byte) ([]DataMap, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var out []DataMap
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		m, err := dataMapOf(doc)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", len(out)+1, err)
		}
		out = append(out, m)
	}
}

func dataMapOf(doc map[string]any) (DataMap, error) {
	var m DataMap
	if len(doc) != 2 {
		return m, fmt.Errorf("keys %v, want pr and datafields", doc)
	}
	pr, ok := doc["pr"].(int)
	df, ok2 := doc["datafields"].(map[string]any)
	if !ok || !ok2 || len(df) != 1 {
		return m, fmt.Errorf("pr %#v, datafields %#v", doc["pr"], doc["datafields"])
	}
	c, ok := df["cve"].(map[string]any)
	if !ok {
		return m, fmt.Errorf("datafields.cve %#v", df["cve"])
	}
	m.PR = pr
	str := func(key string, dst *string, optional bool) error {
		v, present := c[key]
		if !present && optional {
			return nil
		}
		s, ok := v.(string)
		if !ok {
			return fmt.Errorf("%s: %#v is not a string", key, v)
		}
		*dst = s
		delete(c, key)
		return nil
	}
	_, cvss := c["vector"]
	for _, f := range []struct {
		key      string
		dst      *string
		optional bool
	}{{"id", &m.CVE.ID, false}, {"title", &m.CVE.Title, false}, {"description", &m.CVE.Description, false},
		{"issue", &m.CVE.Issue, true}, {"vector", &m.CVE.Vector, true}, {"rating", &m.CVE.Rating, !cvss}} {
		if err := str(f.key, f.dst, f.optional); err != nil {
			return m, err
		}
	}
	if cvss {
		score, ok := c["score"].(float64) // krel reads a float, never an int
		if !ok {
			return m, fmt.Errorf("score %#v is not a float", c["score"])
		}
		m.CVE.Score = score
		delete(c, "score")
	}
	prs, ok := c["linkedPRs"].([]any)
	if !ok {
		return m, fmt.Errorf("linkedPRs %#v", c["linkedPRs"])
	}
	for _, v := range prs {
		n, ok := v.(int)
		if !ok {
			return m, fmt.Errorf("linkedPRs: %#v is not an integer", v)
		}
		m.CVE.LinkedPRs = append(m.CVE.LinkedPRs, n)
	}
	delete(c, "linkedPRs")
	if len(c) != 0 {
		return m, fmt.Errorf("keys krel does not read: %v", c)
	}
	return m, nil
}

// TestReadmeIncidentDataMap: the README's incident (two references: a pull
// request and a commit) gives one document, keyed by the pull request, with
// everything krel needs; the golden file is the exact text.
func TestReadmeIncidentDataMap(t *testing.T) {
	inc := readmeIncident(t)
	inc.Advisory.References += "\nhttps://github.com/example/example/pull/130/files\nhttps://github.com/example/example/pull/123#issuecomment-1"
	got, err := CVEDataMap(example, &inc)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "readme.cve-data-map.yaml", got)
	ms, err := readDataMaps(got)
	if err != nil {
		t.Fatalf("%v\n%s", err, got)
	}
	want := DataMapCVE{
		ID:    "CVE-2026-12345",
		Title: "heap overflow in the parser",
		Description: "example-parser in Example from 1.0.0 before 1.2.4 allows a remote attacker to execute code as the server, only if the parser is enabled." +
			"\n\nAffected versions:\n\n- `>= 1.0.0, < 1.2.4`\n\nFixed versions:\n\n- `1.2.4`",
		Issue:     "https://github.com/example/example/issues/122",
		Vector:    "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
		Score:     9.8,
		Rating:    "Critical",
		LinkedPRs: []int{123, 130},
	}
	if len(ms) != 2 || ms[0].PR != 123 || ms[1].PR != 130 {
		t.Fatalf("documents %+v, want one for each pull request, 123 and 130", ms)
	}
	for _, m := range ms {
		if !reflect.DeepEqual(m.CVE, want) {
			t.Errorf("pr %d: cve =\n%+v, want\n%+v", m.PR, m.CVE, want)
		}
	}
	if gaps := DataMapGaps(example, &inc); len(gaps) != 0 {
		t.Errorf("DataMapGaps = %v, want nothing", gaps)
	}
}

// TestDataMapNeedsCVEAndPR: no CVE ID or no pull request, no map: the
// sentinels the release pack explains. A commit or a merge request is not
// a pull request krel knows.
func TestDataMapNeedsCVEAndPR(t *testing.T) {
	inc := readmeIncident(t)
	noCVE := inc
	noCVE.CVEs = nil
	if _, err := CVEDataMap(example, &noCVE); err != ErrNoCVE {
		t.Errorf("without a CVE ID: %v, want ErrNoCVE", err)
	}
	noPR := inc
	noPR.Advisory.References = "https://github.com/example/example/commit/0123456789abcdef0123456789abcdef01234567\n" +
		"https://gitlab.com/example/example/-/merge_requests/7\nhttps://github.com/example/example/pull/0\nhttps://github.com/example/example/pulls"
	if b, err := CVEDataMap(example, &noPR); err != ErrNoPR {
		t.Errorf("without a pull request: %v, want ErrNoPR\n%s", err, b)
	}
	if gaps := DataMapGaps(example, &noPR); gaps != nil {
		t.Errorf("gaps of a map that is not built: %v", gaps)
	}
}

// TestDataMapGaps: what krel would refuse is listed, and so are the pull
// requests of another repository, which are left out of the map.
func TestDataMapGaps(t *testing.T) {
	inc := readmeIncident(t)
	inc.Advisory.References += "\nhttps://github.com/other/lib/pull/9"
	inc.Advisory.Summary = ""
	inc.CVSSVector = "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N"
	ms, err := DataMaps(example, &inc)
	if err != nil || len(ms) != 1 || !reflect.DeepEqual(ms[0].CVE.LinkedPRs, []int{123}) {
		t.Fatalf("maps %+v, %v: want pull request 123 only", ms, err)
	}
	var keys []string
	for _, g := range DataMapGaps(example, &inc) {
		keys = append(keys, g.Key)
		if g.Record != "CVE data map" {
			t.Errorf("gap %v", g)
		}
	}
	if fmt.Sprint(keys) != "[/cvss /set summary /set references]" {
		t.Errorf("gap keys %v", keys)
	}
	inc.CVSSVector = ""
	if b, _ := CVEDataMap(example, &inc); bytes.Contains(b, []byte("vector")) || bytes.Contains(b, []byte("score")) {
		t.Errorf("a map without a CVSS vector has CVSS keys:\n%s", b)
	}
	if g := DataMapGaps(example, &inc); len(g) == 0 || !strings.Contains(g[0].Why, "no CVSS vector") {
		t.Errorf("gaps without a vector: %v", g)
	}
}

// hostile are values a member could set, each trying to break out of its
// string: new keys, new documents, comments, anchors, tags, flow syntax,
// line breaks of every kind, bidi controls, invalid UTF-8.
var hostile = []string{
	"x\"\nlinkedPRs: [1]\n---\npr: 666\n",
	"x\\\" # comment",
	"\\",
	"&anchor *alias !!binary |\n  eA==",
	"{a: b}, [c]: d",
	"line\r\nbreak\rcr\u0085nel\u2028ls\u2029ps",
	"tab\there\x00nul\x1besc\x7fdel",
	"\u202eevil\u2066\ufeffbom\u200bzw\U000E0001tag\uffff",
	"bad \xff\xfe utf-8",
	"'single' \"double\"",
	"... \n---\n...",
	"%YAML 1.1",
	"",
	" leading and trailing ",
	"@reserved `backtick",
}

// TestDataMapHostileValues: whatever the SRC wrote, the map reads back with
// the same values, and no line starts a document but the encoder's.
func TestDataMapHostileValues(t *testing.T) {
	for _, h := range hostile {
		m := DataMap{PR: 1, CVE: DataMapCVE{ID: h, Title: h, Description: h, Issue: h, Vector: h, Rating: h, Score: 9.8, LinkedPRs: []int{1, 2}}}
		out := EncodeDataMaps([]DataMap{m, m})
		got, err := readDataMaps(out)
		if err != nil {
			t.Errorf("%q: %v\n%s", h, err, out)
			continue
		}
		want := m
		v := strings.ToValidUTF8(h, "\uFFFD")
		want.CVE.ID, want.CVE.Title, want.CVE.Description, want.CVE.Issue, want.CVE.Vector, want.CVE.Rating = v, v, v, v, v, v
		if v == "" { // no vector: no score either
			want.CVE.Score = 0
		}
		if len(got) != 2 || !reflect.DeepEqual(got[0], want) || !reflect.DeepEqual(got[1], want) {
			t.Errorf("%q read back as %+v", h, got)
		}
		if n := bytes.Count(out, []byte("\n---")); n != 2 {
			t.Errorf("%q: %d document markers, want 2", h, n)
		}
	}
}

// TestYAMLQuote: the exact escapes.
func TestYAMLQuote(t *testing.T) {
	for in, want := range map[string]string{
		"plain": `"plain"`, `a"b\c`: `"a\"b\\c"`, "a\nb\r\tc": `"a\nb\r\tc"`, "\x00\x1b\x7f\u0085": `"\x00\x1B\x7F\x85"`,
		"\u2028\u2029\u202e\ufeff\uffff": `"\u2028\u2029\u202E\uFEFF\uFFFF"`, "\U000E0001": `"\U000E0001"`,
		"é ✓ 漢": `"é ✓ 漢"`, "\xff": "\"\uFFFD\"",
	} {
		if got := yamlQuote(in); got != want {
			t.Errorf("yamlQuote(%q) = %s, want %s", in, got, want)
		}
	}
	for f, want := range map[float64]string{9.8: "9.8", 9: "9.0", 10: "10.0", 0: "0.0", math.NaN(): "0.0", math.Inf(1): "0.0"} {
		if got := yamlFloat(f); got != want {
			t.Errorf("yamlFloat(%v) = %s, want %s", f, got, want)
		}
	}
}

// FuzzCVEDataMap: any values, any number of documents and pull requests:
// the map parses, with a YAML parser, back to the same values (bytes that
// are not UTF-8 read back as U+FFFD), and has exactly one document a map.
func FuzzCVEDataMap(f *testing.F) {
	for i, h := range hostile {
		f.Add(h, "heap overflow", h, "https://github.com/example/example/issues/122", "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "Critical", uint8(98), 123+i, uint8(2))
	}
	f.Add("CVE-2026-12345", "", "", "", "", "", uint8(0), 1, uint8(0))
	f.Fuzz(func(t *testing.T, id, title, desc, issue, vector, rating string, score uint8, pr int, docs uint8) {
		c := DataMapCVE{ID: id, Title: title, Description: desc, Issue: issue, Vector: vector, Rating: rating, Score: float64(score%101) / 10}
		var ms []DataMap
		for i := range int(docs % 4) {
			c.LinkedPRs = append(c.LinkedPRs, pr+i)
		}
		for i := range int(docs % 4) {
			ms = append(ms, DataMap{PR: pr + i, CVE: c})
		}
		out := EncodeDataMaps(ms)
		if !utf8.Valid(out) {
			t.Fatalf("not UTF-8: %q", out)
		}
		got, err := readDataMaps(out)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		v := func(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }
		want := DataMapCVE{ID: v(id), Title: v(title), Description: v(desc), Issue: v(issue), Vector: v(vector), LinkedPRs: c.LinkedPRs}
		if want.Vector != "" {
			want.Score, want.Rating = c.Score, v(rating)
		}
		if len(got) != len(ms) {
			t.Fatalf("%d documents, want %d\n%s", len(got), len(ms), out)
		}
		for i, m := range got {
			if m.PR != ms[i].PR || !reflect.DeepEqual(m.CVE, want) {
				t.Fatalf("document %d = %+v, want pr %d %+v\n%s", i, m, ms[i].PR, want, out)
			}
		}
	})
}

// The pull request numbers: GitHub's pull URLs only, in order, once each.
func TestPullRequests(t *testing.T) {
	inc := workflow.Incident{Advisory: workflow.Advisory{References: "https://github.com/o/r/pull/5\nhttps://github.com/o/r/commit/abcdef0\n" +
		"https://github.com/O/R/pull/7/commits/abcdef0\nhttps://github.com/o/r/pull/5/files\nhttps://github.com/o/r/pull/1234567890\n" +
		"https://github.com/x/y/pull/8", IssueURL: "https://github.com/o/r/pull/9"}}
	repo, prs, others := pullRequests(Project{}, &inc)
	if repo != "github.com/o/r" || fmt.Sprint(prs) != "[5 7]" || fmt.Sprint(others) != "[https://github.com/x/y/pull/8]" {
		t.Errorf("pullRequests = %q %v %v", repo, prs, others)
	}
}
