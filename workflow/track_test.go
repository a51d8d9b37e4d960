package workflow

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// onTrack is fix (High, a fix team, no CVE) put on track tr at mon.
func onTrack(t *testing.T, tr string) Incident {
	return step(t, fix(t), "/track "+tr+"\n", alice, mon).Incident
}

// TestTrackCommand: the SRC puts an incident on a track in triage, fix or
// embargo; it is recorded with the signer, may be changed, and is refused
// to others, in other phases and for unknown tracks.
func TestTrackCommand(t *testing.T) {
	for _, tt := range []struct {
		name string
		inc  func(*testing.T) Incident
		text string
		by   Signer
		err  error
		says string // in the result, or the refusal
	}{
		{name: "triage", inc: func(*testing.T) Incident { return triage() }, text: "/track private\n", by: alice, says: "track private: pre-announce with /preannounce 3–7 days before T"},
		{name: "fix, upper case", inc: fix, text: "/track URGENT\n", by: bob, says: "track urgent: released as soon as ready, without pre-announcement; no 7-day notice rule"},
		{name: "embargo", inc: notified, text: "/track private\n", by: alice,
			says: "track private: pre-announce with /preannounce 3–7 days before T, between 2026-11-26 16:00 UTC (Thursday) and 2026-11-30 16:00 UTC (Monday)"},
		{name: "public", inc: fix, text: "/track public\n", by: alice, says: "track public: no embargo, no distributor notice, no pre-announcement; the advisory is published at T"},
		{name: "changed", inc: func(t *testing.T) Incident { return onTrack(t, "private") }, text: "/track urgent\n", by: bob, says: "track urgent (was private)"},
		{name: "associate", inc: func(t *testing.T) Incident { return step(t, fix(t), "/severity low\n", alice, mon).Incident }, text: "/track public\n", by: carol, err: ErrNotAllowed, says: "you may not run /track on this incident (who may: SRC)"},
		{name: "fix team", inc: fix, text: "/track public\n", by: eng, err: ErrNotAllowed},
		{name: "disclosed", inc: func(t *testing.T) Incident {
			return step(t, step(t, ready(t), "/approve\n", alice, mon).Incident, "/disclose now\n", alice, mon).Incident
		}, text: "/track private\n", by: alice, err: ErrPhase, says: "the incident is in phase disclosed; /track works in triage, fix or embargo"},
		{name: "unknown track", inc: fix, text: "/track secret\n", by: alice, err: ErrSyntax, says: `"secret": the tracks are public, private and urgent (docs/process.md §9)`},
		{name: "no track", inc: fix, text: "/track\n", by: alice, err: ErrSyntax, says: "give exactly one track: public, private or urgent"},
		{name: "unset is no track", inc: fix, text: "/track unset\n", by: alice, err: ErrSyntax},
	} {
		t.Run(tt.name, func(t *testing.T) {
			inc := tt.inc(t)
			r, err := Apply(inc, tt.text, at(tt.by, mon), mon, env)
			if tt.err != nil {
				if !errors.Is(err, tt.err) || !strings.Contains(r.Receipt.Refused, tt.says) {
					t.Fatalf("error %v, refused %q; want %v saying %q", err, r.Receipt.Refused, tt.err, tt.says)
				}
				assertNothing(t, inc, r)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want, _ := ParseTrack(strings.Fields(tt.text)[1])
			h := r.Incident.History[len(r.Incident.History)-1]
			if r.Incident.Track != want || r.Incident.Version != SchemaVersion || h.Command != "/track "+want.String() ||
				h.Fingerprint != tt.by.Fingerprint || h.Email != tt.by.Email || !strings.Contains(h.What, tt.says) {
				t.Errorf("track %v, version %d, history %+v; want %v by %s saying %q", r.Incident.Track, r.Incident.Version, h, want, tt.by.Email, tt.says)
			}
		})
	}
	// The same track again changes nothing and records nothing.
	inc := onTrack(t, "private")
	r := step(t, inc, "/track private\n", bob, mon)
	if len(r.Incident.History) != len(inc.History) || r.Receipt.Lines[0].Result != "already on the private track" {
		t.Errorf("again: %q, %d history entries (had %d)", r.Receipt.Lines[0].Result, len(r.Incident.History), len(inc.History))
	}
}

// TestTrackRefusals: the commands a track rules out are refused with a
// receipt that says why and how to change track, and change nothing.
func TestTrackRefusals(t *testing.T) {
	withT := func(tr string) func(*testing.T) Incident {
		return func(t *testing.T) Incident {
			return step(t, ready(t), "/track "+tr+"\n", alice, mon).Incident
		}
	}
	for _, tt := range []struct {
		name, track, text, refused string
		inc                        func(*testing.T) Incident
	}{
		{name: "public: notify", inc: withT("public"), text: "/notify\n", refused: "line 1: /notify: the incident is on the public track (fixed in public, no embargo, docs/process.md §9): " +
			"there is no embargoed notice; the distributors get the advisory at T with everyone. To notify them under embargo, change track first with /track private (or /track urgent)"},
		{name: "public: preannounce", inc: withT("public"), text: "/preannounce\n", refused: "line 1: /preannounce: the incident is on the public track (fixed in public, no embargo, docs/process.md §9): " +
			"nothing is pre-announced, the advisory is published at T. To pre-announce, change track first with /track private"},
		{name: "urgent: preannounce", inc: withT("urgent"), text: "/preannounce nosev\n", refused: "line 1: /preannounce: the incident is on the urgent track (docs/process.md §9): " +
			"it is released as soon as ready, without pre-announcement. To pre-announce, change track first with /track private"},
		{name: "public after the notice", inc: notified, text: "/track public\n", refused: "line 1: /track: the distributors were notified under embargo 2026-11-23 09:00 UTC (Monday): " +
			"the public track has no embargo. Keep the private or urgent track, or end the embargo with /disclose now"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			inc := tt.inc(t)
			r, err := Apply(inc, tt.text, at(alice, mon.Add(time.Hour)), mon.Add(time.Hour), annEnv())
			if !errors.Is(err, ErrTrack) || r.Receipt.Refused != tt.refused {
				t.Fatalf("error %v, refused\n%q\nwant\n%q", err, r.Receipt.Refused, tt.refused)
			}
			assertNothing(t, inc, r)
		})
	}
	// The private track allows both, and so does no track (the control).
	for _, tr := range []string{"", "private"} {
		inc := ready(t)
		if tr != "" {
			inc = withT(tr)(t)
		}
		if _, err := preStep(t, inc, "/notify\n/preannounce\n", alice, mon.Add(time.Hour)); err != nil {
			t.Errorf("track %q: /notify and /preannounce: %v", tr, err)
		}
	}
}

