package listd

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/workflow"
)

// tickValues are the incident's fields FuzzTickRender takes from the
// fuzzer: the report's subject and its sender's name, and what alice's
// signed commands set.
type tickValues struct {
	subject, name                 string // the report
	summary, impact, credit, team string // /set summary, impact, credit; /fixteam add
	cvss, cve                     string // /cvss, /cve
}

// tickStep is one step of tickWalk: alice's signed commands at at, or,
// with no text, the service's tick at at. want are the rows a tick must
// queue whatever the fuzzer did: the ticks before any fuzzed command, the
// Monday digests.
type tickStep struct {
	at   time.Time
	text string
	want map[string]int
}

// T0 and T1 are the release instants of tickWalk: the first /disclose,
// then the new T the distributors are notified of again.
var (
	tickT0 = time.Date(2026, 12, 10, 16, 0, 0, 0, time.UTC) // a Thursday
	tickT1 = time.Date(2026, 12, 14, 16, 0, 0, 0, time.UTC) // a Monday
)

// tickSteps walks an incident reported at mon (Monday 09:00) through the
// timers of the process (workflow.Reminders, Tick): the triage reminder
// and its escalation, accepted with a T of T0 and the fuzzed fields, the
// weekly digests, the notice-soon reminder, the distributor notice, a new
// T (the notice re-sent), approval, the private track's pre-announcement
// reminders (T-7 d; T-3 d with the final notice), the final notice at T-25 h, the
// release at T, and the retrospective reminders.
func tickSteps(v tickValues) []tickStep {
	day := func(month time.Month, d, h, m int) time.Time { return time.Date(2026, month, d, h, m, 0, 0, time.UTC) }
	return []tickStep{
		{at: day(11, 24, 9, 0), want: map[string]int{"reminder": 1}}, // triage, to the commander
		{at: day(11, 26, 9, 0), want: map[string]int{"reminder": 2}}, // its escalation, to the SRC
		{at: day(11, 26, 10, 0), text: "/accept\n/lead me\n/track private\n/cvss CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H\n/cve CVE-2026-12345\n" +
			"/set summary heap overflow in the parser\n/set actor A remote attacker\n/set impact execute code as the server user\n" +
			"/set affected >= 1.0.0, < 1.2.4\n/set fixed 1.2.4\n/fixed\n/disclose " + tickT0.Format(time.DateOnly) + "\n"},
		// One message each: a value refused leaves the others set.
		{at: day(11, 26, 10, 5), text: "/set summary " + v.summary + "\n"},
		{at: day(11, 26, 10, 10), text: "/set impact <<END\n" + v.impact + "\nEND\n"},
		{at: day(11, 26, 10, 15), text: "/set credit " + v.credit + "\n"},
		{at: day(11, 26, 10, 20), text: "/fixteam add " + v.team + "\n"},
		{at: day(11, 26, 10, 25), text: "/cvss " + v.cvss + "\n"},
		{at: day(11, 26, 10, 30), text: "/cve " + v.cve + "\n"},
		{at: day(11, 30, 0, 0), want: map[string]int{"digest": 2}},
		{at: tickT0.Add(-workflow.NoticeRemindBefore)}, // notice-soon, to the Fix Lead
		{at: day(12, 1, 16, 5), text: "/notify\n"},
		{at: day(12, 1, 16, 10), text: "/disclose " + tickT1.Format(time.DateOnly) + "\n"},
		{at: day(12, 1, 16, 15), text: "/approve\n"},
		{at: day(12, 7, 0, 0), want: map[string]int{"digest": 2}},
		{at: tickT1.Add(-workflow.PreannounceFrom)},   // preannounce-soon (private track), to the SRC
		{at: tickT1.Add(-workflow.FinalNoticeWindow)}, // the final notice
		{at: day(12, 14, 0, 0), want: map[string]int{"digest": 2}},
		{at: tickT1}, // the release
		{at: tickT1.Add(workflow.RetroRemindAfter)}, // retro-reminder, to the Fix Lead
		{at: tickT1.Add(workflow.RetroAfterMax)},    // retrospective, to the SRC
	}
}

