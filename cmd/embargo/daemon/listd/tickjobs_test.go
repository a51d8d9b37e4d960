package listd

import (
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/announce"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/govdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/lists/governance"
	"github.com/embargo-project/embargo/workflow"
)

// The tick's own jobs under the attempt table (tickjobs.go;
// docs/threat-model.md A6), killed as the incidents' ticks are in
// tickdeath_test.go: the Job failpoint holds the job while the in-flight
// file is closed where it stands.

// holdJob holds the job named name for good and tells entered.
func holdJob(t *testing.T, name string) (func(string), chan struct{}) {
	entered, release := make(chan struct{}, 1), make(chan struct{})
	t.Cleanup(func() { close(release) })
	return func(got string) {
		if got == name {
			entered <- struct{}{}
			<-release
		}
	}, entered
}

func jobRun(t *testing.T, db *bolt.DB, a *Attempts, hook func(string)) *Service {
	t.Helper()
	s := tickServiceOn(t, db, func(o *Options) { o.Attempts = a })
	s.SetTestHooks(TestHooks{Job: hook})
	return s
}

func countRows(t *testing.T, db *bolt.DB, kind string) int {
	t.Helper()
	n := 0
	for _, r := range queued(t, db) {
		if r.Kind == kind {
			n++
		}
	}
	return n
}

// killJob kills the process PoisonDeaths times while the job name runs in
// the sweep at now, and checks the counts between the deaths.
func killJob(t *testing.T, db *bolt.DB, dir, name, kind string, now time.Time) {
	t.Helper()
	for death := 1; death <= PoisonDeaths; death++ {
		a := openAttempts(t, db, dir, now)
		hook, entered := holdJob(t, name)
		go jobRun(t, db, a, hook).Tick(context.Background(), now)
		waitChan(t, entered, "the "+name)
		die(a)
		if got := tickSuspects(t, db); death > 1 && (len(got) != 1 || got[0].Kind != kind || got[0].Deaths != death-1 || got[0].State == "") {
			t.Fatalf("before death %d the table is %+v; want the %s with %d", death, got, name, death-1)
		}
	}
}

// TestDigestKillerSkipped: a weekly digest that was being made at a death
// is counted and made alone at the next start; at PoisonDeaths it is
// skipped with one sealed alert to each SRC member over two sweeps, while
// the governance tick still runs; a change to what it reads (an open
// incident changed) makes the tick try it once more, and it is forgotten
// when it survives.
func TestDigestKillerSkipped(t *testing.T) {
	_, db := tickService(t)
	dir := t.TempDir()
	if err := db.Update(func(tx *bolt.Tx) error {
		return incidentdb.SetMeta(tx, metaDigest, workflow.ShiftStart(mon).AddDate(0, 0, -7).Format(time.RFC3339))
	}); err != nil {
		t.Fatal(err)
	}
	put(t, db, workflow.Incident{Version: workflow.SchemaVersion, ID: killerInc, Phase: workflow.PhaseTriage, Opened: mon, Updated: mon,
		Reporter: "rep@out.test", Commander: "bob@ex.test"})
	now := mon.Add(time.Hour)
	killJob(t, db, dir, "weekly digest", "digest", now)
	if n := countRows(t, db, "digest"); n != 0 {
		t.Fatalf("%d digests queued by runs that died", n)
	}

	a := openAttempts(t, db, dir, now)
	var mu sync.Mutex
	ran := map[string]int{}
	s := jobRun(t, db, a, func(name string) { mu.Lock(); ran[name]++; mu.Unlock() })
	for range 2 {
		if err := s.Tick(context.Background(), now); err != nil {
			t.Fatal(err)
		}
	}
	if ran["weekly digest"] != 0 || ran["governance tick"] != 2 || countRows(t, db, "digest") != 0 {
		t.Errorf("ran %v, %d digests; want the digest skipped and the governance tick run", ran, countRows(t, db, "digest"))
	}
	if n := countRows(t, db, "alert-digest"); n != 2 {
		t.Errorf("%d alerts after two sweeps; want one to each SRC member (2)", n)
	}
	for _, r := range queued(t, db) {
		if r.Kind == "alert-digest" && (r.Seal == nil || r.Seal.To == "") {
			t.Errorf("alert row %+v: want it sealed to a member", r)
		}
	}
	if got := tickSuspects(t, db); len(got) != 1 || !got[0].Alerted || got[0].Deaths != PoisonDeaths || got[0].Kind != "digest" {
		t.Errorf("the table is %+v; want the digest, alerted, with %d", got, PoisonDeaths)
	}

	// The incident changes: the digest reads something else, so it is
	// tried once more, alone; it survives and is forgotten.
	put(t, db, workflow.Incident{Version: workflow.SchemaVersion, ID: killerInc, Phase: workflow.PhaseTriage, Opened: mon, Updated: now,
		Reporter: "rep@out.test", Commander: "bob@ex.test"})
	if err := s.Tick(context.Background(), now); err != nil {
		t.Fatal(err)
	}
	if ran["weekly digest"] != 1 || countRows(t, db, "digest") != 2 || len(tickSuspects(t, db)) != 0 {
		t.Errorf("after a change: ran %v, %d digests, table %+v; want it made once and forgotten", ran, countRows(t, db, "digest"), tickSuspects(t, db))
	}
}

