package workflow

import (
	"strings"
	"testing"
	"time"
)

// TestTickAfterGap: a release whose T fell while the scheduler's clock jumped
// (or the daemon was down) is held, with its alert in the history and the
// tick's reminders still sent; a T after the gap's start is not; /disclose now
// releases the held one.
func TestTickAfterGap(t *testing.T) {
	inc := step(t, notified(t), "/public\n/approve\n", alice, mon).Incident // T Thursday 2026-12-03 16:00, approved
	inc = Tick(inc, d(12, 2, 15, 30), env).Incident                         // the final notice
	if inc.FinalNoticeAt.IsZero() {
		t.Fatal("no final notice")
	}
	// Down from Thursday 12:00 to Friday 10:00: the release is held.
	r := TickAfterGap(inc, d(12, 4, 10, 0), env, d(12, 3, 12, 0))
	got := strings.Join(tickNames(r.Actions), " ")
	if !strings.HasPrefix(got, "alert:release-held:") || strings.Contains(got, "release:") || r.Incident.Phase != PhaseEmbargo || r.Incident.HeldAt.IsZero() {
		t.Fatalf("tick after the gap = %q, phase %v", got, r.Incident.Phase)
	}
	if !strings.Contains(got, "alert:reminder:asap") {
		t.Errorf("the tick's reminders were not sent with the hold: %q", got)
	}
	h := r.Incident.History[len(r.Incident.History)-2]
	if h.Command != "(tick)" || !strings.Contains(h.What, "held: the clock moved from 2026-12-03 12:00 UTC") {
		t.Errorf("history: %+v", r.Incident.History[len(r.Incident.History)-2:])
	}
	// Held stays held: the next, ordinary tick neither releases nor alerts again.
	if again := Tick(r.Incident, d(12, 4, 10, 1), env); again.Applied {
		t.Errorf("tick after the hold: %v", tickNames(again.Actions))
	}
	// Held, the approved advisory no longer waits for a release: staleness
	// counts again, from the hold.
	var stale []time.Time
	for _, rm := range Reminders(r.Incident, d(12, 20, 0, 0), nil) {
		if rm.Key == "stale" {
			stale = append(stale, rm.At)
		}
	}
	if len(stale) != 1 || !stale[0].Equal(d(12, 18, 10, 0)) {
		t.Errorf("staleness after the hold: %v, want 2026-12-18 10:00 (7 days after it)", stale)
	}
	// The SRC confirms.
	if after := step(t, r.Incident, "/disclose now emergency\n", alice, d(12, 4, 11, 0)).Incident; after.Phase != PhaseDisclosed {
		t.Errorf("/disclose now after a hold: phase %v", after.Phase)
	}
	// T inside a short gap: held; a gap that starts at T (the last tick ran
	// at T and released): nothing to hold.
	if r := TickAfterGap(inc, d(12, 3, 16, 0), env, d(12, 3, 15, 0)); r.Incident.Phase == PhaseDisclosed || r.Incident.HeldAt.IsZero() {
		t.Errorf("T inside the gap: %v", tickNames(r.Actions))
	}
	if r := TickAfterGap(inc, d(12, 3, 16, 0), env, d(12, 3, 16, 0)); r.Incident.Phase != PhaseDisclosed {
		t.Errorf("a gap starting at T: not released: %v", tickNames(r.Actions))
	}
}

// TestRepeatingReminderClockBack: the clock set back does not repeat a
// staleness or ASAP nudge already sent for a later occurrence.
func TestRepeatingReminderClockBack(t *testing.T) {
	inc := step(t, fix(t), "/public\n", alice, mon).Incident
	r := Tick(inc, mon.Add(3*24*time.Hour), env) // the nudge of the third day
	if got := tickNames(r.Actions); len(got) != 1 || got[0] != "alert:reminder:asap" {
		t.Fatalf("tick on day 3 = %v", got)
	}
	for _, back := range []time.Duration{time.Minute, 3 * time.Hour, 30 * time.Hour} {
		if again := Tick(r.Incident, mon.Add(3*24*time.Hour-back), env); again.Applied {
			t.Errorf("clock set back %v: %v", back, tickNames(again.Actions))
		}
	}
	if next := Tick(r.Incident, mon.Add(4*24*time.Hour), env); len(next.Actions) != 1 {
		t.Errorf("day 4: %v", tickNames(next.Actions))
	}
}

// TestTickLateReleaseHeld: an incident closed before its T and reopened after
// it does not go public at the next tick, days late and off the slots: the
// release is held for the SRC to confirm.
func TestTickLateReleaseHeld(t *testing.T) {
	inc := step(t, ready(t), "/approve\n/close not-a-vulnerability\n", alice, mon).Incident // T Thursday 2026-12-03 16:00
	inc = step(t, inc, "/reopen\n", alice, d(12, 13, 9, 0)).Incident                        // a Sunday, ten days after T
	r := Tick(inc, d(12, 13, 9, 0), env)
	got := strings.Join(tickNames(r.Actions), " ")
	if strings.Contains(got, "release:") || r.Incident.Phase != PhaseFix || r.Incident.HeldAt.IsZero() || !strings.HasPrefix(got, "alert:release-held:") {
		t.Fatalf("tick after the reopen = %q, phase %v", got, r.Incident.Phase)
	}
	if h := r.Incident.History[len(r.Incident.History)-1]; !strings.Contains(h.What, "T passed 233h0m0s ago without a release") {
		t.Errorf("history: %q", h.What)
	}
	// Within ReleaseGrace of T a tick still releases (the minute tick was busy).
	late := step(t, ready(t), "/approve\n", alice, mon).Incident
	if r := Tick(late, late.T.Add(ReleaseGrace), env); r.Incident.Phase != PhaseDisclosed {
		t.Errorf("%v after T: not released: %v", ReleaseGrace, tickNames(r.Actions))
	}
	if r := Tick(late, late.T.Add(ReleaseGrace+time.Minute), env); r.Incident.Phase == PhaseDisclosed {
		t.Errorf("%v after T: released", ReleaseGrace+time.Minute)
	}
}
