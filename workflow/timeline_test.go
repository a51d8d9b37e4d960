package workflow

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

// The timeline tests run on an injected clock: Tick takes now, so a week is
// 10,080 calls and no sleep.

func d(mo time.Month, day, h, m int) time.Time { return time.Date(2026, mo, day, h, m, 0, 0, time.UTC) }

// firings ticks inc every minute from from (inclusive) to to (exclusive),
// applying the events at their minute first, and lists what each tick sent
// as "time what".
func firings(t *testing.T, inc Incident, from, to time.Time, e Env, events map[time.Time]func(Incident) Incident) (Incident, []string) {
	t.Helper()
	var out []string
	for now := from; now.Before(to); now = now.Add(time.Minute) {
		if ev := events[now]; ev != nil {
			inc = ev(inc)
		}
		r := Tick(inc, now, e)
		for _, a := range tickNames(r.Actions) {
			out = append(out, now.Format("Mon 01-02 15:04")+" "+a)
		}
		if r.Applied != (len(r.Actions) > 0 || len(r.Incident.History) > len(inc.History)) {
			t.Fatalf("tick at %v: Applied %v with %d actions", now, r.Applied, len(r.Actions))
		}
		inc = r.Incident
	}
	return inc, out
}

// TestRemindersEachOnceAtItsInstant: every reminder of the timeline fires at
// its instant, to the right person, not a minute early and never again.
func TestRemindersEachOnceAtItsInstant(t *testing.T) {
	e := env
	e.Rotation = Rotation{Members: []string{"alice@ex.org", "bob@ex.org"}}
	withCommander := triage()
	withCommander.Commander = "dave@ex.org"
	lowDeferred := step(t, fix(t), "/severity low\n/defer\n", alice, mon).Incident
	critical := step(t, fix(t), "/cvss CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H\n", alice, mon).Incident
	// T set 12 days ahead, not notified, not approved.
	planned := step(t, fix(t), "/cve CVE-2026-1234\n/disclose 2026-12-07\n", alice, mon).Incident
	tests := []struct {
		name string
		inc  Incident
		at   time.Time
		want string
	}{
		// Opened Monday 08:00: one working day is Tuesday 08:00.
		{"triage to the commander", withCommander, d(11, 24, 8, 0), "remind:dave@ex.org:triage"},
		{"triage to the on-call", triage(), d(11, 24, 8, 0), "remind:alice@ex.org:triage"}, // week of 2026-11-23: alice (rotation index from 1970-01-05)
		{"triage escalation after 3 working days", triage(), d(11, 26, 8, 0), "alert:reminder:triage-escalation"},
		{"fix team 24 h after the report", fix(t), d(11, 24, 8, 0), ""}, // the fixture has a fix team
		{"fix team missing", step(t, triage(), "/accept\n/lead bob@ex.org\n", alice, mon).Incident, d(11, 24, 8, 0), "remind:bob@ex.org:fix-team"},
		{"fix 7 days after the report", fix(t), d(11, 30, 8, 0), "alert:reminder:fix"},
		{"no fix reminder when deferred", lowDeferred, d(11, 30, 8, 0), ""},
		{"stale high after 7 days", fix(t), d(11, 30, 9, 0), "remind:alice@ex.org:stale"},
		{"stale critical after 2 days", critical, d(11, 25, 9, 0), "remind:alice@ex.org:stale"},
		{"stale critical again after 4", critical, d(11, 27, 9, 0), "remind:alice@ex.org:stale"},
		{"deferred low monthly", lowDeferred, d(12, 23, 9, 0), "remind:alice@ex.org:stale"},
		{"notice reminder at T-9 d", planned, d(11, 28, 16, 0), "remind:alice@ex.org:notice"},
		{"notice due at T-7 d", planned, d(11, 30, 16, 0), "alert:reminder:notice"},
		{"approval reminder at T-48 h", planned, d(12, 5, 16, 0), "alert:reminder:approval"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Bring the incident up to a minute before, with every earlier
			// reminder sent, as a running daemon would have.
			inc := tt.inc
			for _, r := range Reminders(inc, tt.at.Add(-time.Minute), nil) {
				if r.At.Before(tt.at) {
					inc = Tick(inc, r.At, e).Incident
				}
			}
			if r := Tick(inc, tt.at.Add(-time.Minute), e); r.Applied {
				t.Fatalf("a minute early: %v", tickNames(r.Actions))
			}
			r := Tick(inc, tt.at, e)
			got := strings.Join(tickNames(r.Actions), " ")
			if got != tt.want {
				t.Fatalf("Tick at %s = %q, want %q", FormatInstant(tt.at), got, tt.want)
			}
			for _, later := range []time.Duration{0, time.Minute, time.Hour} {
				if again := Tick(r.Incident, tt.at.Add(later), e); again.Applied && tt.want != "" {
					for _, a := range tickNames(again.Actions) {
						if a == tt.want {
							t.Fatalf("Tick at %s+%v repeated %s", FormatInstant(tt.at), later, a)
						}
					}
				}
			}
		})
	}
}

