package announce

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/workflow"
)

// Fanout delivers releases: for each job at its T, one stored message to
// every active subscriber. It hands batches of BatchSize subscribers to
// Connections connections at once, each batch one SMTP transaction (or,
// with OneClick, one per subscriber), and commits each batch's outcome
// (cursor, retry set, counters) once the relay answered it, several
// batches per commit when they finish together. Only one Fanout may run
// on a database.
type Fanout struct {
	db      *bolt.DB
	relay   queue.Relay
	o       Options
	log     *slog.Logger
	kick    chan struct{}
	running atomic.Bool

	// Run's own state; no other goroutine touches it.
	clock     workflow.ClockCheck // the heartbeats this process wrote
	cache     map[string]*prepared
	fails     map[string]int       // job key → consecutive failed batches
	failUntil map[string]time.Time // job key → no batch before then
	lanes     map[string]*lane     // job key → what is in flight
	loops     map[string]bool      // job key → the relay loop was logged (settle)
	pool      *pool
	// judged: the guard's deaths were sorted (judge); suspects are the
	// batches to send alone, by job key.
	judged   bool
	suspects map[string][]Batch
	// pending are outcomes the relay gave and the store has not taken yet:
	// they are recorded before anything else is sent. A crash loses them:
	// their batches go again.
	pending []result

	hooks TestHooks // failpoints, set by tests alone (testhooks.go)
}

// New returns a Fanout; it does nothing until Run. o.List must be set.
func New(db *bolt.DB, relay queue.Relay, o Options) *Fanout {
	o = o.withDefaults()
	return &Fanout{
		db: db, relay: relay, o: o, log: o.Logger,
		clock:     workflow.ClockCheck{Max: o.MaxClockJump},
		kick:      make(chan struct{}, 1),
		cache:     make(map[string]*prepared),
		fails:     make(map[string]int),
		failUntil: make(map[string]time.Time),
		lanes:     make(map[string]*lane),
		loops:     make(map[string]bool),
		pool:      newPool(o.Connections),
	}
}

// Kick makes Run look at the jobs now: after StartRelease or Resume
// committed, or after the clock was moved in a test. It never blocks.
func (f *Fanout) Kick() {
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

// Release stores a release for the announce list at notBefore, or now if
// that is earlier, with the release's own bounce address, and kicks the
// worker once tx commits. It returns the number of active subscribers. It
// is the listd.Announcer the lead's release code calls. A message that is
// not signed by Options.Key is refused (ErrBadJob).
func (f *Fanout) Release(tx *bolt.Tx, id string, msg []byte, notBefore time.Time) (int, error) {
	at := f.o.Now()
	if notBefore.After(at) {
		at = notBefore
	}
	// Checked now as well as at T, so that a message the list key did not
	// sign fails the command that releases it instead of a hold at T.
	if _, err := prepareRelease(msg, f.o.List, f.o.Key, f.o, f.o.Now()); err != nil {
		return 0, fmt.Errorf("%w: %v", ErrBadJob, err)
	}
	if err := StartRelease(tx, id, BounceAddress(f.o.List, id), msg, at); err != nil {
		return 0, err
	}
	tx.OnCommit(f.Kick)
	return Count(tx)
}

// Resume releases a held job (see the package function) and kicks the worker.
func (f *Fanout) Resume(id string) error {
	err := f.db.Update(func(tx *bolt.Tx) error { return Resume(tx, id, f.o.Now()) })
	if err == nil {
		f.Kick()
	}
	return err
}

// Run works until ctx is done, then returns nil once the batches in
// flight are over: a cancel interrupts them, what the relay had answered
// is recorded, and the rest goes again at the next start. It returns an
// error only if the database is closed.
func (f *Fanout) Run(ctx context.Context) error {
	if !f.running.CompareAndSwap(false, true) {
		return errors.New("announce: fan-out already running")
	}
	defer f.running.Store(false)
	defer f.shutdown()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		if ctx.Err() != nil {
			return nil
		}
		wait, err := f.step(ctx)
		switch {
		case errors.Is(err, berrors.ErrDatabaseNotOpen):
			return fmt.Errorf("announce: %w", err)
		case err != nil:
			f.log.Error("announce fan-out step failed", "err", err)
			wait = f.o.MinBackoff
		case wait == 0:
			continue
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return nil
		case <-f.kick:
		case <-timer.C:
		}
	}
}

