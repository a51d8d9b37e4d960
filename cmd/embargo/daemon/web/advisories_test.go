package web

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

func fixedAdvisories(list []Advisory) func(context.Context) ([]Advisory, error) {
	return func(context.Context) ([]Advisory, error) { return list, nil }
}

// osvSample stands for the record workflow/record builds: the server serves
// it byte for byte.
const osvSample = `{"schema_version":"1.7.5","id":"x_EXAMPLE-2026-0001","modified":"2026-12-01T09:00:00Z"}` + "\n"

// published are two advisories disclosed before t0.
func published() []Advisory {
	return []Advisory{
		{
			ID: "SEC-2026-0001", CVEs: []string{"CVE-2026-12345"},
			Summary:   "Heap overflow in the <parser> & friends",
			Details:   "A security issue was discovered where an attacker may be able to crash the parser.\n<script>alert(1)</script>",
			Published: time.Date(2026, 11, 30, 16, 0, 0, 0, time.UTC),
			Modified:  time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC),
			Severity:  "High", CVSS: "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H", Score: 7.5,
			Affected: "parser < 1.2.3\nparser >= 2.0.0, < 2.0.4\ncli 1.0.0 - 1.0.9\nlib some versions",
			Fixed:    "parser 1.2.3\nparser 2.0.4",
			IssueURL: "https://github.com/example/project/issues/4242",
			Credits:  "Jane Reporter",
			OSVID:    "x_EXAMPLE-2026-0001",
			OSV:      []byte(osvSample),
		},
		{
			ID: "SEC-2026-0002", Summary: "Information leak without a CVE",
			Details:   "Second advisory.",
			Published: time.Date(2026, 12, 2, 16, 0, 0, 0, time.UTC),
			IssueURL:  "javascript:alert(1)",
		},
	}
}

func TestAdvisoryIndex(t *testing.T) {
	s, _ := newTest(t, Options{Advisories: fixedAdvisories(published())})
	r := get(t, s, "/advisories/")
	if r.code != 200 || r.header.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("GET /advisories/ = %d %q", r.code, r.header.Get("Content-Type"))
	}
	// Newest first; escaped.
	i1, i2 := strings.Index(r.body, "SEC-2026-0002"), strings.Index(r.body, "CVE-2026-12345")
	if i1 < 0 || i2 < 0 || i1 > i2 {
		t.Errorf("index does not list both, newest first:\n%s", r.body)
	}
	if strings.Contains(r.body, "<parser>") || !strings.Contains(r.body, "&lt;parser&gt; &amp; friends") {
		t.Errorf("summary not escaped:\n%s", r.body)
	}
	for _, link := range []string{`href="/advisories/SEC-2026-0001"`, `href="/advisories/feed.atom"`, `href="/advisories/feed.json"`} {
		if !strings.Contains(r.body, link) {
			t.Errorf("index lacks %s", link)
		}
	}
	// /advisories without the slash is the mux's redirect, not a page.
	if r := get(t, s, "/advisories"); r.code/100 != 3 || r.header.Get("Location") != "/advisories/" {
		t.Errorf("GET /advisories = %d %q, want a redirect to /advisories/", r.code, r.header.Get("Location"))
	}
	// No advisories: a page that says so.
	e, _ := newTest(t, Options{})
	if r := get(t, e, "/advisories/"); r.code != 200 || !strings.Contains(r.body, "No advisories") {
		t.Errorf("empty index = %d\n%s", r.code, r.body)
	}
}

