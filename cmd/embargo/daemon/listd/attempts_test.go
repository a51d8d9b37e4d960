package listd

import (
	"bytes"
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
)

// attemptsWorld is a store and a data directory for the attempt table.
func attemptsWorld(t *testing.T) (*bolt.DB, string) {
	t.Helper()
	dir := t.TempDir()
	db, err := bolt.Open(filepath.Join(dir, "s.db"), 0o600, &bolt.Options{Timeout: time.Second, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db, dir
}

func openAttempts(t *testing.T, db *bolt.DB, dir string, now time.Time) *Attempts {
	t.Helper()
	a, err := OpenAttempts(db, dir, now, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.f.Close() })
	return a
}

// die ends a run as a death of the process does: no Close, the in-flight
// file keeps what was written to it.
func die(a *Attempts) { a.f.Close() }

// storedDeaths is the attempt table as stored: SHA-256 → deaths.
func storedDeaths(t *testing.T, db *bolt.DB) map[[32]byte]int {
	t.Helper()
	out := map[[32]byte]int{}
	db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAttempts)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			if len(k) == sha256.Size {
				out[[32]byte(k)] = decodeDeaths(v).deaths
			}
			return nil
		})
	})
	return out
}

// TestAttemptsCountDeaths: a message in progress when the process dies is
// counted at the next start, one that ended is not, a clean stop counts
// nothing, and at PoisonDeaths the message is refused processing
// (docs/threat-model.md A6). Runs that only end their messages write no
// entry.
func TestAttemptsCountDeaths(t *testing.T) {
	db, dir := attemptsWorld(t)
	killer, other := sha256.Sum256([]byte("killer")), sha256.Sum256([]byte("other"))

	a := openAttempts(t, db, dir, mon)
	for range 3 {
		ta, _ := beginT(a, other, mon)
		a.end(ta)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	a = openAttempts(t, db, dir, mon)
	if n := len(storedDeaths(t, db)); n != 0 {
		t.Fatalf("after a clean run of finished messages the table holds %d entries, want none", n)
	}

	tk, poisoned := beginT(a, killer, mon)
	to, _ := beginT(a, other, mon)
	a.end(to)
	if poisoned || tk.suspect {
		t.Fatalf("a new message: poisoned %v, suspect %v", poisoned, tk.suspect)
	}
	die(a)
	a = openAttempts(t, db, dir, mon.Add(time.Minute))
	if got := storedDeaths(t, db); len(got) != 1 || got[killer] != 1 {
		t.Fatalf("after the first death the table is %v, want the killer with 1", got)
	}
	if a.Deaths(killer, mon) != 1 || a.Deaths(other, mon) != 0 {
		t.Errorf("deaths: killer %d, other %d; want 1 and 0", a.Deaths(killer, mon), a.Deaths(other, mon))
	}

	tk, poisoned = beginT(a, killer, mon)
	if poisoned || !tk.suspect {
		t.Fatalf("after one death: poisoned %v, suspect %v; want a suspect", poisoned, tk.suspect)
	}
	die(a)
	a = openAttempts(t, db, dir, mon.Add(2*time.Minute))
	if _, poisoned := beginT(a, killer, mon.Add(3*time.Minute)); !poisoned {
		t.Fatal("after two deaths the message is processed again")
	}
	// A clean stop while a message is in progress (a session the stop gave
	// up waiting for): no death.
	if _, poisoned := beginT(a, other, mon.Add(3*time.Minute)); poisoned {
		t.Fatal("other is poisoned")
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, InflightFile)); err != nil || fi.Size() != 0 {
		t.Errorf("after a clean stop the in-flight file is %v, %v; want empty", fi, err)
	}
	a = openAttempts(t, db, dir, mon.Add(4*time.Minute))
	if k, o := a.Deaths(killer, mon.Add(4*time.Minute)), a.Deaths(other, mon.Add(4*time.Minute)); k != PoisonDeaths || o != 0 {
		t.Errorf("after a clean stop the killer has %d deaths and the message in progress %d; want %d and 0", k, o, PoisonDeaths)
	}
}

// TestAttemptsExpire: a count is dropped AttemptTTL after its last death,
// from memory at once and from the store at the next start.
func TestAttemptsExpire(t *testing.T) {
	db, dir := attemptsWorld(t)
	sum := sha256.Sum256([]byte("m"))
	a := openAttempts(t, db, dir, mon)
	beginT(a, sum, mon)
	die(a)
	a = openAttempts(t, db, dir, mon)
	if a.Deaths(sum, mon.Add(AttemptTTL)) != 1 || a.Deaths(sum, mon.Add(AttemptTTL+time.Minute)) != 0 {
		t.Errorf("deaths at the TTL %d, after it %d; want 1 and 0", a.Deaths(sum, mon.Add(AttemptTTL)), a.Deaths(sum, mon.Add(AttemptTTL+time.Minute)))
	}
	if t1, _ := beginT(a, sum, mon.Add(AttemptTTL+time.Minute)); t1.suspect {
		t.Error("an expired count still makes a suspect")
	}
	a.Close()
	openAttempts(t, db, dir, mon.Add(AttemptTTL+time.Minute))
	if got := storedDeaths(t, db); len(got) != 0 {
		t.Errorf("after the TTL the table holds %v, want nothing", got)
	}
}

