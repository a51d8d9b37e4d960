package listd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
)

// The queue rows under the attempt table (work.go, queue/guard.go;
// docs/threat-model.md A6), with the real worker and the real in-flight
// file. A death of the process is simulated as die does for messages: the
// in-flight file is closed where it stands, then the worker is stopped
// (its relay calls end with the cancel, which records nothing).

// heldRelay is a relay whose sends to the addresses in hold wait until
// the address is let go (or the cancel), and which counts the sends in
// progress together.
type heldRelay struct {
	mu       sync.Mutex
	hold     map[string]chan struct{}
	entered  chan string // an address whose send waits
	inflight int
	most     int      // the most sends in progress at once
	sent     []string // delivered, in order
}

func newHeldRelay(hold ...string) *heldRelay {
	r := &heldRelay{hold: map[string]chan struct{}{}, entered: make(chan string, 16)}
	for _, a := range hold {
		r.hold[a] = make(chan struct{})
	}
	return r
}

func (r *heldRelay) Send(ctx context.Context, from string, to []string, data []byte) error {
	r.mu.Lock()
	r.inflight++
	r.most = max(r.most, r.inflight)
	ch := r.hold[to[0]]
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.inflight--
		r.mu.Unlock()
	}()
	if ch != nil {
		r.entered <- to[0]
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	} else {
		time.Sleep(5 * time.Millisecond) // long enough for sends to overlap
	}
	r.mu.Lock()
	r.sent = append(r.sent, to[0])
	r.mu.Unlock()
	return nil
}

func (r *heldRelay) let(addr string) { close(r.hold[addr]) }

// heldBatch is heldRelay as a batch relay (the Maildir's kind): the worker
// hands it several rows at once, all in progress until the batch ends.
type heldBatch struct{ *heldRelay }

func (r heldBatch) MaxBatch() int { return 8 }

func (r heldBatch) SendBatch(ctx context.Context, msgs []queue.Outgoing) []error {
	errs := make([]error, len(msgs))
	r.mu.Lock()
	r.inflight += len(msgs)
	r.most = max(r.most, r.inflight)
	var held []chan struct{}
	for _, m := range msgs {
		if ch := r.hold[m.To[0]]; ch != nil {
			held = append(held, ch)
			r.entered <- m.To[0]
		}
	}
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.inflight -= len(msgs)
		r.mu.Unlock()
	}()
	for _, ch := range held {
		select {
		case <-ch:
		case <-ctx.Done():
			for i := range errs {
				errs[i] = ctx.Err()
			}
			return errs
		}
	}
	time.Sleep(5 * time.Millisecond)
	r.mu.Lock()
	for _, m := range msgs {
		r.sent = append(r.sent, m.To[0])
	}
	r.mu.Unlock()
	return errs
}

func (r *heldRelay) delivered() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.sent)
}

func (r *heldRelay) mostAtOnce() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.most
}

// waitEntered waits until the sends to addrs wait in the relay.
func (r *heldRelay) waitEntered(t *testing.T, addrs ...string) {
	t.Helper()
	for range addrs {
		select {
		case a := <-r.entered:
			if !slices.Contains(addrs, a) {
				t.Fatalf("the send to %s waits; want those to %v", a, addrs)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("the sends to %v did not begin", addrs)
		}
	}
}

// rowRun is one run of the process: the attempts and a worker guarded by
// them.
type rowRun struct {
	a      *Attempts
	w      *queue.Worker
	cancel context.CancelFunc
	done   chan error

	mu     sync.Mutex
	failed map[uint64]string // row → reason, by the Failed hook
}

func startRowRun(t *testing.T, db *bolt.DB, dir string, now func() time.Time, relay queue.Relay, opts ...func(*queue.Options)) *rowRun {
	t.Helper()
	run := &rowRun{a: openAttempts(t, db, dir, now()), done: make(chan error, 1), failed: map[uint64]string{}}
	o := queue.Options{Now: now, MinBackoff: 20 * time.Millisecond, Concurrency: 4, Guard: run.a.Rows(),
		Failed: func(tx *bolt.Tx, r queue.Row, reason string) error {
			run.mu.Lock()
			defer run.mu.Unlock()
			run.failed[r.ID] = reason
			return nil
		}}
	for _, f := range opts {
		f(&o)
	}
	run.w = queue.New(db, relay, o)
	ctx, cancel := context.WithCancel(context.Background())
	run.cancel = cancel
	go func() { run.done <- run.w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-run.done })
	return run
}

