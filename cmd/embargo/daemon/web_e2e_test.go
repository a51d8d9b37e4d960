package daemon_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/web"
	"github.com/embargo-project/embargo/workflow"
)

// httpHarness starts the daemon with the HTTP listener on 127.0.0.1:0.
func httpHarness(t *testing.T) (*daemontest.Harness, string) {
	t.Helper()
	h := daemontest.New(t, daemontest.Config{Extra: "\n[http]\nlisten = \"127.0.0.1:0\"\n"}, daemon.Options{})
	if h.D.HTTPAddr() == nil {
		t.Fatalf("http listener not started:\n%s", h.Logs)
	}
	return h, "http://" + h.D.HTTPAddr().String()
}

type httpResult struct {
	code   int
	header http.Header
	body   string
}

// fetch GETs url over real HTTP, following no redirect.
func fetch(t *testing.T, url string) httpResult {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return httpResult{res.StatusCode, res.Header, string(b)}
}

// TestHTTPEndToEnd: the wired daemon answers /healthz, /metrics (with the
// report just received counted) and serves the security list key by WKD, over
// real HTTP; the start-up log names the listener as a URL.
func TestHTTPEndToEnd(t *testing.T) {
	h, base := httpHarness(t)
	if !strings.Contains(h.Logs.String(), "http=http://127.0.0.1:") {
		t.Errorf("start-up log does not name the HTTP listener as a URL:\n%s", h.Logs)
	}

	if r := fetch(t, base+"/healthz"); r.code != 200 || r.body != "ok\n" {
		t.Errorf("GET /healthz = %d %q", r.code, r.body)
	}

	h.MustSend("rep@out.test", []string{"security@ex.test"}, daemontest.Report("rep@out.test", "parser crash", "CANARY-http-report"))
	h.WaitMail(3) // the acknowledgement and the copies to alice and bob
	var r httpResult
	deadline := time.Now().Add(10 * time.Second)
	for {
		r = fetch(t, base+"/metrics")
		// The latency is observed once each outcome is committed, just after
		// the relay's answer is counted.
		if strings.Contains(r.body, `embargo_deliveries_total{result="delivered"} 3`) &&
			strings.Contains(r.body, "embargo_delivery_latency_seconds_count 3\n") || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if r.code != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/plain; version=0.0.4") {
		t.Fatalf("GET /metrics = %d %q", r.code, r.header.Get("Content-Type"))
	}
	for _, want := range []string{
		"embargo_store_up 1",
		"embargo_messages_received_total 1",
		"embargo_messages_sent_total 3",
		`embargo_deliveries_total{result="delivered"} 3`,
		`embargo_incidents_open{phase="triage"} 1`,
		`embargo_incidents_open{phase="embargo"} 0`,
		`embargo_queue_messages{state="queued"} 0`,
		`embargo_http_requests_total{code="200",route="healthz"} 1`,
		`embargo_deliveries_total{result="refused"} 0`,
		"embargo_delivery_latency_seconds_count 3",
		"embargo_release_duration_seconds_count 0",
		"embargo_command_duration_seconds_count 0",
		"# TYPE embargo_delivery_latency_seconds histogram",
		"# TYPE process_cpu_seconds_total counter",
		"# TYPE go_goroutines gauge",
	} {
		if !strings.Contains(r.body, want+"\n") {
			t.Errorf("metrics lack %q:\n%s", want, r.body)
		}
	}
	if strings.Contains(r.body, "CANARY") {
		t.Errorf("metrics carry message content")
	}

	// WKD: the security list key, binary, by the direct and advanced methods.
	for _, path := range []string{
		"/.well-known/openpgpkey/hu/" + web.WKDHash("security@ex.test") + "?l=security",
		"/.well-known/openpgpkey/ex.test/hu/" + web.WKDHash("security@ex.test"),
	} {
		r := fetch(t, base+path)
		if r.code != 200 || r.header.Get("Content-Type") != "application/octet-stream" {
			t.Fatalf("GET %s = %d %q", path, r.code, r.header.Get("Content-Type"))
		}
		ring, err := openpgp.ReadKeyRing(bytes.NewReader([]byte(r.body)))
		if err != nil || len(ring) != 1 {
			t.Fatalf("WKD key does not parse as one binary key: %v (%d keys)", err, len(ring))
		}
		found := false
		for _, id := range ring[0].Identities {
			found = found || strings.Contains(id.Name, "<security@ex.test>")
		}
		if !found || ring[0].PrivateKey != nil {
			t.Errorf("WKD key: identities %v, private part %v", ring[0].Identities, ring[0].PrivateKey != nil)
		}
	}
	if r := fetch(t, base+"/.well-known/openpgpkey/policy"); r.code != 200 {
		t.Errorf("GET policy = %d", r.code)
	}
	// Unsubscribe: an unknown token is answered like a known one (200), and
	// a GET never acts.
	if r := fetch(t, base+"/unsubscribe/sometoken"); r.code != 200 || !strings.Contains(r.body, "<form") {
		t.Errorf("GET /unsubscribe = %d", r.code)
	}
	res, err := http.Post(base+"/unsubscribe/sometoken", "application/x-www-form-urlencoded", strings.NewReader("List-Unsubscribe=One-Click"))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Errorf("POST /unsubscribe with an unknown token = %d, want 200 like any token", res.StatusCode)
	}
	if strings.Contains(h.Logs.String(), "sometoken") || strings.Contains(h.Logs.String(), "CANARY-http-report") {
		t.Errorf("the log carries a token or message content")
	}
}