func TestAdvisoryPage(t *testing.T) {
	s, _ := newTest(t, Options{Advisories: fixedAdvisories(published())})
	for _, target := range []string{"/advisories/SEC-2026-0001", "/advisories/CVE-2026-12345", "/advisories/sec-2026-0001", "/advisories/cve-2026-12345"} {
		r := get(t, s, target)
		if r.code != 200 {
			t.Fatalf("GET %s = %d", target, r.code)
		}
		for _, want := range []string{
			"CVE-2026-12345: Heap overflow in the &lt;parser&gt;",
			`<a href="https://www.cve.org/CVERecord?id=CVE-2026-12345">`,
			"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H", "7.5", "High",
			"&lt;script&gt;alert(1)&lt;/script&gt;",
			`<a href="https://github.com/example/project/issues/4242">`,
			`href="/advisories/SEC-2026-0001.osv.json"`,
			"Jane Reporter", "parser 1.2.3",
		} {
			if !strings.Contains(r.body, want) {
				t.Errorf("GET %s lacks %q", target, want)
			}
		}
		if strings.Contains(r.body, "<script>") {
			t.Errorf("GET %s: unescaped script", target)
		}
	}
	// A non-https issue URL is never a link.
	r := get(t, s, "/advisories/SEC-2026-0002")
	if r.code != 200 || strings.Contains(r.body, "javascript:") {
		t.Errorf("GET SEC-2026-0002 = %d; javascript: URL must not appear:\n%s", r.code, r.body)
	}
	for _, target := range []string{"/advisories/SEC-2026-0099", "/advisories/CVE-2026-99999", "/advisories/..%2f..%2fetc", "/advisories/SEC-2026-0099.osv.json"} {
		if r := get(t, s, target); r.code != 404 {
			t.Errorf("GET %s = %d, want 404", target, r.code)
		}
	}
}

func TestAdvisoriesUnavailable(t *testing.T) {
	s, logs := newTest(t, Options{Advisories: func(context.Context) ([]Advisory, error) {
		return nil, errors.New("bolt: /var/lib/embargo/embargo.db closed")
	}})
	for _, target := range []string{"/advisories/", "/advisories/feed.atom", "/advisories/feed.json", "/advisories/SEC-2026-0001", "/advisories/SEC-2026-0001.osv.json"} {
		r := get(t, s, target)
		if r.code != 503 || strings.Contains(r.body, "bolt") {
			t.Errorf("GET %s = %d %q, want 503 without the error text", target, r.code, r.body)
		}
	}
	if !strings.Contains(logs.String(), "embargo.db closed") {
		t.Errorf("error not logged")
	}
}

// atomDoc is what a reader takes from an Atom feed.
type atomDoc struct {
	XMLName xml.Name `xml:"http://www.w3.org/2005/Atom feed"`
	ID      string   `xml:"id"`
	Title   string   `xml:"title"`
	Updated string   `xml:"updated"`
	Links   []struct {
		Rel  string `xml:"rel,attr"`
		Href string `xml:"href,attr"`
	} `xml:"link"`
	Entries []struct {
		ID        string `xml:"id"`
		Title     string `xml:"title"`
		Updated   string `xml:"updated"`
		Published string `xml:"published"`
		Links     []struct {
			Rel  string `xml:"rel,attr"`
			Href string `xml:"href,attr"`
		} `xml:"link"`
		Content string `xml:"content"`
	} `xml:"entry"`
}

func TestAtomFeed(t *testing.T) {
	s, _ := newTest(t, Options{Advisories: fixedAdvisories(published())})
	r := get(t, s, "/advisories/feed.atom")
	if r.code != 200 || r.header.Get("Content-Type") != "application/atom+xml; charset=utf-8" {
		t.Fatalf("GET feed.atom = %d %q", r.code, r.header.Get("Content-Type"))
	}
	var f atomDoc
	if err := xml.Unmarshal([]byte(r.body), &f); err != nil {
		t.Fatalf("Atom feed does not parse: %v\n%s", err, r.body)
	}
	// RFC 4287 §4.1.1: id, title, updated; an entry needs id, title, updated.
	if f.ID != "https://security.example.test/advisories/" || f.Title == "" || f.Updated != "2026-12-02T16:00:00Z" {
		t.Errorf("feed id/title/updated = %q %q %q", f.ID, f.Title, f.Updated)
	}
	if len(f.Entries) != 2 {
		t.Fatalf("entries = %d, want 2", len(f.Entries))
	}
	e := f.Entries[1]
	if e.ID != "https://security.example.test/advisories/SEC-2026-0001" || e.Published != "2026-11-30T16:00:00Z" ||
		e.Updated != "2026-12-01T09:00:00Z" || !strings.Contains(e.Content, "<script>alert(1)</script>") {
		t.Errorf("entry = %+v", e)
	}
	for _, en := range f.Entries {
		for _, must := range []string{en.ID, en.Title, en.Updated} {
			if must == "" {
				t.Errorf("entry lacks a required element: %+v", en)
			}
		}
		if _, err := time.Parse(time.RFC3339, en.Updated); err != nil {
			t.Errorf("updated %q is not RFC 3339", en.Updated)
		}
	}
	// The raw XML escapes markup.
	if strings.Contains(r.body, "<script>") {
		t.Errorf("raw <script> in the XML")
	}
}

