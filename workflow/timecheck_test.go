package workflow

import (
	"os"
	"strings"
	"testing"
	"time"
)

// timelineCase is one hand-made timeline and the rule it breaks ("" for
// none).
type timelineCase struct {
	name string
	evs  []TimelineEvent
	want string // the rule broken, "" for none
}

// timelineCases builds the table of TestCheckTimeline: each invariant on a
// timeline that keeps it and one that breaks it.
func timelineCases() []timelineCase {
	opened := d(11, 23, 9, 0) // Monday
	report := Incident{ID: "SEC-2026-0001", Phase: PhaseTriage, Opened: opened, Updated: opened, Commander: "alice@ex.org"}
	fixing := report
	fixing.Phase, fixing.AcceptedAt, fixing.TriagedAt, fixing.FixLead = PhaseFix, opened, opened, "bob@ex.org"
	fixing.History = []Change{{At: opened, Command: "/accept"}}
	fixed := fixing
	fixed.FixedAt = opened.Add(time.Hour)
	T := d(12, 10, 16, 0) // Thursday
	scheduled := fixed
	scheduled.T, scheduled.CVEs = T, []string{"CVE-2026-1234"}
	scheduled.History = append(fixed.History, Change{At: opened.Add(time.Hour), Command: "/disclose 2026-12-10"})
	notified := scheduled
	notified.Phase, notified.NotifiedAt, notified.NotifiedT = PhaseEmbargo, opened.Add(2*time.Hour), T
	approved := notified
	approved.Approved, approved.ApprovedAt = true, opened.Add(3*time.Hour)

	st := func(at time.Time, inc Incident, hist ...string) TimelineEvent {
		for _, h := range hist {
			inc.History = append(append([]Change(nil), inc.History...), Change{At: at, Command: "(tick)", What: h})
		}
		return TimelineEvent{At: at, Kind: EventState, Incident: inc.ID, State: &inc}
	}
	msg := func(at time.Time, m MessageKind, to, key string) TimelineEvent {
		return TimelineEvent{At: at, Kind: EventMessage, Incident: "SEC-2026-0001", Message: m, To: to, Key: key}
	}
	tick := func(at time.Time) TimelineEvent { return TimelineEvent{At: at, Kind: EventTick} }
	triageAt := d(11, 24, 9, 0)
	return []timelineCase{
		{"triage on time", []TimelineEvent{st(opened, report), tick(triageAt.Add(-time.Minute)),
			msg(triageAt, MessageReminder, ToCommander, "triage"), st(triageAt, report, "reminder triage"), tick(triageAt)}, ""},
		{"triage a minute early", []TimelineEvent{st(opened, report),
			msg(triageAt.Add(-time.Minute), MessageReminder, ToCommander, "triage"), st(triageAt.Add(-time.Minute), report, "reminder triage")}, "reminder-early"},
		{"triage twice", []TimelineEvent{st(opened, report),
			msg(triageAt, MessageReminder, ToCommander, "triage"), st(triageAt, report, "reminder triage"),
			msg(triageAt.Add(time.Hour), MessageReminder, ToCommander, "triage"), st(triageAt.Add(time.Hour), report, "reminder triage")}, "reminder-once"},
		{"triage lost", []TimelineEvent{st(opened, report), tick(triageAt)}, "reminder-lost"},
		{"triage late after downtime, fine", []TimelineEvent{st(opened, report), {At: triageAt.Add(-time.Hour), Kind: EventDown},
			{At: triageAt.Add(time.Hour), Kind: EventUp}, msg(triageAt.Add(time.Hour), MessageReminder, ToCommander, "triage"),
			st(triageAt.Add(time.Hour), report, "reminder triage"), tick(triageAt.Add(time.Hour))}, ""},
		{"triage to the Fix Lead", []TimelineEvent{st(opened, report),
			msg(triageAt, MessageReminder, ToFixLead, "triage"), st(triageAt, report, "reminder triage")}, "reminder-recipient"},
		{"triage after its escalation", []TimelineEvent{st(opened, report),
			msg(d(11, 26, 9, 0), MessageReminder, ToSRC, "triage-escalation"), st(d(11, 26, 9, 0), report, "reminder triage-escalation"),
			msg(d(11, 26, 10, 0), MessageReminder, ToCommander, "triage"), st(d(11, 26, 10, 0), report, "reminder triage")}, "reminder-moot"},
		{"fix team, when the fix is ready", []TimelineEvent{st(opened, fixed),
			msg(d(11, 24, 9, 0), MessageReminder, ToFixLead, "fix-team"), st(d(11, 24, 9, 0), fixed, "reminder fix-team")}, "reminder-moot"},
		{"reminder without history", []TimelineEvent{st(opened, fixing),
			msg(d(11, 24, 9, 0), MessageReminder, ToFixLead, "fix-team"), st(d(11, 24, 9, 0), fixing, "reminder to bob")}, "history"},
		{"digest lists a moot deadline", []TimelineEvent{st(opened, fixed),
			{At: d(11, 30, 0, 0), Kind: EventMessage, Message: MessageDigest, To: ToSRC, Lines: []string{"SEC-2026-0001 fix-team  OVERDUE since …"}}}, "digest-moot"},
		{"digest lists an open deadline", []TimelineEvent{st(opened, fixing),
			{At: d(11, 30, 0, 0), Kind: EventMessage, Message: MessageDigest, To: ToSRC, Lines: []string{"SEC-2026-0001 fix-team  OVERDUE since …"}}}, ""},
		{"T on a Friday", []TimelineEvent{st(opened, fixed), st(opened.Add(time.Hour), withT(scheduled, d(12, 11, 16, 0)))}, "t-slot"},
		{"T in the past", []TimelineEvent{st(opened, fixed), st(d(12, 11, 9, 0), scheduled)}, "t-slot"},
		{"notice 3 days before T", []TimelineEvent{st(opened, notified), st(d(12, 7, 16, 0), withNotice(notified, d(12, 7, 16, 0)))}, "notice-7-days"},
		{"notice 3 days before T, emergency", []TimelineEvent{st(opened, emergency(withNotice(notified, d(12, 7, 16, 0))))}, ""},
		{"final notice at T-26 h", []TimelineEvent{st(opened, notified),
			msg(T.Add(-26*time.Hour), MessageFinalNotice, ToDistributors, ""), st(T.Add(-26*time.Hour), notified, "final notice")}, "final-notice-window"},
		{"final notice at T-24 h 30", []TimelineEvent{st(opened, notified),
			msg(T.Add(-24*time.Hour-30*time.Minute), MessageFinalNotice, ToDistributors, ""), st(T.Add(-24*time.Hour-30*time.Minute), notified, "final notice")}, ""},
		{"released a minute early", []TimelineEvent{st(opened, notified),
			msg(T.Add(-time.Minute), MessageRelease, ToPublic, ""), st(T.Add(-time.Minute), disclosed(notified, T.Add(-time.Minute)), "released")}, "public-before-t"},
		{"one release, two channels", []TimelineEvent{st(opened, approved), tick(T.Add(-time.Minute)),
			msg(T, MessageRelease, ToPublic, ""), msg(T, MessageRelease, ToPublic, ""), st(T, disclosed(approved, T), "released"), tick(T)}, ""},
		{"released twice", []TimelineEvent{st(opened, notified),
			msg(T, MessageRelease, ToPublic, ""), st(T, disclosed(notified, T), "released"),
			msg(T.Add(time.Hour), MessageRelease, ToPublic, ""), st(T.Add(time.Hour), disclosed(notified, T), "released")}, "public-before-t"},
		{"released at the tick after T", []TimelineEvent{st(opened, approved), tick(T.Add(-time.Minute)),
			msg(T.Add(time.Minute), MessageRelease, ToPublic, ""), st(T.Add(time.Minute), disclosed(approved, T.Add(time.Minute)), "released"), tick(T.Add(time.Minute))}, ""},
		{"released a tick late", []TimelineEvent{st(opened, approved), tick(T),
			msg(T.Add(time.Minute), MessageRelease, ToPublic, ""), st(T.Add(time.Minute), disclosed(approved, T.Add(time.Minute)), "released")}, "release-late"},
		{"a second final notice after a new notice", []TimelineEvent{st(opened, notified),
			msg(T.Add(-25*time.Hour), MessageFinalNotice, ToDistributors, ""), st(T.Add(-25*time.Hour), notified, "final notice"),
			msg(T.Add(-24*time.Hour-30*time.Minute), MessageNotice, ToDistributors, ""),
			msg(T.Add(-24*time.Hour-30*time.Minute), MessageFinalNotice, ToDistributors, ""), st(T.Add(-24*time.Hour-30*time.Minute), notified, "final notice")}, ""},
		{"a second final notice", []TimelineEvent{st(opened, notified),
			msg(T.Add(-25*time.Hour), MessageFinalNotice, ToDistributors, ""), st(T.Add(-25*time.Hour), notified, "final notice"),
			msg(T.Add(-24*time.Hour-30*time.Minute), MessageFinalNotice, ToDistributors, ""), st(T.Add(-24*time.Hour-30*time.Minute), notified, "final notice")}, "final-notice-window"},
		{"/disclose now two days after the notice", []TimelineEvent{st(opened, notified),
			msg(d(11, 25, 9, 0), MessageRelease, ToPublic, ""), st(d(11, 25, 9, 0), disclosedNow2(notified, d(11, 25, 9, 0)))}, ""},
		// ExemptDiscloseNow: the explicit override may release 0 s after the
		// notice, off the slots; the scheduler may not.
		{"/disclose now 0 s after the notice", []TimelineEvent{st(opened, notified),
			msg(notified.NotifiedAt, MessageRelease, ToPublic, ""), st(notified.NotifiedAt, disclosedNow2(notified, notified.NotifiedAt))}, ""},
		{"a scheduled release 0 s after the notice", []TimelineEvent{st(opened, notified),
			msg(notified.NotifiedAt, MessageRelease, ToPublic, ""), st(notified.NotifiedAt, disclosed(withT(notified, notified.NotifiedAt), notified.NotifiedAt), "released")}, "notice-7-days"},
		{"two notices from one message", []TimelineEvent{st(opened, notified),
			msg(d(11, 24, 9, 0), MessageNotice, ToDistributors, ""), msg(d(11, 24, 9, 0), MessageNotice, ToDistributors, ""),
			st(d(11, 24, 9, 0), notified, "/disclose")}, "notice-once"},
		{"two notices from two messages at one instant", []TimelineEvent{st(opened, notified),
			msg(d(11, 24, 9, 0), MessageNotice, ToDistributors, ""), st(d(11, 24, 9, 0), notified, "/disclose"),
			msg(d(11, 24, 9, 0), MessageNotice, ToDistributors, ""), st(d(11, 24, 9, 0), notified, "/notify")}, ""},
	}
}

