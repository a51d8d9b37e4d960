package workflow

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The cases the property test found, kept as regression tests: each is
// played as the property test plays a generated case (the sim, CheckTimeline)
// and printed as a drill scenario to testdata/scenarios, which the drill's
// tests play through the real daemon with --check (cmd/embargo/drill): the
// printer's output round-trips.

const propAssess = "/accept\n/lead {src2}\n/fixteam add dev@{domain}\n/cvss " + "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H" + "\n"

// foundCases are the regression cases, by name.
func foundCases() map[string]pcase {
	mon := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	at := func(d, h, m int) time.Time { return time.Date(2026, 11, d, h, m, 0, 0, time.UTC) }
	dec := func(d, h, m int) time.Time { return time.Date(2026, 12, d, h, m, 0, 0, time.UTC) }
	return map[string]pcase{
		// No CVE, T three days out, the notice; then a CVE: the release would
		// go out 79 h after the notice of a vulnerability with a CVE. /cve is
		// refused now (TestCVEAfterShortNotice).
		"cve-after-short-notice": {Start: mon, End: at(27, 12, 0), Steps: []pstep{
			{At: mon, Kind: "report"},
			{At: at(23, 10, 0), Kind: "commands", Who: 1, Inc: 1, Text: propAssess + propAdvisory + "/fixed\n/disclose 2026-11-26\n/notify\n"},
			{At: at(23, 11, 0), Kind: "commands", Who: 2, Inc: 1, Text: "/cve CVE-2026-40001\n"},
			{At: at(23, 12, 0), Kind: "commands", Who: 1, Inc: 1, Text: "/approve\n"},
		}},
		// After the final notice, one message moves T away and back: two
		// re-notifications went out, and a second final notice for the T the
		// distributors had (TestOneNoticePerMessage).
		"disclose-away-and-back": {Start: mon, End: dec(4, 12, 0), Steps: []pstep{
			{At: mon, Kind: "report"},
			{At: at(23, 10, 0), Kind: "commands", Who: 1, Inc: 1, Text: propAssess + "/cve CVE-2026-40001\n" + propAdvisory + "/fixed\n/disclose 2026-12-03\n/notify\n/approve\n"},
			{At: dec(2, 15, 30), Kind: "commands", Who: 2, Inc: 1, Text: "/disclose 2026-12-07\n/disclose 2026-12-03\n"},
		}},
	}
}

// TestPropertyFoundCases: the found cases keep every invariant now.
func TestPropertyFoundCases(t *testing.T) {
	for name, c := range foundCases() {
		c.Name = name
		t.Run(name, func(t *testing.T) {
			vs, evs, err := runCase(c)
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range vs {
				t.Errorf("%s", v)
			}
			stats := map[string]int{}
			countStats(stats, evs)
			if stats["releases"] == 0 || stats["final-notices"] != 1 {
				t.Errorf("the case no longer reaches its release with one final notice: %v", stats)
			}
		})
	}
}

// propertyScenarioSeeds are generated cases printed beside the found ones: a
// release, a notice and downtime, without what a drill cannot play (a clock
// set back) or plays differently (a command of the two-person rule).
var propertyScenarioSeeds = []uint64{2591}

// TestPropertyScenarios keeps testdata/scenarios/*.scenario, the printer's
// output for the found cases and propertyScenarioSeeds, up to date (go test
// ./workflow -update rewrites them).
func TestPropertyScenarios(t *testing.T) {
	cases := foundCases()
	for name, c := range cases {
		c.Name = name
		cases[name] = c
	}
	for _, seed := range propertyScenarioSeeds {
		cases[fmt.Sprintf("seed-%d", seed)] = genCase(seed)
	}
	for name, c := range cases {
		vs, _, err := runCase(c)
		if err != nil {
			t.Fatal(err)
		}
		var v Violation
		if len(vs) > 0 {
			v = vs[0]
		}
		golden(t, filepath.Join("testdata", "scenarios", name+".scenario"), scenarioText(c, v))
	}
	if !*update {
		return
	}
	// Remove the files of cases no longer printed.
	old, _ := filepath.Glob(filepath.Join("testdata", "scenarios", "*.scenario"))
	for _, p := range old {
		if _, ok := cases[strings.TrimSuffix(filepath.Base(p), ".scenario")]; !ok {
			os.Remove(p)
		}
	}
}
