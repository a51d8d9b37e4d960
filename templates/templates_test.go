package templates

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/embargo-project/embargo/workflow"
)

var update = flag.Bool("update", false, "rewrite the golden files")

var t0 = time.Date(2026, 11, 23, 9, 30, 0, 0, time.UTC)

// samples gives every template its data; a new template without a sample
// fails TestEveryTemplateHasGolden.
// advisorySample is the data the advisory templates read (daemon/listd builds
// it from an incident). Its mitigation carries an armor line and its summary a
// bidi control, as an attacker-influenced field might: the data builder makes
// them inert before rendering (listd.safeText), here they show the raw case.
func advisorySample(extra map[string]any) map[string]any {
	m := map[string]any{
		"Project": "Example", "ID": "SEC-2026-0001", "CVE": "CVE-2026-12345", "Summary": "heap overflow in the parser",
		"Actor": "A remote attacker", "Impact": "execute code as the server", "Condition": "the parser is enabled",
		"Severity": "Critical", "Score": "9.8", "Vector": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
		"CalculatorURL": "https://www.first.org/cvss/calculator/3.1#CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
		"Affected":      "parser v1.0.0 - v1.4.2", "Fixed": "parser v1.4.3", "Mitigation": "Disable the parser.",
		"ActionRequired": "Rotate the server keys.", "FixImpact": "None expected.", "Detection": "Look for crashes in the parser log.",
		"UpgradeDocs": "https://example.org/upgrade", "IssueURL": "https://example.org/issues/1", "Credit": "Rep Orter",
		"T": "2026-12-03 16:00 UTC (Thursday)", "PreviousNotice": "", "At": "", "Person": "Alice Example",
		"SecurityAddress": "security@example.org", "DistributorsAddress": "distributors@example.org", "AdvisoryText": "", "Renotify": false,
		"Subscribers": 10000, "Channels": 1, "Distributors": 3,
		"CVEDraft": true, "DataMap": true, "DataMapNoPR": false, "OSVURL": "https://example.org/advisories/SEC-2026-0001.osv.json",
		"RecordGaps": []string{"CVE (/set cwe): no CWE: the draft has no problemTypes."},
		"ConfigGaps": []string{"OSV (osv.ecosystem, osv.package): not set: affected[] names no package."},
	}
	for k, v := range extra {
		m[k] = v
	}
	return m
}

// announceSample is the data daemon/announce gives its subscription mails.
func announceSample(extra map[string]any) map[string]any {
	m := map[string]any{
		"Project": "example.org", "ListAddress": "announce@example.org", "Address": "reader@example.net",
		"SubscribeAddress": "announce+subscribe@example.org", "UnsubscribeAddress": "announce+unsubscribe@example.org",
	}
	for k, v := range extra {
		m[k] = v
	}
	return m
}

// governanceSample is the data of the governance mails (lists/governance
// Mail.Fields plus what the daemon adds).
func governanceSample(fields map[string]any) map[string]any {
	m := map[string]any{"Project": "example.org", "ListAddress": "distributors@example.org", "ListKey": "89ABCDEF0123456789ABCDEF0123456789ABCDEF",
		"ApplyAddress": "distributors+apply@example.org", "SecurityAddress": "security@example.org"}
	for k, v := range fields {
		m[k] = v
	}
	return m
}