// TestCheckTimeline: each invariant, on a small hand-made timeline that keeps
// it and one that breaks it, as a drill's timeline would be mapped.
func TestCheckTimeline(t *testing.T) {
	tests := timelineCases()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vs := CheckTimeline(tt.evs, nil)
			var rules []string
			for _, v := range vs {
				rules = append(rules, v.Rule)
			}
			got := strings.Join(rules, " ")
			if tt.want == "" && got != "" || tt.want != "" && !strings.Contains(" "+got+" ", " "+tt.want+" ") {
				t.Errorf("violations %v, want %q", vs, tt.want)
			}
		})
	}
	// The exemption is stated, and only for the rules that make it.
	for _, in := range Invariants() {
		if exempt := strings.Contains(in.Exempt, ExemptDiscloseNow); exempt != (in.Name == "notice-7-days" || in.Name == "t-slot" || in.Name == "release-late") {
			t.Errorf("%s: exempt %q", in.Name, in.Exempt)
		}
	}
	// Every rule named in a violation is one of Invariants.
	names := map[string]bool{}
	for _, in := range Invariants() {
		names[in.Name] = true
	}
	for _, tt := range tests {
		if tt.want != "" && !names[tt.want] {
			t.Errorf("%s: %s is not an invariant", tt.name, tt.want)
		}
	}
}

