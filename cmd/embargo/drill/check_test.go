package drill

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/embargo-project/embargo/cmd/embargo/config"
	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
	"github.com/embargo-project/embargo/workflow"
)

// checkDrill plays a scenario with --check's recording on, with the built-in
// roster plus extra configuration lines (holidays = […]).
func checkDrill(t *testing.T, name string, text []byte, extra string) *drill {
	t.Helper()
	return playCheck(t, name, text, extra, false)
}

// playCheck is checkDrill, ticking at every virtual minute with everyMinute,
// with the configuration changed by tweak first.
func playCheck(t *testing.T, name string, text []byte, extra string, everyMinute bool, tweak ...func(*config.Config)) *drill {
	t.Helper()
	sc, err := parseScenario(text, name)
	if err != nil {
		t.Fatal(err)
	}
	base, err := config.Parse([]byte(extra+"\n"+builtinRoster), "drill")
	if err != nil {
		t.Fatal(err)
	}
	logs := &daemontest.SyncBuffer{}
	dr, err := newDrill(base, sc, t.TempDir(), daemon.NewLogger("debug", logs))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range tweak {
		f(dr.cfg)
	}
	dr.check, dr.everyMinute = true, everyMinute
	if err := dr.run(t.Context()); err != nil {
		t.Fatalf("%v\n%s", err, logs)
	}
	return dr
}

// report runs the check and returns its output and error.
func report(dr *drill) (string, error) {
	var out bytes.Buffer
	err := dr.report(&out)
	return out.String(), err
}

// unmapped lists the kinds of rows out that are neither part of the
// timeline nor answers: a kind the checker would silently skip.
func unmapped(dr *drill) []string {
	var out []string
	for _, r := range dr.rows {
		if r.dir != "out" || isAnswer(r.kind) {
			continue
		}
		if _, ok := dr.mapRow(r, nil); !ok {
			out = append(out, r.kind)
		}
	}
	return out
}

// TestCheckBuiltin: the built-in scenario keeps every invariant, every row it
// sends is mapped or an answer, and the digest's deadline lines reach the
// checker.
func TestCheckBuiltin(t *testing.T) {
	dr := checkDrill(t, "built-in", builtinScenario, "")
	out, err := report(dr)
	if err != nil {
		t.Fatalf("--check: %v\n%s", err, out)
	}
	if want := "embargo drill --check: scenario built-in: 2 incidents, 53 messages, 13 invariants checked: none broken\n"; out != want {
		t.Errorf("summary %q, want %q", out, want)
	}
	if u := unmapped(dr); len(u) > 0 {
		t.Errorf("rows of unknown kinds: %v", u)
	}
	counts := map[workflow.MessageKind]int{}
	lines := 0
	for _, ev := range dr.timeline() {
		counts[ev.Message]++
		lines += len(ev.Lines)
	}
	if counts[workflow.MessageReminder] != 9 || counts[workflow.MessageRelease] != 1 || counts[workflow.MessageFinalNotice] != 1 ||
		counts[workflow.MessageNotice] != 1 || counts[workflow.MessageDigest] != 3 || lines == 0 {
		t.Errorf("timeline: %v, %d digest lines", counts, lines)
	}
}