var samples = map[string]map[string]any{
	// The governance mails. The application's evidence carries a command
	// line and an armor line, as an applicant might write: quoted, inert.
	"distributor-application": governanceSample(map[string]any{"id": "GOV-2026-0003", "ReplyAddress": "security+GOV-2026-0003@example.org", "applicant": "person@new-distro.test",
		"alias": "security@new-distro.test", "product": "New Distro", "fingerprint": "0123456789ABCDEF0123456789ABCDEF01234567",
		"algorithm": "ed25519", "expires": "2027-11-23 09:00 UTC (Tuesday)", "userids": "New Distro Security <security@new-distro.test>",
		"warnings": "the key expires 2026-12-10 09:00 UTC (Thursday)", "signed": "yes, by the attached key",
		"voucher": "security@old-distro.test", "voucher_status": "a member of the distributors list: ask them to confirm",
		"deadline": "2026-11-28 09:00 UTC (Saturday)", "quorum": "2", "lazy_days": "5",
		"maintained": "releases every month since 2019\n/admit\n-----BEGIN PGP SIGNATURE-----", "users": "40,000 installs",
		"record": "https://new-distro.test/security", "not_a_rebuild": "our own kernel", "community": "two upstream packages",
		"embargo": "we accept it", "contributes": "reviews and test reports"}),
	"distributor-application-ack": governanceSample(map[string]any{"id": "GOV-2026-0003", "alias": "security@new-distro.test", "product": "New Distro",
		"fingerprint": "0123456789ABCDEF0123456789ABCDEF01234567", "deadline": "2026-11-28 09:00 UTC (Saturday)", "lazy_days": "5"}),
	"distributor-application-refused": governanceSample(map[string]any{
		"reasons": "- the key 0123456789ABCDEF0123456789ABCDEF01234567: keys: weak public-key algorithm: RSA 1024 bits\n- Record is missing: your public, current record of fixing security issues (links)",
		"form":    "Alias: <your monitored security alias (it joins the list)>\nProduct: <the distribution or product>\n"}),
	"distributor-welcome": governanceSample(map[string]any{"id": "GOV-2026-0003", "member": "security@new-distro.test", "product": "New Distro",
		"fingerprint": "0123456789ABCDEF0123456789ABCDEF01234567"}),
	"distributor-removal": governanceSample(map[string]any{"id": "GOV-2026-0004", "kind": "removed", "member": "security@old-distro.test",
		"product": "Old Distro", "reason": "no release in two years", "person": "alice@example.org, bob@example.org"}),
	"roster-change": governanceSample(map[string]any{"id": "GOV-2026-0005", "change": "the pinned key of bob@example.org is now 0123456789ABCDEF0123456789ABCDEF01234567 (was 89ABCDEF0123456789ABCDEF0123456789ABCDEF)",
		"member": "bob@example.org", "roles": "src", "fingerprint": "0123456789ABCDEF0123456789ABCDEF01234567", "previous": "89ABCDEF0123456789ABCDEF0123456789ABCDEF",
		"approvers": "alice@example.org, dave@example.org", "how": "passed by quorum: 2 SRC approvals (alice@example.org, dave@example.org)", "reason": "",
		"at": "2026-11-23 10:00 UTC (Monday)"}),
	"two-person-pending": {"Project": "example.org", "ReplyAddress": "security+SEC-2026-0001@example.org", "id": "SEC-2026-0001", "command": "/disclose now", "by": "alice@example.org",
		"signed": "alice@example.org at 2026-11-23 10:00 UTC (Monday)", "needed": "1", "quorum": "2", "awaited": "bob@example.org, dave@example.org",
		"expires": "2026-11-24 10:00 UTC (Tuesday)", "how": "To complete it, send /disclose now, signed, in the thread of SEC-2026-0001 (reply to any of its messages); to stop it, do nothing."},

	"quarantined":        {"id": "quarantine", "size": "2048", "at": "2026-11-23 09:00 UTC (Monday)", "message": "41"},
	"poison":             {"id": "quarantine", "size": "2048", "at": "2026-11-23 09:00 UTC (Monday)", "deaths": "2", "message": "42", "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"},
	"distributor-notice": advisorySample(map[string]any{"Renotify": true, "PreviousNotice": "2026-11-30 16:00 UTC (Monday)"}),
	"distributor-final":  advisorySample(map[string]any{"AdvisoryText": "Hello example.org community,\n(the advisory)"}),
	"embargo-lifted":     advisorySample(map[string]any{"At": "2026-11-25 10:00 UTC (Wednesday)"}),
	"advisory":           advisorySample(nil),
	"tracking-issue":     advisorySample(nil),
	"chat-line":          advisorySample(nil),
	"release-pack":       advisorySample(nil),
	"distributor-answer": {"Project": "example.org", "ReplyAddress": "security+SEC-2026-0001@example.org", "id": "SEC-2026-0001", "distributor": "security@vendor.test", "status": "affected, fix ready",
		"previous": "affected", "at": "2026-11-24 10:00 UTC (Tuesday)", "note": "Packages 1.2.4-1 are built.\nWe tested on arm64 too.",
		"answered": "1", "notified": "2"},
	"distributors-withheld": {"ReplyAddress": "security+SEC-2026-0001@example.org", "id": "SEC-2026-0001", "kind": "distributor-notice", "names": "dist@vendor.test (key expired)"},
	"distributors-refused":  {"id": "distributors@", "sender": "dist@vendor.test", "reason": "a plaintext post was refused; it reached nobody"},
	"distributors-warning": {"Project": "example.org", "member": "dist@vendor.test", "list": "distributors@example.org",
		"at": "2026-11-23 09:00 UTC (Monday)", "why": "it was not encrypted to the list key 89ABCDEF0123456789ABCDEF0123456789ABCDEF",
		"plaintext": "yes", "security": "security@example.org",
		"fix":     "Encrypt it to the list key and sign it with your pinned key, as PGP/MIME\n(mutt: p then b in the compose menu).",
		"listkey": "89ABCDEF0123456789ABCDEF0123456789ABCDEF", "pinned": "0123456789ABCDEF0123456789ABCDEF01234567"},
	"accepted":                   {"Project": "example.org", "id": "SEC-2026-0001"},
	"fixed":                      {"Project": "example.org", "id": "SEC-2026-0001"},
	"date":                       {"Project": "example.org", "id": "SEC-2026-0001", "t": "2026-12-03 16:00 UTC (Thursday)", "previous_t": "2026-11-30 16:00 UTC (Monday)"},
	"disclosed":                  {"Project": "example.org", "id": "SEC-2026-0001", "t": "2026-12-03 16:00 UTC (Thursday)", "cve": "CVE-2026-12345", "summary": "parser overflow"},
	"reporter-reply":             {"Project": "example.org", "id": "SEC-2026-0001", "text": "Could you share the crash log?"},
	"duplicate":                  {"Project": "example.org", "id": "SEC-2026-0002"},
	"handoff":                    {"Project": "example.org", "id": "SEC-2026-0001", "contact": "security@other.example"},
	"canned-not-a-vulnerability": {"Project": "example.org", "id": "SEC-2026-0001"},
	"canned-container-cve":       {"Project": "example.org", "id": "SEC-2026-0001"},
	"canned-clickjacking":        {"Project": "example.org", "id": "SEC-2026-0001"},
	"canned-spf":                 {"Project": "example.org", "id": "SEC-2026-0001"},
	"canned-out-of-scope":        {"Project": "example.org", "id": "SEC-2026-0001"},
	"embargo-break":              {"Project": "example.org", "ReplyAddress": "security+SEC-2026-0001@example.org", "id": "SEC-2026-0001", "by": "alice@example.org"},
	"release-held":               {"Project": "example.org", "ReplyAddress": "security+SEC-2026-0001@example.org", "id": "SEC-2026-0001", "t": "2026-12-03 16:00 UTC (Thursday)"},
	// The reason as listd.AlertRelease writes it: a relay's reply quoted
	// escaped, its further lines indented.
	"announce-held": {"Project": "example.org", "id": "SEC-2026-0001", "t": "2026-12-03 16:00 UTC (Thursday)",
		"reason": "the relay refused the message: pipeline: end of data: 554 5.7.1 Message rejected as spam\\r\n    /disclose now",
		"cause":  "relay", "sent": "200", "total": "1000", "pre": ""},
	// The pre-announcement's data is listd.preannounceData, nothing else:
	// the project, T, the severity ("" with nosev) and the T announced
	// before a rescheduling ("" the first time).
	"preannounce": {"Project": "Example", "T": "2026-12-03 16:00 UTC (Thursday)", "Severity": "High", "PreviousT": ""},
	"digest": {"Project": "example.org", "ReplyAddress": "security@example.org", "week": "2026-11-30 00:00 UTC (Monday)", "oncall": "bob@example.org (by handover)", "next": "alice@example.org",
		"pending":   "carol@example.org",
		"incidents": []string{"SEC-2026-0001  triage    unset     commander alice@example.org"},
		"deadlines": []string{"SEC-2026-0001 triage  OVERDUE since 2026-11-24 08:00 UTC (Tuesday): first response by the on-call (1 working day)"},
		"distributors": []string{"SEC-2026-0002 security@vendor.test: affected since 2026-11-27 10:00 UTC (Friday); notified 2026-11-25 09:00 UTC (Wednesday)",
			"SEC-2026-0002 security@other.test: no answer; notified 2026-11-25 09:00 UTC (Wednesday)"},
		"keys": []string(nil)},
	"oncall-request": {"Project": "example.org", "ReplyAddress": "security@example.org", "by": "alice@example.org", "to": "bob@example.org", "current": "alice@example.org", "until": "2026-11-30 00:00 UTC (Monday)"},
	"oncall-change": {"Project": "example.org", "ReplyAddress": "security@example.org", "member": "bob@example.org", "previous": "alice@example.org", "since": "2026-11-24 12:00 UTC (Tuesday)",
		"until": "2026-11-30 00:00 UTC (Monday)", "moved": "SEC-2026-0001, SEC-2026-0004"},
	"reminder": {"Project": "example.org", "ReplyAddress": "security+SEC-2026-0001@example.org", "id": "SEC-2026-0001", "what": "triage", "deadline": "2026-11-24 09:00 UTC (Tuesday)", "due": "1 working day after the report"},
	"ack": {"Project": "example.org", "ID": "SEC-2026-0001", "IncidentAddress": "security+SEC-2026-0001@example.org",
		"ListAddress": "security@example.org", "KeyFingerprint": "0123456789ABCDEF0123456789ABCDEF01234567"},
	"report": {"ID": "SEC-2026-0001", "Received": t0, "SenderLine": "Rep Orter <rep@out.test>", "Subject": "overflow",
		"DateLine": "Mon, 23 Nov 2026 09:00:00 +0000", "Text": "Hello,\nthe parser overflows.\n", "HTMLOmitted": 0, "Attachments": []string{"poc.py"}, "FromReporter": true,
		"Encrypted": true, "Withheld": []string{"bob@example.org (key expired)"}, "Note": "",
		"ListAddress": "security@example.org", "ReplyAddress": "security+SEC-2026-0001@example.org", "KeyFingerprint": "0123456789ABCDEF0123456789ABCDEF01234567"},
	"reply": {"ID": "SEC-2026-0001", "Received": t0, "SenderLine": "Alice <alice@example.org>", "Text": "Confirmed.\n",
		"HTMLOmitted": 1, "Attachments": []string(nil), "FromReporter": false, "Encrypted": false, "Withheld": []string(nil),
		"Note":        "[embargo] This encrypted message was first received from rep@out.test on 2026-11-23 09:00 UTC (Monday); it came again from mallory@evil.test, who is not made a reporter and was sent nothing (a possible decryption-oracle attempt).",
		"ListAddress": "security@example.org", "ReplyAddress": "security+SEC-2026-0001@example.org", "KeyFingerprint": "0123456789ABCDEF0123456789ABCDEF01234567"},
	"announce-confirm-subscribe":   announceSample(map[string]any{"ConfirmAddress": "announce+confirm-abcdefghijklmnopqrstuvwxyz@example.org", "Expires": "2026-11-25 09:30 UTC (Wednesday)"}),
	"announce-confirm-unsubscribe": announceSample(map[string]any{"ConfirmAddress": "announce+confirm-abcdefghijklmnopqrstuvwxyz@example.org", "Expires": "2026-11-25 09:30 UTC (Wednesday)"}),
	"announce-subscribed":          announceSample(nil),
	"announce-unsubscribed":        announceSample(nil),
	"announce-imported": announceSample(map[string]any{"OneClickURL": "https://security.example.org/unsubscribe/abcdefghijklmnopqrstuvwxyz",
		"KeyFingerprint": "0123 4567 89AB CDEF 0123 4567 89AB CDEF 0123 4567"}),
	"bounced": {"ReplyAddress": "security+SEC-2026-0001@example.org", "list": "distributors@example.org", "to": "dist@vendor.test",
		"kind": "distributor-notice", "id": "SEC-2026-0001", "sent": "2026-11-23 09:00 UTC (Monday)", "at": "2026-11-23 09:30 UTC (Monday)",
		"status": "5.1.1", "diagnostic": `smtp; 550 5.1.1 <dist@vendor.test>: Recipient address rejected\r/approve`},
	"alert": {"Row": uint64(7), "Kind": "report-copy", "Incident": "SEC-2026-0001", "To": []string{"bob@example.org"},
		"MessageID": "report.x@example.org", "Created": t0, "Attempts": 12, "Reason": "550 5.1.1 no such user"},
}