// die ends the run as a death of the process does: the in-flight file
// keeps what was written to it, and nothing more is recorded.
func (run *rowRun) die() {
	die(run.a)
	run.cancel()
	<-run.done
	run.done <- nil // for the cleanup
}

// stop ends the run cleanly, as the daemon does: the worker first, then
// the attempts.
func (run *rowRun) stop(t *testing.T) {
	t.Helper()
	run.cancel()
	<-run.done
	run.done <- nil
	if err := run.a.Close(); err != nil {
		t.Fatal(err)
	}
}

func (run *rowRun) failures() map[uint64]string {
	run.mu.Lock()
	defer run.mu.Unlock()
	out := map[uint64]string{}
	for k, v := range run.failed {
		out[k] = v
	}
	return out
}

// rowsWorld is a store with the queue's buckets and a data directory.
func rowsWorld(t *testing.T) (*bolt.DB, string) {
	t.Helper()
	db, dir := attemptsWorld(t)
	if err := db.Update(queue.Init); err != nil {
		t.Fatal(err)
	}
	return db, dir
}

// enqueueTo queues one row to each address, in order, and returns their IDs.
func enqueueTo(t *testing.T, db *bolt.DB, now time.Time, addrs ...string) []uint64 {
	t.Helper()
	for _, a := range addrs {
		m := queue.Msg{From: "security@ex.test", To: []string{a}, Kind: "report-copy", Incident: "SEC-2026-0001",
			MessageID: "<" + a + ">", Data: []byte("Subject: s\r\n\r\nbody\r\n")}
		if err := db.Update(func(tx *bolt.Tx) error { return queue.Enqueue(tx, now, m) }); err != nil {
			t.Fatal(err)
		}
	}
	var ids []uint64
	db.View(func(tx *bolt.Tx) error {
		rows, _ := queue.List(tx)
		for _, r := range rows {
			if slices.Contains(addrs, r.To[0]) {
				ids = append(ids, r.ID)
			}
		}
		return nil
	})
	return ids
}

// rowDeaths is the attempt table's rows: row ID → deaths.
func rowDeaths(t *testing.T, db *bolt.DB) map[uint64]int {
	t.Helper()
	out := map[uint64]int{}
	db.View(func(tx *bolt.Tx) error {
		for _, s := range Suspects(tx) {
			if s.Kind != "row" {
				t.Errorf("suspect %+v is no row", s)
			}
			out[s.Row] = s.Deaths
		}
		return nil
	})
	return out
}

