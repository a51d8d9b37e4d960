package workflow

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func tickNames(as []Action) []string {
	var out []string
	for _, a := range as {
		switch a := a.(type) {
		case AlertSRC:
			out = append(out, "alert:"+a.Template+":"+a.Fields["deadline"])
		case Remind:
			out = append(out, "remind:"+a.To+":"+a.Fields["deadline"])
		case DistributorNotice:
			if a.Final {
				out = append(out, "final-notice")
			} else {
				out = append(out, "notice")
			}
		default:
			out = append(out, describe([]Action{a})...)
		}
	}
	return out
}

// TestTickRelease drives the release from the notice to T on a fake clock,
// ticking every hour: the final notice once between T-25 h and T-24 h, the
// release once at T, nothing early, nothing twice.
func TestTickRelease(t *testing.T) {
	inc := step(t, notified(t), "/approve\n", alice, mon).Incident // T = Thu 2026-12-03 16:00
	T := inc.T
	var got []string
	var when []string
	for now := mon; now.Before(T.Add(3 * time.Hour)); now = now.Add(time.Hour) {
		r := Tick(inc, now, env)
		for _, a := range tickNames(r.Actions) {
			if !strings.HasPrefix(a, "alert:reminder") && !strings.HasPrefix(a, "remind:") {
				got = append(got, a)
				when = append(when, FormatInstant(now))
			}
		}
		inc = r.Incident
		if again := Tick(inc, now, env); again.Applied || len(again.Actions) != 0 {
			t.Fatalf("second tick at %s: %v", FormatInstant(now), tickNames(again.Actions))
		}
	}
	want := []string{"final-notice", "release:2026-12-03 16:00 UTC (Thursday)", "reporter:disclosed"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("tick actions = %v at %v, want %v", got, when, want)
	}
	if when[0] != "2026-12-02 15:00 UTC (Wednesday)" || when[1] != "2026-12-03 16:00 UTC (Thursday)" {
		t.Errorf("final notice at %s, release at %s", when[0], when[1])
	}
	if inc.Phase != PhaseDisclosed || !inc.DisclosedAt.Equal(T) {
		t.Errorf("phase %v disclosed %v", inc.Phase, inc.DisclosedAt)
	}
}

// TestTickHold: an advisory not approved by T-24 h holds the release and alerts
// the SRC once; approving late does not release; a new T re-arms.
func TestTickHold(t *testing.T) {
	inc := notified(t)
	T := inc.T
	r := Tick(inc, T.Add(-23*time.Hour), env)
	if got := tickNames(r.Actions); !reflect.DeepEqual(got[:1], []string{"alert:release-held:"}) || r.Incident.HeldAt.IsZero() {
		t.Fatalf("tick at T-23h = %v", got)
	}
	inc = r.Incident
	inc = step(t, inc, "/approve\n", alice, T.Add(-2*time.Hour)).Incident
	for _, now := range []time.Time{T.Add(-time.Hour), T, T.Add(time.Hour)} {
		r = Tick(inc, now, env)
		for _, a := range r.Actions {
			if _, ok := a.(Release); ok {
				t.Fatalf("released at %s after a late approval", FormatInstant(now))
			}
			if _, ok := a.(AlertSRC); ok && a.(AlertSRC).Template == "release-held" {
				t.Fatalf("held alert repeated at %s", FormatInstant(now))
			}
		}
		inc = r.Incident
	}
	if inc.Phase != PhaseEmbargo {
		t.Fatalf("phase %v", inc.Phase)
	}
	// A new T (emergency: it is close) re-arms the final notice and the release.
	now := T.Add(2 * time.Hour)
	inc = step(t, inc, "/disclose 2026-12-07T16:00Z emergency\n", alice, now).Incident
	if !inc.HeldAt.IsZero() || !inc.FinalNoticeAt.IsZero() {
		t.Fatalf("new T did not re-arm: held %v final %v", inc.HeldAt, inc.FinalNoticeAt)
	}
	r = Tick(inc, inc.T.Add(-24*time.Hour-30*time.Minute), env)
	if got := tickNames(r.Actions); len(got) == 0 || got[0] != "final-notice" {
		t.Fatalf("tick at new T-24h30 = %v", got)
	}
	r = Tick(r.Incident, inc.T, env)
	if r.Incident.Phase != PhaseDisclosed {
		t.Fatalf("not released at the new T: %v", tickNames(r.Actions))
	}
}

// TestTickReminders: each deadline reminds once; the low public track (no
// distributor notice, no CVE) releases at T without a final notice.
func TestTickReminders(t *testing.T) {
	inc := triage() // opened Monday 08:00
	r := Tick(inc, mon, env)
	if r.Applied {
		t.Fatalf("tick before any deadline: %v", tickNames(r.Actions))
	}
	r = Tick(inc, mon.Add(25*time.Hour), env)
	if got := tickNames(r.Actions); !reflect.DeepEqual(got, []string{"alert:reminder:triage"}) {
		t.Fatalf("tick on Tuesday = %v", got)
	}
	r = Tick(r.Incident, mon.Add(26*time.Hour), env)
	if r.Applied {
		t.Fatalf("reminder repeated: %v", tickNames(r.Actions))
	}
	r = Tick(r.Incident, mon.Add(4*24*time.Hour), env)
	if got := tickNames(r.Actions); !reflect.DeepEqual(got, []string{"alert:reminder:triage-escalation"}) {
		t.Fatalf("tick on Friday = %v", got)
	}

	low := step(t, triage(), "/accept\n/fixteam add eng@ex.org\n/severity low\n/set summary s\n/set actor a\n/set impact i\n/set affected x 1.0\n/set fixed x 1.1\n/disclose 2026-11-26\n/approve\n", alice, mon).Incident
	r = Tick(low, low.T, env)
	if got := tickNames(r.Actions); !reflect.DeepEqual(got, []string{"release:2026-11-26 16:00 UTC (Thursday)", "reporter:disclosed"}) {
		t.Fatalf("low track at T = %v", got)
	}
}
