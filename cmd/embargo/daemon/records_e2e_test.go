package daemon_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	gomessage "github.com/emersion/go-message"
	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue/queuetest"
	"github.com/embargo-project/embargo/workflow"
	"github.com/embargo-project/embargo/workflow/record/recordtest"
)

// The README's example incident: the command block of "Working an incident
// by mail", then the advisory's fields, the distributor notice and the
// approval (the block of its "Release records" section).
const (
	readmeCommands = "/accept\n/lead me\n/cvss CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H\n/cve CVE-2026-12345\n" +
		"/set mitigation <<END\nDisable the parser until you upgrade.\nEND\n/disclose 2026-12-03\n"
	readmeDetails = "/set summary heap overflow in the parser\n/set actor A remote attacker\n/set impact execute code as the server\n" +
		"/set condition the parser is enabled\n/set component example-parser\n/set affected >= 1.0.0, < 1.2.4\n/set fixed 1.2.4\n" +
		"/set cwe CWE-122\n/set credit Rep Orter\n/set issue-url https://github.com/example/example/issues/122\n" +
		"/set references <<END\nhttps://github.com/example/example/pull/123\n" +
		"https://github.com/example/example/commit/0123456789abcdef0123456789abcdef01234567\nEND\n" +
		"/set detection Look for crashes in the parser log.\n/notify\n/approve\n"
	// The project's record keys, as the README's "Release records" shows them.
	readmeRecordConfig = "\n[http]\nlisten = \"127.0.0.1:0\"\nbase_url = \"https://example.org\"\n" +
		"[cve]\norg_id = \"6e8b2c0a-3d4f-4a1b-9c2d-7e5f60718293\"\nshort_name = \"example\"\n" +
		"[osv]\nid_prefix = \"x_EXAMPLE-\"\necosystem = \"Go\"\npackage = \"example.org/example\"\n" +
		"[[channels]]\naddress = \"oss-security@lists.invalid\"\n"
)

// recordsFixture is a daemon on a virtual clock with a committee of two
// members and a distributor, each with GnuPG keys made before the clock's
// start; every gpg run happens at the virtual time.
type recordsFixture struct {
	t          *testing.T
	h          *daemontest.Harness
	clk        *daemontest.Clock
	alice, bob *daemontest.GPG
	dist       *daemontest.GPG
	afpr       string
	id         string
	seen       int
}

// at is gpg's --faked-system-time for the virtual now.
func (f *recordsFixture) at() string {
	return "--faked-system-time=" + f.clk.Now().UTC().Format("20060102T150405") + "!"
}

// genKeyAt makes an ed25519 key with a cv25519 subkey, created at t and
// never expiring, so that the test does not depend on the day it runs.
func genKeyAt(g *daemontest.GPG, uid string, t time.Time) string {
	at := "--faked-system-time=" + t.UTC().Format("20060102T150405") + "!"
	g.Must(nil, at, "--quick-gen-key", uid, "ed25519", "sign,cert", "never")
	fpr := g.Fingerprint(uid)
	g.Must(nil, at, "--quick-add-key", fpr, "cv25519", "encr", "never")
	return fpr
}

