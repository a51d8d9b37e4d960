package workflow

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// annEnv is env with the announce list able to send.
func annEnv() Env { e := env; e.Announce = true; return e }

// preStep applies text as s at now with the announce list on.
func preStep(t *testing.T, inc Incident, text string, s Signer, now time.Time) (Result, error) {
	t.Helper()
	return Apply(inc, text, at(s, now), now, annEnv())
}

// scheduled is fix (High, a fix team) with T on 2026-12-03.
func scheduled(t *testing.T) Incident {
	return step(t, fix(t), "/disclose 2026-12-03\n", alice, mon).Incident
}

var preT = time.Date(2026, 12, 3, 16, 0, 0, 0, time.UTC)

// TestPreannounce: an SRC member pre-announces the release at T once; the
// action carries T and the severity, the incident records it with its
// release ID, the history and /status show it.
func TestPreannounce(t *testing.T) {
	r, err := preStep(t, scheduled(t), "/preannounce\n", alice, mon.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	want := Preannounce{Job: "SEC-2026-0001-pre1", T: preT, Severity: SeverityHigh}
	if len(r.Actions) != 1 || !reflect.DeepEqual(r.Actions[0], want) {
		t.Fatalf("actions %#v, want %#v", r.Actions, want)
	}
	inc := r.Incident
	p, ok := inc.LastPreannouncement()
	if !ok || len(inc.Preannounced) != 1 || p.Job != want.Job || !p.T.Equal(preT) || p.Severity != SeverityHigh ||
		!p.At.Equal(mon.Add(time.Hour)) || !p.Previous.IsZero() {
		t.Fatalf("recorded %+v", inc.Preannounced)
	}
	if h := inc.History[len(inc.History)-1]; h.Command != "/preannounce" || !strings.Contains(h.What, "pre-announcement of the release at T = 2026-12-03 16:00 UTC (Thursday), severity High") {
		t.Errorf("history %+v", h)
	}
	if res := r.Receipt.Lines[0].Result; !strings.Contains(res, "queued to the announce list (SEC-2026-0001-pre1)") {
		t.Errorf("receipt %q", res)
	}
	inc.Preannounced[0].Sent = 3 // as listd records it
	st := step(t, inc, "/status\n", bob, mon.Add(2*time.Hour)).Actions[0].(StatusReply).Text
	if !strings.Contains(st, "pre-announced:   2026-11-23 10:00 UTC (Monday): T = 2026-12-03 16:00 UTC (Thursday), severity High, 3 subscribers (SEC-2026-0001-pre1)") {
		t.Errorf("/status:\n%s", st)
	}
}

// TestPreannounceGuards: who may, in which phase, T required and ahead, a
// severity or nosev, the announce list able to send; each refusal says
// why and what to do, and changes nothing.
func TestPreannounceGuards(t *testing.T) {
	low := func(t *testing.T) Incident { return step(t, scheduled(t), "/severity low\n", alice, mon).Incident }
	unrated := func(t *testing.T) Incident {
		return step(t, triage(), "/accept\n/disclose 2026-12-03\n", alice, mon).Incident
	}
	disclosed := func(t *testing.T) Incident {
		inc := step(t, ready(t), "/approve\n", alice, mon).Incident
		return step(t, inc, "/disclose now\n", alice, mon).Incident
	}
	for _, tt := range []struct {
		name string
		inc  func(*testing.T) Incident
		text string
		by   Signer
		now  time.Time
		off  bool   // the announce list cannot send
		err  error  // nil: applied
		says string // in the refusal or the result
	}{
		{name: "src", inc: scheduled, text: "/preannounce\n", by: bob, says: "severity High"},
		{name: "associate on high", inc: scheduled, text: "/preannounce\n", by: carol, err: ErrNotAllowed, says: "associates act only on incidents rated Low"},
		{name: "associate on low", inc: low, text: "/preannounce\n", by: carol, says: "severity Low"},
		{name: "fix team", inc: scheduled, text: "/preannounce\n", by: eng, err: ErrNotAllowed},
		{name: "distributor", inc: scheduled, text: "/preannounce\n", by: dist, err: ErrNotAllowed},
		{name: "release manager", inc: scheduled, text: "/preannounce\n", by: rm, err: ErrNotAllowed},
		{name: "reporter", inc: scheduled, text: "/preannounce\n", by: rep, err: ErrNotAllowed},
		{name: "triage", inc: func(*testing.T) Incident { return triage() }, text: "/preannounce\n", by: alice, err: ErrPhase, says: "/accept it and set T with /disclose DATE first"},
		{name: "disclosed", inc: disclosed, text: "/preannounce\n", by: alice, err: ErrPhase, says: "nothing left to pre-announce"},
		{name: "closed", inc: func(t *testing.T) Incident { return step(t, fix(t), "/close out-of-scope\n", alice, mon).Incident },
			text: "/preannounce\n", by: alice, err: ErrPhase, says: "/preannounce works in phase fix or embargo"},
		{name: "embargo", inc: notified, text: "/preannounce\n", by: alice, says: "T = 2026-12-03 16:00 UTC (Thursday)"},
		{name: "no T", inc: fix, text: "/preannounce\n", by: alice, err: ErrGuard, says: "T is not set: set T first with /disclose DATE"},
		{name: "T in the same message", inc: fix, text: "/disclose 2026-12-10\n/preannounce\n", by: alice},
		{name: "T passed", inc: scheduled, text: "/preannounce\n", by: alice, now: preT.Add(time.Minute), err: ErrPast, says: "has passed: set a new one with /disclose DATE"},
		{name: "no severity", inc: unrated, text: "/preannounce\n", by: alice, err: ErrGuard, says: "or send /preannounce nosev"},
		{name: "no severity, nosev", inc: unrated, text: "/preannounce nosev\n", by: alice, says: "without the severity"},
		{name: "announce list off", inc: scheduled, text: "/preannounce\n", by: alice, off: true, err: ErrGuard, says: "the announce list cannot send"},
		{name: "bad option", inc: scheduled, text: "/preannounce details\n", by: alice, err: ErrSyntax, says: "the only option is nosev"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			now := tt.now
			if now.IsZero() {
				now = mon.Add(time.Hour)
			}
			e := annEnv()
			e.Announce = !tt.off
			inc := tt.inc(t)
			r, err := Apply(inc, tt.text, at(tt.by, now), now, e)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("error %v, want %v", err, tt.err)
				}
				if !strings.Contains(r.Receipt.Refused, tt.says) {
					t.Errorf("refusal %q, want it to say %q", r.Receipt.Refused, tt.says)
				}
				assertNothing(t, inc, r)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			last := r.Receipt.Lines[len(r.Receipt.Lines)-1].Result
			if !strings.Contains(last, tt.says) || len(r.Incident.Preannounced) != 1 {
				t.Errorf("result %q (want %q), %d recorded", last, tt.says, len(r.Incident.Preannounced))
			}
		})
	}
}