// TestAttemptsCountedOnce: a start that dies after counting but before it
// starts a new in-flight file (the file as the dead run left it) counts
// nothing twice.
func TestAttemptsCountedOnce(t *testing.T) {
	db, dir := attemptsWorld(t)
	sum := sha256.Sum256([]byte("m"))
	a := openAttempts(t, db, dir, mon)
	beginT(a, sum, mon)
	die(a)
	path := filepath.Join(dir, InflightFile)
	left, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	die(openAttempts(t, db, dir, mon))
	if err := os.WriteFile(path, left, 0o600); err != nil {
		t.Fatal(err)
	}
	openAttempts(t, db, dir, mon)
	if got := storedDeaths(t, db)[sum]; got != 1 {
		t.Errorf("one death counted %d times", got)
	}
}

// TestAttemptsStaleSlotsAfterPowerLoss: the in-flight file is never
// synced, so a power loss can leave this run's header page over the slot
// pages of an earlier run, which that run's successor already counted. A
// slot counts only under the run that wrote it: the death is not counted
// again (without the run tag it was, once per such loss, until a row
// failed at 3 or a tick was skipped at 2).
func TestAttemptsStaleSlotsAfterPowerLoss(t *testing.T) {
	db, dir := attemptsWorld(t)
	sum := sha256.Sum256([]byte("m"))
	a := openAttempts(t, db, dir, mon)
	beginT(a, sum, mon)
	die(a)
	path := filepath.Join(dir, InflightFile)
	stale, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		die(openAttempts(t, db, dir, mon)) // counts the death once, then a new run
		now, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		// The new run's header reached the disk, its zeroed slots did not.
		torn := append(now[:inflightHead:inflightHead], stale[inflightHead:]...)
		if err := os.WriteFile(path, torn, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	openAttempts(t, db, dir, mon)
	if got := storedDeaths(t, db)[sum]; got != 1 {
		t.Errorf("one death counted %d times after power losses that kept stale slots", got)
	}
}

// TestSuspectAlone: a suspect waits until the messages in progress end and
// the others wait for it, so that a death during its processing has it
// alone in the in-flight file.
func TestSuspectAlone(t *testing.T) {
	db, dir := attemptsWorld(t)
	suspect, a1, a2 := sha256.Sum256([]byte("s")), sha256.Sum256([]byte("a1")), sha256.Sum256([]byte("a2"))
	a := openAttempts(t, db, dir, mon)
	beginT(a, suspect, mon)
	die(a)
	a = openAttempts(t, db, dir, mon)

	t1, _ := beginT(a, a1, mon)
	began := make(chan *attempt)
	go func() { ts, _ := beginT(a, suspect, mon); began <- ts }()
	select {
	case <-began:
		t.Fatal("the suspect began while another message was in progress")
	case <-time.After(100 * time.Millisecond):
	}
	a.end(t1)
	select {
	case <-began:
	case <-time.After(5 * time.Second):
		t.Fatal("the suspect did not begin once the other message ended")
	}
	go func() { t2, _ := beginT(a, a2, mon); began <- t2 }()
	select {
	case <-began:
		t.Fatal("a message began while the suspect was in progress")
	case <-time.After(100 * time.Millisecond):
	}
	die(a) // the suspect kills the process: a2 never began
	openAttempts(t, db, dir, mon)
	if got := storedDeaths(t, db); len(got) != 1 || got[suspect] != 2 {
		t.Errorf("after the suspect's death the table is %v; want the suspect alone, with 2", got)
	}
}

// killerService is a store service whose attempt table gives raw deaths
// deaths, as that many deaths of the process with raw in progress would.
func killerService(t *testing.T, raw []byte, deaths int) (*Service, *bolt.DB, *Attempts) {
	t.Helper()
	var a *Attempts
	dir := t.TempDir()
	s, db := storeService(t, newStoreKeys(t), func(o *Options) {
		a = openAttempts(t, o.DB, dir, mon)
		for range deaths {
			beginT(a, sha256.Sum256(raw), mon)
			die(a)
			a = openAttempts(t, o.DB, dir, mon)
		}
		o.Attempts = a
	})
	return s, db, a
}

// TestKillerQuarantined: a message in progress at PoisonDeaths deaths is
// not processed: it is archived with NotePoison, the SRC gets one alert
// naming it by number and hash only, the sender gets 250 (nil), and the
// same delivery again is a duplicate (docs/threat-model.md A6, G6).
func TestKillerQuarantined(t *testing.T) {
	const canary = "CANARY-killer-5be1"
	raw := plainMail("rep@out.test", "security@ex.test", "crash "+canary, "k@out.test", "body "+canary+"\n")
	s, db, _ := killerService(t, raw, PoisonDeaths)
	env := Envelope{From: "rep@out.test", To: []string{"security@ex.test"}}
	for i := range 2 {
		if err := s.Handle(context.Background(), env, raw); err != nil {
			t.Fatalf("delivery %d: %v, want nil (250)", i+1, err)
		}
	}
	var notes []string
	kinds := map[string]int{}
	db.View(func(tx *bolt.Tx) error {
		incs, _ := incidentdb.List(tx)
		if len(incs) != 0 {
			t.Errorf("%d incidents opened; want none: the message is not processed", len(incs))
		}
		tx.Bucket([]byte("messages")).ForEach(func(k, v []byte) error {
			r, _ := incidentdb.Message(tx, incidentdbSeq(k))
			notes = append(notes, r.Note)
			return nil
		})
		rows, _ := queue.List(tx)
		for _, r := range rows {
			kinds[r.Kind]++
			body := append(append([]byte{}, r.Data...), r.Body...)
			if bytes.Contains(body, []byte(canary)) {
				t.Errorf("row %s carries the message's content", r.Kind)
			}
		}
		return nil
	})
	if len(notes) != 1 || notes[0] != NotePoison {
		t.Errorf("archive notes %v; want one %q", notes, NotePoison)
	}
	if len(kinds) != 1 || kinds["alert-poison"] != 2 {
		t.Errorf("queued %v; want the poison alert to alice and bob only", kinds)
	}
}

// TestSuspectSurvivingIsForgotten: a suspect processed without a death is
// handled as any message and dropped from the table.
func TestSuspectSurvivingIsForgotten(t *testing.T) {
	raw := plainMail("rep@out.test", "security@ex.test", "report", "s@out.test", "body\n")
	s, db, a := killerService(t, raw, 1)
	if err := s.Handle(context.Background(), Envelope{From: "rep@out.test", To: []string{"security@ex.test"}}, raw); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(raw)
	if a.Deaths(sum, mon) != 0 || storedDeaths(t, db)[sum] != 0 {
		t.Errorf("a suspect that survived keeps %d deaths (stored %d)", a.Deaths(sum, mon), storedDeaths(t, db)[sum])
	}
	db.View(func(tx *bolt.Tx) error {
		if incs, _ := incidentdb.List(tx); len(incs) != 1 {
			t.Errorf("%d incidents, want the report's", len(incs))
		}
		return nil
	})
}

func incidentdbSeq(k []byte) uint64 {
	var n uint64
	for _, c := range k {
		n = n<<8 | uint64(c)
	}
	return n
}

// BenchmarkAttempt is what the guard adds to each message on the normal
// path: the table's lookup, the shared gate, and the two pwrites of the
// in-flight file (no fsync), from parallel goroutines as the SMTP sessions
// call Handle. Compare with BenchmarkIntake's time per message.
func BenchmarkAttempt(b *testing.B) {
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
	b.RunParallel(func(pb *testing.PB) {
		var sum [32]byte
		for i := 0; pb.Next(); i++ {
			sum[0], sum[1] = byte(i), byte(i>>8)
			t, _ := beginT(a, sum, mon)
			a.end(t)
		}
	})
}

// beginT begins a message's attempt as Handle does, with no deadline of
// its own; a suspect not alone within SuspectWait fails the test.
func beginT(a *Attempts, sum [32]byte, now time.Time) (*attempt, bool) {
	t, poisoned, err := a.begin(context.Background(), sum, now)
	if err != nil {
		panic(err)
	}
	return t, poisoned
}

// TestAttemptsReadOldFile: an in-flight file the previous version left at
// its death (32-byte slots, messages only) is still counted, and a count it
// stored (12 bytes: deaths and the last death) still read.
func TestAttemptsReadOldFile(t *testing.T) {
	db, dir := attemptsWorld(t)
	sum := sha256.Sum256([]byte("m"))
	b := make([]byte, inflightHead+3*slotSizeV1)
	copy(b, inflightMagicV1)
	copy(b[len(inflightMagicV1):], "run-of-version-1")
	copy(b[inflightHead+slotSizeV1:], sum[:])
	if err := os.WriteFile(filepath.Join(dir, InflightFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
	old := sha256.Sum256([]byte("old"))
	if err := db.Update(func(tx *bolt.Tx) error {
		bk, err := tx.CreateBucketIfNotExists(bucketAttempts)
		if err != nil {
			return err
		}
		return bk.Put(old[:], encodeDeaths(deathRecord{deaths: 1, last: mon})[:12])
	}); err != nil {
		t.Fatal(err)
	}
	a := openAttempts(t, db, dir, mon)
	if a.Deaths(sum, mon) != 1 || a.Deaths(old, mon) != 1 {
		t.Errorf("deaths: from the old file %d, from an old count %d; want 1 and 1", a.Deaths(sum, mon), a.Deaths(old, mon))
	}
	var kinds []string
	db.View(func(tx *bolt.Tx) error {
		for _, s := range Suspects(tx) {
			kinds = append(kinds, s.Kind)
		}
		return nil
	})
	if len(kinds) != 2 || kinds[0] != "message" || kinds[1] != "message" {
		t.Errorf("suspects of kinds %v; want two messages", kinds)
	}
}
