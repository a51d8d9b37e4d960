package queue

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue/queuetest"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/internal/durable"
)

func TestRestartDeliversEveryRowOnce(t *testing.T) {
	path := t.TempDir() + "/embargo.db"
	db := openDB(t, path)
	rec := queuetest.NewRecorder(t)

	// The first worker never gets a row through: its relay blocks until the
	// worker stops, so some rows are left "sending" (4 with the relay, 2
	// more claimed: MaxClaimed bounds them) and the rest "queued".
	var blocked atomic.Int32
	stuck := relayFunc(func(ctx context.Context, _ string, _ []string, _ []byte) error {
		blocked.Add(1)
		<-ctx.Done()
		return ctx.Err()
	})
	w1 := start(t, db, stuck, Options{Concurrency: 4, MaxClaimed: 6})
	var want []string
	for i := range 10 {
		m := testMsg(i)
		want = append(want, m.MessageID)
		if err := db.Update(func(tx *bolt.Tx) error { return w1.Enqueue(tx, m) }); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, "4 rows in flight, 6 claimed", func() bool {
		sending := 0
		for _, r := range listRows(t, db) {
			if r.State == StateSending {
				sending++
			}
		}
		return blocked.Load() == 4 && sending == 6
	})
	time.Sleep(20 * time.Millisecond) // room for a claim beyond the bound, were there one
	w1.stop(t)
	states := map[State]int{}
	for _, r := range listRows(t, db) {
		states[r.State]++
	}
	if states[StateSending] != 6 || states[StateQueued] != 4 {
		t.Fatalf("after stop: %v, want 6 sending and 4 queued", states)
	}
	db.Close()

	db = openDB(t, path)
	start(t, db, smtpRelayTo(t, rec), Options{})
	rec.WaitFor(10, 10*time.Second)
	waitUntil(t, "empty queue", emptyQueue(t, db))
	var got []string
	for _, m := range rec.Messages() {
		got = append(got, messageID(t, m.Data))
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("delivered %q, want each of %q once", got, want)
	}
}

func TestCrashAfterRelayAcceptedResendsOnce(t *testing.T) {
	path := t.TempDir() + "/embargo.db"
	db := openDB(t, path)
	rec := queuetest.NewRecorder(t)
	direct := smtpRelayTo(t, rec)
	a, b := testMsg(1), testMsg(2)

	// The relay answers 250 for a, then the process "dies" before the row is
	// crossed off: the worker is stopped while the delivery is still in flight.
	accepted := make(chan struct{})
	crashy := relayFunc(func(ctx context.Context, from string, to []string, data []byte) error {
		err := direct.Send(ctx, from, to, data)
		if err == nil && bytes.Equal(data, a.Data) {
			close(accepted)
			<-ctx.Done()
			return ctx.Err()
		}
		return err
	})
	w1 := start(t, db, crashy, Options{Concurrency: 1})
	enqueueNow(t, db, time.Now(), a, b)
	w1.Kick()
	<-accepted
	w1.stop(t)
	rows := listRows(t, db)
	if len(rows) != 2 || rows[0].State != StateSending {
		t.Fatalf("after the crash: %+v, want a sending, b queued", rows)
	}
	db.Close()

	db = openDB(t, path)
	start(t, db, direct, Options{})
	rec.WaitFor(3, 10*time.Second)
	waitUntil(t, "empty queue", emptyQueue(t, db))
	count := map[string]int{}
	for _, m := range rec.Messages() {
		count[messageID(t, m.Data)]++
	}
	if count[a.MessageID] != 2 || count[b.MessageID] != 1 || len(count) != 2 {
		t.Errorf("copies by Message-ID = %v, want a twice (same Message-ID) and b once", count)
	}
}

