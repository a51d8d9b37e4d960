package listd

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/workflow"
)

// The ticks under the attempt table (work.go; docs/threat-model.md A6). A
// death is simulated as for messages (die): the in-flight file is closed
// where it stands while the tick of one incident is held in the Tick
// failpoint, and the next run is a new Service on the same store.

const killerInc, otherInc workflow.ID = "SEC-2026-0001", "SEC-2026-0002"

// tickRun is a Service with attempts a whose Tick failpoint is hook.
func tickRun(t *testing.T, db *bolt.DB, a *Attempts, hook func(workflow.ID)) *Service {
	t.Helper()
	s := tickServiceOn(t, db, func(o *Options) { o.Attempts = a })
	s.SetTestHooks(TestHooks{Tick: hook})
	return s
}

// holdTick returns a failpoint that holds the tick of id for good (the
// process dies meanwhile) and a channel told when it does; the hold ends
// with the test.
func holdTick(t *testing.T, id workflow.ID) (func(workflow.ID), chan struct{}) {
	entered, release := make(chan struct{}, 1), make(chan struct{})
	t.Cleanup(func() { close(release) })
	return func(got workflow.ID) {
		if got == id {
			entered <- struct{}{}
			<-release
		}
	}, entered
}

func waitChan(t *testing.T, ch chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

func tickSuspects(t *testing.T, db *bolt.DB) []Suspect {
	t.Helper()
	var s []Suspect
	db.View(func(tx *bolt.Tx) error { s = Suspects(tx); return nil })
	return s
}

func countKind(t *testing.T, db *bolt.DB, kind string, inc workflow.ID) int {
	t.Helper()
	n := 0
	for _, r := range queued(t, db) {
		if r.Kind == kind && r.Incident == string(inc) {
			n++
		}
	}
	return n
}

// TestTickKillerSkipped: an incident whose tick was in progress at a death
// is counted at the next start and ticked alone; at PoisonDeaths its tick is
// skipped, with one alert to each SRC member naming the incident, while the
// other incidents are ticked; a change to the incident makes the tick try
// it once more, and a tick that survives is forgotten.
func TestTickKillerSkipped(t *testing.T) {
	_, db := tickService(t)
	dir := t.TempDir()
	due := mon.Add(24 * time.Hour) // the triage reminders
	for _, id := range []workflow.ID{killerInc, otherInc} {
		put(t, db, workflow.Incident{Version: workflow.SchemaVersion, ID: id, Phase: workflow.PhaseTriage, Opened: mon, Updated: mon,
			Reporter: "rep@out.test", Commander: "bob@ex.test"})
	}
	for death := 1; death <= PoisonDeaths; death++ {
		a := openAttempts(t, db, dir, mon)
		hook, entered := holdTick(t, killerInc)
		s := tickRun(t, db, a, hook)
		go s.Tick(context.Background(), due)
		waitChan(t, entered, "the killer's tick")
		if death == 1 {
			// Another incident's tick goes on beside it (before it has a death).
			for deadline := time.Now().Add(10 * time.Second); countKind(t, db, "reminder", otherInc) == 0 && time.Now().Before(deadline); {
				time.Sleep(5 * time.Millisecond)
			}
		}
		die(a)
		if got := tickSuspects(t, db); death > 1 && (len(got) != 1 || got[0].Kind != "tick" || got[0].Incident != string(killerInc) || got[0].Deaths != death-1) {
			t.Fatalf("before death %d the table is %+v; want the killer's tick with %d", death, got, death-1)
		}
	}
	if countKind(t, db, "reminder", otherInc) != 1 || countKind(t, db, "reminder", killerInc) != 0 {
		t.Fatalf("reminders queued: %v", queued(t, db))
	}

	a := openAttempts(t, db, dir, mon.Add(time.Minute))
	var mu sync.Mutex
	ticked := map[workflow.ID]int{}
	s := tickRun(t, db, a, func(id workflow.ID) { mu.Lock(); ticked[id]++; mu.Unlock() })
	put(t, db, workflow.Incident{Version: workflow.SchemaVersion, ID: "SEC-2026-0003", Phase: workflow.PhaseTriage, Opened: mon, Updated: mon,
		Reporter: "rep@out.test", Commander: "bob@ex.test"})
	for range 2 {
		if err := s.Tick(context.Background(), due); err != nil {
			t.Fatal(err)
		}
	}
	if ticked[killerInc] != 0 || ticked["SEC-2026-0003"] == 0 || countKind(t, db, "reminder", "SEC-2026-0003") != 1 {
		t.Errorf("ticked %v; want the killer skipped and the new incident ticked (its reminder queued)", ticked)
	}
	alerts := 0
	for _, r := range queued(t, db) {
		if r.Kind == "alert-tick" {
			alerts++
			if r.Incident != string(killerInc) || r.Seal == nil || r.Seal.To == "" {
				t.Errorf("alert row %+v: want it sealed to a member and naming %s", r, killerInc)
			}
		}
	}
	if alerts != 2 {
		t.Errorf("%d alerts queued after two sweeps; want one to each SRC member (2)", alerts)
	}
	if got := tickSuspects(t, db); len(got) != 1 || !got[0].Alerted || got[0].Deaths != PoisonDeaths {
		t.Errorf("the table is %+v; want the killer's tick, alerted, with %d", got, PoisonDeaths)
	}

	// A change to the incident (a command, a message filed to it): tried
	// once more, alone; it survives and is forgotten.
	put(t, db, workflow.Incident{Version: workflow.SchemaVersion, ID: killerInc, Phase: workflow.PhaseTriage, Opened: mon, Updated: mon.Add(2 * time.Minute),
		Reporter: "rep@out.test", Commander: "bob@ex.test"})
	if err := s.Tick(context.Background(), due); err != nil {
		t.Fatal(err)
	}
	if ticked[killerInc] != 1 || countKind(t, db, "reminder", killerInc) != 1 || len(tickSuspects(t, db)) != 0 {
		t.Errorf("after a change: ticked %v, %d reminders for it, table %+v; want it ticked once and forgotten",
			ticked, countKind(t, db, "reminder", killerInc), tickSuspects(t, db))
	}
}

// TestTickDeathsExpire: a skipped tick runs again once its count expired
// (AttemptTTL after the last death), and a clean stop counts nothing.
func TestTickDeathsExpire(t *testing.T) {
	_, db := tickService(t)
	dir := t.TempDir()
	put(t, db, workflow.Incident{Version: workflow.SchemaVersion, ID: killerInc, Phase: workflow.PhaseTriage, Opened: mon, Updated: mon,
		Reporter: "rep@out.test", Commander: "bob@ex.test"})
	for range PoisonDeaths {
		a := openAttempts(t, db, dir, mon)
		hook, entered := holdTick(t, killerInc)
		go tickRun(t, db, a, hook).Tick(context.Background(), mon.Add(24*time.Hour))
		waitChan(t, entered, "the killer's tick")
		die(a)
	}
	openAttempts(t, db, dir, mon).Close() // the start that counts the second death
	later := mon.Add(AttemptTTL + time.Minute)
	a := openAttempts(t, db, dir, later)
	n := 0
	s := tickRun(t, db, a, func(workflow.ID) { n++ })
	if err := s.Tick(context.Background(), later); err != nil {
		t.Fatal(err)
	}
	if n != 1 || len(tickSuspects(t, db)) != 0 {
		t.Errorf("after the TTL the tick ran %d times and the table is %+v; want once and empty", n, tickSuspects(t, db))
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	openAttempts(t, db, dir, later)
	if got := tickSuspects(t, db); len(got) != 0 {
		t.Errorf("a clean run counted %+v", got)
	}
	for _, r := range queued(t, db) {
		if strings.HasPrefix(r.Kind, "alert") {
			t.Errorf("unexpected %s row: the expired count was never skipped", r.Kind)
		}
	}
}
