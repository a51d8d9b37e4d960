package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/workflow"
)

// showCommands is a committee member's block: the README's example incident.
const showCommands = "/accept\n/lead me\n/cvss CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H\n/cve CVE-2026-12345\n" +
	"/set summary heap overflow in the parser\n/set component example-parser\n/set affected >= 1.0.0, < 1.2.4\n" +
	"/set fixed 1.2.4\n/set cwe CWE-122\n/set references <<END\nhttps://github.com/example/example/pull/123\nEND\n" +
	"/set mitigation <<END\nDisable the parser\nuntil you upgrade.\nEND\n/disclose %s\n"

// TestIncidentShow: `embargo incident show` says what /status says and the
// rest (advisory values, version ranges as read, milestones, history,
// pending approvals), as text and as JSON, with the daemon running and
// stopped. The incident is worked by signed mail through the real daemon;
// the pending approval is added as a daemon with a quorum of two leaves it.
func TestIncidentShow(t *testing.T) {
	alice := daemontest.NewGPG(t)
	afpr := alice.GenKey("Alice <alice@ex.test>")
	kd := daemontest.KeysDir(t, map[string][]byte{"alice": alice.Export(afpr)})
	members := daemontest.TOMLMember("alice@ex.test", afpr) + "[[members]]\nemail = \"bob@ex.test\"\nroles = [\"src\"]\n"
	h := daemontest.New(t, daemontest.Config{Top: fmt.Sprintf("keys_dir = %q\n", kd), Members: members}, daemon.Options{Commands: storeCommands()})
	h.MustSend("rep@out.test", []string{"security@ex.test"}, daemontest.Report("rep@out.test", "heap overflow", "Steps."))
	h.WaitMail(2)
	id := fmt.Sprintf("SEC-%d-0001", time.Now().UTC().Year())
	T := workflow.NextSlot(time.Now().UTC().Add(10*24*time.Hour), nil)
	signed := alice.Must([]byte(fmt.Sprintf(showCommands, T.Format("2006-01-02"))), "--clearsign", "-u", afpr)
	h.MustSend("alice@ex.test", []string{"security+" + id + "@ex.test"}, fmt.Sprintf("From: alice@ex.test\nTo: security+%s@ex.test\nSubject: Re: [%s]\nMessage-ID: <show1@ex.test>\n\n%s",
		id, id, strings.ReplaceAll(string(signed), "\r\n", "\n")))
	show := func(args ...string) (string, string, int) {
		var out, errb strings.Builder
		rc := run(append([]string{"incident", "show", id, "--data", h.Dir}, args...), &out, &errb)
		return out.String(), errb.String(), rc
	}
	daemontest.WaitFor(t, "the commands to apply", func() bool {
		out, _, _ := show()
		return strings.Contains(out, "/disclose")
	})

	// A quorum-2 daemon records alice's /public as awaiting a second signature.
	h.Stop()
	pendingPublic(t, h.Dir, id, afpr)
	h.Start()

	for _, mode := range []string{"daemon running", "daemon stopped"} {
		if mode == "daemon stopped" {
			h.Stop()
		}
		out, errb, rc := show()
		if rc != 0 {
			t.Fatalf("%s: incident show = %d %s", mode, rc, errb)
		}
		daemontest.MustContain(t, mode+": incident show", out,
			id+", phase fix", "reported:", "rep@out.test", "fix lead:", "alice@ex.test",
			"Critical (CVSS 9.8 CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H)", "CVE-2026-12345", "T:               "+workflow.FormatInstant(T),
			"track:           urgent (no pre-announcement, no 7-day rule)", "Awaiting signatures (two-person rule):", "/public: awaiting 1 more SRC signature (quorum 2)",
			"Deadlines:", "fix-team", "release            due "+workflow.FormatInstant(T),
			"Report:\n  subject:         heap overflow\n",
			"component:       example-parser", ">= 1.0.0, < 1.2.4  (1.0.0 and later, before 1.2.4)", "1.2.4  (fixed in 1.2.4)",
			"cwe:             CWE-122", "https://github.com/example/example/pull/123  (patch)",
			"mitigation:      Disable the parser\n                   until you upgrade.",
			"Milestones:", "accepted:", "triaged:",
			"History (14 changes):", "by alice@ex.test (key "+afpr+"), message <show1@ex.test>\n      /accept\n        phase triage → fix",
			"      /set affected >= 1.0.0, < 1.2.4\n        affected set: >= 1.0.0, < 1.2.4\n        >= 1.0.0, < 1.2.4 → 1.0.0 and later, before 1.2.4\n      /set fixed",
			"      /public\n        signature 1 of 2 recorded",
			"Messages (2):", "<show1@ex.test>")

		out, errb, rc = show("--json")
		if rc != 0 {
			t.Fatalf("%s: incident show --json = %d %s", mode, rc, errb)
		}
		checkShowJSON(t, mode, out, id, afpr, T)
	}

	var out, errb strings.Builder
	if rc := run([]string{"incident", "list", "--json", "--data", h.Dir}, &out, &errb); rc != 2 || !strings.Contains(errb.String(), "--json goes with incident show only") {
		t.Errorf("incident list --json = %d %q", rc, errb.String())
	}
}