func newRecordsFixture(t *testing.T, start time.Time, extra string) *recordsFixture {
	t.Helper()
	f := &recordsFixture{t: t, clk: daemontest.NewClock(start)}
	f.alice, f.bob, f.dist = daemontest.NewGPG(t), daemontest.NewGPG(t), daemontest.NewGPG(t)
	made := start.Add(-72 * time.Hour)
	f.afpr = genKeyAt(f.alice, "Alice <alice@ex.test>", made)
	bfpr := genKeyAt(f.bob, "Bob <bob@ex.test>", made)
	dfpr := genKeyAt(f.dist, "D <one@vendor1.test>", made)
	kd := daemontest.KeysDir(t, map[string][]byte{"alice": f.alice.Export(f.afpr), "bob": f.bob.Export(bfpr), "dist": f.dist.Export(dfpr)})
	members := daemontest.TOMLMember("alice@ex.test", f.afpr) + daemontest.TOMLMember("bob@ex.test", bfpr) +
		fmt.Sprintf("[[members]]\nemail = \"one@vendor1.test\"\nroles = [\"distributor\"]\nfingerprint = %q\n", dfpr)
	f.h = daemontest.New(t, daemontest.Config{Top: fmt.Sprintf("keys_dir = %q\nproject = \"Example\"\n", kd), Members: members, Extra: extra},
		f.clk.Options(daemon.Options{NoTick: true}))
	if f.h.D.HTTPAddr() == nil {
		t.Fatalf("http listener not started:\n%s", f.h.Logs)
	}
	for _, list := range []string{"security", "distributors", "announce"} {
		k := exportListKey(t, f.h, list)
		for _, g := range []*daemontest.GPG{f.alice, f.bob, f.dist} {
			g.Must(k, f.at(), "--import")
		}
	}
	f.h.MustSend("rep@out.test", []string{"security@ex.test"}, daemontest.Report("rep@out.test", "heap overflow in the parser", "Steps to reproduce: ..."))
	ack := daemontest.To(f.drain(), "rep@out.test")
	if len(ack) != 1 {
		t.Fatalf("the reporter got %d messages, want the acknowledgement", len(ack))
	}
	f.id = idRE.FindString(string(ack[0].Data))
	return f
}

// drain waits until the queue holds nothing due at the virtual time and
// returns what the relay got since the last drain.
func (f *recordsFixture) drain() []queuetest.Message {
	f.t.Helper()
	now := f.clk.Now()
	daemontest.WaitFor(f.t, "the queue to drain", func() bool {
		pending := false
		f.h.D.View(func(tx *bolt.Tx) error {
			rows, err := queue.List(tx)
			for _, r := range rows {
				pending = pending || r.State == queue.StateSending || r.State == queue.StateQueued && !r.NextAttempt.After(now)
			}
			return err
		})
		if pending {
			f.h.D.Kick()
		}
		return !pending
	})
	all := f.h.Rec.Messages()
	out := all[f.seen:]
	f.seen = len(all)
	return out
}

// command mails a block of commands clear-signed by alice at the virtual
// time and fails the test if her receipt says one was refused.
func (f *recordsFixture) command(text string) []queuetest.Message {
	f.t.Helper()
	signed := f.alice.Must([]byte(text), f.at(), "--clearsign", "-u", f.afpr)
	f.h.MustSend("alice@ex.test", []string{"security+" + f.id + "@ex.test"},
		fmt.Sprintf("From: alice@ex.test\nTo: security+%s@ex.test\nSubject: Re: [%s]\nMessage-ID: <%d@ex.test>\n\n%s",
			f.id, f.id, time.Now().UnixNano(), strings.ReplaceAll(string(signed), "\r\n", "\n")))
	msgs := f.drain()
	for _, m := range daemontest.To(msgs, "alice@ex.test") {
		if plain := f.decrypt(f.alice, m); strings.Contains(plain, "Commands for") && strings.Contains(plain, "refused") {
			f.t.Fatalf("commands refused:\n%s", daemontest.MIMEText([]byte(plain)))
		}
	}
	return msgs
}

// tick moves the clock to t and runs the scheduler's sweep there.
func (f *recordsFixture) tick(t time.Time) []queuetest.Message {
	f.t.Helper()
	f.clk.Set(t)
	if err := f.h.D.Tick(context.Background(), t); err != nil {
		f.t.Fatal(err)
	}
	return f.drain()
}

