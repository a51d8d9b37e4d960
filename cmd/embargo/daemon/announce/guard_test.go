package announce

import (
	"context"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue/queuetest"
)

// deathGuard is a BatchGuard whose in-flight record is a map: die takes a
// snapshot of it as the process's death would leave the in-flight file,
// and restart counts it, as listd.Attempts does at a start (the daemon's
// TestProcessKillingBatch runs the real one in a child that really dies).
// Alone is a write lock, a share a read lock, as the real gate.
type deathGuard struct {
	now  func() time.Time
	gate sync.RWMutex

	mu       sync.Mutex
	inflight map[string]int
	counts   map[string]BatchDeaths
	dead     bool
	left     map[string]bool // the in-flight record at the death
}

func newDeathGuard(now func() time.Time) *deathGuard {
	return &deathGuard{now: now, inflight: map[string]int{}, counts: map[string]BatchDeaths{}}
}

func (g *deathGuard) Deaths(id string, now time.Time) []BatchDeaths {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []BatchDeaths
	for label, d := range g.counts {
		if j, _, _ := ParseBatchLabel(label); strings.EqualFold(j, id) {
			out = append(out, d)
		}
	}
	return out
}

func (g *deathGuard) Begin(ctx context.Context, id string, b Batch, alone bool) (func(), error) {
	if alone {
		g.gate.Lock()
	} else {
		g.gate.RLock()
	}
	label := b.Label(id)
	g.mu.Lock()
	g.inflight[label]++
	g.mu.Unlock()
	return func() {
		g.mu.Lock()
		g.inflight[label]--
		g.mu.Unlock()
		if alone {
			g.gate.Unlock()
		} else {
			g.gate.RUnlock()
		}
	}, nil
}

func (g *deathGuard) Survived(tx *bolt.Tx, id string, b Batch) error {
	label := b.Label(id)
	tx.OnCommit(func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		if !g.dead {
			delete(g.counts, label)
		}
	})
	return nil
}

// die: the process dies now; nothing it does later counts.
func (g *deathGuard) die() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.dead {
		return
	}
	g.dead, g.left = true, map[string]bool{}
	for label, n := range g.inflight {
		if n > 0 {
			g.left[label] = true
		}
	}
}

// restart is the next start: a death for each batch left in flight.
func (g *deathGuard) restart() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for label := range g.left {
		_, b, _ := ParseBatchLabel(label)
		d := g.counts[label]
		d.Batch, d.Deaths, d.Last = b, d.Deaths+1, g.now()
		g.counts[label] = d
	}
	g.dead, g.left, g.inflight = false, nil, map[string]int{}
	g.gate = sync.RWMutex{}
}

func (g *deathGuard) deaths() map[string]int {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := map[string]int{}
	for l, d := range g.counts {
		out[l] = d.Deaths
	}
	return out
}

// killerRelay forwards each transaction to the recorder unless it holds
// the killer's address: then the process dies (the guard's snapshot, the
// fan-out cancelled before anything more is recorded). Until the death,
// every other batch waits for it, so that it is in flight beside the
// killer. It notes how many sends were in progress at each send.
type killerRelay struct {
	next   func(ctx context.Context, from string, to []string, data []byte) error
	killer string
	g      *deathGuard
	cancel context.CancelFunc
	wait   bool // bystanders wait for the death

	busy  atomic.Int32
	mu    sync.Mutex
	alone map[string]int32 // first recipient → sends in progress beside it, most
}

func (r *killerRelay) Send(ctx context.Context, from string, to []string, data []byte) error {
	n := r.busy.Add(1)
	defer r.busy.Add(-1)
	r.mu.Lock()
	r.alone[to[0]] = max(r.alone[to[0]], n)
	r.mu.Unlock()
	if slices.Contains(to, r.killer) {
		for deadline := time.Now().Add(5 * time.Second); r.wait && r.busy.Load() < 4 && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond) // the other connections' batches in flight too
		}
		r.g.die()
		r.cancel()
		return ctx.Err()
	}
	if r.wait {
		<-ctx.Done()
		return ctx.Err()
	}
	time.Sleep(2 * time.Millisecond) // long enough to overlap, if anything could
	return r.next(ctx, from, to, data)
}