// TestTrackSevenDayRule: the urgent track lifts the 7-day rule for every
// T, as emergency does for one (without setting the emergency flag); the
// public track has no notice to count from; the private track keeps it,
// and leaving urgent for private with a T too near is refused until T
// moves.
func TestTrackSevenDayRule(t *testing.T) {
	withCVE := func(t *testing.T, tr string) Incident {
		inc := step(t, fix(t), "/cve CVE-2026-1234\n/fixed\n", alice, mon).Incident
		if tr != "" {
			inc = step(t, inc, "/track "+tr+"\n", alice, mon).Incident
		}
		return inc
	}
	for _, tt := range []struct {
		track string
		err   error
	}{{"", ErrNoticeRule}, {"private", ErrNoticeRule}, {"urgent", nil}, {"public", nil}} {
		r, err := Apply(withCVE(t, tt.track), "/disclose 2026-11-26\n", at(alice, mon), mon, env)
		if !errors.Is(err, tt.err) || (err == nil && r.Incident.Emergency) {
			t.Errorf("track %q: /disclose 3 days ahead with a CVE: %v (emergency %v), want %v", tt.track, err, r.Incident.Emergency, tt.err)
		}
	}
	urgent := step(t, withCVE(t, "urgent"), "/disclose 2026-11-26\n", alice, mon).Incident
	if r, err := Apply(urgent, "/notify\n", at(alice, mon), mon, env); err != nil || r.Incident.NotifiedAt.IsZero() {
		t.Errorf("urgent: /notify 3 days before T: %v", err)
	}
	if r, err := Apply(urgent, "/cve CVE-2026-1235\n", at(alice, mon), mon, env); err != nil || r.Incident.CVEs[0] != "CVE-2026-1235" {
		t.Errorf("urgent: /cve 3 days before T: %v", err)
	}
	r, err := Apply(urgent, "/track private\n", at(alice, mon), mon, env)
	if !errors.Is(err, ErrNoticeRule) || !strings.HasSuffix(r.Receipt.Refused, "or mark the incident /public; then send /track private again") ||
		!strings.Contains(r.Receipt.Refused, "the earliest slot is 2026-11-30 16:00 UTC (Monday)") {
		t.Errorf("urgent → private with T 3 days ahead: %v, %q", err, r.Receipt.Refused)
	}
	assertNothing(t, urgent, r)
	if r, err := Apply(urgent, "/track private\n/disclose 2026-11-30\n", at(alice, mon.Add(7*time.Hour)), mon.Add(7*time.Hour), env); err != nil || r.Incident.Track != TrackPrivate {
		t.Errorf("urgent → private with T moved in the same message: %v", err)
	}
}

