package listd

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/workflow"
)

var dueVectors = []string{
	"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
	"CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:N",
	"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:L/I:L/A:N",
	"CVSS:3.1/AV:L/AC:H/PR:H/UI:R/S:U/C:L/I:N/A:N",
}

// dueCommand is the next command for an incident along the process (step
// is how far it got), so that incidents reach notices, T and releases, or
// now and then any command, in or out of order.
func dueCommand(r *rand.Rand, now time.Time, step int) string {
	path := []func() string{
		func() string { return "/accept\n/lead me" },
		func() string { return "/cvss " + dueVectors[r.IntN(len(dueVectors))] },
		func() string { return fmt.Sprintf("/cve CVE-2026-%d", 40000+r.IntN(1000)) },
		func() string {
			return "/set summary Heap overflow\n/set actor A remote attacker\n/set impact run code\n/set affected parser v1.0 - v1.4\n/set fixed parser v1.5"
		},
		func() string { return "/fixed" },
		func() string { return "/disclose " + now.AddDate(0, 0, 8+r.IntN(20)).Format(time.DateOnly) },
		func() string { return "/notify" },
		func() string { return "/approve" },
	}
	if step < len(path) && r.IntN(6) > 0 {
		return path[step]()
	}
	any := []string{"/close", "/reopen", "/defer", "/retro", "/public", "/severity high", "/approve withdraw", "/approve", "/notify",
		"/disclose " + now.AddDate(0, 0, 8+r.IntN(20)).Format(time.DateOnly)}
	return any[r.IntN(len(any))]
}

// TestDueIndexProperty: after any sequence of reports, signed commands and
// ticks, the deadline index holds exactly what a full scan computes (each
// open incident under workflow.NextTick, nothing else), and after each
// tick no open incident has anything due at that instant: a sweep that
// reads the index alone misses nothing a sweep over every incident would
// have done.
func TestDueIndexProperty(t *testing.T) {
	seeds, steps := 6, 120
	if testing.Short() {
		seeds = 3
	}
	if v := os.Getenv("EMBARGO_DUE_SEEDS"); v != "" {
		fmt.Sscan(v, &seeds)
	}
	k := newStoreKeys(t)
	for seed := range seeds {
		r := rand.New(rand.NewPCG(uint64(seed), 0x5eed))
		now := mon
		s, db := storeService(t, k, func(o *Options) {
			o.Now = func() time.Time { return now }
			o.Mono = func() time.Duration { return now.Sub(mon) } // no clock jump: the clocks move together
		})
		var ids []workflow.ID
		progress := map[workflow.ID]int{}
		reports, commands, ticks := 0, 0, 0
		for step := range steps {
			what := ""
			switch x := r.IntN(100); {
			case x < 7 || len(ids) == 0:
				reports++
				what = "report"
				env, raw := report(reports)
				if err := s.Handle(t.Context(), env, raw); err != nil {
					t.Fatalf("seed %d step %d: report: %v", seed, step, err)
				}
				ids = incidentIDs(t, db)
			case x < 60:
				commands++
				id := ids[r.IntN(len(ids))]
				text := dueCommand(r, now, progress[id])
				progress[id]++
				what = string(id) + " " + strings.SplitN(text, "\n", 2)[0]
				sko := keys.Options{Now: func() time.Time { return now.Add(-time.Minute) }}
				to := "security+" + string(id) + "@ex.test"
				raw, err := keys.Sign(outerHeader("alice@ex.test", to, "Re: ["+string(id)+"]", fmt.Sprintf("c%d.%d@ex.test", seed, step)),
					[]byte(textEntity+text+"\r\n"), k.alice, sko)
				if err != nil {
					t.Fatal(err)
				}
				if err := s.Handle(t.Context(), Envelope{From: "alice@ex.test", To: []string{to}}, raw); err != nil {
					t.Fatalf("seed %d step %d: %s: %v", seed, step, what, err)
				}
			default:
				ticks++
				gaps := []time.Duration{time.Minute, time.Hour, 7 * time.Hour, 26 * time.Hour, 3 * 24 * time.Hour, 9 * 24 * time.Hour}
				now = now.Add(gaps[r.IntN(len(gaps))] + time.Duration(r.IntN(60))*time.Minute)
				what = "tick at " + workflow.FormatInstant(now)
				if err := s.Tick(context.Background(), now); err != nil {
					t.Fatalf("seed %d step %d: %s: %v", seed, step, what, err)
				}
				checkNothingDue(t, s, db, now, fmt.Sprintf("seed %d step %d (%s)", seed, step, what))
			}
			checkDueIndex(t, s, db, fmt.Sprintf("seed %d step %d (%s)", seed, step, what))
		}
		phases, kinds := map[string]int{}, map[string]int{}
		db.View(func(tx *bolt.Tx) error {
			incs, _ := incidentdb.List(tx)
			for _, inc := range incs {
				phases[inc.Phase.String()]++
			}
			return nil
		})
		for _, q := range queued(t, db) {
			kinds[q.Kind]++
		}
		t.Logf("seed %d: %d reports, %d command messages, %d ticks; phases %v; queued %v", seed, reports, commands, ticks, phases, kinds)
	}
}