// TestGovTickKillerSkipped: the same for the governance tick, whose state
// is the governance record; the digest and the incidents' ticks go on
// while it is skipped, and its count expires after AttemptTTL.
func TestGovTickKillerSkipped(t *testing.T) {
	_, db := tickService(t)
	dir := t.TempDir()
	killJob(t, db, dir, "governance tick", "governance", mon)

	a := openAttempts(t, db, dir, mon)
	ran := map[string]int{}
	var mu sync.Mutex
	s := jobRun(t, db, a, func(name string) { mu.Lock(); ran[name]++; mu.Unlock() })
	for range 2 {
		if err := s.Tick(context.Background(), mon); err != nil {
			t.Fatal(err)
		}
	}
	if ran["governance tick"] != 0 || countRows(t, db, "alert-governance") != 2 {
		t.Errorf("ran %v, %d alerts; want the governance tick skipped with one alert to each member", ran, countRows(t, db, "alert-governance"))
	}
	// A governance command changed the record: once more, alone.
	if err := db.Update(func(tx *bolt.Tx) error { return govdb.Save(tx, governance.State{Year: 2026, Seq: 1}) }); err != nil {
		t.Fatal(err)
	}
	if err := s.Tick(context.Background(), mon); err != nil {
		t.Fatal(err)
	}
	if ran["governance tick"] != 1 || len(tickSuspects(t, db)) != 0 {
		t.Errorf("after a change: ran %v, table %+v; want it run once and forgotten", ran, tickSuspects(t, db))
	}

	// Killed twice more with this state: skipped, until the count expires.
	killJob(t, db, dir, "governance tick", "governance", mon)
	later := mon.Add(AttemptTTL + time.Minute)
	openAttempts(t, db, dir, mon).Close() // counts the last death
	a = openAttempts(t, db, dir, later)
	s = jobRun(t, db, a, func(name string) { mu.Lock(); ran[name]++; mu.Unlock() })
	if err := s.Tick(context.Background(), later); err != nil {
		t.Fatal(err)
	}
	if ran["governance tick"] != 2 || len(tickSuspects(t, db)) != 0 {
		t.Errorf("after the TTL: ran %v, table %+v; want it run and the table empty", ran, tickSuspects(t, db))
	}
}

// TestAttemptsReadV2File: an in-flight file a previous version left at its
// death (EMBINFL2: 64-byte slots) is counted, with each slot's kind and
// label.
func TestAttemptsReadV2File(t *testing.T) {
	db, dir := attemptsWorld(t)
	a := openAttempts(t, db, dir, mon) // makes the secret
	rowKey := a.labelKey(workRow, "42")
	a.Close()
	sum := sha256.Sum256([]byte("m"))
	b := make([]byte, inflightHead+3*slotSizeV2)
	copy(b, inflightMagicV2)
	copy(b[len(inflightMagicV2):], "run-of-version-2")
	copy(b[inflightHead:], sum[:])
	slot := b[inflightHead+2*slotSizeV2:]
	copy(slot, rowKey[:])
	slot[32], slot[33] = workRow, 2
	copy(slot[34:], "42")
	if err := os.WriteFile(filepath.Join(dir, InflightFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
	a = openAttempts(t, db, dir, mon)
	if a.Deaths(sum, mon) != 1 || a.Deaths(rowKey, mon) != 1 {
		t.Errorf("deaths: message %d, row %d; want 1 and 1", a.Deaths(sum, mon), a.Deaths(rowKey, mon))
	}
	var rows []uint64
	for _, s := range tickSuspects(t, db) {
		if s.Kind == "row" {
			rows = append(rows, s.Row)
		}
	}
	if len(rows) != 1 || rows[0] != 42 {
		t.Errorf("rows among the suspects: %v; want 42", rows)
	}
}

// BenchmarkBatchGuard is what the guard adds to each announce batch on the
// normal path (announce/guard.go): the shared gate, the batch's label and
// key, and the two pwrites of its 128-byte slot. A batch is one SMTP
// transaction with up to 100 recipients: compare with
// announce.BenchmarkFanout's time per batch.
func BenchmarkBatchGuard(b *testing.B) {
	dir := b.TempDir()
	db, err := bolt.Open(filepath.Join(dir, "s.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	a, err := OpenAttempts(db, dir, mon, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	g := a.Batches()
	for i := uint64(0); b.Loop(); i++ {
		end, _ := g.Begin(context.Background(), "SEC-2026-0001", announce.Batch{Lo: i * 100, Hi: i*100 + 100}, false)
		end()
	}
}