// pendingPublic applies alice's signed /public with a quorum of two to the
// stored incident, as a daemon with that quorum would.
func pendingPublic(t *testing.T, dir, id, afpr string) {
	t.Helper()
	db, err := daemon.OpenStore(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		inc, err := incidentdb.Get(tx, workflow.ID(id))
		if err != nil {
			return err
		}
		res, err := workflow.Apply(*inc, "/track urgent\n/public\n", workflow.Signer{Fingerprint: afpr, Email: "alice@ex.test", Roles: []string{"src"}, SignedAt: time.Now()},
			time.Now(), workflow.Env{SRC: []string{"alice@ex.test", "bob@ex.test"}, Quorum: 2})
		if err != nil {
			return err
		}
		if len(res.Incident.Pending) != 1 {
			return fmt.Errorf("no pending approval: %+v", res.Receipt)
		}
		return incidentdb.Put(tx, &res.Incident)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func checkShowJSON(t *testing.T, mode, out, id, afpr string, T time.Time) {
	t.Helper()
	var d incidentDoc
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		t.Fatalf("%s: --json is no JSON document: %v\n%s", mode, err, out)
	}
	bad := func(what string, got any) { t.Errorf("%s: --json %s = %v", mode, what, got) }
	if d.ID != id || d.Phase != "fix" || d.FixLead != "alice@ex.test" || d.Reporter != "rep@out.test" || d.Subject != "heap overflow" {
		bad("id/phase/fix_lead/reporter/subject", []string{d.ID, d.Phase, d.FixLead, d.Reporter, d.Subject})
	}
	if d.CVSS == nil || d.CVSS.Score != 9.8 || d.CVSS.Version != "3.1" || d.CVSS.Severity != "Critical" || d.Severity != "Critical" {
		bad("cvss", d.CVSS)
	}
	if d.Track != "urgent" {
		bad("track", d.Track)
	}
	if len(d.CVEs) != 1 || d.CVEs[0] != "CVE-2026-12345" || d.T == nil || !d.T.Equal(T) {
		bad("cves/t", []any{d.CVEs, d.T})
	}
	if d.Advisory["component"] != "example-parser" || d.Advisory["upgrade-docs"] != "" || len(d.Advisory) != len(workflow.AdvisoryFields(workflow.Advisory{})) {
		bad("advisory", d.Advisory)
	}
	if len(d.Affected) != 1 || d.Affected[0].Introduced != "1.0.0" || d.Affected[0].Fixed != "1.2.4" || d.Affected[0].Prose {
		bad("affected_versions", d.Affected)
	}
	if len(d.Fixed) != 1 || d.Fixed[0].Version != "1.2.4" || d.Fixed[0].Reading != "fixed in 1.2.4" {
		bad("fixed_versions", d.Fixed)
	}
	if len(d.CWEs) != 1 || d.CWEs[0] != "CWE-122" || len(d.References) != 1 || d.References[0].Kind != "patch" {
		bad("cwes/references", []any{d.CWEs, d.References})
	}
	if d.Milestones["accepted"].IsZero() || d.Milestones["reported"].IsZero() || !d.Milestones["disclosed"].IsZero() {
		bad("milestones", d.Milestones)
	}
	var release bool
	for _, dl := range d.Deadlines {
		release = release || dl.Name == "release" && dl.Due != nil && dl.Due.Equal(T) && dl.Done == nil
	}
	if !release {
		bad("deadlines", d.Deadlines)
	}
	if len(d.Pending) != 1 || d.Pending[0].Command != "/public" || d.Pending[0].Quorum != 2 || len(d.Pending[0].Signers) != 1 || d.Pending[0].Signers[0].Email != "alice@ex.test" {
		bad("pending_approvals", d.Pending)
	}
	if len(d.History) != 14 || d.History[0].Email != "alice@ex.test" || d.History[0].Fingerprint != afpr || d.History[0].Command != "/accept" || d.History[0].MessageID != "show1@ex.test" {
		bad("history", d.History)
	}
	if len(d.Messages) != 2 || d.Messages[1].MessageID != "show1@ex.test" || d.FixTeam == nil {
		bad("messages/fix_team", []any{d.Messages, d.FixTeam})
	}
}

// TestIncidentShowDistributors: `embargo incident show` lists each
// distributor the notice reached with their answer (or none) and when, and
// their note, as text and as JSON.
func TestIncidentShowDistributors(t *testing.T) {
	notified := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	answered := notified.Add(26 * time.Hour)
	sd := showData{Incident: workflow.Incident{ID: "SEC-2026-0007", Phase: workflow.PhaseEmbargo, Opened: notified.Add(-time.Hour), NotifiedAt: notified,
		Distributors: []workflow.DistributorState{
			{Email: "security@vendor.test", NotifiedAt: notified, Status: workflow.AffectedFixed, At: answered, Note: "1.2.4-1 built\n/accept"},
			{Email: "security@other.test", NotifiedAt: notified},
		}}}
	now := answered.Add(time.Hour)
	var b strings.Builder
	if err := writeIncidentText(&b, sd, nil, now); err != nil {
		t.Fatal(err)
	}
	daemontest.MustContain(t, "incident show", b.String(), "Distributors the notice reached (1 of 2 answered, /affected):",
		"  security@vendor.test: affected, fix ready since "+workflow.FormatInstant(answered)+"; notified "+workflow.FormatInstant(notified),
		"      1.2.4-1 built\n      /accept\n", "  security@other.test: no answer; notified "+workflow.FormatInstant(notified))
	d := buildIncidentDoc(sd, nil, now)
	j, _ := json.Marshal(d.Distributors)
	want := `[{"email":"security@vendor.test","notified_at":"2026-11-23T09:00:00Z","status":"fixed","at":"2026-11-24T11:00:00Z","note":"1.2.4-1 built\n/accept"},` +
		`{"email":"security@other.test","notified_at":"2026-11-23T09:00:00Z","status":"","at":null,"note":""}]`
	if string(j) != want {
		t.Errorf("--json distributors = %s\nwant %s", j, want)
	}
}