func TestJSONFeed(t *testing.T) {
	s, _ := newTest(t, Options{Advisories: fixedAdvisories(published())})
	r := get(t, s, "/advisories/feed.json")
	if r.code != 200 || r.header.Get("Content-Type") != "application/feed+json; charset=utf-8" {
		t.Fatalf("GET feed.json = %d %q", r.code, r.header.Get("Content-Type"))
	}
	var f map[string]any
	if err := json.Unmarshal([]byte(r.body), &f); err != nil {
		t.Fatalf("JSON feed does not parse: %v", err)
	}
	// JSON Feed 1.1: version, title, items; the Kubernetes feed adds
	// _kubernetes_io at the feed and at each item.
	if f["version"] != "https://jsonfeed.org/version/1.1" || f["title"] == "" || f["feed_url"] != "https://security.example.test/advisories/feed.json" {
		t.Errorf("feed header = %v", f)
	}
	k8s, ok := f["_kubernetes_io"].(map[string]any)
	if !ok || k8s["feed_refreshed_at"] != "2026-12-03T17:00:00Z" || k8s["updated_at"] != "2026-12-02T16:00:00Z" {
		t.Errorf("feed _kubernetes_io = %v", f["_kubernetes_io"])
	}
	items, _ := f["items"].([]any)
	if len(items) != 2 {
		t.Fatalf("items = %d, want 2", len(items))
	}
	for _, it := range items {
		m := it.(map[string]any)
		for _, k := range []string{"id", "url", "summary", "content_text", "date_published", "_kubernetes_io"} {
			if _, ok := m[k]; !ok {
				t.Errorf("item lacks %q: %v", k, m)
			}
		}
		ki := m["_kubernetes_io"].(map[string]any)
		for _, k := range []string{"google_group_url", "issue_number"} {
			if _, ok := ki[k]; !ok {
				t.Errorf("item _kubernetes_io lacks %q", k)
			}
		}
	}
	cve := items[1].(map[string]any)
	if cve["id"] != "CVE-2026-12345" || cve["external_url"] != "https://www.cve.org/cverecord?id=CVE-2026-12345" ||
		cve["url"] != "https://security.example.test/advisories/SEC-2026-0001" ||
		cve["_kubernetes_io"].(map[string]any)["issue_number"] != float64(4242) {
		t.Errorf("CVE item = %v", cve)
	}
	noCVE := items[0].(map[string]any)
	if noCVE["id"] != "SEC-2026-0002" || noCVE["external_url"] != nil {
		t.Errorf("item without CVE = %v", noCVE)
	}
}