// trackTicks ticks inc every 10 minutes from from to to, applying the
// messages of events at their instants, and returns the pre-announcement
// reminders ("key at instant") and the incident.
func trackTicks(t *testing.T, inc Incident, from, to time.Time, events map[time.Time]string) ([]string, Incident) {
	t.Helper()
	var got []string
	for now := from; now.Before(to); now = now.Add(10 * time.Minute) {
		if text, ok := events[now]; ok {
			r, err := preStep(t, inc, text, alice, now)
			if err != nil {
				t.Fatalf("%q at %s: %v", text, FormatInstant(now), err)
			}
			inc = r.Incident
		}
		r := Tick(inc, now, env)
		for _, a := range r.Actions {
			if al, ok := a.(AlertSRC); ok && al.Fields["deadline"] == "preannounce" {
				got = append(got, al.Fields["key"]+" "+now.Format("01-02 15:04"))
			}
		}
		// What a restart reads: the stored record.
		b, err := json.Marshal(r.Incident)
		if err != nil {
			t.Fatal(err)
		}
		inc = Incident{}
		if err := json.Unmarshal(b, &inc); err != nil {
			t.Fatal(err)
		}
		if again := Tick(inc, now, env); again.Applied {
			t.Fatalf("a second tick at %s applied %v", FormatInstant(now), tickNames(again.Actions))
		}
	}
	return got, inc
}

// TestTrackPrivateReminders: on the private track the SRC is reminded at
// T-7 d and T-3 d while no pre-announcement of the current T exists, once
// each, on the minute; a pre-announcement stops them; a new T re-arms them;
// an incident without a track (or on another) gets none.
func TestTrackPrivateReminders(t *testing.T) {
	// fix at mon with T = Thursday 2026-12-10 16:00: T-7 d is Thursday
	// 12-03 16:00, T-3 d Monday 12-07 16:00.
	planned := func(tr string) Incident {
		inc := step(t, fix(t), "/disclose 2026-12-10\n", alice, mon).Incident
		if tr != "" {
			inc = step(t, inc, "/track "+tr+"\n", alice, mon).Incident
		}
		return inc
	}
	end := d(12, 10, 16, 0)
	for _, tt := range []struct {
		name   string
		inc    Incident
		events map[time.Time]string
		want   []string
	}{
		{"private, never pre-announced", planned("private"), nil, []string{"preannounce-soon 12-03 16:00", "preannounce 12-07 16:00"}},
		{"pre-announced between", planned("private"), map[time.Time]string{d(12, 4, 10, 0): "/preannounce\n"}, []string{"preannounce-soon 12-03 16:00"}},
		{"pre-announced before T-7 d", planned("private"), map[time.Time]string{d(11, 25, 10, 0): "/preannounce\n"}, nil},
		{"a new T re-arms them", planned("private"), map[time.Time]string{d(11, 25, 10, 0): "/preannounce\n", d(12, 4, 10, 0): "/disclose 2026-12-17\n"},
			[]string{"preannounce-soon 12-10 16:00", "preannounce 12-14 16:00"}},
		{"T moved after the first reminder", planned("private"), map[time.Time]string{d(12, 3, 17, 0): "/disclose 2026-12-17\n"},
			[]string{"preannounce-soon 12-03 16:00", "preannounce-soon 12-10 16:00", "preannounce 12-14 16:00"}},
		{"T set inside the window: only T-3 d", planned("private"), map[time.Time]string{d(12, 14, 10, 0): "/disclose 2026-12-17\n"},
			[]string{"preannounce-soon 12-03 16:00", "preannounce 12-07 16:00", "preannounce 12-14 16:00"}},
		{"no track", planned(""), nil, nil},
		{"urgent", planned("urgent"), nil, nil},
		{"public", planned("public"), nil, nil},
		{"track set later", planned(""), map[time.Time]string{d(12, 1, 9, 0): "/track private\n"}, []string{"preannounce-soon 12-03 16:00", "preannounce 12-07 16:00"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			to := end
			if strings.Contains(tt.name, "T") && tt.events != nil {
				to = d(12, 17, 16, 0)
			}
			got, _ := trackTicks(t, tt.inc, mon, to, tt.events)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("reminders %v, want %v", got, tt.want)
			}
		})
	}
	// The reminder says what to do and why, and goes to the whole SRC.
	rs := Tick(planned("private"), d(12, 3, 16, 0), env)
	var f map[string]string
	for _, a := range rs.Actions {
		if al, ok := a.(AlertSRC); ok && al.Template == "reminder" && al.Fields["key"] == "preannounce-soon" {
			f = al.Fields
		}
	}
	if f == nil || f["title"] != "pre-announcement due (T-7 days)" || f["due"] != "2026-12-07 16:00 UTC (Monday)" ||
		f["what"] != "no public pre-announcement of the release at T = 2026-12-10 16:00 UTC (Thursday) yet; the incident is on the private track, "+
			"and Go pre-announces 3–7 days ahead (docs/process.md §9): send /preannounce (or /preannounce nosev) in its thread by 2026-12-07 16:00 UTC (Monday)" {
		t.Errorf("reminder fields %v (actions %v)", f, tickNames(rs.Actions))
	}
	// The scheduler's index files the incident no later than the reminder.
	if n := NextTick(planned("private"), env); n.IsZero() || n.After(d(12, 3, 16, 0)) {
		t.Errorf("NextTick %s: after the T-7 d reminder", FormatInstant(n))
	}
	if n := NextTick(rs.Incident, env); n.IsZero() || n.After(d(12, 7, 16, 0)) {
		t.Errorf("NextTick after the T-7 d reminder: %s, after the T-3 d one", FormatInstant(n))
	}
}