// TestBatchKillerSetAside: a batch whose sending kills the process is
// counted with the batches in flight beside it; at the next start each is
// sent alone (nothing else in progress), the bystanders are forgotten, and
// the killer's own deaths follow; at BatchPoisonDeaths it is set aside,
// every other subscriber is served exactly once, and the release is held
// (HoldKilled) with one call of Held. Resume sends it once more, alone: a
// death then sets it aside and holds the release again (a second Held);
// once it no longer kills, a resume serves its subscribers.
func TestBatchKillerSetAside(t *testing.T) {
	const n, batch, conns = 1000, 100, 4
	db, _ := newDB(t)
	c := newClock(t0)
	addrs := addSubscribers(t, db, n, t0.Add(-time.Hour))
	startRelease(t, db, "SEC-2026-0002", advisory(t, announceKey(t), t0), t0)
	rec := queuetest.NewRecorder(t)
	next := recorderRelay(t, rec)
	g := newDeathGuard(c.Now)
	killer := addrs[250] // the third batch: places 200-300
	held := 0
	run := func(wait bool) *killerRelay {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		r := &killerRelay{next: next.Send, killer: killer, g: g, cancel: cancel, wait: wait, alone: map[string]int32{}}
		f := testFanout(t, db, r, c, func(o *Options) {
			o.BatchSize, o.Connections, o.Guard = batch, conns, g
			o.Held = func(tx *bolt.Tx, j Job, reason string) error { held++; return nil }
		})
		go func() {
			for st := JobScheduled; ctx.Err() == nil && (st == JobScheduled || st == JobReleasing); st = job(t, db, "SEC-2026-0002").State {
				time.Sleep(5 * time.Millisecond)
			}
			cancel()
		}()
		if err := f.Run(ctx); err != nil {
			t.Fatal(err)
		}
		g.restart()
		c.Advance(time.Second)
		return r
	}

	run(true) // the killer and three bystanders in flight
	if d := g.deaths(); len(d) != conns {
		t.Fatalf("after the first death the counts are %v; want the %d batches in flight", d, conns)
	}
	r := run(false)
	for _, first := range []string{addrs[0], addrs[100], addrs[200]} {
		if r.alone[first] != 1 {
			t.Errorf("the suspect batch from %s was sent beside %d others", first, r.alone[first]-1)
		}
	}
	if d := g.deaths(); len(d) != 2 || d["sec-2026-0002 200-300"] != 2 {
		t.Fatalf("after the second death the counts are %v; want the killer's (2) and the one it kept waiting", d)
	}
	run(false) // the killer alone once more: its third death
	if d := g.deaths(); d["sec-2026-0002 200-300"] != BatchPoisonDeaths {
		t.Fatalf("counts %v", d)
	}
	run(false) // set aside; the rest is sent
	j := job(t, db, "SEC-2026-0002")
	if j.State != JobHeld || j.HeldFor != HoldKilled || held != 1 || !strings.Contains(j.Held, "100 subscriber(s) set aside") {
		t.Fatalf("release %+v, Held called %d times; want it held for the batch set aside, once", j, held)
	}
	counts := rcptCounts(rec.Messages())
	for i, a := range addrs {
		switch in := i >= 200 && i < 300; {
		case in && counts[a] != 0:
			t.Errorf("%s, set aside, got %d copies", a, counts[a])
		case !in && counts[a] != 1:
			t.Errorf("%s got %d copies, want 1", a, counts[a])
		}
	}

	// Resumed while it still kills: sent once more, alone, it dies, and
	// the next start sets it aside again and holds the release again.
	if err := db.Update(func(tx *bolt.Tx) error { return Resume(tx, "SEC-2026-0002", c.Now()) }); err != nil {
		t.Fatal(err)
	}
	c.Advance(time.Second)
	r = run(false)
	if r.alone[killer] != 0 || r.alone[addrs[200]] != 1 || g.deaths()["sec-2026-0002 200-300"] != BatchPoisonDeaths+1 {
		t.Fatalf("after the resume: sends %v, counts %v; want the batch set aside sent alone, and its death counted", r.alone, g.deaths())
	}
	run(false)
	if j := job(t, db, "SEC-2026-0002"); j.State != JobHeld || j.HeldFor != HoldKilled || held != 2 {
		t.Fatalf("release %+v, Held called %d times; want it held again, with a second alert", j, held)
	}

	// Resumed (the killer no longer kills): sent once more, alone.
	c.Advance(time.Second)
	if err := db.Update(func(tx *bolt.Tx) error { return Resume(tx, "SEC-2026-0002", c.Now()) }); err != nil {
		t.Fatal(err)
	}
	r = &killerRelay{next: next.Send, g: g, alone: map[string]int32{}}
	drain(t, testFanout(t, db, r, c, func(o *Options) { o.BatchSize, o.Connections, o.Guard = batch, conns, g }))
	if j := job(t, db, "SEC-2026-0002"); j.State != JobReleased || len(g.deaths()) != 0 {
		t.Fatalf("after the resume: %+v, counts %v", j, g.deaths())
	}
	counts = rcptCounts(rec.Messages())
	for _, a := range addrs {
		if counts[a] != 1 {
			t.Errorf("%s got %d copies, want 1", a, counts[a])
		}
	}
}

// TestBatchLabel: a batch's label reads back, and names no other batch.
func TestBatchLabel(t *testing.T) {
	for _, b := range []Batch{{0, 100, false}, {199, 3000, true}, {1<<64 - 2, 1<<64 - 1, false}} {
		id := strings.Repeat("Sec-2026.x_", 3) + "1234567"
		l := b.Label(id)
		gotID, got, ok := ParseBatchLabel(l)
		if !ok || got != b || gotID != strings.ToLower(id) || len(l) > 83 {
			t.Errorf("%+v: label %q (%d bytes) reads as %q %+v %v", b, l, len(l), gotID, got, ok)
		}
	}
	for _, bad := range []string{"", "x", "id 1", "id r-2", "id 1-x", ".id 1-2"} {
		if _, _, ok := ParseBatchLabel(bad); ok {
			t.Errorf("%q read as a label", bad)
		}
	}
}