// TestOSV: the OSV record the daemon built is served as it is, named by
// the advisory's ID, its CVE or its OSV id; the page and the Atom entry link
// it; an advisory without one has no record and no link.
func TestOSV(t *testing.T) {
	s, _ := newTest(t, Options{Advisories: fixedAdvisories(published())})
	for _, target := range []string{"/advisories/SEC-2026-0001.osv.json", "/advisories/CVE-2026-12345.osv.json",
		"/advisories/x_EXAMPLE-2026-0001.osv.json", "/advisories/X_example-2026-0001.osv.json"} {
		r := get(t, s, target)
		if r.code != 200 || r.header.Get("Content-Type") != "application/json" || r.body != osvSample {
			t.Errorf("GET %s = %d %q:\n%s", target, r.code, r.header.Get("Content-Type"), r.body)
		}
	}
	// The OSV id names the page too.
	if r := get(t, s, "/advisories/x_EXAMPLE-2026-0001"); r.code != 200 || !strings.Contains(r.body, "CVE-2026-12345: Heap overflow") {
		t.Errorf("GET the page by its OSV id = %d", r.code)
	}
	page := get(t, s, "/advisories/SEC-2026-0001").body
	if !strings.Contains(page, `the OSV record <a href="/advisories/SEC-2026-0001.osv.json">x_EXAMPLE-2026-0001</a>.`) {
		t.Errorf("page does not link its OSV record:\n%s", page)
	}
	atom := get(t, s, "/advisories/feed.atom").body
	if !strings.Contains(atom, `href="https://security.example.test/advisories/SEC-2026-0001.osv.json"`) || strings.Contains(atom, "SEC-2026-0002.osv.json") {
		t.Errorf("Atom links the OSV records wrongly:\n%s", atom)
	}
	// No record: 404, and no link.
	if r := get(t, s, "/advisories/SEC-2026-0002.osv.json"); r.code != 404 {
		t.Errorf("GET an advisory's missing OSV record = %d, want 404", r.code)
	}
	if p := get(t, s, "/advisories/SEC-2026-0002").body; strings.Contains(p, "osv.json") {
		t.Errorf("page without a record links one:\n%s", p)
	}
	// An OSV id that could not be a path of its own is dropped with the record.
	list := published()
	list[0].OSVID = "../x"
	s, _ = newTest(t, Options{Advisories: fixedAdvisories(list)})
	if r := get(t, s, "/advisories/SEC-2026-0001.osv.json"); r.code != 404 {
		t.Errorf("record with an unusable id = %d, want 404", r.code)
	}
}

// TestPagesNameTheProject: the index, the page and the feeds name the
// project and its committee in whole sentences.
func TestPagesNameTheProject(t *testing.T) {
	s, _ := newTest(t, Options{Project: "Kubernetes", Advisories: fixedAdvisories(published())})
	index := get(t, s, "/advisories/").body
	for _, want := range []string{"<h1>Kubernetes security advisories</h1>",
		"The Kubernetes Security Response Committee publishes each advisory here when its embargo ends."} {
		if !strings.Contains(index, want) {
			t.Errorf("index lacks %q:\n%s", want, index)
		}
	}
	if page := get(t, s, "/advisories/SEC-2026-0001").body; !strings.Contains(page, "<title>CVE-2026-12345: Heap overflow in the &lt;parser&gt; &amp; friends · Kubernetes security advisories</title>") {
		t.Errorf("page title:\n%s", page)
	}
	var f map[string]any
	json.Unmarshal([]byte(get(t, s, "/advisories/feed.json").body), &f)
	if f["title"] != "Kubernetes security advisories" || f["description"] != "Security advisories published by the Kubernetes Security Response Committee." {
		t.Errorf("JSON feed title %q, description %q", f["title"], f["description"])
	}
	var a atomDoc
	xml.Unmarshal([]byte(get(t, s, "/advisories/feed.atom").body), &a)
	if a.Title != "Kubernetes security advisories" {
		t.Errorf("Atom title %q", a.Title)
	}
}