// TestCheckDownAcrossT: the daemon down across T and back 5 minutes after it
// holds the release once, the alert in the incident's history, and /disclose
// now (signed by both members, as the two-person rule may ask) releases it:
// no invariant broken. The same timeline with the hold's history entry taken
// out, as the daemon stored it before the hold moved into workflow (an alert
// in no history), breaks "history", and --check says so.
func TestCheckDownAcrossT(t *testing.T) {
	text, err := os.ReadFile(filepath.Join("testdata", "down-across-t.scenario"))
	if err != nil {
		t.Fatal(err)
	}
	dr := checkDrill(t, "down-across-t", text, "")
	out, err := report(dr)
	if err != nil {
		t.Fatalf("--check: %v\n%s", err, out)
	}
	held, released := 0, 0
	for _, r := range dr.rows {
		if r.kind == "alert-release-held" {
			held++
		}
		if strings.HasPrefix(r.kind, "advisory") {
			released++
		}
	}
	if held != 1 || released != 2 {
		t.Errorf("%d release-held alerts, %d advisory rows; want 1 and 2 (distributors at /disclose now, the channel after them)", held, released)
	}

	dr.doctor = func(evs []workflow.TimelineEvent) []workflow.TimelineEvent {
		for i, ev := range evs {
			if ev.Kind != workflow.EventState {
				continue
			}
			inc := *ev.State
			inc.History = nil
			for _, h := range ev.State.History {
				if !strings.Contains(h.What, "held: the clock moved") {
					inc.History = append(inc.History, h)
				}
			}
			evs[i].State = &inc
		}
		return evs
	}
	out, err = report(dr)
	if !errors.Is(err, ErrViolations) || !strings.Contains(err.Error(), "history") {
		t.Fatalf("doctored: error %v, want ErrViolations naming history\n%s", err, out)
	}
	row := regexp.MustCompile(`(?m)^history +SEC-2026-0001 +2026-12-03 16:05 Thu +message release-held \(alert\) to src has no history entry at its instant$`)
	if !strings.Contains(out, "1 broken") || !row.MatchString(out) {
		t.Errorf("doctored report:\n%s", out)
	}
}

// TestCheckPropertyScenarios: the scenarios the property test printed
// (workflow/testdata/scenarios) round-trip: the drill, through the real
// daemon, finds what the property test's model found (the header says which
// rule a case breaks, or that it keeps every invariant), with the holidays
// the header names.
func TestCheckPropertyScenarios(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "..", "..", "workflow", "testdata", "scenarios", "*.scenario"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no printed scenarios: %v", err)
	}
	breaks := regexp.MustCompile(`(?m)^# The property test's .*\. It breaks ([a-z0-9-]+):`)
	holidays := regexp.MustCompile(`(?m)^# .*(holidays = \[[^]]*\])`)
	for _, f := range files {
		if testing.Short() && filepath.Base(f) != "cve-after-short-notice.scenario" {
			continue // each is a drill of days, a minute at a time: -short plays the shortest
		}
		t.Run(filepath.Base(f), func(t *testing.T) {
			text, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			want := ""
			if m := breaks.FindSubmatch(text); m != nil {
				want = string(m[1])
			} else if !bytes.Contains(text, []byte("It keeps every invariant.")) {
				t.Fatal("the header says neither which rule the case breaks nor that it keeps them all")
			}
			extra := ""
			if m := holidays.FindSubmatch(text); m != nil {
				extra = string(m[1])
			}
			dr := checkDrill(t, filepath.Base(f), text, extra)
			out, err := report(dr)
			switch {
			case want == "" && err != nil:
				t.Errorf("the property test's model keeps every invariant; the drill: %v\n%s", err, out)
			case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
				t.Errorf("the property test's model breaks %s; the drill: %v\n%s", want, err, out)
			}
			if u := unmapped(dr); len(u) > 0 {
				t.Errorf("rows of unknown kinds: %v", u)
			}
		})
	}
}

// TestDigestLines reads the deadline lines of a digest as the template
// writes them.
func TestDigestLines(t *testing.T) {
	text := "Weekly digest\n\nOpen incidents:\n  SEC-2026-0001  fix  high\n\nDeadlines this week, and overdue ones:\n" +
		"  SEC-2026-0001 fix-team  OVERDUE since 2026-11-24 09:00 UTC (Tuesday): fix team formed\n" +
		"  SEC-2026-0002 triage  due 2026-11-25 09:00 UTC (Wednesday): first response\n\nMember keys …:\n  none\n"
	got := digestLines(text)
	if len(got) != 2 || !strings.HasPrefix(got[0], "SEC-2026-0001 fix-team ") || !strings.HasPrefix(got[1], "SEC-2026-0002 triage ") {
		t.Errorf("digestLines = %q", got)
	}
	if got := digestLines("Deadlines this week, and overdue ones:\n  none\n\n"); len(got) != 0 {
		t.Errorf("no deadlines: %q", got)
	}
	if n := maxCopies([]string{"a@x", "b@x", "A@x"}); n != 2 {
		t.Errorf("maxCopies = %d, want 2", n)
	}
}