func incidentIDs(t *testing.T, db *bolt.DB) []workflow.ID {
	t.Helper()
	var ids []workflow.ID
	db.View(func(tx *bolt.Tx) error {
		incs, err := incidentdb.List(tx)
		if err != nil {
			t.Fatal(err)
		}
		for _, inc := range incs {
			ids = append(ids, inc.ID)
		}
		return nil
	})
	return ids
}

// checkDueIndex compares the index with a full scan.
func checkDueIndex(t *testing.T, s *Service, db *bolt.DB, where string) {
	t.Helper()
	db.View(func(tx *bolt.Tx) error {
		idx, err := incidentdb.DueIndex(tx)
		if err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		incs, err := incidentdb.List(tx)
		if err != nil {
			t.Fatal(err)
		}
		want := map[workflow.ID]time.Time{}
		for _, inc := range incs {
			if n := s.nextTick(inc); !n.IsZero() {
				want[inc.ID] = n
			}
		}
		var diff []string
		for id, at := range want {
			if got, ok := idx[id]; !ok || !got.Equal(at) {
				diff = append(diff, fmt.Sprintf("%s: index %v (filed %v), scan %v", id, got, ok, at))
			}
		}
		for id, at := range idx {
			if _, ok := want[id]; !ok {
				diff = append(diff, fmt.Sprintf("%s: index %v, scan: never due", id, at))
			}
		}
		if len(diff) > 0 {
			slices.Sort(diff)
			t.Fatalf("%s: the deadline index differs from a full scan:\n%s", where, strings.Join(diff, "\n"))
		}
		return nil
	})
}

// checkNothingDue: after a tick at now, no open incident has anything due
// at now.
func checkNothingDue(t *testing.T, s *Service, db *bolt.DB, now time.Time, where string) {
	t.Helper()
	db.View(func(tx *bolt.Tx) error {
		env := s.workflowEnv(tx)
		incs, _ := incidentdb.OpenIncidents(tx)
		for _, inc := range incs {
			if r := workflow.Tick(inc, now, env); r.Applied {
				t.Fatalf("%s: after the tick %s still has something due: %v", where, inc.ID, r.Actions)
			}
		}
		return nil
	})
}

// TestPutsFileTheIndex: every write of an incident by the service files it
// in the deadline index (putIncident): a plain incidentdb.Put would leave
// it to be found by the next tick, one minute late for nothing.
func TestPutsFileTheIndex(t *testing.T) {
	files, _ := filepath.Glob("*.go")
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(src), "incidentdb.Put(") {
			t.Errorf("%s calls incidentdb.Put: write incidents with Service.putIncident", f)
		}
	}
}

// TestDueIndexRebuilt: a store without the index (written before it, or
// by incidentdb.Put) is indexed at the next tick, and so is one whose
// holidays changed; the reminders then go out as a scan would send them.
func TestDueIndexRebuilt(t *testing.T) {
	s, db := tickService(t)
	var incs []workflow.Incident
	for i := range 5 {
		incs = append(incs, workflow.Incident{Version: workflow.SchemaVersion, ID: workflow.FormatID(2026, uint64(i+1)), Phase: workflow.PhaseTriage,
			Opened: mon.Add(time.Duration(i) * time.Hour), Updated: mon, Reporter: "rep@out.test", Commander: "bob@ex.test"})
	}
	put(t, db, incs...)
	// As a store from before the index: nothing filed, no marker.
	if err := db.Update(func(tx *bolt.Tx) error {
		if err := incidentdb.ClearDue(tx); err != nil {
			return err
		}
		return incidentdb.SetMeta(tx, metaDueIndex, "")
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Tick(context.Background(), mon.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	checkDueIndex(t, s, db, "after the rebuild")
	if n := len(queued(t, db)); n != 0 {
		t.Fatalf("%d messages before anything was due", n)
	}
	// Tuesday 09:00 + 4 h: the triage reminders of the first five hours.
	if err := s.Tick(context.Background(), mon.Add(28*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if n := len(queued(t, db)); n != 5 {
		t.Fatalf("%d reminders, want 5 (one per incident, to the commander)", n)
	}
	checkDueIndex(t, s, db, "after the reminders")
	// A reload that makes Tuesday a holiday moves the escalations: the
	// index is built again for the new holidays.
	tue := time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC)
	set := s.settings()
	set.Holidays = []time.Time{tue}
	if err := s.Reload(set); err != nil {
		t.Fatal(err)
	}
	var before map[workflow.ID]time.Time
	db.View(func(tx *bolt.Tx) error { before, _ = incidentdb.DueIndex(tx); return nil })
	if err := s.Tick(context.Background(), mon.Add(29*time.Hour)); err != nil {
		t.Fatal(err)
	}
	checkDueIndex(t, s.current(), db, "after the holidays changed")
	var after map[workflow.ID]time.Time
	db.View(func(tx *bolt.Tx) error { after, _ = incidentdb.DueIndex(tx); return nil })
	if fmt.Sprint(before) == fmt.Sprint(after) {
		t.Errorf("a new holiday moved no escalation in the index: %v", after)
	}
}