// TestPreannounceOncePerT: a second /preannounce for the same T is
// refused with when the first went out; after T moves, it announces the
// new date as rescheduled, under the next release ID.
func TestPreannounceOncePerT(t *testing.T) {
	r, err := preStep(t, scheduled(t), "/preannounce\n", alice, mon.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	inc := r.Incident
	inc.Preannounced[0].Sent = 7
	again, err := preStep(t, inc, "/preannounce nosev\n", bob, mon.Add(2*time.Hour))
	if !errors.Is(err, ErrGuard) || !strings.Contains(again.Receipt.Refused,
		"T = 2026-12-03 16:00 UTC (Thursday) was already pre-announced 2026-11-23 10:00 UTC (Monday) to 7 subscribers (SEC-2026-0001-pre1)") {
		t.Fatalf("second /preannounce: %v, %q", err, again.Receipt.Refused)
	}
	assertNothing(t, inc, again)

	// T moves without /preannounce: the receipt says the public was told
	// the old date.
	alone := step(t, inc, "/disclose 2026-12-10\n", bob, mon.Add(3*time.Hour))
	if res := alone.Receipt.Lines[0].Result; !strings.Contains(res, "the public was pre-announced T = 2026-12-03 16:00 UTC (Thursday): send /preannounce to tell them the new date") {
		t.Errorf("/disclose after a pre-announcement: %q", res)
	}

	// T moves: the public hears of the new date, as a rescheduling.
	moved, err := preStep(t, inc, "/disclose 2026-12-10\n/preannounce\n", bob, mon.Add(3*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	newT := time.Date(2026, 12, 10, 16, 0, 0, 0, time.UTC)
	want := Preannounce{Job: "SEC-2026-0001-pre2", T: newT, Severity: SeverityHigh, Previous: preT}
	var got []Action
	for _, a := range moved.Actions {
		if _, ok := a.(Preannounce); ok {
			got = append(got, a)
		}
	}
	if len(got) != 1 || !reflect.DeepEqual(got[0], want) {
		t.Fatalf("actions %#v, want one %#v", moved.Actions, want)
	}
	if strings.Contains(moved.Receipt.Lines[0].Result, "send /preannounce") {
		t.Errorf("/disclose with /preannounce after it asks for one: %q", moved.Receipt.Lines[0].Result)
	}
	if res := moved.Receipt.Lines[1].Result; !strings.Contains(res, "the release moved from 2026-12-03 16:00 UTC (Thursday) to T = 2026-12-10 16:00 UTC (Thursday)") {
		t.Errorf("receipt %q", res)
	}
	if n := len(moved.Incident.Preannounced); n != 2 || moved.Incident.Preannounced[1].Job != "SEC-2026-0001-pre2" {
		t.Errorf("recorded %+v", moved.Incident.Preannounced)
	}
	// Back to the first T: the last pre-announcement said the second, so
	// the public is told again.
	back, err := preStep(t, moved.Incident, "/disclose 2026-12-03\n/preannounce\n", bob, mon.Add(4*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := back.Incident.LastPreannouncement(); p.Job != "SEC-2026-0001-pre3" || !p.Previous.Equal(newT) || !p.T.Equal(preT) {
		t.Errorf("back to the first T: %+v", p)
	}
	// Twice in one message: the second is the same T, refused.
	if _, err := preStep(t, scheduled(t), "/preannounce\n/preannounce\n", alice, mon.Add(time.Hour)); !errors.Is(err, ErrGuard) {
		t.Errorf("two in one message: %v", err)
	}
}

// TestPreannounceNosev: nosev leaves the severity out of the action and
// the record, whatever the incident's rating.
func TestPreannounceNosev(t *testing.T) {
	r, err := preStep(t, scheduled(t), "/preannounce NoSev\n", alice, mon.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	a, ok := r.Actions[0].(Preannounce)
	if !ok || a.Severity != SeverityUnset || r.Incident.Preannounced[0].Severity != SeverityUnset {
		t.Fatalf("nosev: %#v %+v", r.Actions, r.Incident.Preannounced)
	}
	if c := r.Receipt.Lines[0].Command; c != "/preannounce nosev" {
		t.Errorf("canonical %q", c)
	}
	if !strings.Contains(r.Receipt.Lines[0].Result, "without the severity") || strings.Contains(r.Receipt.Lines[0].Result, "High") {
		t.Errorf("receipt %q", r.Receipt.Lines[0].Result)
	}
}

// TestPreannounceActionFields pins what a pre-announcement carries out of
// workflow: the release ID, T, the severity and the previous T. A field
// added here reaches the public before T: it must be weighed against
// docs/threat-model.md G8 first, and this list changed with it.
func TestPreannounceActionFields(t *testing.T) {
	var names []string
	ty := reflect.TypeOf(Preannounce{})
	for i := 0; i < ty.NumField(); i++ {
		names = append(names, ty.Field(i).Name+" "+ty.Field(i).Type.String())
	}
	want := []string{"Job string", "T time.Time", "Severity workflow.Severity", "Previous time.Time"}
	if !reflect.DeepEqual(names, want) {
		t.Errorf("Preannounce has %q, want %q", names, want)
	}
}

func TestPreannounceJobID(t *testing.T) {
	if j := PreannounceJob("SEC-2026-0001", 12); j != "SEC-2026-0001-pre12" {
		t.Errorf("job %q", j)
	}
	for job, want := range map[string]ID{"SEC-2026-0001-pre1": "SEC-2026-0001", "sec-2026-0042-PRE3": "SEC-2026-0042",
		"SEC-2026-0001": "", "SEC-2026-0001-pre": "", "SEC-2026-0001-pre0": "", "SEC-2026-0001-pre1x": "", "x-pre1": ""} {
		id, ok := PreannounceIncident(job)
		if id != want || ok != (want != "") {
			t.Errorf("PreannounceIncident(%q) = %q, %v; want %q", job, id, ok, want)
		}
	}
}
