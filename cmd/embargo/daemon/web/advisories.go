package web

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"encoding/xml"
	"html/template"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Advisory is one published security advisory, as the daemon hands it over.
// Every field is public text: the daemon builds it only from incidents that
// are disclosed.
type Advisory struct {
	ID        string    // the project's advisory ID, e.g. "SEC-2026-0001"; the page is /advisories/<ID>
	CVEs      []string  // CVE IDs; /advisories/<CVE> shows the same page
	Summary   string    // one line
	Details   string    // the advisory text, plain text
	Published time.Time // the disclosure instant; zero or future: not shown
	Modified  time.Time // last change; zero: Published
	Severity  string    // "Low", "Medium", "High", "Critical"; empty: unrated
	CVSS      string    // the CVSS vector, e.g. "CVSS:3.1/AV:N/…"; empty: none
	Score     float64   // the CVSS base score; meaningful only with CVSS
	Affected  string    // affected versions as written: "COMPONENT RANGE" per line
	Fixed     string    // fixed versions as written: "COMPONENT VERSION" per line
	IssueURL  string    // the public tracking issue, https only
	Credits   string    // how the reporter asked to be credited

	// OSVID is the id of the advisory's OSV record ("x_EXAMPLE-2026-0001"),
	// and OSV the record itself, built by workflow/record and served as it
	// is at /advisories/<ID, CVE or OSVID>.osv.json. Nil: no OSV record.
	OSVID string
	OSV   []byte
}

// safeName is what an ID, a CVE or an OSV id ("x_EXAMPLE-2026-0001") must
// look like to get a URL of its own.
var safeName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

var cvePattern = regexp.MustCompile(`^CVE-[0-9]{4}-[0-9]{4,}$`)

func usableName(n string) bool {
	return safeName.MatchString(n) && !strings.HasSuffix(n, ".osv.json") && n != "feed.atom" && n != "feed.json"
}