// TestCrashBetween250AndBatchedMark: outcomes are committed in groups, so a
// crash can fall after the relay's 250 for several rows and before the one
// commit that would have crossed them off (docs/threat-model.md A3). The
// "crash" here closes the store just before such a commit, as kill -9 would
// leave it: nothing of that turn is written. After a restart, exactly the
// rows the relay accepted and the store did not record are sent again,
// once each, with the same Message-ID and their attempt counted; no row
// recorded before the crash is sent twice; and the copies sent again are
// at most MaxClaimed.
func TestCrashBetween250AndBatchedMark(t *testing.T) {
	path := t.TempDir() + "/embargo.db"
	db := openDB(t, path)
	rec := queuetest.NewRecorder(t)
	const rows, maxClaimed = 40, 8
	var msgs []Msg
	for i := range rows {
		msgs = append(msgs, testMsg(i))
	}
	enqueueNow(t, db, time.Now(), msgs...)

	// Turns before the crash commit (their delivered rows are recorded);
	// the third turn that records deliveries is the crash.
	var mu sync.Mutex
	recorded := map[string]bool{} // Message-ID → crossed off before the crash
	turns := 0
	w1 := New(db, smtpRelayTo(t, rec), Options{Concurrency: 2, MaxClaimed: maxClaimed})
	w1.beforeCommit = func(outs []outcome) {
		mu.Lock()
		defer mu.Unlock()
		var sent []string
		for _, o := range outs {
			if o.err == nil && !o.interrupted {
				sent = append(sent, o.row.MessageID)
			}
		}
		if len(sent) == 0 {
			return
		}
		if turns++; turns == 3 {
			db.Close() // the crash: this turn's marks never reach the file
			return
		}
		for _, id := range sent {
			recorded[id] = true
		}
	}
	if err := w1.Run(context.Background()); !errors.Is(err, bolt.ErrDatabaseNotOpen) {
		t.Fatalf("Run after the crash = %v, want the store closed", err)
	}
	atCrash := len(rec.Messages())

	db = openDB(t, path)
	sending := 0
	for _, r := range listRows(t, db) {
		if r.State == StateSending {
			sending++
		}
	}
	if sending == 0 || sending > maxClaimed {
		t.Fatalf("%d rows left sending by the crash, want 1 to %d", sending, maxClaimed)
	}
	var resentAttempts sync.Map // Message-ID → attempts of its delivery after the restart
	start(t, db, smtpRelayTo(t, rec), Options{Delivered: func(r Row, _ time.Time) {
		resentAttempts.Store(r.MessageID, r.Attempts)
	}})
	rec.WaitFor(rows+1, 10*time.Second)
	waitUntil(t, "empty queue", emptyQueue(t, db))

	copies := map[string]int{}
	for i, m := range rec.Messages() {
		id := messageID(t, m.Data)
		copies[id]++
		if copies[id] == 2 && i < atCrash {
			t.Errorf("%s sent twice before the restart", id)
		}
	}
	// Delivered runs after the commit that crossed the rows off: the queue
	// can be empty before the last batch's calls are made.
	waitUntil(t, "Delivered for every copy sent again", func() bool {
		for id, n := range copies {
			if _, ok := resentAttempts.Load(id); n == 2 && !ok {
				return false
			}
		}
		return true
	})
	dups := 0
	for _, m := range msgs {
		switch n := copies[m.MessageID]; {
		case n == 0:
			t.Errorf("%s never delivered", m.MessageID)
		case n > 2:
			t.Errorf("%s delivered %d times, want at most twice", m.MessageID, n)
		case n == 2:
			dups++
			if recorded[m.MessageID] {
				t.Errorf("%s was crossed off before the crash, yet sent again", m.MessageID)
			}
			if a, _ := resentAttempts.Load(m.MessageID); a != 2 {
				t.Errorf("%s sent again as attempt %v, want 2: the resend is counted", m.MessageID, a)
			}
		}
	}
	if dups == 0 || dups > maxClaimed {
		t.Errorf("%d copies sent again, want 1 to MaxClaimed (%d)", dups, maxClaimed)
	}
	if dups > sending {
		t.Errorf("%d copies sent again, more than the %d rows left sending", dups, sending)
	}
	t.Logf("%d rows: %d crossed off before the crash, %d left sending, %d sent again", rows, len(recorded), sending, dups)
}

// maildirEvents records the Maildir's durability steps in order.
type maildirEvents struct {
	mu     sync.Mutex
	events []string // "sync <tmp name>", "syncdir"
}

func (e *maildirEvents) add(s string) {
	e.mu.Lock()
	e.events = append(e.events, s)
	e.mu.Unlock()
}

func (e *maildirEvents) index(s string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i, ev := range e.events {
		if ev == s {
			return i
		}
	}
	return -1
}

func (e *maildirEvents) lastDirSync() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i := len(e.events) - 1; i >= 0; i-- {
		if e.events[i] == "syncdir" {
			return i
		}
	}
	return -1
}

func watchedMaildir(t *testing.T, ev *maildirEvents) (*Maildir, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "outbox")
	m, err := NewMaildir(dir, RelayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m.syncFile = func(f *os.File) error {
		ev.add("sync " + filepath.Base(f.Name()))
		return f.Sync()
	}
	m.syncDir = func(d string) error {
		ev.add("syncdir")
		return durable.SyncDir(d)
	}
	// A syncfs makes every file then complete in tmp/ durable.
	if syncFS := m.syncFS; syncFS != nil {
		m.syncFS = func(tmp *os.File) error {
			for _, name := range completeFiles(t, filepath.Join(dir, "tmp")) {
				ev.add("sync " + name)
			}
			return syncFS(tmp)
		}
	}
	return m, dir
}

