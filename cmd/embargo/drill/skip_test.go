package drill

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/embargo-project/embargo/cmd/embargo/config"
	"github.com/embargo-project/embargo/workflow"
)

// TestSkipMatchesEveryMinute: a scenario played with the scheduler ticking
// at every virtual minute, as the daemon's does, and played skipping the
// minutes in which nothing can be due gives the same timeline: the same
// printed rows, the same --check report, and the same events for the
// checker (each message, each record stored after an operation or a tick,
// each tick, down and up, at the same instants). The skipping drill ran a
// small fraction of the ticks.
func TestSkipMatchesEveryMinute(t *testing.T) {
	text, err := os.ReadFile(filepath.Join("testdata", "skip.scenario"))
	if err != nil {
		t.Fatal(err)
	}
	type played struct {
		dr            *drill
		timeline, rep string
		events        []string
	}
	play := func(everyMinute bool) played {
		// A /member change lapses a day after it was signed, within the
		// scenario (the drill takes no [governance] from a configuration).
		dr := playCheck(t, "skip", text, "", everyMinute, func(c *config.Config) { c.Governance.LazyConsensusDays = 1 })
		var tl bytes.Buffer
		if err := dr.print(&tl); err != nil {
			t.Fatal(err)
		}
		rep, _ := report(dr)
		return played{dr: dr, timeline: tl.String(), rep: rep, events: describeEvents(t, dr.timeline())}
	}
	slow, fast := play(true), play(false)
	if fast.timeline != slow.timeline {
		t.Errorf("timeline skipping idle minutes:\n%s\nevery minute:\n%s", fast.timeline, slow.timeline)
	}
	if fast.rep != slow.rep {
		t.Errorf("--check skipping idle minutes:\n%s\nevery minute:\n%s", fast.rep, slow.rep)
	}
	if len(fast.events) != len(slow.events) {
		t.Errorf("%d events for the checker skipping idle minutes, %d every minute", len(fast.events), len(slow.events))
	}
	for i := range min(len(fast.events), len(slow.events)) {
		if fast.events[i] != slow.events[i] {
			t.Fatalf("event %d skipping idle minutes:\n  %s\nevery minute:\n  %s", i, fast.events[i], slow.events[i])
		}
	}
	// What the scenario is there to show happened.
	for _, want := range []string{"weekly digest", "triage due", "FINAL NOTICE", "daemon started", "[example] CVE-2026-40001", "Roster proposal expired"} {
		if !strings.Contains(slow.timeline, want) {
			t.Errorf("the scenario lacks %q:\n%s", want, slow.timeline)
		}
	}
	if n := strings.Count(slow.timeline, "reminder: every deadline is ASAP"); n != 2 {
		t.Errorf("%d ASAP reminders, want 2 (one repeat)", n)
	}
	minutes := int(slow.dr.sc.end.Sub(slow.dr.sc.start).Minutes())
	t.Logf("%d minutes: %d ticks every minute, %d skipping idle minutes", minutes, slow.dr.ticks, fast.dr.ticks)
	if fast.dr.ticks*10 > slow.dr.ticks {
		t.Errorf("skipping idle minutes ran %d ticks of %d", fast.dr.ticks, slow.dr.ticks)
	}
}

// random matches what differs from one drill to the next in a record: the
// member keys' fingerprints, the Message-IDs.
var random = regexp.MustCompile(`[0-9A-F]{40}|"(msgid|root_msg)":"[^"]*"`)

// describeEvents writes the checker's events, with the records as the
// checker reads them: without what is random in a drill (the member keys'
// fingerprints, the thread's Message-ID).
func describeEvents(t *testing.T, evs []workflow.TimelineEvent) []string {
	t.Helper()
	var out []string
	for _, ev := range evs {
		s := fmt.Sprintf("%s kind=%d incident=%s message=%d to=%s key=%s lines=%q",
			ev.At.Format("2006-01-02 15:04:05"), ev.Kind, ev.Incident, ev.Message, ev.To, ev.Key, ev.Lines)
		if ev.State != nil {
			b, err := json.Marshal(ev.State)
			if err != nil {
				t.Fatal(err)
			}
			s += " state=" + random.ReplaceAllString(string(b), "…")
		}
		out = append(out, s)
	}
	return out
}