// TestTickWeek: a week of virtual time, ticking every minute, with three
// incidents and a holiday on Thursday, produces exactly the reminders and
// releases a careful coordinator would send — listed here, no more, no fewer.
func TestTickWeek(t *testing.T) {
	e := env
	e.Holidays = []time.Time{d(11, 26, 0, 0)} // Thursday: no working day
	e.Rotation = Rotation{Members: []string{"alice@ex.org", "bob@ex.org"}}
	from, to := d(11, 23, 0, 0), d(11, 30, 0, 0)
	ap := func(text string, s Signer, at time.Time) func(Incident) Incident {
		return func(inc Incident) Incident {
			r, err := Apply(inc, text, Signer{Fingerprint: s.Fingerprint, Email: s.Email, Roles: s.Roles, SignedAt: at}, at, e)
			if err != nil {
				t.Fatalf("Apply(%q) at %s: %v", text, FormatInstant(at), err)
			}
			return r.Incident
		}
	}

	// A: reported Monday 09:00 during alice's shift, never triaged.
	a := Incident{Version: SchemaVersion, ID: "SEC-2026-0001", Phase: PhaseTriage, Opened: d(11, 23, 9, 0), Updated: d(11, 23, 9, 0), Reporter: "rep@out.test", Commander: "alice@ex.org"}
	_, got := firings(t, a, from, to, e, nil)
	want := []string{
		"Tue 11-24 09:00 remind:alice@ex.org:triage",
		// Tuesday, Wednesday, (Thursday is a holiday), Friday: 3 working days.
		"Fri 11-27 09:00 alert:reminder:triage-escalation",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("incident A:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// B: reported Friday 18:00 the week before, accepted Monday 10:00 by
	// bob as lead, rated critical; no fix team, no fix, nothing changes after.
	b := Incident{Version: SchemaVersion, ID: "SEC-2026-0002", Phase: PhaseTriage, Opened: d(11, 20, 18, 0), Updated: d(11, 20, 18, 0), Reporter: "rep@out.test", Commander: "bob@ex.org"}
	_, got = firings(t, b, from, to, e, map[time.Time]func(Incident) Incident{
		d(11, 23, 10, 0): ap("/accept\n/lead bob@ex.org\n/cvss CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H\n", bob, d(11, 23, 10, 0)),
	})
	want = []string{
		// Before the acceptance at 10:00 the triage reminder (Monday 18:00)
		// had not fallen due yet; at 10:00 the fix team is a day and a half late.
		"Mon 11-23 10:00 remind:bob@ex.org:fix-team",
		"Wed 11-25 10:00 remind:bob@ex.org:stale", // critical: 2 days without a change
		"Fri 11-27 10:00 remind:bob@ex.org:stale",
		"Fri 11-27 18:00 alert:reminder:fix", // 7 days after the report (calendar days)
		"Sun 11-29 10:00 remind:bob@ex.org:stale",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("incident B:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// C: in embargo, T Wednesday 16:00, notified long ago, approved Monday
	// 12:00: final notice, release, retrospective reminders.
	c := step(t, ready(t), "/notify\n", alice, mon).Incident
	c.ID, c.Opened = "SEC-2026-0003", d(11, 9, 9, 0)
	c.Updated = d(11, 23, 9, 0)
	c.T = d(11, 25, 16, 0) // moved by hand to Wednesday for the week; the distributors were told it
	c.NotifiedT = c.T
	c.NotifiedAt = d(11, 16, 9, 0)
	c.History = nil
	c, got = firings(t, c, from, to, e, map[time.Time]func(Incident) Incident{
		d(11, 23, 12, 0): ap("/approve\n", alice, d(11, 23, 12, 0)),
	})
	want = []string{
		"Tue 11-24 15:00 final-notice", // T-25 h: the final notice window opens
		"Wed 11-25 16:00 release:2026-11-25 16:00 UTC (Wednesday)",
		"Wed 11-25 16:00 reporter:disclosed",
		"Thu 11-26 16:00 remind:alice@ex.org:retrospective", // T+1 d, to the Fix Lead
		"Sat 11-28 16:00 alert:reminder:retrospective",      // T+3 d, to the SRC
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("incident C:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if c.Phase != PhaseDisclosed || !c.DisclosedAt.Equal(d(11, 25, 16, 0)) {
		t.Errorf("C: phase %v disclosed %v", c.Phase, c.DisclosedAt)
	}
}

// TestTickAfterDowntime: reminders that fell due while nothing ticked fire
// once, late; of two about one deadline only the latest goes out.
func TestTickAfterDowntime(t *testing.T) {
	inc := triage() // opened Monday 08:00
	r := Tick(inc, d(11, 27, 12, 0), env)
	if got := tickNames(r.Actions); !reflect.DeepEqual(got, []string{"alert:reminder:triage-escalation"}) {
		t.Fatalf("tick after four days down = %v, want the escalation only", got)
	}
	if !r.Incident.Reminded["triage"].Equal(d(11, 24, 8, 0)) {
		t.Errorf("the superseded triage reminder is not marked: %v", r.Incident.Reminded)
	}
	if again := Tick(r.Incident, d(11, 27, 12, 1), env); again.Applied {
		t.Errorf("second tick: %v", tickNames(again.Actions))
	}
	// A critical incident left alone for 9 days gets one nudge, not four.
	crit := step(t, fix(t), "/cvss CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H\n/fixed\n", alice, mon).Incident
	r = Tick(crit, mon.Add(9*24*time.Hour), env)
	n := 0
	for _, a := range tickNames(r.Actions) {
		if strings.HasSuffix(a, ":stale") {
			n++
		}
	}
	if n != 1 || !r.Incident.Reminded["stale"].Equal(mon.Add(8*24*time.Hour)) {
		t.Errorf("stale nudges after 9 days down: %d, marker %v", n, r.Incident.Reminded["stale"])
	}
}

// TestTickASAP: /public turns every deadline ASAP: their own reminders stop
// and the SRC is nudged daily, starting a day after the command.
func TestTickASAP(t *testing.T) {
	inc := step(t, fix(t), "/public\n", alice, mon).Incident
	_, got := firings(t, inc, mon, mon.Add(3*24*time.Hour), env, nil)
	want := []string{
		"Tue 11-24 09:00 alert:reminder:asap",
		"Wed 11-25 09:00 alert:reminder:asap",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("public incident:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	rs := Reminders(inc, mon.Add(25*time.Hour), nil)
	if len(rs) != 2 || rs[0].Key != "asap" || !strings.Contains(rs[0].What, "fix") || rs[1].Key != "stale" {
		t.Errorf("Reminders(public) = %+v", rs)
	}
}

// TestTickHoldAtTMinus24: the release is held at T-24 h exactly, not a minute
// later; an approval reminder at T-48 h comes first.
func TestTickHoldAtTMinus24(t *testing.T) {
	inc := notified(t)                              // T Thursday 2026-12-03 16:00, not approved
	inc = Tick(inc, d(12, 1, 14, 59), env).Incident // what fell due before: sent
	_, got := firings(t, inc, d(12, 1, 15, 0), d(12, 3, 17, 0), env, nil)
	want := []string{
		"Tue 12-01 16:00 alert:reminder:approval",
		"Wed 12-02 16:00 alert:release-held:",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("unapproved advisory:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestWorkingDaysAndSlots: weekends and holidays are skipped where working
// days count, and a T on a Friday, weekend or holiday moves to the next slot.
func TestWorkingDaysAndSlots(t *testing.T) {
	thanksgiving := []time.Time{d(11, 26, 0, 0)}
	xmas := []time.Time{time.Date(2026, 12, 24, 0, 0, 0, 0, time.UTC), time.Date(2026, 12, 25, 0, 0, 0, 0, time.UTC)}
	wd := []struct {
		name string
		from time.Time
		n    int
		hol  []time.Time
		want time.Time
	}{
		{"Wednesday + 1 over a holiday", d(11, 25, 9, 0), 1, thanksgiving, d(11, 27, 9, 0)},
		{"Wednesday + 3 over a holiday and a weekend", d(11, 25, 9, 0), 3, thanksgiving, d(12, 1, 9, 0)},
		{"Friday 17:30 + 1", d(11, 27, 17, 30), 1, nil, d(11, 30, 17, 30)},
		{"Sunday + 1", d(11, 29, 23, 0), 1, nil, d(11, 30, 23, 0)},
		{"Wednesday before Christmas + 1", time.Date(2026, 12, 23, 10, 0, 0, 0, time.UTC), 1, xmas, time.Date(2026, 12, 28, 10, 0, 0, 0, time.UTC)},
	}
	for _, tt := range wd {
		if got := AddWorkingDays(tt.from, tt.n, tt.hol); !got.Equal(tt.want) {
			t.Errorf("%s: AddWorkingDays(%s, %d) = %s, want %s", tt.name, FormatInstant(tt.from), tt.n, FormatInstant(got), FormatInstant(tt.want))
		}
	}
	slots := []struct {
		name string
		in   time.Time
		hol  []time.Time
		want time.Time
	}{
		{"Friday → Monday", d(11, 27, 16, 0), nil, d(11, 30, 16, 0)},
		{"holiday Thursday → Monday", d(11, 26, 16, 0), thanksgiving, d(11, 30, 16, 0)},
		{"Thursday 16:01 → Monday", d(11, 26, 16, 1), nil, d(11, 30, 16, 0)},
		{"Christmas Eve Thursday → Monday 28th", time.Date(2026, 12, 24, 16, 0, 0, 0, time.UTC), xmas, time.Date(2026, 12, 28, 16, 0, 0, 0, time.UTC)},
	}
	for _, tt := range slots {
		if got := NextSlot(tt.in, tt.hol); !got.Equal(tt.want) {
			t.Errorf("%s: NextSlot(%s) = %s, want %s", tt.name, FormatInstant(tt.in), FormatInstant(got), FormatInstant(tt.want))
		}
	}
	// Through /disclose: a Friday date is moved, and the release happens at
	// the moved T, not on the Friday.
	e := env
	e.Holidays = thanksgiving
	res, err := Apply(fix(t), "/set summary s\n/set actor a\n/set impact i\n/set affected x 1\n/set fixed x 2\n/disclose 2026-11-26\n/approve\n", at(alice, mon), mon, e)
	if err != nil {
		t.Fatal(err)
	}
	inc := res.Incident
	if !inc.T.Equal(d(11, 30, 16, 0)) {
		t.Fatalf("/disclose on a holiday Thursday: T = %s", FormatInstant(inc.T))
	}
	_, got := firings(t, inc, d(11, 26, 15, 0), d(11, 30, 17, 0), e, nil)
	var rel []string
	for _, g := range got {
		if strings.Contains(g, "release:") {
			rel = append(rel, g)
		}
	}
	if len(rel) != 1 || rel[0] != "Mon 11-30 16:00 release:2026-11-30 16:00 UTC (Monday)" {
		t.Errorf("release at the moved T: %v", got)
	}
}

// TestOnCall: the weekly rotation, a handover that takes effect only on
// acknowledgement and ends with the shift, and the on-call-only thread.
func TestOnCall(t *testing.T) {
	dave := Signer{Fingerprint: "DA7E", Email: "dave@ex.org", Roles: []string{RoleSRC}}
	r := Rotation{Members: []string{"alice@ex.org", "bob@ex.org", "dave@ex.org"}, Start: d(11, 25, 0, 0)} // the week of 11-23 is alice's
	for _, tt := range []struct {
		at   time.Time
		want string
	}{
		{d(11, 23, 0, 0), "alice@ex.org"}, {d(11, 29, 23, 59), "alice@ex.org"}, {d(11, 30, 0, 0), "bob@ex.org"},
		{d(12, 7, 0, 0), "dave@ex.org"}, {d(12, 14, 12, 0), "alice@ex.org"}, {d(11, 22, 23, 59), "dave@ex.org"},
	} {
		if got, _ := OnCall(r, OnCallState{}, tt.at); got != tt.want {
			t.Errorf("OnCall at %s = %q, want %q", FormatInstant(tt.at), got, tt.want)
		}
	}
	if got := ShiftStart(d(11, 29, 23, 59)); !got.Equal(d(11, 23, 0, 0)) {
		t.Errorf("ShiftStart(Sunday) = %v", got)
	}
	e := env
	e.Rotation = r
	run := func(text string, s Signer, now time.Time) (Result, error) {
		res, err := ApplyOnCall(text, at(s, now), now, e)
		if err == nil && res.OnCall != nil {
			e.OnCallState = *res.OnCall
		}
		return res, err
	}
	// Alice asks Bob to take over on Tuesday: nothing changes until he acks.
	res, err := run("/oncall bob@ex.org\n", alice, d(11, 24, 10, 0))
	if err != nil || res.OnCall == nil || res.OnCall.Pending != "bob@ex.org" {
		t.Fatalf("/oncall bob: %v %+v", err, res.OnCall)
	}
	if got, _ := OnCall(r, e.OnCallState, d(11, 24, 11, 0)); got != "alice@ex.org" {
		t.Errorf("before the ack, on call: %s", got)
	}
	if _, err := run("/oncall ack\n", dave, d(11, 24, 11, 0)); !errors.Is(err, ErrGuard) && !errors.Is(err, ErrNotAllowed) {
		t.Errorf("ack by someone else: %v", err)
	}
	res, err = run("/oncall ack\n", bob, d(11, 24, 12, 0))
	if err != nil || !strings.Contains(res.Receipt.Text(), "you are on call until 2026-11-30 00:00 UTC (Monday)") {
		t.Fatalf("/oncall ack: %v\n%s", err, res.Receipt.Text())
	}
	if got, handed := OnCall(r, e.OnCallState, d(11, 24, 12, 1)); got != "bob@ex.org" || !handed || e.OnCallState.Previous != "alice@ex.org" {
		t.Errorf("after the ack: %s %v %+v", got, handed, e.OnCallState)
	}
	// Next Monday the rotation resumes: bob's own week.
	if got, handed := OnCall(r, e.OnCallState, d(12, 7, 0, 0)); got != "dave@ex.org" || handed {
		t.Errorf("the week after next: %s %v", got, handed)
	}
	// A pending handover lapses with the shift.
	if _, err := run("/oncall alice@ex.org\n", bob, d(11, 29, 10, 0)); err != nil {
		t.Fatal(err)
	}
	if _, err := run("/oncall ack\n", alice, d(11, 30, 9, 0)); !errors.Is(err, ErrGuard) {
		t.Errorf("ack in the next shift: %v, want ErrGuard", err)
	}
	// /oncall me takes over at once; /oncall alone says who.
	if _, err := run("/oncall me\n", dave, d(11, 30, 9, 0)); err != nil {
		t.Fatal(err)
	}
	res, _ = run("/oncall\n", alice, d(11, 30, 10, 0))
	if txt := res.Receipt.Text(); !strings.Contains(txt, "on call: dave@ex.org, by handover from bob@ex.org") {
		t.Errorf("/oncall status:\n%s", txt)
	}
	// Outside a thread, only /oncall; associates may not.
	if _, err := run("/oncall\n/accept\n", alice, d(11, 30, 10, 0)); !errors.Is(err, ErrGuard) {
		t.Errorf("/accept outside a thread: %v", err)
	}
	if _, err := run("/oncall me\n", carol, d(11, 30, 10, 0)); !errors.Is(err, ErrNotAllowed) {
		t.Errorf("associate /oncall me: %v", err)
	}
	if _, err := run("/oncall eve@ex.org\n", alice, d(11, 30, 10, 0)); !errors.Is(err, ErrGuard) {
		t.Errorf("/oncall a non-member: %v", err)
	}
	// In an incident's thread, /oncall leaves the incident alone.
	inc := triage()
	r2, err := Apply(inc, "/oncall\n", at(alice, mon), mon, e)
	if err != nil || r2.Incident.Updated != inc.Updated || len(r2.Incident.History) != 0 || r2.OnCall != nil {
		t.Errorf("/oncall in a thread: %v %+v", err, r2)
	}
}

// TestDigest: the Monday digest lists the open incidents and this week's
// deadlines, overdue ones first.
func TestDigest(t *testing.T) {
	e := env
	e.Rotation = Rotation{Members: []string{"alice@ex.org", "bob@ex.org"}}
	a := triage()
	a.Commander = "alice@ex.org"
	c := notified(t)
	c.ID = "SEC-2026-0002"
	closed := triage()
	closed.ID, closed.Phase = "SEC-2026-0003", PhaseClosed
	dg := WeeklyDigest([]Incident{a, c, closed}, d(11, 30, 0, 0), e)
	txt := fmt.Sprint(dg)
	if dg.OnCall != "bob@ex.org" || dg.NextOnCall != "alice@ex.org" || len(dg.Incidents) != 2 {
		t.Fatalf("digest = %s", txt)
	}
	if !strings.Contains(dg.Incidents[1], "SEC-2026-0002") || !strings.Contains(dg.Incidents[1], "embargo") {
		t.Errorf("incident line %q", dg.Incidents[1])
	}
	var names []string
	for _, l := range dg.Deadlines {
		names = append(names, strings.Fields(l)[1])
	}
	// Overdue: A's triage and escalation (due 11-24, 11-26); this week: C's
	// final notice, approval and release (12-02, 12-03). Staleness is no deadline.
	want := []string{"triage", "triage-escalation", "final-notice", "approval", "release"}
	if !reflect.DeepEqual(names, want) {
		t.Errorf("digest deadlines:\n%s\nwant names %v", strings.Join(dg.Deadlines, "\n"), want)
	}
}

// TestRemindersBeforeTSetAreSkipped: a reminder that would fall before T was
// set is not sent (the receipt said it); one due after is. And an approved
// advisory with its T is not nudged for staleness.
func TestRemindersBeforeTSetAreSkipped(t *testing.T) {
	// T 8 days ahead: the notice reminder (T-9 d) would be in the past.
	inc := step(t, fix(t), "/cve CVE-2026-1234\n/disclose 2026-12-01T16:00Z\n", alice, mon).Incident
	keys := map[string]bool{}
	for _, r := range Reminders(inc, mon, nil) {
		keys[r.Key] = true
	}
	if keys["notice-soon"] || !keys["notice"] || !keys["approval-soon"] {
		t.Errorf("Reminders = %v, want notice and approval-soon, not notice-soon", keys)
	}
	r := Tick(inc, mon.Add(time.Minute), env)
	if r.Applied {
		t.Errorf("tick right after /disclose: %v", tickNames(r.Actions))
	}
	// Approved with a T: no staleness.
	ok := step(t, ready(t), "/approve\n", alice, mon).Incident
	for _, rm := range Reminders(ok, mon.Add(30*24*time.Hour), nil) {
		if rm.Key == "stale" {
			t.Errorf("stale reminder for an approved advisory waiting for T: %+v", rm)
		}
	}
}