// TestMaildirDurableBeforeSent: when the worker commits "sent" for a row
// delivered to the Maildir, its file is complete in new/, was synced before
// it was renamed there, and new/ was synced after the rename (RFC 5321 §6.1:
// we may forget a message only once it is safe elsewhere).
func TestMaildirDurableBeforeSent(t *testing.T) {
	var ev maildirEvents
	m, dir := watchedMaildir(t, &ev)
	db := tempDB(t)
	var msgs []Msg
	for i := range 30 {
		msgs = append(msgs, testMsg(i))
	}
	enqueueNow(t, db, time.Now(), msgs...)
	var checked atomic.Int32
	w := New(db, m, Options{Concurrency: 2})
	w.beforeCommit = func(outs []outcome) {
		files, _ := os.ReadDir(filepath.Join(dir, "new"))
		for _, o := range outs {
			if o.err != nil {
				continue
			}
			found := false
			for _, f := range files {
				raw, err := os.ReadFile(filepath.Join(dir, "new", f.Name()))
				if err != nil || !bytes.Contains(raw, []byte("Message-ID: "+o.row.MessageID+"\n")) {
					continue
				}
				found = true
				if !bytes.HasSuffix(raw, []byte("Grüße\n")) {
					t.Errorf("%s: recorded as sent while its file is incomplete", o.row.MessageID)
				}
				synced := ev.index("sync " + f.Name())
				if synced < 0 || ev.lastDirSync() < synced {
					t.Errorf("%s: recorded as sent before its file (%d) and new/ (%d) were synced", o.row.MessageID, synced, ev.lastDirSync())
				}
			}
			if !found {
				t.Errorf("%s: recorded as sent, not in new/", o.row.MessageID)
			}
			checked.Add(1)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	waitUntil(t, "empty queue", emptyQueue(t, db))
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := checked.Load(); n != 30 {
		t.Errorf("%d deliveries checked at their commit, want 30", n)
	}
	ev.mu.Lock()
	defer ev.mu.Unlock()
	if dirSyncs := strings.Count(strings.Join(ev.events, "\n"), "syncdir"); dirSyncs >= 30 {
		t.Errorf("new/ synced %d times for 30 files: want one sync per batch", dirSyncs)
	}
}

// TestMaildirSyncFailures: a file that cannot be synced (or a batch whose
// syncfs fails) keeps its message out of new/ and queued; a failed directory sync keeps every message of
// the batch queued (the retry may write them again: at-least-once).
func TestMaildirSyncFailures(t *testing.T) {
	var ev maildirEvents
	m, dir := watchedMaildir(t, &ev)
	var failFile, failDir atomic.Bool
	m.syncFile = func(f *os.File) error {
		if failFile.Load() {
			return errors.New("disk on fire")
		}
		return f.Sync()
	}
	m.syncDir = func(d string) error {
		if failDir.Load() {
			return errors.New("directory on fire")
		}
		return durable.SyncDir(d)
	}
	if syncFS := m.syncFS; syncFS != nil {
		m.syncFS = func(tmp *os.File) error {
			if failFile.Load() {
				return errors.New("disk on fire")
			}
			return syncFS(tmp)
		}
	}
	msgs := []Outgoing{{From: "a@src.test", To: []string{"x@src.test"}, Data: testMsg(1).Data},
		{From: "a@src.test", To: []string{"y@src.test", "z@src.test"}, Data: testMsg(2).Data}}

	failFile.Store(true)
	for i, err := range m.SendBatch(t.Context(), msgs) {
		if err == nil || IsPermanent(err) {
			t.Errorf("message %d with its file unsynced: %v, want a temporary error", i, err)
		}
	}
	for _, sub := range []string{"new", "tmp"} {
		if files, _ := os.ReadDir(filepath.Join(dir, sub)); len(files) != 0 {
			t.Errorf("%s/ holds %d files after failed syncs, want none", sub, len(files))
		}
	}

	failFile.Store(false)
	failDir.Store(true)
	for i, err := range m.SendBatch(t.Context(), msgs) {
		if err == nil || !strings.Contains(err.Error(), "sync new/") {
			t.Errorf("message %d with new/ unsynced: %v, want the sync error", i, err)
		}
	}

	// Through the worker: the row stays queued with the error.
	db := tempDB(t)
	ids := enqueueNow(t, db, time.Now(), testMsg(3))
	start(t, db, m, Options{})
	waitUntil(t, "a deferred row", func() bool {
		r, err := getRow(t, db, ids[0])
		return err == nil && r.State == StateQueued && strings.Contains(r.LastError, "directory on fire")
	})
}
