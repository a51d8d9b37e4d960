package listd

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/announce"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/internal/pipeline"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue/queuetest"
	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/lists"
	"github.com/embargo-project/embargo/lists/message"
	"github.com/embargo-project/embargo/templates"
	"github.com/embargo-project/embargo/workflow"
)

// preCanary marks every text of the incident the pre-announcement must not
// carry; preCVE and preCWE are the digits of its CVE and CWE IDs.
const (
	preCanary = "QZXCANARY"
	preCVE    = "77770013"
	preCWE    = "77771"
)

// preSubscribers are the announce list's readers in these tests.
var preSubscribers = []string{"ann@reader.test", "ben@reader.test", "cat@reader.test"}

// canarySets is a /set of every advisory field, each carrying a canary:
// the fields are read from workflow.Advisory, so a field added there is
// covered (and the /set of one the command does not know refuses the
// message, which fails the test).
func canarySets(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	ty := reflect.TypeOf(workflow.Advisory{})
	for i := 0; i < ty.NumField(); i++ {
		tag, _, _ := strings.Cut(ty.Field(i).Tag.Get("json"), ",")
		name := strings.ReplaceAll(tag, "_", "-")
		v := preCanary + "-" + name + " text"
		switch name {
		case "upgrade-docs", "issue-url", "references":
			v = "https://" + strings.ToLower(preCanary) + ".example/" + name
		case "cwe":
			v = "CWE-" + preCWE
		}
		fmt.Fprintf(&b, "/set %s <<END\n%s\nEND\n", name, v)
	}
	return b.String()
}

// preWorld is a service on a store with an announce list of three
// subscribers, its key, and the fan-out over SMTP to a recording relay with
// one-click on, on a clock the test moves.
type preWorld struct {
	s    *Service
	db   *bolt.DB
	k    *storeKeys
	ann  *keys.Key
	fan  *announce.Fanout
	rec  *queuetest.Recorder
	now  *time.Time
	seen uint64 // the last queue row checked
}