// published returns the advisories that may be shown at now, newest first.
// The daemon already passes only disclosed incidents; dropping every
// advisory whose Published is zero or in the future here as well means one
// mistake in the adapter cannot publish an embargoed incident early.
func (s *Server) published(ctx context.Context) ([]Advisory, error) {
	if s.o.Advisories == nil {
		return nil, nil
	}
	all, err := s.allAdvisories(ctx)
	if err != nil {
		return nil, err
	}
	// The filter runs on every request, on the cached list too.
	now := s.o.Now()
	seen := map[string]bool{}
	var out []Advisory
	for _, a := range all {
		if a.Published.IsZero() || a.Published.After(now) || !usableName(a.ID) || seen[strings.ToUpper(a.ID)] {
			continue
		}
		seen[strings.ToUpper(a.ID)] = true
		a.Published = a.Published.UTC()
		if a.Modified.Before(a.Published) {
			a.Modified = a.Published
		}
		if a.Modified.After(now) {
			a.Modified = now
		}
		a.Modified = a.Modified.UTC()
		var cves []string
		for _, c := range a.CVEs {
			if usableName(c) && !slices.Contains(cves, c) {
				cves = append(cves, c)
			}
		}
		a.CVEs = cves
		if !usableName(a.OSVID) || len(a.OSV) == 0 {
			a.OSVID, a.OSV = "", nil
		}
		out = append(out, a)
	}
	slices.SortStableFunc(out, func(a, b Advisory) int {
		if c := b.Published.Compare(a.Published); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
	return out, nil
}

// allAdvisories calls Options.Advisories at most once per advisoryCacheFor
// (measured on the wall clock: this is a cache, not policy). Errors are not
// cached.
func (s *Server) allAdvisories(ctx context.Context) ([]Advisory, error) {
	s.advMu.Lock()
	defer s.advMu.Unlock()
	if !s.advAt.IsZero() && time.Since(s.advAt) < advisoryCacheFor {
		return s.advList, nil
	}
	ctx, cancel := context.WithTimeout(ctx, funcTimeout)
	defer cancel()
	all, err := s.o.Advisories(ctx)
	if err != nil {
		return nil, err
	}
	s.advList, s.advAt = all, time.Now()
	return all, nil
}

// find returns the published advisory named by an ID, one of its CVEs or
// the id of its OSV record.
func find(list []Advisory, name string) (Advisory, bool) {
	for _, a := range list {
		if strings.EqualFold(a.ID, name) || a.OSVID != "" && strings.EqualFold(a.OSVID, name) {
			return a, true
		}
		for _, c := range a.CVEs {
			if strings.EqualFold(c, name) {
				return a, true
			}
		}
	}
	return Advisory{}, false
}

// publishedOr503 lists the advisories, or answers 503 itself.
func (s *Server) publishedOr503(w http.ResponseWriter, r *http.Request) ([]Advisory, bool) {
	list, err := s.published(r.Context())
	if err != nil {
		s.log.Warn("advisories unavailable", "err", err)
		text(w, http.StatusServiceUnavailable, "unavailable\n")
		return nil, false
	}
	return list, true
}

func writeBody(w http.ResponseWriter, contentType string, b []byte) {
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Content-Length", strconv.Itoa(len(b)))
	h.Set("Cache-Control", "public, max-age=300")
	_, _ = w.Write(b)
}

func pagePath(a Advisory) string { return "/advisories/" + url.PathEscape(a.ID) }

// osvPath is where the advisory's OSV record is (its CVEs and its OSV id
// name it too).
func osvPath(a Advisory) string { return "/advisories/" + url.PathEscape(a.ID) + ".osv.json" }

// title is how an advisory is named in lists: its CVEs, else its ID.
func title(a Advisory) string {
	if len(a.CVEs) > 0 {
		return strings.Join(a.CVEs, ", ")
	}
	return a.ID
}

// --- HTML (html/template: every value is escaped for its context) ---

const htmlHead = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.PageTitle}}</title><style>` + css + `</style>
<link rel="alternate" type="application/atom+xml" title="Atom" href="/advisories/feed.atom">
<link rel="alternate" type="application/feed+json" title="JSON Feed" href="/advisories/feed.json">
</head><body><main>
`

var indexTmpl = template.Must(template.New("index").Parse(htmlHead + `<h1>{{.PageTitle}}</h1>
<p>The {{.Author}} publishes each advisory here when its embargo ends. Follow them in the <a href="/advisories/feed.atom">Atom</a> or the <a href="/advisories/feed.json">JSON Feed</a>.</p>
{{if .Items -}}
<table><thead><tr><th>Published</th><th>Advisory</th><th>Severity</th><th>Summary</th></tr></thead><tbody>
{{range .Items}}<tr><td><time datetime="{{.Published.Format "2006-01-02T15:04:05Z07:00"}}">{{.Published.Format "2006-01-02"}}</time></td><td><a href="{{.Path}}">{{.Title}}</a></td><td>{{.Severity}}</td><td>{{.Summary}}</td></tr>
{{end}}</tbody></table>
{{- else -}}
<p>No advisories have been published yet.</p>
{{- end}}
</main></body></html>
`))

var pageTmpl = template.Must(template.New("page").Parse(htmlHead + `<p><a href="/advisories/">{{.SiteTitle}}</a></p>
<h1>{{.Title}}: {{.Summary}}</h1>
<dl>
<dt>Advisory</dt><dd>{{.ID}}</dd>
{{- if .CVEs}}
<dt>CVE</dt><dd>{{range $i, $c := .CVEs}}{{if $i}}, {{end}}{{if $c.Link}}<a href="{{$c.Link}}">{{$c.ID}}</a>{{else}}{{$c.ID}}{{end}}{{end}}</dd>
{{- end}}
<dt>Published</dt><dd><time datetime="{{.Published.Format "2006-01-02T15:04:05Z07:00"}}">{{.Published.Format "2006-01-02 15:04 UTC"}}</time></dd>
{{- if .Updated}}
<dt>Updated</dt><dd><time datetime="{{.Modified.Format "2006-01-02T15:04:05Z07:00"}}">{{.Modified.Format "2006-01-02 15:04 UTC"}}</time></dd>
{{- end}}
{{- if .Severity}}
<dt>Severity</dt><dd>{{.Severity}}</dd>
{{- end}}
{{- if .CVSS}}
<dt>CVSS</dt><dd>{{.ScoreText}} <code>{{.CVSS}}</code></dd>
{{- end}}
{{- if .Affected}}
<dt>Affected</dt><dd><pre>{{.Affected}}</pre></dd>
{{- end}}
{{- if .Fixed}}
<dt>Fixed</dt><dd><pre>{{.Fixed}}</pre></dd>
{{- end}}
{{- if .Credits}}
<dt>Credit</dt><dd>{{.Credits}}</dd>
{{- end}}
{{- if .IssueLink}}
<dt>Issue</dt><dd><a href="{{.IssueLink}}">{{.IssueLink}}</a></dd>
{{- end}}
</dl>
<h2>Advisory text</h2>
<pre>{{.Details}}</pre>
{{- if .OSVPath}}
<p>Vulnerability scanners read this advisory as the OSV record <a href="{{.OSVPath}}">{{.OSVID}}</a>.</p>
{{- end}}
</main></body></html>
`))

type indexItem struct {
	Advisory
	Path, Title string
}

type cveLink struct{ ID, Link string }

type pageData struct {
	Advisory
	PageTitle, Title, ScoreText, IssueLink, OSVPath, SiteTitle string
	CVEs                                                       []cveLink
	Updated                                                    bool // Modified differs from Published
}

func (s *Server) siteTitle() string {
	if s.o.Project != "" {
		return s.o.Project + " security advisories"
	}
	return "Security advisories"
}

// author is who publishes the advisories: "Example Security Response
// Committee".
func (s *Server) author() string {
	return strings.TrimSpace(s.o.Project + " Security Response Committee")
}

func (s *Server) render(w http.ResponseWriter, t *template.Template, data any) {
	var b bytes.Buffer
	if err := t.Execute(&b, data); err != nil {
		s.log.Error("render page", "template", t.Name(), "err", err)
		text(w, http.StatusInternalServerError, "internal error\n")
		return
	}
	writeBody(w, "text/html; charset=utf-8", b.Bytes())
}

func (s *Server) advisoryIndex(w http.ResponseWriter, r *http.Request) {
	list, ok := s.publishedOr503(w, r)
	if !ok {
		return
	}
	items := make([]indexItem, len(list))
	for i, a := range list {
		items[i] = indexItem{Advisory: a, Path: pagePath(a), Title: title(a)}
	}
	s.render(w, indexTmpl, struct {
		PageTitle, Author string
		Items             []indexItem
	}{s.siteTitle(), s.author(), items})
}

// advisory serves /advisories/<ID or CVE> and /advisories/<…>.osv.json.
func (s *Server) advisory(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	osv := strings.HasSuffix(name, ".osv.json")
	name = strings.TrimSuffix(name, ".osv.json")
	if !safeName.MatchString(name) {
		notFound(w)
		return
	}
	list, ok := s.publishedOr503(w, r)
	if !ok {
		return
	}
	a, ok := find(list, name)
	if !ok {
		notFound(w)
		return
	}
	if osv {
		if a.OSV == nil {
			notFound(w)
			return
		}
		writeBody(w, "application/json", a.OSV)
		return
	}
	d := pageData{Advisory: a, PageTitle: title(a) + ": " + a.Summary + " · " + s.siteTitle(), Title: title(a),
		Updated: !a.Modified.Equal(a.Published), SiteTitle: s.siteTitle()}
	if a.OSV != nil {
		d.OSVPath = osvPath(a)
	}
	if a.CVSS != "" {
		d.ScoreText = strconv.FormatFloat(a.Score, 'f', 1, 64)
	}
	if strings.HasPrefix(a.IssueURL, "https://") {
		d.IssueLink = a.IssueURL
	}
	for _, c := range a.CVEs {
		l := cveLink{ID: c}
		if cvePattern.MatchString(c) {
			l.Link = "https://www.cve.org/CVERecord?id=" + c
		}
		d.CVEs = append(d.CVEs, l)
	}
	s.render(w, pageTmpl, d)
}

// --- Atom, RFC 4287 ---

type atomFeed struct {
	XMLName xml.Name    `xml:"http://www.w3.org/2005/Atom feed"`
	ID      string      `xml:"id"`
	Title   string      `xml:"title"`
	Updated string      `xml:"updated"`
	Links   []atomLink  `xml:"link"`
	Author  atomPerson  `xml:"author"`
	Entries []atomEntry `xml:"entry"`
}

type atomLink struct {
	Rel  string `xml:"rel,attr,omitempty"`
	Type string `xml:"type,attr,omitempty"`
	Href string `xml:"href,attr"`
}

type atomPerson struct {
	Name string `xml:"name"`
}

type atomText struct {
	Type string `xml:"type,attr"`
	Body string `xml:",chardata"`
}

type atomCategory struct {
	Term string `xml:"term,attr"`
}

type atomEntry struct {
	ID         string         `xml:"id"`
	Title      string         `xml:"title"`
	Updated    string         `xml:"updated"`
	Published  string         `xml:"published"`
	Links      []atomLink     `xml:"link"`
	Categories []atomCategory `xml:"category,omitempty"`
	Summary    atomText       `xml:"summary"`
	Content    atomText       `xml:"content"`
}

func rfc3339(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// updated is the newest Modified, or now for an empty feed.
func (s *Server) updated(list []Advisory) time.Time {
	var u time.Time
	for _, a := range list {
		if a.Modified.After(u) {
			u = a.Modified
		}
	}
	if u.IsZero() {
		u = s.o.Now()
	}
	return u
}

func (s *Server) atomFeed(w http.ResponseWriter, r *http.Request) {
	list, ok := s.publishedOr503(w, r)
	if !ok {
		return
	}
	base := s.baseURL(r)
	author := s.author()
	f := atomFeed{
		ID:      base + "/advisories/",
		Title:   s.siteTitle(),
		Updated: rfc3339(s.updated(list)),
		Links: []atomLink{
			{Rel: "self", Type: "application/atom+xml", Href: base + "/advisories/feed.atom"},
			{Rel: "alternate", Type: "text/html", Href: base + "/advisories/"},
		},
		Author: atomPerson{Name: author},
	}
	for _, a := range list {
		e := atomEntry{
			ID:        base + pagePath(a),
			Title:     title(a) + ": " + a.Summary,
			Updated:   rfc3339(a.Modified),
			Published: rfc3339(a.Published),
			Links:     []atomLink{{Rel: "alternate", Type: "text/html", Href: base + pagePath(a)}},
			Summary:   atomText{Type: "text", Body: a.Summary},
			Content:   atomText{Type: "text", Body: a.Details},
		}
		if a.OSV != nil {
			e.Links = append(e.Links, atomLink{Rel: "related", Type: "application/json", Href: base + osvPath(a)})
		}
		if a.Severity != "" {
			e.Categories = append(e.Categories, atomCategory{Term: a.Severity})
		}
		f.Entries = append(f.Entries, e)
	}
	b, err := xml.MarshalIndent(f, "", "  ")
	if err != nil {
		s.log.Error("atom feed", "err", err)
		text(w, http.StatusInternalServerError, "internal error\n")
		return
	}
	writeBody(w, "application/atom+xml; charset=utf-8", append(append([]byte(xml.Header), b...), '\n'))
}

// --- JSON Feed 1.1 in the shape of the Kubernetes official CVE feed ---
//
// The Kubernetes feed (https://kubernetes.io/docs/reference/issues-security/official-cve-feed/index.json)
// is a JSON Feed 1.1 (https://www.jsonfeed.org/version/1.1/) whose items
// carry id (the CVE IDs), url, external_url (the cve.org record), summary,
// content_text, date_published and the "_kubernetes_io" extension object
// {google_group_url, issue_number}: see kubernetes/sig-security
// sig-security-tooling/cve-feed/hack/fetch-official-cve-feed.py, which builds
// the items, and kubernetes-sigs/cve-feed-osv collector/k8s.go, which reads
// them. The feed level carries "_kubernetes_io" {feed_refreshed_at,
// updated_at}. Tools written for that feed read this one unchanged; url is
// our advisory page, as JSON Feed defines it (the Kubernetes feed links its
// GitHub issue there; ours is in external_url when there is no CVE).

type jsonFeed struct {
	Version     string         `json:"version"`
	Title       string         `json:"title"`
	HomePageURL string         `json:"home_page_url"`
	FeedURL     string         `json:"feed_url"`
	Description string         `json:"description"`
	Authors     []jsonAuthor   `json:"authors"`
	K8s         jsonFeedK8s    `json:"_kubernetes_io"`
	Items       []jsonFeedItem `json:"items"`
}

type jsonAuthor struct {
	Name string `json:"name"`
	URL  string `json:"url,omitempty"`
}

type jsonFeedK8s struct {
	FeedRefreshedAt string `json:"feed_refreshed_at"`
	UpdatedAt       string `json:"updated_at"`
}

type jsonFeedItem struct {
	ID            string      `json:"id"`
	URL           string      `json:"url"`
	ExternalURL   string      `json:"external_url,omitempty"`
	Summary       string      `json:"summary"`
	ContentText   string      `json:"content_text"`
	DatePublished string      `json:"date_published"`
	DateModified  string      `json:"date_modified"`
	Tags          []string    `json:"tags,omitempty"`
	K8s           jsonItemK8s `json:"_kubernetes_io"`
}

type jsonItemK8s struct {
	GoogleGroupURL *string `json:"google_group_url"`
	IssueNumber    *int    `json:"issue_number"`
}

// issueNumber is the number at the end of a GitHub or GitLab issue URL.
var issueNumber = regexp.MustCompile(`/issues/([0-9]{1,9})/?$`)

func (s *Server) jsonFeed(w http.ResponseWriter, r *http.Request) {
	list, ok := s.publishedOr503(w, r)
	if !ok {
		return
	}
	base := s.baseURL(r)
	author := s.author()
	f := jsonFeed{
		Version:     "https://jsonfeed.org/version/1.1",
		Title:       s.siteTitle(),
		HomePageURL: base + "/advisories/",
		FeedURL:     base + "/advisories/feed.json",
		Description: "Security advisories published by the " + author + ".",
		Authors:     []jsonAuthor{{Name: author}},
		K8s:         jsonFeedK8s{FeedRefreshedAt: rfc3339(s.o.Now()), UpdatedAt: rfc3339(s.updated(list))},
		Items:       []jsonFeedItem{},
	}
	for _, a := range list {
		it := jsonFeedItem{
			ID:            title(a),
			URL:           base + pagePath(a),
			Summary:       a.Summary,
			ContentText:   a.Details,
			DatePublished: rfc3339(a.Published),
			DateModified:  rfc3339(a.Modified),
		}
		switch {
		case len(a.CVEs) > 0 && cvePattern.MatchString(a.CVEs[0]):
			it.ExternalURL = "https://www.cve.org/cverecord?id=" + a.CVEs[0]
		case strings.HasPrefix(a.IssueURL, "https://"):
			it.ExternalURL = a.IssueURL
		}
		if a.Severity != "" {
			it.Tags = []string{a.Severity}
		}
		if m := issueNumber.FindStringSubmatch(a.IssueURL); m != nil && strings.HasPrefix(a.IssueURL, "https://") {
			n, _ := strconv.Atoi(m[1])
			it.K8s.IssueNumber = &n
		}
		f.Items = append(f.Items, it)
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		s.log.Error("json feed", "err", err)
		text(w, http.StatusInternalServerError, "internal error\n")
		return
	}
	writeBody(w, "application/feed+json; charset=utf-8", append(b, '\n'))
}