// decrypt opens a PGP/MIME message with gpg at the virtual time.
func (f *recordsFixture) decrypt(g *daemontest.GPG, m queuetest.Message) string {
	f.t.Helper()
	block := daemontest.ArmorBlock.Find(m.Data)
	if block == nil {
		return ""
	}
	out, status, err := g.Run(block, f.at(), "--decrypt")
	if err != nil {
		f.t.Fatalf("gpg --decrypt: %v\n%s", err, status)
	}
	return string(out)
}

// releasePack finds alice's copy of the release pack among msgs and returns
// its text, its attachments by file name and their media types.
func (f *recordsFixture) releasePack(msgs []queuetest.Message) (string, map[string][]byte, map[string]string) {
	f.t.Helper()
	for _, m := range daemontest.To(msgs, "alice@ex.test") {
		plain := f.decrypt(f.alice, m)
		if !strings.Contains(plain, "released: ") {
			continue
		}
		e, err := gomessage.Read(strings.NewReader(plain))
		if err != nil {
			f.t.Fatal(err)
		}
		files, types := map[string][]byte{}, map[string]string{}
		e.Walk(func(_ []int, p *gomessage.Entity, _ error) error {
			if _, params, err := p.Header.ContentDisposition(); err == nil && params["filename"] != "" {
				b, _ := io.ReadAll(p.Body)
				files[params["filename"]] = b
				types[params["filename"]], _, _ = p.Header.ContentType()
			}
			return nil
		})
		return daemontest.MIMEText([]byte(plain)), files, types
	}
	f.t.Fatalf("no release pack for alice among:\n%s", daemontest.Summary(msgs))
	return "", nil, nil
}