// TestNothingUnpublishedIsReachable is the web side of "nothing embargoed is
// reachable": advisories whose Published is zero, or later than
// now by as little as a nanosecond, carry a canary in every field; no
// response of any route, found by crawling every link of the index, the
// pages and the feeds or guessed from their IDs and CVEs, contains one.
func TestNothingUnpublishedIsReachable(t *testing.T) {
	canary := func(n int, field string) string { return "CANARY" + field + string(rune('A'+n)) }
	var list []Advisory
	var guesses []string
	for n, pub := range []time.Time{{}, t0.Add(time.Nanosecond), t0.Add(14 * 24 * time.Hour)} {
		a := Advisory{
			ID:        canary(n, "ID"),
			CVEs:      []string{"CVE-2099-" + string(rune('1'+n)) + "0001", canary(n, "CVE")},
			Summary:   canary(n, "Summary"),
			Details:   canary(n, "Details"),
			Published: pub,
			Modified:  t0.Add(-time.Hour),
			Severity:  canary(n, "Severity"),
			CVSS:      canary(n, "CVSS"),
			Score:     9.8,
			Affected:  canary(n, "Affected") + " < 1.0.0",
			Fixed:     canary(n, "Fixed") + " 1.0.0",
			IssueURL:  "https://example.test/" + canary(n, "Issue") + "/issues/1",
			Credits:   canary(n, "Credits"),
			OSVID:     "x_" + canary(n, "OSVID"),
			OSV:       []byte(`{"id":"` + canary(n, "OSV") + `"}`),
		}
		list = append(list, a)
		for _, name := range append([]string{a.ID, a.OSVID}, a.CVEs...) {
			for _, v := range []string{name, strings.ToLower(name), url.PathEscape(name)} {
				guesses = append(guesses, "/advisories/"+v, "/advisories/"+v+".osv.json", "/advisories/"+v+"/")
			}
		}
	}
	list = append(list, published()...)
	s, _ := newTest(t, Options{Advisories: fixedAdvisories(list)})

	check := func(target string, r result) {
		t.Helper()
		if strings.Contains(r.body, "CANARY") || strings.Contains(r.body, "CVE-2099-") || strings.Contains(r.header.Get("Location"), "CANARY") {
			t.Errorf("GET %s (%d) reveals an unpublished advisory:\n%s", target, r.code, r.body)
		}
	}
	for _, g := range guesses {
		r := get(t, s, g)
		check(g, r)
		if r.code != 404 {
			t.Errorf("GET %s = %d, want 404", g, r.code)
		}
	}

	// Crawl: every same-origin link, from the index and the feeds.
	href := regexp.MustCompile(`(?:href="|"url": "|"external_url": "|<id>)([^"<]+)`)
	seen := map[string]bool{}
	queue := []string{"/advisories/", "/advisories/feed.atom", "/advisories/feed.json"}
	for len(queue) > 0 {
		target := queue[0]
		queue = queue[1:]
		if seen[target] {
			continue
		}
		seen[target] = true
		r := get(t, s, target)
		check(target, r)
		if r.code != 200 {
			t.Errorf("crawled link %s = %d", target, r.code)
		}
		for _, m := range href.FindAllStringSubmatch(r.body, -1) {
			link := strings.TrimPrefix(m[1], "https://security.example.test")
			if strings.HasPrefix(link, "/") && !seen[link] {
				queue = append(queue, link)
			}
		}
	}
	for _, want := range []string{"/advisories/SEC-2026-0001", "/advisories/SEC-2026-0001.osv.json", "/advisories/SEC-2026-0002"} {
		if !seen[want] {
			t.Errorf("crawl never reached %s (crawled %v)", want, seen)
		}
	}
}

// TestAdvisoriesCacheAndClock: the daemon is asked at most once per cache
// window, errors are not cached, and the publication filter runs on every
// request with the current clock, cached list or not.
func TestAdvisoriesCacheAndClock(t *testing.T) {
	var mu sync.Mutex
	now := t0
	calls, fail := 0, true
	future := Advisory{ID: "SEC-2026-0003", Summary: "At the next slot", Published: t0.Add(time.Hour)}
	s, _ := newTest(t, Options{
		Now: func() time.Time { mu.Lock(); defer mu.Unlock(); return now },
		Advisories: func(context.Context) ([]Advisory, error) {
			mu.Lock()
			defer mu.Unlock()
			calls++
			if fail {
				fail = false
				return nil, errors.New("transient")
			}
			return append(published(), future), nil
		},
	})
	if r := get(t, s, "/advisories/"); r.code != 503 {
		t.Fatalf("first GET = %d, want 503", r.code)
	}
	for range 5 {
		if r := get(t, s, "/advisories/SEC-2026-0003"); r.code != 404 {
			t.Fatalf("future advisory = %d, want 404", r.code)
		}
	}
	mu.Lock()
	now = t0.Add(time.Hour)
	mu.Unlock()
	if r := get(t, s, "/advisories/SEC-2026-0003"); r.code != 200 {
		t.Errorf("advisory at its publication instant = %d, want 200", r.code)
	}
	mu.Lock()
	defer mu.Unlock()
	if calls != 2 {
		t.Errorf("Advisories called %d times, want 2 (one error, then one cached read)", calls)
	}
}