// step does one round: the clock check and the start of due jobs, the
// recording of every outcome the relay gave meanwhile, then new batches
// for the free connections; while batches are in flight it waits for one
// to end. It returns 0 if there may be more to do at once, else how long
// to sleep.
func (f *Fanout) step(ctx context.Context) (time.Duration, error) {
	wake, err := f.tick()
	if err != nil {
		return 0, err
	}
	if err := f.judge(); err != nil {
		return 0, err
	}
	f.collect()
	if len(f.pending) > 0 {
		// In one commit, before anything else is sent: at most one batch
		// per connection is ever sent and not recorded.
		if err := f.record(f.pending); err != nil {
			return 0, err
		}
		f.pending = nil
	}
	next, err := f.dispatch(ctx)
	if err != nil {
		return 0, err
	}
	if len(f.pending) > 0 {
		return 0, nil // batches with nothing left to send: record them now
	}
	wait := f.sleep(wake, next)
	if f.pool.busy > 0 {
		f.await(ctx, wait)
		return 0, nil
	}
	f.pool.closeIdle() // nothing in flight, nothing due: no connection kept open
	return wait, nil
}

// sleep is how long nothing is due: the next heartbeat, T of a scheduled
// job (wake), a retry or the end of a backoff (next).
func (f *Fanout) sleep(wake, next time.Time) time.Duration {
	now := f.o.Now()
	since, _ := f.clock.SinceBeat(f.o.Mono())
	wait := f.o.Heartbeat - since
	for _, t := range []time.Time{wake, next} {
		if !t.IsZero() {
			wait = min(wait, t.Sub(now))
		}
	}
	return max(wait, 10*time.Millisecond)
}

// await blocks until a batch in flight ends, ctx ends, Kick, or wait.
func (f *Fanout) await(ctx context.Context, wait time.Duration) {
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case r := <-f.pool.results:
		f.receive(r)
	case <-ctx.Done():
	case <-f.kick:
	case <-t.C:
	}
}

// shutdown waits for the batches in flight (ctx is done: they end at
// once), records what the relay answered, and closes the connections.
func (f *Fanout) shutdown() {
	for f.pool.busy > 0 {
		f.receive(<-f.pool.results)
	}
	if len(f.pending) > 0 {
		if err := f.record(f.pending); err != nil {
			f.log.Warn("announce: outcomes not recorded at stop; their batches go again", "batches", len(f.pending), "err", err)
		}
		f.pending = nil
	}
	f.pool.closeIdle()
}

// tick persists the heartbeat and starts the jobs that are due, holding
// those that a forward jump of the wall clock made due (docs/threat-model.md G4). It
// returns the earliest T still ahead (zero if none).
//
// The check compares the wall clock with the monotonic clock since the
// last heartbeat this process wrote; just after a start, with the last
// persisted heartbeat. A gap larger than MaxClockJump cannot be told from
// a clock that jumped, so every job whose T falls inside the gap is held
// until the SRC confirms (Resume): never early, never silently late. Jobs
// whose T had passed before the gap (on a plausible clock) go on.
func (f *Fanout) tick() (time.Time, error) {
	now, mono := f.o.Now(), f.o.Mono()
	var due bool
	var next time.Time
	err := f.db.View(func(tx *bolt.Tx) error {
		b, err := open(tx)
		if err != nil {
			return err
		}
		return b.openjobs.ForEach(func(k, _ []byte) error {
			r, err := b.getJob(k)
			if err != nil {
				return err
			}
			if r.State != JobScheduled {
				return nil
			}
			if !r.At.After(now) {
				due = true
			} else if next.IsZero() || r.At.Before(next) {
				next = r.At
			}
			return nil
		})
	})
	if err != nil {
		return time.Time{}, err
	}
	since, local := f.clock.SinceBeat(mono)
	if local && !due && since < f.o.Heartbeat {
		return next, nil
	}

	var begun []string // for the Begun failpoint alone
	err = f.db.Update(func(tx *bolt.Tx) error {
		begun = begun[:0]
		b, err := open(tx)
		if err != nil {
			return err
		}
		var last time.Time // the stored heartbeat, which counts just after a start
		if v := b.meta.Get(metaHeartbeat); len(v) == 8 {
			last = time.Unix(0, int64(binary.BigEndian.Uint64(v)))
		}
		basis, back := f.clock.Check(now, mono, last)
		jumped := !basis.IsZero()
		if back > 0 {
			f.log.Warn("announce: wall clock went back", "by", back.Round(time.Second))
		}
		if jumped {
			f.log.Warn("announce: wall clock ahead of the last heartbeat", "by", now.Sub(basis).Round(time.Second), "after_start", !local)
		}
		var keys [][]byte
		if err := b.openjobs.ForEach(func(k, _ []byte) error { keys = append(keys, bytes.Clone(k)); return nil }); err != nil {
			return err
		}
		for _, k := range keys {
			r, err := b.getJob(k)
			if err != nil {
				return err
			}
			if r.State != JobScheduled || r.At.After(now) {
				continue
			}
			if jumped && r.At.After(basis) && !r.Resumed {
				reason := fmt.Sprintf("the wall clock is %s ahead of the last heartbeat (%s) and T (%s) falls in that gap; confirm the time, then resume",
					now.Sub(basis).Round(time.Second), formatInstant(basis), formatInstant(r.At))
				if err := b.hold(tx, r, HoldClock, reason, f.o); err != nil {
					return err
				}
				continue
			}
			if err := f.begin(tx, b, k, r, now); err != nil {
				return err
			}
			if f.hooks.Begun != nil && r.State != JobHeld {
				begun = append(begun, r.ID)
			}
		}
		if err := b.meta.Put(metaHeartbeat, binary.BigEndian.AppendUint64(nil, uint64(unixNano(now)))); err != nil {
			return err
		}
		_, err = b.prune(now, 256)
		return err
	})
	if err != nil {
		return time.Time{}, err
	}
	f.clock.Beat(now, mono)
	for _, id := range begun {
		f.hooks.Begun(id)
	}
	return next, nil
}