// TestReleaseRecordsEndToEnd is the proof of the release records: the
// README's example incident, worked by signed mail through the real daemon
// on the README's dates, is released at T by the scheduler; the CVE JSON 5
// draft attached to the SRC's release pack and the OSV record the archive
// serves over HTTP pass the official CVE Record Format 5.1.1 and OSV
// schemas, and name the configured project, CNA, prefix and package.
func TestReleaseRecordsEndToEnd(t *testing.T) {
	schemas := recordtest.Load(t)
	start := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC) // a Monday
	f := newRecordsFixture(t, start, readmeRecordConfig)
	if f.id != "SEC-2026-0001" {
		t.Fatalf("incident %q, want the README's SEC-2026-0001", f.id)
	}
	f.clk.Set(start.Add(time.Hour))
	f.command(readmeCommands)
	f.clk.Set(start.Add(2 * time.Hour))
	f.command(readmeDetails)
	T := time.Date(2026, 12, 3, 16, 0, 0, 0, time.UTC)
	f.tick(T.Add(-workflow.FinalNoticeBefore))
	msgs := f.tick(T)

	text, files, types := f.releasePack(msgs)
	daemontest.MustContain(t, "release pack", text, "SEC-2026-0001 was released at 2026-12-03 16:00 UTC (Thursday).",
		"cve-record.json: the CVE JSON 5 draft of CVE-2026-12345",
		"cve-data-map.yaml: the CVE data map of CVE-2026-12345 for the release team",
		"The advisory archive publishes the OSV record at https://example.org/advisories/SEC-2026-0001.osv.json.")
	if strings.Contains(text, "lack") {
		t.Errorf("the pack lists gaps for a complete incident and configuration:\n%s", text)
	}
	cve := files["cve-record.json"]
	if err := schemas.CVE(cve); err != nil {
		t.Errorf("the release pack's CVE draft fails the CVE schema: %v\n%s", err, cve)
	}
	var c struct {
		Meta       struct{ CVEID, AssignerOrgID, AssignerShortName, State, DatePublished string } `json:"cveMetadata"`
		Containers struct {
			CNA struct {
				Descriptions []struct{ Value string }
				Affected     []struct {
					Vendor, Product, CollectionURL, PackageName, DefaultStatus string
					Versions                                                   []struct{ Version, LessThan string }
				}
				References []struct{ URL string }
			}
		}
	}
	if err := json.Unmarshal(cve, &c); err != nil {
		t.Fatalf("CVE draft: %v\n%s", err, cve)
	}
	cna := c.Containers.CNA
	if m := c.Meta; m.CVEID != "CVE-2026-12345" || m.AssignerOrgID != "6e8b2c0a-3d4f-4a1b-9c2d-7e5f60718293" || m.AssignerShortName != "example" ||
		m.State != "PUBLISHED" || m.DatePublished != "2026-12-03T16:00:00Z" {
		t.Errorf("cveMetadata = %+v", m)
	}
	if len(cna.Affected) != 1 || cna.Affected[0].Vendor != "Example" || cna.Affected[0].PackageName != "example.org/example" ||
		cna.Affected[0].CollectionURL != "https://pkg.go.dev" || cna.Affected[0].DefaultStatus != "unaffected" ||
		len(cna.Affected[0].Versions) != 1 || cna.Affected[0].Versions[0].Version != "1.0.0" || cna.Affected[0].Versions[0].LessThan != "1.2.4" {
		t.Errorf("affected = %+v", cna.Affected)
	}
	if len(cna.References) == 0 || cna.References[0].URL != "https://example.org/advisories/SEC-2026-0001" {
		t.Errorf("references = %+v", cna.References)
	}
	if len(cna.Descriptions) != 1 || !strings.HasPrefix(cna.Descriptions[0].Value, "example-parser in Example from 1.0.0 before 1.2.4 allows a remote attacker to execute code as the server") {
		t.Errorf("descriptions = %+v", cna.Descriptions)
	}

	checkReadmeDataMap(t, files["cve-data-map.yaml"], types["cve-data-map.yaml"])

	// The archive: the OSV record over real HTTP, under each of its names.
	base := "http://" + f.h.D.HTTPAddr().String()
	r := fetch(t, base+"/advisories/SEC-2026-0001.osv.json")
	if r.code != 200 || r.header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET the OSV record = %d %q", r.code, r.header.Get("Content-Type"))
	}
	osv := []byte(r.body)
	if err := schemas.OSV(osv); err != nil {
		t.Errorf("the served OSV record fails the OSV schema: %v\n%s", err, osv)
	}
	for _, name := range []string{"CVE-2026-12345", "x_EXAMPLE-2026-0001"} {
		if o := fetch(t, base+"/advisories/"+name+".osv.json"); o.code != 200 || o.body != r.body {
			t.Errorf("GET /advisories/%s.osv.json = %d, not the same record", name, o.code)
		}
	}
	var o struct {
		ID, Published, Details string
		Aliases                []string
		Affected               []struct {
			Package struct{ Ecosystem, Name string }
			Ranges  []struct {
				Type   string
				Events []map[string]string
			}
		}
	}
	if err := json.Unmarshal(osv, &o); err != nil {
		t.Fatal(err)
	}
	if o.ID != "x_EXAMPLE-2026-0001" || o.Published != "2026-12-03T16:00:00Z" || fmt.Sprint(o.Aliases) != "[CVE-2026-12345]" ||
		!strings.HasPrefix(o.Details, "example-parser in Example from 1.0.0 before 1.2.4 allows") {
		t.Errorf("OSV record: id %q, published %q, aliases %v, details %q", o.ID, o.Published, o.Aliases, o.Details)
	}
	if len(o.Affected) != 1 || o.Affected[0].Package.Ecosystem != "Go" || o.Affected[0].Package.Name != "example.org/example" ||
		len(o.Affected[0].Ranges) != 1 || o.Affected[0].Ranges[0].Type != "SEMVER" ||
		fmt.Sprint(o.Affected[0].Ranges[0].Events) != "[map[introduced:1.0.0] map[fixed:1.2.4]]" {
		t.Errorf("OSV affected = %+v", o.Affected)
	}
	page := fetch(t, base+"/advisories/CVE-2026-12345")
	daemontest.MustContain(t, "advisory page", page.body, "Example security advisories", "Hello Example community,",
		`the OSV record <a href="/advisories/SEC-2026-0001.osv.json">x_EXAMPLE-2026-0001</a>.`)

	// The advisory mail names the project, and its channel tag defaults to it.
	ch := daemontest.To(msgs, "oss-security@lists.invalid")
	if len(ch) != 1 {
		t.Fatalf("the channel got %d copies", len(ch))
	}
	if hd := daemontest.Header(t, ch[0]); hd.Get("Subject") != "[Example] CVE-2026-12345: heap overflow in the parser" {
		t.Errorf("channel subject %q", hd.Get("Subject"))
	}
	daemontest.MustContain(t, "the advisory mail", daemontest.Body(t, ch[0]), "Hello Example community,",
		"A security issue was discovered in Example where a remote attacker may be able to execute code as the server, only if the parser is enabled.",
		"on behalf of the Example Security Response Committee")
	t.Logf("CVE JSON 5 draft attached to the release pack:\n%s", cve)
	t.Logf("OSV record served at /advisories/SEC-2026-0001.osv.json:\n%s", osv)
}