func TestGolden(t *testing.T) {
	s, err := New("")
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range samples {
		t.Run(name, func(t *testing.T) {
			got, err := s.Render(name, data)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", name+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./templates -update)", err)
			}
			if got != string(want) {
				t.Errorf("Render(%s) =\n%s\nwant\n%s", name, got, want)
			}
		})
	}
}

func TestEveryTemplateHasGolden(t *testing.T) {
	s, _ := New("")
	for _, n := range s.Names() {
		if _, ok := samples[n]; !ok {
			t.Errorf("template %s has no sample data and golden file", n)
		}
	}
}

func TestMissingKeyIsAnError(t *testing.T) {
	s, _ := New("")
	if _, err := s.Render("ack", map[string]any{"ID": "x"}); err == nil {
		t.Error("Render with missing fields succeeded; want missingkey=error")
	}
	if _, err := s.Render("nope", nil); err == nil {
		t.Error("Render of an unknown template succeeded")
	}
}

func TestOverrideDir(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "ack.txt"), []byte("Custom ack for {{.ID}}\n"), 0o644)
	s, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Render("ack", map[string]any{"ID": "SEC-2026-0002"})
	if err != nil || got != "Custom ack for SEC-2026-0002\n" {
		t.Errorf("overridden ack = %q, %v", got, err)
	}
	if _, err := s.Render("report", samples["report"]); err != nil {
		t.Errorf("non-overridden template: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "bad.txt"), []byte("{{.ID"), 0o644)
	if _, err := New(dir); err == nil || !strings.Contains(err.Error(), "bad.txt") {
		t.Errorf("New with a broken override = %v, want an error naming the file", err)
	}
}

func TestQuoteNeutralisesCommands(t *testing.T) {
	got := funcs["quote"].(func(string) string)("/disclose now\nok")
	if got != "> /disclose now\n> ok" {
		t.Errorf("quote = %q", got)
	}
}

// TestAdvisorySentences: the advisory's first sentence reads whole, whatever
// the fields hold: one line with no break at a fixed place, no "where A
// remote attacker", no doubled full stop, names keep their case.
func TestAdvisorySentences(t *testing.T) {
	s, _ := New("")
	for _, tt := range []struct {
		actor, impact, condition, want string
	}{
		{"A remote attacker", "execute code as the server", "", "where a remote attacker may be able to execute code as the server."},
		{"GitHub Actions workflows", "read secrets.", "the cache is shared.", "where GitHub Actions workflows may be able to read secrets, only if the cache is shared."},
		{"an authenticated user", "escalate\nto cluster-admin", "", "where an authenticated user may be able to escalate to cluster-admin."},
	} {
		data := advisorySample(map[string]any{"Project": "The Example Project With A Long Name", "Actor": tt.actor, "Impact": tt.impact, "Condition": tt.condition})
		got, err := s.Render("advisory", data)
		if err != nil {
			t.Fatal(err)
		}
		para := strings.SplitN(got, "\n\n", 3)[1]
		if strings.Contains(para, "\n") || !strings.HasSuffix(para, tt.want) || !strings.HasPrefix(para, "A security issue was discovered in The Example Project With A Long Name ") {
			t.Errorf("first paragraph = %q, want one line ending %q", para, tt.want)
		}
		notice, _ := s.Render("distributor-notice", data)
		if want := strings.ToUpper(tt.actor[:1]) + tt.actor[1:]; !strings.Contains(notice, "\n"+want+" may be able to") {
			t.Errorf("distributor notice does not start the sentence with %q:\n%s", want, notice)
		}
	}
}

// TestReleasePackWithoutCVE: without a CVE ID the pack attaches no draft and
// says why and which command to send; counts read as words.
func TestReleasePackWithoutCVE(t *testing.T) {
	s, _ := New("")
	got, err := s.Render("release-pack", advisorySample(map[string]any{"CVEDraft": false, "DataMap": false, "RecordGaps": []string(nil), "ConfigGaps": []string(nil), "OSVURL": "",
		"Subscribers": 1, "Channels": 0, "Distributors": 1}))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"No CVE record draft is attached: SEC-2026-0001 has no CVE ID.", "send /cve CVE-YYYY-NNNNN",
		"(1 subscriber), to 0 outside channels and to 1 distributor.", "/advisories/SEC-2026-0001.osv.json; set http.base_url",
		"Without a CVE ID there is no CVE data map for the release team either."} {
		if !strings.Contains(got, want) {
			t.Errorf("release pack lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "cve-record.json") || strings.Contains(got, "cve-data-map.yaml") || strings.Contains(got, "lack") {
		t.Errorf("release pack without a CVE names the draft, the data map or an empty gap list:\n%s", got)
	}
}

// TestReleasePackWithoutPullRequest: a CVE but no pull request among the
// references: the draft is attached, the data map is not, and the pack says
// why and how to list the pull requests next time.
func TestReleasePackWithoutPullRequest(t *testing.T) {
	s, _ := New("")
	got, err := s.Render("release-pack", advisorySample(map[string]any{"DataMap": false, "DataMapNoPR": true}))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"- cve-record.json: the CVE JSON 5 draft of CVE-2026-12345",
		"No CVE data map (cve-data-map.yaml) is attached: the references of SEC-2026-0001 name no pull request",
		"list the fix's pull requests with /set references before /approve."} {
		if !strings.Contains(got, want) {
			t.Errorf("release pack lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "- cve-data-map.yaml") || strings.Contains(got, "has no CVE ID") {
		t.Errorf("release pack without a pull request:\n%s", got)
	}
}

// TestAnnounceHeldCauses: the alert of a release the announce fan-out held
// gives the advice of its cause, and only that one: a clock jump asks to
// check the clock first, a message that no longer verifies is a bug to
// report, a relay's refusal asks to fix the relay; an older record without
// a cause gets the reason's own words. Each ends with how to resume it, and
// none sends the SRC to /approve or /disclose, which do not resume it.
func TestAnnounceHeldCauses(t *testing.T) {
	s, _ := New("")
	advice := map[string]string{
		"clock":   "Check the server's clock first.",
		"message": "it is a bug in embargo: report it",
		"relay":   "The relay refused the message itself",
		"":        "Fix what the reason above names",
	}
	for cause, want := range advice {
		data := map[string]any{}
		for k, v := range samples["announce-held"] {
			data[k] = v
		}
		data["cause"], data["sent"], data["total"] = cause, "0", "0"
		got, err := s.Render("announce-held", data)
		if err != nil {
			t.Fatal(err)
		}
		one := strings.Join(strings.Fields(got), " ")
		for _, w := range []string{want, "None of them has had it yet.", "embargo release resume SEC-2026-0001", "The rest of the release is not held"} {
			if !strings.Contains(one, w) {
				t.Errorf("cause %q: lacks %q:\n%s", cause, w, got)
			}
		}
		for other, w := range advice {
			if other != cause && strings.Contains(one, w) {
				t.Errorf("cause %q: gives the advice of %q too:\n%s", cause, other, got)
			}
		}
		if strings.Contains(got, "/approve") || strings.Contains(got, "/disclose DATE") {
			t.Errorf("cause %q: sends the SRC to the tick's commands:\n%s", cause, got)
		}
	}
}

// TestTrackingIssueLeavesOutEmptySections: a section without its field is
// left out, not printed as a heading over nothing.
func TestTrackingIssueLeavesOutEmptySections(t *testing.T) {
	s, _ := New("")
	got, err := s.Render("tracking-issue", advisorySample(map[string]any{"Detection": "", "Fixed": ""}))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(got, "### Detection") || strings.Contains(got, "Fixed Versions") || !strings.Contains(got, "### Acknowledgements") {
		t.Errorf("tracking issue:\n%s", got)
	}
}

// TestNoTemplateReadsAsCommands: no template's own text starts a line with
// "/", so no mail embargo writes reads as commands when a member's signed
// reply carries it unquoted (docs/threat-model.md E5): a reminder that
// ended in "/status on the incident …" made the reply a malformed command
// block, which refuses the member's own commands with it. Every template
// is rendered with its sample data; what the data carries is the
// daemon's to make inert (listd.inert, the quote helper).
// TestPreannounceVariants: a rescheduled pre-announcement names both
// dates; nosev ("" severity) leaves the severity sentence out.
func TestPreannounceVariants(t *testing.T) {
	s, _ := New("")
	got, err := s.Render("preannounce", map[string]any{"Project": "Example", "T": "2026-12-10 16:00 UTC (Thursday)", "Severity": "",
		"PreviousT": "2026-12-03 16:00 UTC (Thursday)"})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"announced for 2026-12-03 16:00 UTC (Thursday)\nhas been rescheduled", "    2026-12-10 16:00 UTC (Thursday)\n",
		"No details of the issue will be given before then."} {
		if !strings.Contains(got, want) {
			t.Errorf("rescheduled, nosev: no %q in\n%s", want, got)
		}
	}
	if strings.Contains(got, "rated") {
		t.Errorf("nosev names a severity:\n%s", got)
	}
	if cmds, err := workflow.Parse(got); len(cmds) > 0 || err != nil {
		t.Errorf("reads as commands:\n%s", got)
	}
}

func TestNoTemplateReadsAsCommands(t *testing.T) {
	s, err := New("")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range s.Names() {
		got, err := s.Render(name, samples[name])
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if cmds, err := workflow.Parse(got); len(cmds) > 0 || err != nil {
			t.Errorf("%s reads as commands (%d, %v):\n%s", name, len(cmds), err, got)
		}
	}
}

// TestCommitteeMailNamesReplyAddress: every mail a committee member
// replies to with commands says in its body where they go, with the list
// address and the incident or proposal ID in one, so that a reply quoting
// it binds its commands to this list and this thread ([commands]
// require_binding, docs/threat-model.md E3).
func TestCommitteeMailNamesReplyAddress(t *testing.T) {
	s, err := New("")
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"report": "security+SEC-2026-0001@example.org", "reply": "security+SEC-2026-0001@example.org",
		"reminder": "security+SEC-2026-0001@example.org", "release-held": "security+SEC-2026-0001@example.org",
		"embargo-break": "security+SEC-2026-0001@example.org", "two-person-pending": "security+SEC-2026-0001@example.org",
		"distributor-answer": "security+SEC-2026-0001@example.org", "distributors-withheld": "security+SEC-2026-0001@example.org",
		"bounced":                 "security+SEC-2026-0001@example.org",
		"distributor-application": "security+GOV-2026-0003@example.org",
		"digest":                  "security@example.org", "oncall-request": "security@example.org", "oncall-change": "security@example.org",
	} {
		got, err := s.Render(name, samples[name])
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !strings.Contains(got, "Reply to "+want+" with") {
			t.Errorf("%s does not say \"Reply to %s with …\":\n%s", name, want, got)
		}
	}
}

// TestPreannounceReminder renders the private track's reminders as Tick
// makes them (docs/process.md §9): the reminder template with their
// fields, golden, and reading as no commands although they name
// /preannounce.
func TestPreannounceReminder(t *testing.T) {
	s, err := New("")
	if err != nil {
		t.Fatal(err)
	}
	mon := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	inc := workflow.Incident{Version: workflow.SchemaVersion, ID: "SEC-2026-0001", Phase: workflow.PhaseFix, Opened: mon, Updated: mon,
		Reporter: "rep@out.test", AcceptedAt: mon, FixLead: "alice@example.org", Track: workflow.TrackPrivate,
		T: time.Date(2026, 12, 10, 16, 0, 0, 0, time.UTC)}
	var got []string
	for _, at := range []time.Time{inc.T.Add(-workflow.PreannounceFrom), inc.T.Add(-workflow.PreannounceBy)} {
		r := workflow.Tick(inc, at, workflow.Env{})
		for _, a := range r.Actions {
			al, ok := a.(workflow.AlertSRC)
			if !ok || al.Template != "reminder" || al.Fields["deadline"] != "preannounce" {
				continue
			}
			data := map[string]any{"Project": "example.org", "ReplyAddress": "security+SEC-2026-0001@example.org"}
			for k, v := range al.Fields {
				data[k] = v
			}
			body, err := s.Render("reminder", data)
			if err != nil {
				t.Fatal(err)
			}
			if cmds, err := workflow.Parse(body); len(cmds) > 0 || err != nil {
				t.Errorf("the %s reminder reads as commands (%d, %v):\n%s", al.Fields["key"], len(cmds), err, body)
			}
			got = append(got, al.Fields["title"]+"\n"+body)
		}
		inc = r.Incident
	}
	path := filepath.Join("testdata", "reminder-preannounce.golden")
	text := strings.Join(got, "\n")
	if *update {
		os.WriteFile(path, []byte(text), 0o644)
	}
	want, err := os.ReadFile(path)
	if err != nil || string(want) != text || len(got) != 2 {
		t.Errorf("%d reminders:\n%s\nwant (%v)\n%s", len(got), text, err, want)
	}
}