func newPreWorld(t *testing.T, tmpl *templates.Set) *preWorld {
	t.Helper()
	k := newStoreKeys(t)
	ann, err := keys.GenerateListKey("announce", "announce@ex.test", ko)
	if err != nil {
		t.Fatal(err)
	}
	now := mon
	w := &preWorld{k: k, ann: ann, rec: queuetest.NewRecorder(t), now: &now}
	clock := func() time.Time { return *w.now }
	mono := func() time.Duration { return clock().Sub(mon) }
	w.s, w.db = storeService(t, k, func(o *Options) {
		o.Now, o.Mono, o.Quorum, o.AnnounceKey = clock, mono, 1, ann
		if tmpl != nil {
			o.Templates = tmpl
		}
		w.fan = announce.New(o.DB, nil, announce.Options{
			List: o.Roster.List(lists.Announce), Project: "ex.test", Key: ann, Now: clock, Mono: mono,
			OneClick: true, OneClickBase: "https://security.ex.test",
			SMTP: &pipeline.Config{Addr: w.rec.Addr(), HeloName: "ex.test", CommandTimeout: 10 * time.Second, DataTimeout: 10 * time.Second},
		})
		o.Announcer = w.fan
	})
	if err := w.db.Update(func(tx *bolt.Tx) error {
		if err := announce.Init(tx); err != nil {
			return err
		}
		for _, a := range preSubscribers {
			if _, _, _, err := announce.Add(tx, announce.Entry{Address: a}, mon.Add(-time.Hour), announce.Options{}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// The report: its subject and text carry the canary too.
	raw := plainMail("rep@out.test", "security@ex.test", preCanary+"-subject parser overflow", "r1@out.test", preCanary+"-report steps to reproduce\n")
	if err := w.s.Handle(context.Background(), Envelope{From: "rep@out.test", To: []string{"security@ex.test"}}, raw); err != nil {
		t.Fatalf("the report: %v", err)
	}
	w.seen = checkQueuedLast(t, w.s, w.db, 0, k)
	return w
}

// checkQueuedLast checks the rows after after and returns the last one's ID.
func checkQueuedLast(t *testing.T, s *Service, db *bolt.DB, after uint64, k *storeKeys) uint64 {
	t.Helper()
	for _, c := range checkQueued(t, s, db, after, k.readers()) {
		after = max(after, c.ID)
	}
	return after
}

// command sends alice's signed commands at w's clock and returns her
// receipt's text.
func (w *preWorld) command(t *testing.T, text string) (string, error) {
	t.Helper()
	raw, ok := memberMailTo(w.k, w.k.alice, *w.now, fuzzThread, fmt.Sprintf("%d.pre@ex.test", w.now.UnixNano()), "Re: [SEC-2026-0001]", text, false)
	if !ok {
		t.Fatal("the command mail cannot be written")
	}
	if err := w.s.Handle(context.Background(), Envelope{From: "alice@ex.test", To: []string{fuzzThread}}, raw); err != nil {
		return "", err
	}
	receipt := ""
	for _, c := range checkQueued(t, w.s, w.db, w.seen, w.k.readers()) {
		w.seen = max(w.seen, c.ID)
		if c.Kind == "receipt" {
			receipt = c.Text
		}
	}
	return receipt, nil
}

// fanOut runs the fan-out until the relay holds n transactions.
// fanOut runs the fan-out until the relay has n transactions and each of
// the jobs ids is released: a job stopped with its last batch answered but
// not yet recorded would send that batch again at the next run (at least
// once, docs/threat-model.md A3), and the next count would be off.
func (w *preWorld) fanOut(t *testing.T, n int, ids ...string) []queuetest.Message {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.fan.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	released := func() bool {
		for _, id := range ids {
			if j, ok := w.job(t, id); !ok || j.State != announce.JobReleased {
				return false
			}
		}
		return true
	}
	for deadline := time.Now().Add(30 * time.Second); len(w.rec.Messages()) < n || !released(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the relay got %d transactions, want %d, and jobs %v released", len(w.rec.Messages()), n, ids)
		}
		w.fan.Kick()
	}
	return w.rec.Messages()
}

func (w *preWorld) job(t *testing.T, id string) (announce.Job, bool) {
	t.Helper()
	var j announce.Job
	var err error
	w.db.View(func(tx *bolt.Tx) error { j, err = announce.GetJob(tx, id); return nil })
	return j, err == nil
}

// leaks returns the canaries data holds: in its header as sent, and in
// its text decoded (quoted-printable or base64, RFC 2047 words) as its
// reader sees it; the long canary in the raw bytes too. (The signature's
// base64 is not searched for the short ones: "cvss" may turn up there by
// chance.)
func leaks(t *testing.T, data []byte) []string {
	t.Helper()
	m, err := message.Parse(data, message.Limits{})
	if err != nil {
		t.Fatalf("the copy does not parse: %v", err)
	}
	head, _, _ := strings.Cut(string(data), "\r\n\r\n")
	hay := strings.ToLower(head + "\n" + m.Subject + "\n" + m.Text)
	var out []string
	for _, c := range []string{preCanary, preCVE, preCWE, "cvss", "sec-2026", "rep@out.test", "parser overflow"} {
		if strings.Contains(hay, strings.ToLower(c)) {
			out = append(out, c)
		}
	}
	if strings.Contains(strings.ToLower(string(data)), strings.ToLower(preCanary)) {
		out = append(out, preCanary+" (raw)")
	}
	return out
}

// TestPreannounceOnlyAllowedFields is the proof of docs/threat-model.md
// G8: an incident whose report, subject, summary, CVE, CWE, CVSS vector
// and every advisory field carry a canary is pre-announced; each
// subscriber's copy, as the relay gets it, carries none of them (raw or
// decoded), names the project, T and the severity, is signed by the
// announce key, and has its subscriber's own one-click URI. The receipt
// says how many subscribers; the release at T is a release of its own.
func TestPreannounceOnlyAllowedFields(t *testing.T) {
	w := newPreWorld(t, nil)
	*w.now = mon.Add(time.Hour)
	cmds := "/accept\n/lead me\n/cvss CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:N\n/cve CVE-2026-" + preCVE + "\n" + canarySets(t) +
		"/fixed\n/disclose 2026-12-03\n/approve\n/preannounce\n"
	r, err := w.command(t, cmds)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(r, "ok: pre-announcement of the release at T = 2026-12-03 16:00 UTC (Thursday), severity High, queued to the announce list (SEC-2026-0001-pre1); it says nothing else about the incident; to 3 subscribers") {
		t.Fatalf("receipt:\n%s", r)
	}
	inc := getIncident(t, w.db, fuzzIncident)
	for _, f := range reflect.VisibleFields(reflect.TypeOf(workflow.Advisory{})) {
		if reflect.ValueOf(inc.Advisory).FieldByIndex(f.Index).String() == "" {
			t.Fatalf("advisory field %s has no canary", f.Name)
		}
	}
	if p, ok := inc.LastPreannouncement(); !ok || p.Sent != 3 || p.Job != "SEC-2026-0001-pre1" {
		t.Fatalf("recorded %+v", inc.Preannounced)
	}
	j, ok := w.job(t, "SEC-2026-0001-pre1")
	if !ok || j.From != "announce+bounces-sec-2026-0001-pre1@ex.test" || !j.At.Equal(*w.now) {
		t.Fatalf("announce job %+v (%v)", j, ok)
	}
	if _, ok := w.job(t, "SEC-2026-0001"); ok {
		t.Fatal("the pre-announcement took the release's ID")
	}

	msgs := w.fanOut(t, len(preSubscribers), "SEC-2026-0001-pre1")
	urls := map[string]string{}
	for _, m := range msgs {
		if len(m.To) != 1 {
			t.Fatalf("a transaction to %v: one-click sends one copy per subscriber", m.To)
		}
		if l := leaks(t, m.Data); len(l) > 0 {
			t.Errorf("the copy to %s carries %q:\n%s", m.To[0], l, m.Data)
		}
		if _, err := keys.Verify(m.Data, keys.NewKeyring(w.ann), keys.Options{Now: func() time.Time { return *w.now }}); err != nil {
			t.Errorf("the copy to %s: the announce key's signature: %v", m.To[0], err)
		}
		pm, err := message.Parse(m.Data, message.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		if s := pm.Subject; s != "ex.test security release planned for 2026-12-03 16:00 UTC (Thursday)" {
			t.Errorf("Subject %q", s)
		}
		for _, want := range []string{"ex.test Security Response Committee plans a security release for", "2026-12-03 16:00 UTC (Thursday)",
			"rated High.", "No details of the issue will be given before then."} {
			if !strings.Contains(pm.Text, want) {
				t.Errorf("the copy to %s does not say %q:\n%s", m.To[0], want, pm.Text)
			}
		}
		lu := pm.Header.Get("List-Unsubscribe")
		u, _, _ := strings.Cut(strings.TrimPrefix(lu, "<"), ">")
		if !strings.HasPrefix(u, "https://security.ex.test/unsubscribe/") || pm.Header.Get("List-Unsubscribe-Post") != "List-Unsubscribe=One-Click" {
			t.Errorf("the copy to %s: List-Unsubscribe %q", m.To[0], lu)
		}
		if m.From != "announce+bounces-sec-2026-0001-pre1@ex.test" {
			t.Errorf("envelope sender %q", m.From)
		}
		urls[m.To[0]] = u
	}
	if len(urls) != 3 || urls[preSubscribers[0]] == urls[preSubscribers[1]] || urls[preSubscribers[1]] == urls[preSubscribers[2]] {
		t.Errorf("one-click URIs %v: want each subscriber's own", urls)
	}

	// The same T again: refused, with when it went out.
	*w.now = mon.Add(2 * time.Hour)
	if r, err := w.command(t, "/preannounce nosev\n"); err != nil || !strings.Contains(r, "was already pre-announced 2026-11-23 10:00 UTC (Monday) to 3 subscribers (SEC-2026-0001-pre1)") {
		t.Fatalf("second /preannounce: %v\n%s", err, r)
	}

	// The release at T goes out as ever, under the incident's ID, with the advisory.
	T := time.Date(2026, 12, 3, 16, 0, 0, 0, time.UTC)
	for _, at := range []time.Time{T.Add(-workflow.FinalNoticeBefore), T} {
		*w.now = at
		if err := w.s.Tick(context.Background(), at); err != nil {
			t.Fatal(err)
		}
	}
	if inc := getIncident(t, w.db, fuzzIncident); inc.Phase != workflow.PhaseDisclosed {
		t.Fatalf("after T the incident is %s", inc.Phase)
	}
	if j, ok := w.job(t, "SEC-2026-0001"); !ok || j.From != "announce+bounces-sec-2026-0001@ex.test" {
		t.Fatalf("the release at T: %+v (%v)", j, ok)
	}
	all := w.fanOut(t, 2*len(preSubscribers), "SEC-2026-0001")
	for _, m := range all[len(preSubscribers):] {
		if !strings.Contains(string(m.Data), "[Security Advisory] CVE-2026-"+preCVE) {
			t.Errorf("the release's copy to %v is not the advisory", m.To)
		}
	}
}

// TestPreannounceRescheduledAndNosev: after T moves, the public is told
// the release was rescheduled, from the old T to the new, under the next
// release ID; nosev leaves the severity out of the copy.
func TestPreannounceRescheduledAndNosev(t *testing.T) {
	w := newPreWorld(t, nil)
	*w.now = mon.Add(time.Hour)
	if r, err := w.command(t, "/accept\n/lead me\n/disclose 2026-12-03\n/preannounce nosev\n"); err != nil || !strings.Contains(r, "without the severity") {
		t.Fatalf("%v\n%s", err, r)
	}
	*w.now = mon.Add(2 * time.Hour)
	if r, err := w.command(t, "/disclose 2026-12-10\n/preannounce nosev\n"); err != nil || !strings.Contains(r, "SEC-2026-0001-pre2") {
		t.Fatalf("%v\n%s", err, r)
	}
	msgs := w.fanOut(t, 2*len(preSubscribers), "SEC-2026-0001-pre1", "SEC-2026-0001-pre2")
	var moved int
	for _, m := range msgs {
		pm, err := message.Parse(m.Data, message.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(pm.Text, "rated") {
			t.Errorf("a nosev copy names a severity:\n%s", pm.Text)
		}
		if m.From == "announce+bounces-sec-2026-0001-pre2@ex.test" {
			moved++
			if pm.Subject != "ex.test security release rescheduled to 2026-12-10 16:00 UTC (Thursday)" ||
				!strings.Contains(pm.Text, "announced for 2026-12-03 16:00 UTC (Thursday)\nhas been rescheduled. It is now planned for\n\n    2026-12-10 16:00 UTC (Thursday)") {
				t.Errorf("rescheduled copy: %q\n%s", pm.Subject, pm.Text)
			}
		}
	}
	if moved != len(preSubscribers) {
		t.Errorf("%d rescheduled copies, want %d", moved, len(preSubscribers))
	}
}

// TestPreannounceTemplateSeesNothingElse: a project's own template that
// asks for the summary (or any field beyond the four) fails to render,
// so the command mail is refused for now (451) and nothing is queued or
// published; the data is exactly preannounceData's four fields.
func TestPreannounceTemplateSeesNothingElse(t *testing.T) {
	var names []string
	for _, f := range reflect.VisibleFields(reflect.TypeOf(preannounceData{})) {
		names = append(names, f.Name)
	}
	if want := []string{"Project", "T", "Severity", "PreviousT"}; !reflect.DeepEqual(names, want) {
		t.Fatalf("preannounceData has %v, want %v: a field added reaches the public before T (docs/threat-model.md G8)", names, want)
	}
	for _, field := range []string{".Summary", ".CVE", ".ID", ".Vector", ".Component", ".Advisory.Summary", `index . "Summary"`} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "preannounce.txt"), []byte("Release at {{.T}}: {{"+field+"}}\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		tmpl, err := templates.New(dir)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tmpl.Render("preannounce", newPreannounceData("ex.test", workflow.Preannounce{T: mon})); err == nil {
			t.Errorf("a template printing {{%s}} rendered", field)
		}
		if field != ".Summary" {
			continue
		}
		// Through the service: the message fails, nothing goes out.
		w := newPreWorld(t, tmpl)
		*w.now = mon.Add(time.Hour)
		if _, err := w.command(t, "/accept\n/lead me\n/set summary "+preCanary+"\n/disclose 2026-12-03\n/preannounce nosev\n"); err == nil {
			t.Fatal("the pre-announcement rendered a template asking for .Summary")
		}
		if _, ok := w.job(t, "SEC-2026-0001-pre1"); ok {
			t.Error("an announce job was stored")
		}
		if inc := getIncident(t, w.db, fuzzIncident); len(inc.Preannounced) != 0 || inc.Phase != workflow.PhaseTriage {
			b, _ := json.Marshal(inc)
			t.Errorf("the failed message changed the incident: %s", b)
		}
	}
}

// TestPreannounceHeldAlert: a pre-announcement the fan-out holds (its
// release ID <incident>-preN) alerts the SRC about its incident, and says
// it is the pre-announcement.
func TestPreannounceHeldAlert(t *testing.T) {
	w := newPreWorld(t, nil)
	*w.now = mon.Add(time.Hour)
	if _, err := w.command(t, "/accept\n/lead me\n/disclose 2026-12-03\n"); err != nil {
		t.Fatal(err)
	}
	if err := w.db.Update(func(tx *bolt.Tx) error {
		return w.s.AlertRelease(tx, announce.Job{ID: "SEC-2026-0001-pre1", Held: "554 5.7.1 refused", HeldFor: announce.HoldRelay, At: mon.Add(time.Hour)})
	}); err != nil {
		t.Fatal(err)
	}
	var alerts int
	for _, c := range checkQueued(t, w.s, w.db, w.seen, w.k.readers()) {
		if c.Kind != "alert-announce-held" {
			continue
		}
		alerts++
		if c.Incident != fuzzIncident || !strings.Contains(c.Text, "the pre-announcement SEC-2026-0001-pre1, due at") ||
			!strings.Contains(c.Text, "embargo release resume SEC-2026-0001-pre1") || strings.Contains(c.Text, "The rest of the release") {
			t.Errorf("alert for %s:\n%s", c.Incident, c.Text)
		}
	}
	if alerts != 2 {
		t.Errorf("%d alerts, want one to each SRC member", alerts)
	}
}