// FuzzTickRender reports an incident whose subject and sender's name come
// from the fuzzer, sets its summary, impact, credit, fix team, CVSS vector
// and CVE IDs from the fuzzer through alice's signed commands, and walks it
// through the service's tick on a clock that moves (tickSteps): reminders
// to one member and to the SRC, the weekly digest, the distributor notice
// and the notice re-sent for a new T, the final notice, the release at T.
// Every row queued is made as the delivery worker makes it and checked by
// checkQueued (docs/threat-model.md B2, B10, D6, E5). Each step must queue
// what it did: a receipt for each message, the digests, and what each
// tick recorded in the incident's history (tickWalk).
func FuzzTickRender(f *testing.F) {
	k := newStoreKeys(f)
	ann, err := keys.GenerateListKey("announce", "announce@ex.test", ko)
	if err != nil {
		f.Fatal(err)
	}
	f.Add("heap overflow in the parser", "Rep Orter", "heap overflow in the parser", "execute code as the server user", "Rep Orter",
		"eng@ex.test", "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "CVE-2026-12345")
	// More in testdata/fuzz/FuzzTickRender: hostile values (CR and LF,
	// header lines, encoded words, "/" and armor lines, long lines,
	// invalid UTF-8, control and bidi characters).
	f.Fuzz(func(t *testing.T, subject, name, summary, impact, credit, team, cvss, cve string) {
		tickWalk(t, k, ann, tickValues{subject, name, summary, impact, credit, team, cvss, cve})
	})
}

// TestTickWalk: tickWalk, with realistic values, reaches every timer it
// is there to render, so that FuzzTickRender's executions check them.
func TestTickWalk(t *testing.T) {
	k := newStoreKeys(t)
	ann, err := keys.GenerateListKey("announce", "announce@ex.test", ko)
	if err != nil {
		t.Fatal(err)
	}
	got := tickWalk(t, k, ann, tickValues{"heap overflow in the parser", "Rep Orter", "heap overflow in the parser",
		"execute code as the server user", "Rep Orter", "eng@ex.test", "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "CVE-2026-12346"})
	t.Logf("queued: %v", got)
	for kind, n := range map[string]int{"reminder": 13, "digest": 6, "receipt": 10, "distributor-notice": 2, "distributor-final": 1,
		"advisory-distributors": 1, "advisory-channel": 1, "release-pack": 2, "reporter-date": 2, "reporter-disclosed": 1} {
		if got[kind] < n {
			t.Errorf("%d rows of %s, want at least %d (all: %v)", got[kind], kind, n, got)
		}
	}
}

// tickWalk runs tickSteps on a service whose wall and monotonic clocks
// move together (no clock jump), checks every row each step queues with
// checkQueued, and returns how many rows of each kind were queued. A
// message must queue alice one receipt, and a notice when it notified the
// distributors; a tick must queue its want, and what it wrote in the
// incident's history: a reminder for each reminder, the final notice, the
// release, the held release's alert.
func tickWalk(t *testing.T, k *storeKeys, ann *keys.Key, v tickValues) map[string]int {
	now := mon
	s, db := storeService(t, k, func(o *Options) {
		o.Now = func() time.Time { return now }
		o.Mono = func() time.Duration { return now.Sub(mon) }
		o.AnnounceKey, o.Channels = ann, []Channel{{Address: "oss-security@lists.test", Tag: "[ex.test]"}}
	})
	total := map[string]int{}
	after := uint64(0)
	queuedNow := func(what string) map[string]int {
		kinds := map[string]int{}
		for _, c := range checkQueued(t, s, db, after, k.readers()) {
			kinds[c.Kind]++
			total[c.Kind]++
			after = max(after, c.ID)
		}
		return kinds
	}
	env := Envelope{From: "rep@out.test", To: []string{"security@ex.test"}, Client: "192.0.2.1"}
	if raw, ok := fuzzReport(v.subject, v.name, "Steps to reproduce.\n", ""); !ok || s.Handle(context.Background(), env, raw) != nil {
		openIncident(t, s, db, nil) // a report that cannot be written or is refused: the walk goes on with a plain one
	}
	if kinds := queuedNow("the report"); kinds["report-copy"] != 2 {
		t.Fatalf("the report queued %v, want a copy to each member", kinds)
	}
	for i, st := range tickSteps(v) {
		now = st.at
		before := getIncident(t, db, fuzzIncident)
		where := fmt.Sprintf("step %d at %s", i+1, workflow.FormatInstant(now))
		if st.text != "" {
			raw, ok := memberMailTo(k, k.alice, now, fuzzThread, fmt.Sprintf("tick%d.fuzz@ex.test", i), "Re: [SEC-2026-0001]", st.text, i%2 == 1)
			if !ok {
				t.Fatalf("%s: alice's mail cannot be written", where)
			}
			if err := s.Handle(context.Background(), Envelope{From: "alice@ex.test", To: []string{fuzzThread}}, raw); err != nil {
				t.Fatalf("%s: refused: %v", where, err)
			}
		} else if err := s.Tick(context.Background(), now); err != nil {
			t.Fatalf("%s: tick: %v", where, err)
		}
		kinds := queuedNow(where)
		inc := getIncident(t, db, fuzzIncident)
		want := tickWants(st, before, inc, now)
		for kind, n := range want {
			if kinds[kind] < n {
				t.Fatalf("%s (%q) queued %v, want at least %v", where, st.text, kinds, want)
			}
		}
	}
	return total
}

// tickWants is what a step must have queued, at least: its want; for a
// message, alice's receipt, and the distributor notice when the message
// notified (or re-notified) the distributors; for a tick, what it wrote in
// the incident's history at now.
func tickWants(st tickStep, before, inc *workflow.Incident, now time.Time) map[string]int {
	want := map[string]int{}
	defer func() {
		for kind, n := range st.want {
			want[kind] = max(want[kind], n)
		}
	}()
	if st.text != "" {
		want["receipt"] = 1
		if !inc.NotifiedAt.Equal(before.NotifiedAt) || !inc.NotifiedT.Equal(before.NotifiedT) {
			want["distributor-notice"] = 1
		}
		return want
	}
	for _, h := range inc.History {
		if !h.At.Equal(now) || h.Command != "(tick)" {
			continue
		}
		switch {
		case strings.HasPrefix(h.What, "reminder to "):
			want["reminder"]++
		case strings.HasPrefix(h.What, "final notice to the distributors"):
			want["distributor-final"] = 1
		case strings.HasPrefix(h.What, "released at T"):
			want["advisory-distributors"], want["advisory-channel"], want["release-pack"], want["reporter-disclosed"] = 1, 1, 2, 1
		case strings.Contains(h.What, " held"):
			want["alert-release-held"] = 2
		}
	}
	return want
}
