package workflow

import (
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestNoReminderForWorkDone is the drill that found it: a report on
// Thursday 2026-12-17 09:00, and within the hour /accept, CVSS, CVE, every
// advisory field, /fixed, /disclose 2026-12-25, /notify and /approve. With
// 24 and 25 December holidays T is Monday 28 December 16:00. Ticking every
// minute to the new year sends the final notice at T-25 h, the release at T
// and the retrospective reminders, and nothing else: no "fix team not formed"
// for an incident that is fixed, notified and approved.
func TestNoReminderForWorkDone(t *testing.T) {
	e := env
	e.Holidays = []time.Time{time.Date(2026, 12, 24, 0, 0, 0, 0, time.UTC), time.Date(2026, 12, 25, 0, 0, 0, 0, time.UTC)}
	e.Rotation = Rotation{Members: []string{"alice@ex.org", "bob@ex.org"}}
	opened := time.Date(2026, 12, 17, 9, 0, 0, 0, time.UTC)
	inc := Incident{Version: SchemaVersion, ID: "SEC-2026-0042", Phase: PhaseTriage, Opened: opened, Updated: opened,
		Reporter: "rep@out.test", Commander: "alice@ex.org", Messages: 1}
	ap := func(at time.Time, text string) func(Incident) Incident {
		return func(inc Incident) Incident {
			r, err := Apply(inc, text, at2(alice, at), at, e)
			if err != nil {
				t.Fatalf("Apply(%q) at %s: %v", text, FormatInstant(at), err)
			}
			return r.Incident
		}
	}
	m := func(min int) time.Time { return opened.Add(time.Duration(min) * time.Minute) }
	events := map[time.Time]func(Incident) Incident{
		m(5): ap(m(5), "/accept\n/lead bob@ex.org\n/cvss CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H\n/cve CVE-2026-4242\n"),
		m(20): ap(m(20), `/set summary Heap overflow in the parser
/set actor A remote attacker
/set impact run code as the daemon
/set condition the parser is enabled
/set affected parser v1.0 - v1.4
/set fixed parser v1.5
/set mitigation Disable the parser.
/set action-required Upgrade.
/set fix-impact None.
/set detection Crash logs.
/set upgrade-docs https://example.org/upgrade
/set issue-url https://example.org/issues/1
/set credit A. Reporter
`),
		m(40): ap(m(40), "/fixed\n/disclose 2026-12-25\n"),
		m(50): ap(m(50), "/notify\n/approve\n"),
	}
	inc, got := firings(t, inc, opened, time.Date(2027, 1, 2, 0, 0, 0, 0, time.UTC), e, events)
	if want := time.Date(2026, 12, 28, 16, 0, 0, 0, time.UTC); !inc.T.Equal(want) {
		t.Fatalf("T = %s, want %s", FormatInstant(inc.T), FormatInstant(want))
	}
	want := []string{
		"Sun 12-27 15:00 final-notice", // T-25 h
		"Mon 12-28 16:00 release:2026-12-28 16:00 UTC (Monday)",
		"Mon 12-28 16:00 reporter:disclosed",
		"Tue 12-29 16:00 remind:bob@ex.org:retrospective", // T+1 d, the Fix Lead
		"Thu 12-31 16:00 alert:reminder:retrospective",    // T+3 d, the SRC
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("timeline:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// at2 is at for a signer (kept apart from machine_test.go's fixtures).
func at2(s Signer, t time.Time) Signer { s.SignedAt = t; return s }

// reach sets the record fields a milestone is read from, as the command or
// tick that reaches it would (TestMootTable).
func reach(inc Incident, m Milestone, now time.Time) Incident {
	inc = inc.clone()
	switch m {
	case MilestoneTriaged:
		inc.TriagedAt = now
	case MilestoneFixTeam:
		inc.FixTeam, inc.FixTeamAt = []string{"eng@ex.org"}, now
	case MilestoneFixed:
		inc.FixedAt = now
	case MilestoneAssessed:
		inc.FixedAt, inc.CVSSVector, inc.CVEs = now, "CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:N", []string{"CVE-2026-1234"}
	case MilestoneDeferred:
		inc.SeverityOverride, inc.Deferred = SeverityLow, true
	case MilestoneNotified:
		inc.NotifiedAt, inc.NotifiedT, inc.Phase = now, inc.T, PhaseEmbargo
	case MilestonePreannounced:
		inc.Preannounced = append(inc.Preannounced, Preannouncement{At: now, T: inc.T, Job: PreannounceJob(inc.ID, len(inc.Preannounced)+1)})
	case MilestoneApproved:
		inc.Approved, inc.ApprovedAt = true, now
	case MilestoneScheduled:
		inc.Approved, inc.ApprovedAt = true, now
		if inc.T.IsZero() {
			inc.T = NextSlot(now.Add(10*24*time.Hour), nil)
		}
	case MilestoneHeld:
		inc.HeldAt = now
	case MilestoneFinalNotice:
		inc.FinalNoticeAt = now
	case MilestoneDisclosed:
		inc.DisclosedAt, inc.Phase = now, PhaseDisclosed
	case MilestoneRetro:
		inc.RetroAt = now
	case MilestoneClosed:
		inc.Phase, inc.ClosedAt = PhaseClosed, now
	}
	return inc
}

func hasReminder(inc Incident, key string, now time.Time) bool {
	for _, r := range Reminders(inc, now, nil) {
		if r.Key == key {
			return true
		}
	}
	return false
}

// TestMootTable: for every reminder of TimelineRules, in a state where it is
// listed, reaching its goal, or any milestone that makes it moot, removes
// it; and /status says which milestone made a deadline moot.
func TestMootTable(t *testing.T) {
	// In fix: no fix team, no fix, a CVE, T 20 days ahead, neither notified
	// nor approved; Medium, so staleness is monthly.
	planned := step(t, step(t, triage(), "/accept\n/cvss CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:L/I:L/A:N\n/cve CVE-2026-1234\n", alice, mon).Incident,
		"/disclose 2026-12-14\n", alice, mon.Add(time.Hour)).Incident
	disclosed := reach(planned, MilestoneDisclosed, d(12, 14, 16, 0))
	public := step(t, planned, "/public\n", alice, mon.Add(2*time.Hour)).Incident
	private := step(t, planned, "/track private\n", alice, mon.Add(2*time.Hour)).Incident
	bases := map[string]Incident{
		"preannounce-soon": private, "preannounce": private,
		"triage": triage(), "triage-escalation": triage(),
		"fix-team": planned, "fix": planned, "stale": planned, "notice-soon": planned, "notice": planned, "approval-soon": planned,
		"retro-reminder": disclosed, "retrospective": disclosed, "asap": public,
	}
	now := mon.Add(3 * time.Hour)
	for _, rule := range TimelineRules() {
		if rule.To == RecipientUnset {
			continue
		}
		base, ok := bases[rule.Key]
		if !ok {
			t.Errorf("reminder %s: no test state", rule.Key)
			continue
		}
		if !hasReminder(base, rule.Key, now) {
			t.Errorf("reminder %s: not listed in its test state", rule.Key)
			continue
		}
		ms := append([]Milestone{rule.Goal}, rule.MootBy...)
		if rule.Goal == MilestoneUnset {
			ms = ms[1:]
		}
		for _, m := range ms {
			after := reach(base, m, now)
			if hasReminder(after, rule.Key, now.Add(time.Minute)) {
				t.Errorf("reminder %s: still listed once %s", rule.Key, m)
			}
		}
	}
	// The case of the report: a fix ready makes "fix team not formed" moot,
	// and /status says so.
	fixed := step(t, planned, "/fixed\n", alice, now).Incident
	if hasReminder(fixed, "fix-team", now) {
		t.Errorf("fix-team reminder listed for a fixed incident")
	}
	if txt := StatusText(fixed, now, nil); !strings.Contains(txt, "moot: fix ready 2026-11-23 12:00 UTC (Monday)") {
		t.Errorf("status does not say fix-team is moot:\n%s", txt)
	}
	// Moot deadlines leave the digest and the ASAP nudge.
	dg := WeeklyDigest([]Incident{fixed}, d(11, 30, 0, 0), env)
	for _, l := range dg.Deadlines {
		if strings.Contains(l, " fix-team ") {
			t.Errorf("digest lists a moot deadline: %s", l)
		}
	}
	for _, r := range Reminders(step(t, fixed, "/public\n", alice, now).Incident, now.Add(48*time.Hour), nil) {
		if r.Key == "asap" && strings.Contains(r.What, "fix-team") {
			t.Errorf("asap nudge names a moot deadline: %s", r.What)
		}
	}
	// A withdrawn approval is no longer reached: its moot reminders return.
	approved := reach(planned, MilestoneApproved, now)
	if hasReminder(approved, "fix-team", now) {
		t.Fatalf("fix-team listed once approved")
	}
	approved.Approved = false
	if !hasReminder(approved, "fix-team", now) {
		t.Errorf("fix-team not listed after the approval was withdrawn")
	}
	// The fix reminder asks for CVSS, CVE and fix: /fixed alone is not enough.
	noCVE := step(t, triage(), "/accept\n/severity high\n/fixed\n", alice, mon).Incident
	rs := Reminders(noCVE, mon, nil)
	found := false
	for _, r := range rs {
		if r.Key == "fix" {
			found = true
			if !strings.HasSuffix(r.What, "missing: CVE (/cve)") {
				t.Errorf("fix reminder says %q", r.What)
			}
		}
	}
	if !found {
		t.Errorf("no fix reminder for a fix without a CVE: %+v", rs)
	}
}

// TestTimelineRulesConsistent: rows about one deadline share its goal and
// moot milestones; every reminder has a title of its own and a group.
func TestTimelineRulesConsistent(t *testing.T) {
	byDeadline := map[string]TimelineRule{}
	titles := map[string]string{}
	for _, r := range TimelineRules() {
		if r.Deadline != "" {
			if first, ok := byDeadline[r.Deadline]; ok {
				if first.Goal != r.Goal || !reflect.DeepEqual(first.MootBy, r.MootBy) {
					t.Errorf("%s and %s are about deadline %s but give way differently", first.Key, r.Key, r.Deadline)
				}
			} else {
				byDeadline[r.Deadline] = r
			}
		}
		if r.To == RecipientUnset {
			continue
		}
		if r.group == "" {
			t.Errorf("reminder %s has no group", r.Key)
		}
		title := reminderTitle(Reminder{Key: r.Key, Deadline: r.Deadline}, Incident{})
		if other, ok := titles[title]; ok || title == r.Deadline {
			t.Errorf("reminder %s: title %q not its own (%s)", r.Key, title, other)
		}
		titles[title] = r.Key
	}
}

// TestReadmeTimelineTable: the README's timeline table is TimelineRules,
// row by row, "gives way" column included.
func TestReadmeTimelineTable(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	want := timelineMarkdown()
	if !strings.Contains(string(b), want) {
		t.Errorf("README.md: the timeline table under \"Timelines and the on-call\" is not TimelineRules; it should read:\n%s", want)
	}
}

// timelineMarkdown renders TimelineRules as the README's table.
func timelineMarkdown() string {
	var b strings.Builder
	b.WriteString("| when | what | to | gives way when |\n|---|---|---|---|\n")
	for _, r := range TimelineRules() {
		b.WriteString("| " + r.When + " | " + r.What + " | " + r.Who + " | " + r.GivesWay() + " |\n")
	}
	return b.String()
}

// TestReminderKeyOfTitle: every reminder Tick sends maps back from its
// subject title to its key, as a drill's timeline needs.
func TestReminderKeyOfTitle(t *testing.T) {
	planned := step(t, step(t, triage(), "/accept\n/cvss CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H\n/cve CVE-2026-1234\n", alice, mon).Incident,
		"/disclose 2026-12-14\n", alice, mon.Add(time.Hour)).Incident
	seen := map[string]bool{}
	for _, inc := range []Incident{triage(), planned, reach(planned, MilestoneDisclosed, d(12, 14, 16, 0)), step(t, planned, "/public\n", alice, mon.Add(2*time.Hour)).Incident,
		step(t, planned, "/track private\n", alice, mon.Add(2*time.Hour)).Incident} {
		for _, r := range Reminders(inc, mon.Add(10*24*time.Hour), nil) {
			if k, ok := ReminderKeyOfTitle(r.Title); !ok || k != r.Key {
				t.Errorf("title %q → %q %v, want %s", r.Title, k, ok, r.Key)
			}
			seen[r.Key] = true
		}
	}
	for _, rule := range TimelineRules() {
		if rule.To != RecipientUnset && !seen[rule.Key] {
			t.Errorf("no title of %s checked", rule.Key)
		}
	}
	if k, ok := ReminderKeyOfTitle("released: Heap overflow"); ok {
		t.Errorf("a non-reminder title maps to %s", k)
	}
}