// TestReleasePackWithoutCVE: an incident released without a CVE ID gets no
// CVE draft; the pack says why, how to write /cve, and what the records
// lack (here the incident's versions, written as prose, and the
// configuration's CNA keys); the OSV record is still published, valid, with no aliases.
func TestReleasePackWithoutCVE(t *testing.T) {
	start := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	f := newRecordsFixture(t, start, "\n[http]\nlisten = \"127.0.0.1:0\"\n")
	f.clk.Set(start.Add(time.Hour))
	f.command("/accept\n/lead me\n/cvss CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H\n/set summary heap overflow in the parser\n" +
		"/set actor A remote attacker\n/set impact execute code as the server\n/set affected every build before the 1.2.4 release\n/set fixed 1.2.4\n" +
		"/set mitigation Disable the parser.\n/disclose 2026-11-26\n/notify\n/approve\n")
	T := time.Date(2026, 11, 26, 16, 0, 0, 0, time.UTC)
	f.tick(T.Add(-workflow.FinalNoticeBefore))
	msgs := f.tick(T)
	text, files, _ := f.releasePack(msgs)
	if _, ok := files["cve-record.json"]; ok {
		t.Errorf("a CVE draft without a CVE ID was attached")
	}
	if _, ok := files["cve-data-map.yaml"]; ok {
		t.Errorf("a CVE data map without a CVE ID was attached")
	}
	daemontest.MustContain(t, "release pack", text, "No CVE record draft is attached: SEC-2026-0001 has no CVE ID.",
		"Without a CVE ID there is no CVE data map for the release team either.",
		"send /cve CVE-YYYY-NNNNN", "What the records of SEC-2026-0001 lack, and how to fill it:", "- CVE and OSV (/set affected): a line is not a version range",
		"What the configuration leaves out of every record (embargo check lists the same):", "- CVE (cve.org_id): not set",
		"publishes the OSV record at /advisories/SEC-2026-0001.osv.json; set http.base_url")
	if strings.Contains(text, "/set cwe") {
		t.Errorf("without a CVE the pack lists what a CVE draft would lack:\n%s", text)
	}
	r := fetch(t, "http://"+f.h.D.HTTPAddr().String()+"/advisories/SEC-2026-0001.osv.json")
	if err := recordtest.Load(t).OSV([]byte(r.body)); r.code != 200 || err != nil {
		t.Errorf("OSV record without a CVE: %d, %v\n%s", r.code, err, r.body)
	}
	if !bytes.Contains([]byte(r.body), []byte(`"id": "x_EX-2026-0001"`)) || bytes.Contains([]byte(r.body), []byte("aliases")) {
		t.Errorf("OSV record without a CVE:\n%s", r.body)
	}
}