// canaryIncident fills every text field of an incident, its advisory and its
// history with a canary naming the field.
func canaryIncident(id workflow.ID, tag string, phase workflow.Phase, opened time.Time) workflow.Incident {
	c := func(field string) string { return "CANARY-" + tag + "-" + field }
	inc := workflow.Incident{
		Version: workflow.SchemaVersion, ID: id, Phase: phase,
		Opened: opened, Updated: opened,
		Reporter: c("reporter") + "@out.test", Subject: c("subject"), RootMsg: "<" + c("root") + "@ex.test>",
		FixLead: c("lead") + "@ex.test", FixTeam: []string{c("team") + "@ex.test"},
		CVSSVector: "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
		CVEs:       []string{"CVE-2026-99" + tag[len(tag)-3:]},
		Approved:   true, ApprovedAt: opened,
		HandedOffTo: c("handoff"),
		History:     []workflow.Change{{At: opened, Email: c("signer"), Command: "/set summary " + c("history"), What: c("what")}},
	}
	v := reflect.ValueOf(&inc.Advisory).Elem()
	for i := range v.NumField() {
		if v.Field(i).Kind() == reflect.String {
			v.Field(i).SetString(c(v.Type().Field(i).Name))
		}
	}
	inc.Advisory.IssueURL = "https://example.test/" + c("issue") + "/issues/7"
	return inc
}

// hiddenIncidents are incidents nothing may publish: in triage, fix and
// embargo, and the inconsistent or unfinished cases next to them, each with a
// canary in every field.
func hiddenIncidents(now, opened time.Time) []workflow.Incident {
	var hidden []workflow.Incident
	add := func(inc workflow.Incident, mod func(*workflow.Incident)) {
		if mod != nil {
			mod(&inc)
		}
		hidden = append(hidden, inc)
	}
	add(canaryIncident("SEC-2026-0101", "triage-101", workflow.PhaseTriage, opened), nil)
	add(canaryIncident("SEC-2026-0102", "fix-102", workflow.PhaseFix, opened), nil)
	add(canaryIncident("SEC-2026-0103", "embargo-103", workflow.PhaseEmbargo, opened), func(i *workflow.Incident) {
		i.T = now.Add(14 * 24 * time.Hour)
		i.NotifiedAt = now.Add(-time.Hour)
	})
	// Inconsistent: a disclosure time in the past but not disclosed.
	add(canaryIncident("SEC-2026-0104", "embargo-104", workflow.PhaseEmbargo, opened), func(i *workflow.Incident) {
		i.T = now.Add(time.Hour)
		i.DisclosedAt = now.Add(-time.Hour)
	})
	add(canaryIncident("SEC-2026-0105", "triage-105", workflow.PhaseTriage, opened), func(i *workflow.Incident) {
		i.DisclosedAt = now.Add(-time.Hour)
	})
	// Disclosed, but the disclosure instant is still ahead of the clock.
	add(canaryIncident("SEC-2026-0106", "future-106", workflow.PhaseDisclosed, opened), func(i *workflow.Incident) {
		i.T = now.Add(time.Hour)
		i.DisclosedAt = now.Add(time.Hour)
	})
	// Closed without a disclosure: not a vulnerability.
	add(canaryIncident("SEC-2026-0107", "closed-107", workflow.PhaseClosed, opened), func(i *workflow.Incident) {
		i.Resolution = workflow.ResolutionNotAVulnerability
		i.ClosedAt = now.Add(-time.Hour)
	})

	return hidden
}

// crawl follows every link from the index, the feeds and the other routes,
// checks each page, and returns the paths it saw.
func crawl(t *testing.T, base string, check func(string, httpResult)) map[string]bool {
	t.Helper()
	link := regexp.MustCompile(`(?:href="|"url": "|"external_url": "|<id>)([^"<]+)`)
	seen := map[string]bool{}
	queue := []string{"/advisories/", "/advisories/feed.atom", "/advisories/feed.json", "/healthz", "/metrics",
		"/.well-known/openpgpkey/policy", "/unsubscribe/x"}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if seen[p] {
			continue
		}
		seen[p] = true
		r := fetch(t, base+p)
		check(p, r)
		if r.code != 200 {
			t.Errorf("GET %s = %d", p, r.code)
		}
		for _, m := range link.FindAllStringSubmatch(r.body, -1) {
			l := strings.TrimPrefix(m[1], base)
			if strings.HasPrefix(l, "/") && !seen[l] {
				queue = append(queue, l)
			}
		}
	}
	return seen
}

