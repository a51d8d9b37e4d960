package main

import (
	"bytes"
	"context"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/embargo-project/embargo/cmd/embargo/drill"
)

var updateDrill = flag.Bool("update-drill", false, "rewrite testdata/drill.golden")

// TestDrillGolden runs the built-in scenario through the real daemon on a
// virtual clock and compares the timeline with testdata/drill.golden
// (go test ./cmd/embargo -run TestDrillGolden -update-drill rewrites it). The
// rows below are the process's deadlines (docs/process.md §3, §6), each
// at its instant.
func TestDrillGolden(t *testing.T) {
	var out, errb bytes.Buffer
	if code := runIO([]string{"drill"}, nil, &out, &errb); code != 0 {
		t.Fatalf("embargo drill: exit %d\n%s", code, errb.String())
	}
	got := out.String()
	for _, want := range []string{
		// The 1-working-day triage reminder, to the on-call (alice's week).
		"2026-11-24 09:00 Tue  SEC-2026-0001  triage     out  SRC: alice@example.test                      1  encrypted, signed  [SEC-2026-0001] reminder: triage due (1 working day)",
		// The fix team, due 24 h after the report, to the Fix Lead when the incident is accepted late.
		"2026-11-24 10:30 Tue  SEC-2026-0001  fix        out  SRC: bob@example.test                        1  encrypted, signed  [SEC-2026-0001] reminder: fix team not formed (24 h)",
		// The second report: 1 working day to the on-call, 3 to the SRC (Thu, Fri, Mon).
		"2026-11-26 17:00 Thu  SEC-2026-0002  triage     out  SRC: alice@example.test",
		"2026-11-30 17:00 Mon  SEC-2026-0002  triage     out  SRC                                          2  encrypted, signed  [SEC-2026-0002] reminder: triage overdue (3 working days)",
		// Monday digests, 00:00 UTC.
		"2026-11-30 00:00 Mon  -              -          out  SRC                                          2  encrypted, signed  [embargo] weekly digest, week of 2026-11-30",
		"2026-12-07 00:00 Mon  -              -          out  SRC                                          2  encrypted, signed  [embargo] weekly digest, week of 2026-12-07",
		// 7 days after the report.
		"2026-11-30 09:00 Mon  SEC-2026-0001  fix        out  SRC                                          2  encrypted, signed  [SEC-2026-0001] reminder: fix overdue (7 days)",
		// T = Thursday 2026-12-10 16:00: notice reminder T-9 d, approval T-48 h, final notice T-25 h, release at T.
		"2026-12-01 16:00 Tue  SEC-2026-0001  fix        out  SRC: bob@example.test                        1  encrypted, signed  [SEC-2026-0001] reminder: distributor notice due 2026-12-03 16:00 UTC (Thursday)",
		"2026-12-02 10:00 Wed  SEC-2026-0001  embargo    out  distributors                                 2  encrypted, signed  [EMBARGOED] CVE-2026-40001",
		"2026-12-08 16:00 Tue  SEC-2026-0001  embargo    out  SRC                                          2  encrypted, signed  [SEC-2026-0001] reminder: advisory not approved (T-48 h)",
		"2026-12-09 15:00 Wed  SEC-2026-0001  embargo    out  distributors                                 2  encrypted, signed  [EMBARGOED] FINAL NOTICE CVE-2026-40001",
		"2026-12-10 16:00 Thu  SEC-2026-0001  disclosed  out  channel oss-security@lists.openwall.example  1  signed             [example] CVE-2026-40001",
		"2026-12-10 16:00 Thu  SEC-2026-0001  disclosed  out  reporter                                     1  signed             [SEC-2026-0001] Disclosed",
		// Retrospective: T+1 d to the Fix Lead; T+3 d (Sunday, the daemon down) once, late, at restart.
		"2026-12-11 16:00 Fri  SEC-2026-0001  disclosed  out  SRC: bob@example.test                        1  encrypted, signed  [SEC-2026-0001] reminder: retrospective due (T+1 day)",
		"2026-12-14 12:00 Mon  SEC-2026-0001  disclosed  out  SRC                                          2  encrypted, signed  [SEC-2026-0001] reminder: retrospective overdue (T+3 days)",
		"2026-12-14 12:00 Mon  -              -          out  SRC                                          2  encrypted, signed  [embargo] weekly digest, week of 2026-12-14",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("timeline lacks\n  %s", want)
		}
	}
	if n := strings.Count(got, "reminder: retrospective overdue"); n != 1 {
		t.Errorf("the retrospective escalation went out %d times, want once", n)
	}
	path := filepath.Join("testdata", "drill.golden")
	if *updateDrill {
		os.MkdirAll("testdata", 0o755)
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test ./cmd/embargo -run TestDrillGolden -update-drill)", err)
	}
	if got != string(want) {
		t.Errorf("embargo drill output differs from %s (-update-drill rewrites it):\n%s", path, got)
	}
}