// begin moves a due job to releasing: it checks and prepares the message
// and fixes the subscribers it covers (those active now; later ones wait
// for the next release).
func (f *Fanout) begin(tx *bolt.Tx, b *buckets, k []byte, r *jobRecord, now time.Time) error {
	if !r.Prepared {
		msg, err := prepareRelease(b.jobdata.Get(k), f.o.List, f.o.Key, f.o, now)
		if err != nil {
			return b.hold(tx, r, HoldMessage, "the message cannot be released: "+err.Error(), f.o)
		}
		if err := b.jobdata.Put(k, msg); err != nil {
			return err
		}
		r.Prepared, r.Size = true, len(msg)
		delete(f.cache, string(k))
	}
	r.State, r.Started = JobReleasing, now
	r.UpTo, r.Total, r.Cursor, r.Done = b.lastSeq(), b.activeCount(), 0, nil
	delete(f.lanes, string(k))
	f.log.Info("announce release started", "release", r.ID, "subscribers", r.Total, "size", r.Size)
	return f.finishIfDone(tx, b, r, now)
}

// finishIfDone marks a releasing job released once its cursor reached the
// end and its retry set is empty.
func (f *Fanout) finishIfDone(tx *bolt.Tx, b *buckets, r *jobRecord, now time.Time) error {
	if r.State == JobReleasing && r.Cursor >= r.UpTo && !b.hasRetries(string(jobKey(r.ID))) && len(r.Aside) > 0 {
		if r.againPending() {
			return b.putJob(r) // sent once more, alone, first
		}
		// Everyone else was served: the release is held for the batches
		// set aside, with one alert (guard.go).
		return b.hold(tx, r, HoldKilled, r.asideReason(), f.o)
	}
	if r.State == JobReleasing && r.Cursor >= r.UpTo && !b.hasRetries(string(jobKey(r.ID))) {
		r.State, r.Finished = JobReleased, now
		if err := b.openjobs.Delete(jobKey(r.ID)); err != nil {
			return err
		}
		f.log.Info("announce release done", "release", r.ID, "subscribers", r.Total, "sent", r.Sent,
			"refused", r.Refused, "expired", r.Expired, "transactions", r.Transactions)
		if err := b.putJob(r); err != nil {
			return err
		}
		if f.o.Released != nil {
			if err := f.o.Released(tx, r.Job); err != nil {
				return fmt.Errorf("announce: released hook: %w", err)
			}
		}
		return nil
	}
	return b.putJob(r)
}

// backoff is MinBackoff doubled per failed attempt, up to MaxBackoff.
func backoff(attempts int, o Options) time.Duration {
	d := o.MinBackoff
	for i := 1; i < attempts && d < o.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, o.MaxBackoff)
}