// TestHTTPNothingEmbargoedReachable is the proof over the wired daemon:
// incidents in triage, fix and embargo (and the inconsistent or unfinished
// cases next to them) carry a canary in every field; crawling every link of
// the index, the pages and the feeds, and guessing every path their IDs and
// CVEs could have, finds none, while the one disclosed incident is there.
func TestHTTPNothingEmbargoedReachable(t *testing.T) {
	h, base := httpHarness(t)
	now := time.Now().UTC()
	opened := now.Add(-30 * 24 * time.Hour)

	hidden := hiddenIncidents(now, opened)
	pub := workflow.Incident{
		Version: workflow.SchemaVersion, ID: "SEC-2026-0001", Phase: workflow.PhaseDisclosed,
		Opened: opened, Updated: now.Add(-time.Hour), Reporter: "PRIVATE-reporter@out.test", Subject: "PRIVATE-subject",
		CVSSVector: "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", CVEs: []string{"CVE-2026-10001"},
		Advisory: workflow.Advisory{Summary: "Published parser overflow", Actor: "a remote attacker", Impact: "crash the parser",
			Affected: "parser < 1.2.3", Fixed: "parser 1.2.3", Credit: "Jane Reporter"},
		Approved: true, T: now.Add(-2 * time.Hour), DisclosedAt: now.Add(-2 * time.Hour),
	}
	if err := daemon.DB(h.D).Update(func(tx *bolt.Tx) error {
		for i := range hidden {
			if err := incidentdb.Put(tx, &hidden[i]); err != nil {
				return err
			}
		}
		return incidentdb.Put(tx, &pub)
	}); err != nil {
		t.Fatal(err)
	}

	leak := regexp.MustCompile(`CANARY|PRIVATE|CVE-2026-99|SEC-2026-01|EX-2026-01`)
	check := func(url string, r httpResult) {
		t.Helper()
		if m := leak.FindString(r.body + r.header.Get("Location")); m != "" {
			t.Errorf("GET %s (%d) reveals %q:\n%.2000s", url, r.code, m, r.body)
		}
	}

	// Guessed paths: every ID and CVE, in the forms a person would try.
	for _, inc := range hidden {
		for _, name := range append([]string{string(inc.ID), "x_EX-" + strings.TrimPrefix(string(inc.ID), "SEC-")}, inc.CVEs...) {
			for _, v := range []string{name, strings.ToLower(name)} {
				for _, p := range []string{"/advisories/" + v, "/advisories/" + v + ".osv.json", "/advisories/" + v + "/", "/" + v} {
					r := fetch(t, base+p)
					check(p, r)
					if r.code != 404 {
						t.Errorf("GET %s = %d, want 404", p, r.code)
					}
				}
			}
		}
	}

	seen := crawl(t, base, check)
	for _, want := range []string{"/advisories/SEC-2026-0001", "/advisories/SEC-2026-0001.osv.json"} {
		if !seen[want] {
			t.Errorf("the crawl never reached %s: %v", want, seen)
		}
	}

	// The disclosed incident is published, with the advisory text as mailed.
	r := fetch(t, base+"/advisories/CVE-2026-10001")
	if r.code != 200 || !strings.Contains(r.body, "Published parser overflow") ||
		!strings.Contains(r.body, "a remote attacker may be able to") || !strings.Contains(r.body, "Critical") {
		t.Errorf("GET the published advisory = %d:\n%s", r.code, r.body)
	}
	var osv map[string]any
	r = fetch(t, base+"/advisories/SEC-2026-0001.osv.json")
	if err := json.Unmarshal([]byte(r.body), &osv); err != nil {
		t.Fatalf("OSV: %v", err)
	}
	if osv["id"] != "x_EX-2026-0001" || fmt.Sprint(osv["aliases"]) != "[CVE-2026-10001]" ||
		osv["published"] != pub.DisclosedAt.Format(time.RFC3339) {
		t.Errorf("OSV = %v", osv)
	}
	// /metrics counts the hidden incidents by phase, and says nothing else.
	m := fetch(t, base+"/metrics").body
	for _, want := range []string{`embargo_incidents_open{phase="triage"} 2`, `embargo_incidents_open{phase="embargo"} 2`, `embargo_incidents_open{phase="disclosed"} 2`} {
		if !strings.Contains(m, want+"\n") {
			t.Errorf("metrics lack %q:\n%s", want, m)
		}
	}
}

// TestHTTPOffByDefaultInHarness: without [http] no listener opens.
func TestHTTPOffWithoutConfig(t *testing.T) {
	h := daemontest.New(t, daemontest.Config{}, daemon.Options{})
	if h.D.HTTPAddr() != nil {
		t.Errorf("HTTP listener opened without http.listen")
	}
}