func withT(inc Incident, t time.Time) Incident { inc.T = t; return inc }

func withNotice(inc Incident, at time.Time) Incident { inc.NotifiedAt = at; return inc }

func emergency(inc Incident) Incident { inc.Emergency = true; return inc }

func disclosed(inc Incident, at time.Time) Incident {
	inc.Phase, inc.DisclosedAt = PhaseDisclosed, at
	return inc
}

// disclosedNow2 is what /disclose now stores: T the moment of the release.
func disclosedNow2(inc Incident, at time.Time) Incident {
	inc.Phase, inc.DisclosedAt, inc.T = PhaseDisclosed, at, at
	inc.History = append(append([]Change(nil), inc.History...), Change{At: at, Command: "/disclose now", What: "advisory released"})
	return inc
}

// TestReadmeInvariants: the README's table of --check rules ("Drills") names
// every invariant, in order, with the /disclose now exemption where it
// applies.
func TestReadmeInvariants(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, _ := strings.Cut(string(b), "| rule | holds | exempt |\n|---|---|---|\n")
	table, _, _ = strings.Cut(table, "\n\n")
	rows := strings.Split(table, "\n")
	ins := Invariants()
	if len(rows) != len(ins) {
		t.Fatalf("README: %d rows in the table of rules, want %d", len(rows), len(ins))
	}
	for i, in := range ins {
		cells := strings.Split(rows[i], " | ")
		if len(cells) != 3 || cells[0] != "| `"+in.Name+"`" {
			t.Errorf("README row %d: %q, want the rule %s", i+1, rows[i], in.Name)
			continue
		}
		if exempt := strings.Contains(cells[2], "/disclose now"); exempt != (in.Exempt != "") {
			t.Errorf("README row %s: exempt %q, want %q", in.Name, cells[2], in.Exempt)
		}
	}
}