// TestDrillCheck: embargo drill --check plays a scenario and, when it keeps
// every invariant, prints one line and exits 0 (the failing path, exit 1
// with each broken rule, is tested in the drill package: no real scenario
// breaks one today). The scenario is one the property test printed.
func TestDrillCheck(t *testing.T) {
	scenario := filepath.Join("..", "..", "workflow", "testdata", "scenarios", "cve-after-short-notice.scenario")
	var out, errb bytes.Buffer
	if code := runIO([]string{"drill", "--check", "--scenario", scenario}, nil, &out, &errb); code != 0 {
		t.Fatalf("embargo drill --check: exit %d\n%s%s", code, out.String(), errb.String())
	}
	want := "embargo drill --check: scenario " + scenario + ": 1 incidents, 20 messages, 13 invariants checked: none broken\n"
	if out.String() != want {
		t.Errorf("output %q, want %q", out.String(), want)
	}
	if !strings.Contains(drillHelp, "--check") || !strings.Contains(drillHelp, "exits 1") {
		t.Errorf("drill --help does not explain --check:\n%s", drillHelp)
	}
}

// TestDrillEveryMinute: embargo drill --every-minute ticks at every virtual
// minute and prints the timeline the default, which skips idle minutes,
// prints (the drill package's TestSkipMatchesEveryMinute compares the two
// on a longer scenario, event by event). The scenario is short: a report and
// its triage reminder a working day later would be 1,440 ticks.
func TestDrillEveryMinute(t *testing.T) {
	scenario := filepath.Join(t.TempDir(), "short.scenario")
	text := "start 2026-11-23 09:00\nend +2h\n@ +0 mail reporter@example.net\nSubject: a crash\n\nDetails.\n.\n@ +1h commands src1\n/accept\n.\n"
	if err := os.WriteFile(scenario, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	var everyMinute []bool
	runDrill = func(ctx context.Context, o drill.Options, w io.Writer) error {
		everyMinute = append(everyMinute, o.EveryMinute)
		return drill.Run(ctx, o, w)
	}
	t.Cleanup(func() { runDrill = drill.Run })
	play := func(args ...string) string {
		var out, errb bytes.Buffer
		if code := runIO(append([]string{"drill", "--scenario", scenario}, args...), nil, &out, &errb); code != 0 {
			t.Fatalf("embargo drill %v: exit %d\n%s", args, code, errb.String())
		}
		return out.String()
	}
	every, skip := play("--every-minute"), play()
	if len(everyMinute) != 2 || !everyMinute[0] || everyMinute[1] {
		t.Errorf("Options.EveryMinute of drill, drill --every-minute: %v, want [true false]", everyMinute)
	}
	if every != skip {
		t.Errorf("--every-minute:\n%s\nskipping idle minutes:\n%s", every, skip)
	}
	if !strings.Contains(every, "Your report is confirmed") {
		t.Errorf("the scenario did not play:\n%s", every)
	}
	if !strings.Contains(drillHelp, "--every-minute") {
		t.Errorf("drill --help does not explain --every-minute:\n%s", drillHelp)
	}
}