func rowState(t *testing.T, db *bolt.DB, id uint64) queue.Row {
	t.Helper()
	var r queue.Row
	db.View(func(tx *bolt.Tx) error {
		var err error
		r, err = queue.Info(tx, id)
		if errors.Is(err, queue.ErrNotFound) {
			r = queue.Row{ID: id}
			return nil
		}
		return err
	})
	return r
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !ok(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestRowKillerFailsAtThreeDeaths: rows in delivery at a death of the
// process are counted at the next start; each is then sealed and sent
// alone, so the bystanders are delivered and forgotten and the next death
// is the killer's own; at RowPoisonDeaths the killer fails without an attempt,
// the Failed hook (the SRC's alert) is called once for it, and the other
// rows go on. A retry tries it once more, alone.
func TestRowKillerFailsAtThreeDeaths(t *testing.T) {
	t.Run("relay=one-at-a-time", func(t *testing.T) {
		testRowKiller(t, func(h *heldRelay) queue.Relay { return h })
	})
	t.Run("relay=batch", func(t *testing.T) {
		testRowKiller(t, func(h *heldRelay) queue.Relay { return heldBatch{h} })
	})
}

func testRowKiller(t *testing.T, kind func(*heldRelay) queue.Relay) {
	db, dir := rowsWorld(t)
	now := time.Now
	ids := enqueueTo(t, db, now(), "b1@ex.test", "b2@ex.test", "k@ex.test")
	b1, b2, k := ids[0], ids[1], ids[2]

	relay := newHeldRelay("b1@ex.test", "b2@ex.test", "k@ex.test")
	// A claim's lease (MinBackoff, less up to a quarter at random) that has
	// run out by the restart is kept as the row's due time, so the three
	// would come back in random order; leases that have not run out all
	// become the restart's instant, and the rows come back in ID order.
	run := startRowRun(t, db, dir, now, kind(relay), func(o *queue.Options) { o.MinBackoff = time.Hour })
	relay.waitEntered(t, "b1@ex.test", "b2@ex.test", "k@ex.test") // sent together
	run.die()
	openAttempts(t, db, dir, now()).Close() // a start counts; this one does nothing else
	if got := rowDeaths(t, db); len(got) != 3 || got[b1] != 1 || got[b2] != 1 || got[k] != 1 {
		t.Fatalf("after the first death the table is %v; want the three rows in delivery with 1", got)
	}

	relay = newHeldRelay("k@ex.test")
	run = startRowRun(t, db, dir, now, kind(relay))
	relay.waitEntered(t, "k@ex.test")
	if got := relay.delivered(); !slices.Equal(got, []string{"b1@ex.test", "b2@ex.test"}) || relay.mostAtOnce() != 1 {
		t.Fatalf("the suspects went out %v, %d at once; want b1, b2 first, each alone", got, relay.mostAtOnce())
	}
	waitFor(t, "the bystanders forgotten", func() bool { return len(rowDeaths(t, db)) == 1 })
	run.die()
	openAttempts(t, db, dir, now()).Close()
	if got := rowDeaths(t, db); len(got) != 1 || got[k] != 2 {
		t.Fatalf("after the killer's death alone the table is %v; want it alone with 2", got)
	}
	// A row needs RowPoisonDeaths: a second death alone.
	relay = newHeldRelay("k@ex.test")
	run = startRowRun(t, db, dir, now, kind(relay))
	relay.waitEntered(t, "k@ex.test")
	run.die()
	openAttempts(t, db, dir, now()).Close()
	if got := rowDeaths(t, db); len(got) != 1 || got[k] != RowPoisonDeaths {
		t.Fatalf("after the killer's second death alone the table is %v; want it alone with %d", got, RowPoisonDeaths)
	}

	relay = newHeldRelay()
	run = startRowRun(t, db, dir, now, kind(relay))
	other := enqueueTo(t, db, now(), "c@ex.test")[0]
	run.w.Kick()
	waitFor(t, "the killer failed and the other row delivered", func() bool {
		return rowState(t, db, k).State == queue.StateFailed && rowState(t, db, other).State == ""
	})
	f := run.failures()
	if len(f) != 1 || !strings.Contains(f[k], queue.ErrKilledProcess.Error()) || !strings.Contains(f[k], fmt.Sprintf("retry %d", k)) {
		t.Errorf("Failed hook calls %v; want one, for row %d, saying why and what to do", f, k)
	}
	if slices.Contains(relay.delivered(), "k@ex.test") {
		t.Error("the killer was sent")
	}
	if r := rowState(t, db, k); !strings.Contains(r.LastError, queue.ErrKilledProcess.Error()) {
		t.Errorf("the killer's last error is %q", r.LastError)
	}

	// `embargo queue retry`: once more, alone; it survives and is forgotten.
	if err := run.w.Retry(k); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the retried row delivered", func() bool { return rowState(t, db, k).State == "" })
	waitFor(t, "the retried row forgotten", func() bool { return len(rowDeaths(t, db)) == 0 })
	run.stop(t)
}

// TestRowRetriedKillerDiesAgain: a killer retried by an operator is a
// suspect, sent alone; its next death fails it again at once.
func TestRowRetriedKillerDiesAgain(t *testing.T) {
	db, dir := rowsWorld(t)
	now := time.Now
	k := enqueueTo(t, db, now(), "k@ex.test")[0]
	for range RowPoisonDeaths {
		relay := newHeldRelay("k@ex.test")
		run := startRowRun(t, db, dir, now, relay)
		relay.waitEntered(t, "k@ex.test")
		run.die()
	}
	run := startRowRun(t, db, dir, now, newHeldRelay())
	waitFor(t, "the killer failed", func() bool { return rowState(t, db, k).State == queue.StateFailed })
	run.stop(t)
	if err := db.Update(func(tx *bolt.Tx) error { return queue.Retry(tx, k, now()) }); err != nil {
		t.Fatal(err)
	}
	relay := newHeldRelay("k@ex.test")
	run = startRowRun(t, db, dir, now, relay)
	relay.waitEntered(t, "k@ex.test")
	run.die()
	run = startRowRun(t, db, dir, now, newHeldRelay())
	waitFor(t, "the killer failed again", func() bool { return rowState(t, db, k).State == queue.StateFailed })
	if got := rowDeaths(t, db)[k]; got != RowPoisonDeaths+1 {
		t.Errorf("the killer has %d deaths, want %d", got, RowPoisonDeaths+1)
	}
	if len(run.failures()) != 1 {
		t.Errorf("Failed hook calls %v; want one", run.failures())
	}
}

// TestRowCleanStopCountsNothing: rows delivered, and a row in delivery
// at a clean stop (the cancel ends its send), leave no count and an empty
// in-flight file.
func TestRowCleanStopCountsNothing(t *testing.T) {
	db, dir := rowsWorld(t)
	now := time.Now
	enqueueTo(t, db, now(), "a@ex.test", "b@ex.test", "h@ex.test")
	relay := newHeldRelay("h@ex.test")
	run := startRowRun(t, db, dir, now, relay)
	relay.waitEntered(t, "h@ex.test")
	waitFor(t, "the others delivered", func() bool { return len(relay.delivered()) == 2 })
	run.stop(t)
	if fi, err := os.Stat(filepath.Join(dir, InflightFile)); err != nil || fi.Size() != 0 {
		t.Fatalf("after a clean stop the in-flight file is %v, %v; want empty", fi, err)
	}
	run = startRowRun(t, db, dir, now, newHeldRelay())
	if got := rowDeaths(t, db); len(got) != 0 {
		t.Errorf("a clean stop counted %v", got)
	}
	run.stop(t)
}

// TestRowDeathsExpire: a row's count is dropped AttemptTTL after its last
// death: it is sent with the others again.
func TestRowDeathsExpire(t *testing.T) {
	db, dir := rowsWorld(t)
	a := openAttempts(t, db, dir, mon)
	end, err := a.Rows().Begin(context.Background(), []uint64{7}, false)
	if err != nil {
		t.Fatal(err)
	}
	_ = end
	die(a)
	a = openAttempts(t, db, dir, mon)
	g := a.Rows()
	if v, n := g.Verdict(7, time.Time{}, mon.Add(AttemptTTL)); v != queue.Suspect || n != 1 {
		t.Errorf("at the TTL: %v with %d deaths; want a suspect with 1", v, n)
	}
	if v, _ := g.Verdict(7, time.Time{}, mon.Add(AttemptTTL+time.Minute)); v != queue.Clean {
		t.Errorf("after the TTL: %v; want clean", v)
	}
	if v, _ := g.Verdict(8, time.Time{}, mon); v != queue.Clean {
		t.Errorf("another row: %v; want clean", v)
	}
	a.Close()
	openAttempts(t, db, dir, mon.Add(AttemptTTL+time.Minute))
	if got := rowDeaths(t, db); len(got) != 0 {
		t.Errorf("after the TTL the table holds %v, want nothing", got)
	}
}

// TestSuspectRowAloneWithMessages: a suspect row is alone with messages
// too: a message in progress keeps it waiting, it gives up after
// SuspectWait (tried again later, still a suspect), and while it is sent a
// new message waits for it.
func TestSuspectRowAloneWithMessages(t *testing.T) {
	defer func(d time.Duration) { suspectWait = d }(suspectWait)
	suspectWait = 200 * time.Millisecond
	db, dir := rowsWorld(t)
	now := time.Now
	s := enqueueTo(t, db, now(), "s@ex.test")[0]
	relay := newHeldRelay("s@ex.test")
	run := startRowRun(t, db, dir, now, relay)
	relay.waitEntered(t, "s@ex.test")
	run.die()

	a := openAttempts(t, db, dir, now())
	msg, _ := beginT(a, [32]byte{1}, now()) // a message in progress
	relay = newHeldRelay("s@ex.test")
	run = &rowRun{a: a, done: make(chan error, 1), failed: map[uint64]string{}}
	run.w = queue.New(db, relay, queue.Options{MinBackoff: 20 * time.Millisecond, Guard: a.Rows()})
	ctx, cancel := context.WithCancel(context.Background())
	run.cancel = cancel
	go func() { run.done <- run.w.Run(ctx) }()
	defer func() { cancel(); <-run.done }()
	waitFor(t, "the suspect deferred", func() bool {
		return rowState(t, db, s).Attempts >= 2 && strings.Contains(rowState(t, db, s).LastError, "alone")
	})
	if rowDeaths(t, db)[s] != 1 {
		t.Errorf("a suspect that could not be alone lost its count: %v", rowDeaths(t, db))
	}
	a.end(msg)
	relay.waitEntered(t, "s@ex.test")
	began := make(chan struct{})
	go func() { m, _ := beginT(a, [32]byte{2}, now()); a.end(m); close(began) }()
	select {
	case <-began:
		t.Fatal("a message began while the suspect row was being sent")
	case <-time.After(100 * time.Millisecond):
	}
	relay.let("s@ex.test")
	select {
	case <-began:
	case <-time.After(5 * time.Second):
		t.Fatal("the message did not begin once the suspect row was sent")
	}
	waitFor(t, "the suspect forgotten", func() bool { return len(rowDeaths(t, db)) == 0 && rowState(t, db, s).State == "" })
}

// discardRelay takes every message at once: the worker's own costs alone.
type discardRelay struct{}

func (discardRelay) Send(context.Context, string, []string, []byte) error { return nil }

// BenchmarkRowGuard is what the guard adds to each row on the normal path
// (queue/guard.go): the verdict at the claim (no key computed while no
// count is known), the shared gate, the row's key and the two pwrites of
// its slot. Compare with queue.BenchmarkDrain's time per copy.
func BenchmarkRowGuard(b *testing.B) {
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
	g := a.Rows()
	b.RunParallel(func(pb *testing.PB) {
		for i := uint64(1); pb.Next(); i++ {
			g.Verdict(i, time.Time{}, mon)
			end, _ := g.Begin(context.Background(), []uint64{i}, false)
			end()
		}
	})
}

// BenchmarkDrainGuarded drains 2,000 committed rows through the worker to
// a relay that takes them at once, on a synced store, with and without the
// guard: the guard's share of a drain where nothing else costs.
func BenchmarkDrainGuarded(b *testing.B) {
	for _, guarded := range []bool{false, true} {
		b.Run(fmt.Sprintf("guard=%v", guarded), func(b *testing.B) {
			var el time.Duration
			for range b.N {
				dir := b.TempDir()
				db, err := bolt.Open(filepath.Join(dir, "s.db"), 0o600, &bolt.Options{Timeout: time.Second})
				if err != nil {
					b.Fatal(err)
				}
				if err := db.Update(queue.Init); err != nil {
					b.Fatal(err)
				}
				msgs := make([]queue.Msg, 2000)
				for i := range msgs {
					msgs[i] = queue.Msg{From: "security@ex.test", To: []string{fmt.Sprintf("m%d@ex.test", i)}, Kind: "report-copy",
						MessageID: fmt.Sprintf("<%d@ex.test>", i), Data: []byte("Subject: s\r\n\r\nbody\r\n")}
				}
				if err := db.Update(func(tx *bolt.Tx) error { return queue.Enqueue(tx, time.Now(), msgs...) }); err != nil {
					b.Fatal(err)
				}
				o := queue.Options{}
				a, err := OpenAttempts(db, dir, time.Now(), nil)
				if err != nil {
					b.Fatal(err)
				}
				if guarded {
					o.Guard = a.Rows()
				}
				w := queue.New(db, discardRelay{}, o)
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				start := time.Now()
				go func() { done <- w.Run(ctx) }()
				for {
					var c queue.Counts
					db.View(func(tx *bolt.Tx) error { c, _ = queue.Stats(tx); return nil })
					if c.Queued+c.Sending == 0 {
						break
					}
					time.Sleep(time.Millisecond)
				}
				el += time.Since(start)
				cancel()
				<-done
				a.Close()
				db.Close()
			}
			b.ReportMetric(float64(2000*b.N)/el.Seconds(), "rows/s")
		})
	}
}