// TestTrackPublicRelease: on the public track no distributor-notice
// reminder is sent (the control: without a track they are), and the
// release at T still publishes the advisory.
func TestTrackPublicRelease(t *testing.T) {
	for _, tr := range []string{"", "public"} {
		inc := ready(t) // a CVE, T = 2026-12-03 16:00
		if tr != "" {
			inc = step(t, inc, "/track public\n", alice, mon).Incident
		}
		inc = step(t, inc, "/approve\n", alice, mon).Incident
		var notice, release int
		for now := mon; !now.After(d(12, 3, 16, 0)); now = now.Add(10 * time.Minute) {
			r := Tick(inc, now, env)
			for _, a := range r.Actions {
				switch a := a.(type) {
				case Remind:
					notice += boolInt(a.Fields["deadline"] == "notice")
				case AlertSRC:
					notice += boolInt(a.Fields["deadline"] == "notice")
				case Release:
					release++
				}
			}
			inc = r.Incident
		}
		if want := boolInt(tr == ""); notice < want || (tr != "" && notice != 0) || release != 1 || inc.Phase != PhaseDisclosed {
			t.Errorf("track %q: %d notice reminders, %d releases, phase %s", tr, notice, release, inc.Phase)
		}
	}
	pub := step(t, ready(t), "/track public\n", alice, mon).Incident
	for _, dl := range Deadlines(pub, nil) {
		if dl.Name == "notice" || dl.Name == "preannounce" {
			t.Errorf("public track lists deadline %s", dl.Name)
		}
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestTrackStatusAndDigest: /status and the weekly digest show the track
// and whether the pre-announcement is due, overdue or done; nothing for
// an incident without a track.
func TestTrackStatusAndDigest(t *testing.T) {
	inc := step(t, fix(t), "/track private\n", alice, mon).Incident
	status := func(inc Incident, now time.Time) string { return statusText(inc, now, env) }
	if s := status(inc, mon); !strings.Contains(s, "track:           private: pre-announcement due 3–7 days before T (T not set)\n") {
		t.Errorf("no T:\n%s", s)
	}
	r := step(t, inc, "/disclose 2026-12-10\n", alice, mon)
	if res := r.Receipt.Lines[0].Result; !strings.Contains(res, "; private track: pre-announce with /preannounce between 2026-12-03 16:00 UTC (Thursday) and 2026-12-07 16:00 UTC (Monday); reporter told") {
		t.Errorf("/disclose receipt %q", res)
	}
	inc = r.Incident
	if s := status(inc, mon); !strings.Contains(s, "track:           private: pre-announcement due 2026-12-03 16:00 UTC (Thursday) … 2026-12-07 16:00 UTC (Monday)\n") ||
		!strings.Contains(s, "  preannounce        due 2026-12-07 16:00 UTC (Monday)\n") {
		t.Errorf("due:\n%s", s)
	}
	if s := status(inc, d(12, 8, 9, 0)); !strings.Contains(s, "track:           private: pre-announcement OVERDUE since 2026-12-07 16:00 UTC (Monday)\n") {
		t.Errorf("overdue:\n%s", s)
	}
	dg := WeeklyDigest([]Incident{inc}, d(12, 7, 0, 0), env)
	if len(dg.Incidents) != 1 || !strings.HasSuffix(dg.Incidents[0], "  track private: pre-announcement due 2026-12-03 16:00 UTC (Thursday) … 2026-12-07 16:00 UTC (Monday)") ||
		!containsLine(dg.Deadlines, "SEC-2026-0001 preannounce  due 2026-12-07 16:00 UTC (Monday): public pre-announcement of T (private track: 3–7 days before T, docs/process.md §9)") {
		t.Errorf("digest %q %q", dg.Incidents, dg.Deadlines)
	}
	done, err := preStep(t, inc, "/preannounce\n", alice, d(12, 4, 9, 0))
	if err != nil {
		t.Fatal(err)
	}
	if s := status(done.Incident, d(12, 4, 10, 0)); !strings.Contains(s, "track:           private: pre-announcement done 2026-12-04 09:00 UTC (Friday)\n") ||
		!strings.Contains(s, "  preannounce        done 2026-12-04 09:00 UTC (Friday)\n") {
		t.Errorf("done:\n%s", s)
	}
	dg = WeeklyDigest([]Incident{done.Incident}, d(12, 7, 0, 0), env)
	if !strings.HasSuffix(dg.Incidents[0], "  track private: pre-announcement done 2026-12-04 09:00 UTC (Friday)") || containsLine(dg.Deadlines, "preannounce") {
		t.Errorf("digest once done %q %q", dg.Incidents, dg.Deadlines)
	}
	// Without a track: no track line, no pre-announcement deadline.
	plain := step(t, fix(t), "/disclose 2026-12-10\n", alice, mon).Incident
	if s := status(plain, mon); strings.Contains(s, "track") || strings.Contains(s, "preannounce") {
		t.Errorf("no track:\n%s", s)
	}
	if dg := WeeklyDigest([]Incident{plain}, d(12, 7, 0, 0), env); strings.Contains(dg.Incidents[0], "track") {
		t.Errorf("no track, digest %q", dg.Incidents)
	}
	for tr, want := range map[string]string{"urgent": "urgent (no pre-announcement, no 7-day rule)", "public": "public (no embargo, no notice, no pre-announcement)"} {
		if s := status(step(t, plain, "/track "+tr+"\n", alice, mon).Incident, mon); !strings.Contains(s, "track:           "+want+"\n") {
			t.Errorf("%s:\n%s", tr, s)
		}
	}
}

func containsLine(lines []string, s string) bool {
	for _, l := range lines {
		if strings.Contains(l, s) {
			return true
		}
	}
	return false
}

// TestTrackSchema: a version 5 record (no track) reads unchanged and
// behaves as before; Apply writes version 6 with the track by name; an
// unknown track name does not read.
func TestTrackSchema(t *testing.T) {
	v5 := `{"v":5,"id":"SEC-2026-0001","phase":"fix","opened":"2026-11-23T08:00:00Z","updated":"2026-11-23T08:00:00Z","reporter":"rep@out.test","fix_lead":"alice@ex.org","messages":1,"accepted_at":"2026-11-23T08:00:00Z","t":"2026-12-10T16:00:00Z"}`
	var inc Incident
	if err := json.Unmarshal([]byte(v5), &inc); err != nil {
		t.Fatal(err)
	}
	if b, _ := json.Marshal(inc); string(b) != v5 || inc.Track != TrackUnset {
		t.Errorf("version 5 record re-encodes as\n%s\nwant\n%s", b, v5)
	}
	for _, r := range Reminders(inc, mon, nil) {
		if r.Deadline == "preannounce" {
			t.Errorf("a version 5 record has reminder %s", r.Key)
		}
	}
	r := step(t, inc, "/track urgent\n", alice, mon)
	b, _ := json.Marshal(r.Incident)
	if r.Incident.Version != 6 || SchemaVersion != 6 || !strings.Contains(string(b), `"track":"urgent"`) || !strings.HasPrefix(string(b), `{"v":6,`) {
		t.Errorf("after /track: %s", b)
	}
	var back Incident
	if err := json.Unmarshal(b, &back); err != nil || back.Track != TrackUrgent {
		t.Errorf("read back: %v %v", back.Track, err)
	}
	if err := json.Unmarshal([]byte(`{"v":6,"id":"SEC-2026-0001","track":"secret"}`), &back); err == nil {
		t.Errorf("an unknown track reads")
	}
}
