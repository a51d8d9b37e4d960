package queue

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Options configures a Worker. The zero value gives the defaults.
type Options struct {
	// Now is the clock. Default time.Now; tests inject a fake one.
	Now func() time.Time
	// Lifetime is how long a row that keeps failing temporarily is retried
	// before it fails as "expired". Default 5 days, Postfix's
	// maximal_queue_lifetime and RFC 5321 §4.5.4.1's "at least 4-5 days".
	Lifetime time.Duration
	// MinBackoff and MaxBackoff bound the retry interval, which doubles after
	// each temporary failure, with jitter. Defaults 1 minute and 1 hour.
	MinBackoff, MaxBackoff time.Duration
	// Concurrency is how many rows are delivered at once: the SMTP
	// connections the relay keeps open, or the Maildir batches written at
	// once. Default 4.
	Concurrency int
	// MaxClaimed bounds the rows in state "sending": claimed and waiting for
	// a sender, with the relay, or delivered and waiting for their outcome
	// to be committed (outcomes are recorded in group commits). A crash
	// therefore sends again at most MaxClaimed rows, each at most once.
	// Default DefaultMaxClaimed; it is raised to Concurrency if lower.
	MaxClaimed int
	// Failed is called inside the bbolt Update that marks a row failed
	// (permanent refusal, expiry or a bad row), so that the caller can enqueue
	// an alert to the committee atomically with the failure. r.Data is nil: an
	// alert must not carry the message. An error rolls the whole outcome back;
	// the row is then sent again later. Not called for NoAlert rows.
	Failed func(tx *bolt.Tx, r Row, reason string) error
	// Claimed, when set, is called inside the claim's transaction for each
	// row claimed to be sealed and sent (not for a killer, which is failed
	// unsent). It may set r.From, the envelope sender of this attempt; the
	// stored row keeps its own, so the hook must give a row the same one at
	// every claim. The claim commits, and is durable, before the row goes
	// to a sender: what the hook writes is in the store before the relay
	// can see the message, and so before any bounce of it can come back.
	// It may run more than once for one claim (Update may run fn again).
	// An error fails the whole claim, as a store failure does. The
	// daemon's is listd.Service.Claimed: the per-copy bounce addresses
	// (docs/design.md §4).
	Claimed func(tx *bolt.Tx, r *Row) error
	// Sealer makes the message of every row queued with a Seal. Without
	// one, such a row fails (and alerts) instead of being sent.
	Sealer Sealer
	// MaxInflightBytes bounds the memory deliveries take: a row is started
	// only while the sizes of the rows in flight, its own included, stay
	// under it, except that a row is always started when nothing else is
	// in flight. A delivery holds about three times its size at its peak
	// (the body read a chunk at a time, the sealed message, about 1.4 times
	// the body with ASCII armor, and the DKIM-signed copy of it). Default
	// 16 MiB: one report at the default 10 MiB message limit at a time.
	MaxInflightBytes int
	// Logger receives one line per outcome, with IDs only, never message content.
	Logger *slog.Logger
	// Delivered, when set, is told of each row delivered to the relay (to
	// all its recipients or some), at Now, once the outcome is recorded: the
	// daemon's delivery-latency metric.
	Delivered func(r Row, at time.Time)
	// Update, when set, runs the worker's write transactions (claims and
	// outcomes) instead of DB.Update: the daemon passes the list service's
	// group commit, so that one commit (two fsyncs) serves intake and
	// delivery together instead of each taking bbolt's one writer in turn.
	// It must return nil only once fn's writes are durable, and may run fn
	// more than once (fn changes nothing but the transaction).
	Update func(fn func(*bolt.Tx) error) error
	// Guard, when set, counts the deaths of the process while rows are
	// sealed and sent, so that a row that kills the process is tried alone
	// and then failed instead of killing it at every start (guard.go,
	// docs/threat-model.md A6). The daemon's is listd.Attempts.Rows.
	Guard Guard
}

// Sealer makes the message of a row queued with a Seal spec, at delivery,
// outside any transaction. r carries the spec (r.Seal), the incident and
// the sizes; body reads the stored body, a chunk at a time.
//
// It must never return a message that is not what the spec asks for: a
// spec with a key to encrypt to is encrypted to that key or fails. An
// error that retrying cannot cure (the key is missing, expired or revoked;
// the spec names an unknown list) must be Permanent: the row then fails at
// once and Options.Failed alerts the committee (docs/threat-model.md D6).
// Any other error is retried with backoff like a relay's temporary
// failure; a panic is one.
type Sealer interface {
	Seal(r *Row, body io.Reader) ([]byte, error)
}

// ErrNoSealer is the permanent failure of a sealed row when the worker has
// no Sealer: the row's body is never sent as it is.
var ErrNoSealer = errors.New("queue: row must be sealed and no sealer is configured")

// DefaultMaxClaimed is Options.MaxClaimed's default: the most rows one crash
// (kill -9, power loss) can make the queue send again.
const DefaultMaxClaimed = 64

// ReasonExpired is the reason given to Options.Failed for a row whose lifetime
// ended; Row.LastError then holds the last temporary error.
const ReasonExpired = "expired"

// Worker delivers committed rows through a Relay. Only one Worker may run on
// a database.
//
// Its schedule lives in bbolt, not in timers: one timer is set to the earliest
// NextAttempt in the index and a kick re-reads it after each commit that
// enqueued rows, so a restart loses nothing and needs no catch-up.
type Worker struct {
	db      *bolt.DB
	relay   Relay
	opts    Options
	log     *slog.Logger
	kick    chan struct{}
	running atomic.Bool

	// beforeCommit, set by tests only, sees the outcomes of each turn just
	// before they are committed: the instant between the relay's 250 and
	// the mark a crash test aims at.
	beforeCommit func([]outcome)
	hooks        TestHooks // failpoints, set by tests alone (testhooks.go)
}

// New returns a Worker; it does nothing until Run.
func New(db *bolt.DB, relay Relay, opts Options) *Worker {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Lifetime <= 0 {
		opts.Lifetime = 5 * 24 * time.Hour
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = time.Minute
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = time.Hour
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = opts.MinBackoff
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = 4
	}
	if opts.MaxClaimed <= 0 {
		opts.MaxClaimed = DefaultMaxClaimed
	}
	opts.MaxClaimed = max(opts.MaxClaimed, opts.Concurrency)
	if opts.Update == nil {
		opts.Update = db.Update
	}
	if opts.MaxInflightBytes <= 0 {
		opts.MaxInflightBytes = 16 << 20
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Worker{
		db:    db,
		relay: relay,
		opts:  opts,
		log:   log,
		kick:  make(chan struct{}, 1),
	}
}

// Kick makes Run look for due rows now. Call it after a commit that enqueued
// or retried rows. It never blocks.
func (w *Worker) Kick() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// Enqueue is Enqueue at the worker's clock, with a Kick once tx commits.
func (w *Worker) Enqueue(tx *bolt.Tx, msgs ...Msg) error {
	if err := Enqueue(tx, w.opts.Now(), msgs...); err != nil {
		return err
	}
	tx.OnCommit(w.Kick)
	return nil
}

// Retry makes a queued or failed row due now (for `embargo queue retry`).
func (w *Worker) Retry(id uint64) error {
	err := w.opts.Update(func(tx *bolt.Tx) error { return Retry(tx, id, w.opts.Now()) })
	if err == nil {
		w.Kick()
	}
	return err
}

// Drop deletes a row (for `embargo queue drop`).
func (w *Worker) Drop(id uint64) error {
	return w.opts.Update(func(tx *bolt.Tx) error { return Drop(tx, id) })
}

// Run delivers due rows until ctx is done, then waits for the deliveries in
// flight, which the cancel interrupts, records the outcomes that came back,
// and returns nil. It returns an error only if the database fails for good.
//
// Run's own goroutine is the queue's one writer: each turn it commits, in
// one transaction, the outcomes that came back since the last turn and the
// claim of the rows due now (a group commit: under load one commit serves
// many rows, and a lone row still waits for one commit only). Concurrency
// senders take the claimed rows, seal them and hand them to the relay.
//
// A row found in state "sending" at start was claimed when the last process
// stopped: it may have been delivered. It is sent again at once, with the
// same Message-ID (at-least-once; see the package doc).
func (w *Worker) Run(ctx context.Context) error {
	if !w.running.CompareAndSwap(false, true) {
		return errors.New("queue: worker already running")
	}
	defer w.running.Store(false)
	if err := w.recoverSending(); err != nil {
		return err
	}

	// At most MaxClaimed rows are claimed and each is sent to work once and
	// reported once, so neither channel send ever blocks.
	work := make(chan Row, w.opts.MaxClaimed)
	done := make(chan outcome, w.opts.MaxClaimed)
	sendCtx, stopSenders := context.WithCancel(ctx)
	var senders sync.WaitGroup
	for range w.opts.Concurrency {
		senders.Go(func() { w.sender(sendCtx, work, done) })
	}
	l := &loop{busy: make(map[uint64]int)}
	defer func() {
		// The senders stop at the cancel (or a failed store); what they
		// delivered meanwhile is recorded, so that a clean stop sends
		// nothing twice.
		stopSenders()
		senders.Wait()
		l.take(done)
		if len(l.outcomes) > 0 {
			w.commit(l.outcomes, nil, 0, 0)
		}
	}()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()

	for {
		if ctx.Err() != nil {
			// select picks at random among ready cases: a delivery that ended
			// because of the cancel must not lead to claiming more rows.
			return nil
		}
		l.take(done)
		// The rows whose outcomes this turn records leave the busy set
		// first, so that their room serves the claim of the same commit;
		// none of them is due in it (recorded, they are gone or wait for a
		// backoff; unrecorded, for their lease).
		for _, o := range l.outcomes {
			l.inflight -= l.busy[o.row.ID]
			delete(l.busy, o.row.ID)
		}
		free := w.opts.MaxClaimed - len(l.busy)
		if _, ok := l.busy[l.alone]; ok && l.alone != 0 {
			free = 0 // a suspect is sealed and sent alone (guard.go)
		}
		if w.beforeCommit != nil && len(l.outcomes) > 0 {
			w.beforeCommit(l.outcomes)
		}
		w.answered(l.outcomes)
		rows, next, full, err := w.commit(l.outcomes, l.busy, free, w.opts.MaxInflightBytes-l.inflight)
		w.committed(l.outcomes, rows, err)
		l.outcomes = l.outcomes[:0]
		wait := time.Duration(-1) // no timer: a kick or an outcome wakes us
		switch {
		case errors.Is(err, berrors.ErrDatabaseNotOpen):
			return fmt.Errorf("queue: %w", err)
		case err != nil:
			w.log.Error("outbound queue read failed", "err", err)
			wait = w.opts.MinBackoff
		case full:
			// A due row waits for room: an outcome wakes us.
		case !next.IsZero() && len(l.busy)+len(rows) < w.opts.MaxClaimed:
			wait = max(0, next.Sub(w.opts.Now()))
		}
		for _, r := range rows {
			l.busy[r.ID] = r.Size
			l.inflight += r.Size
			switch {
			case r.killer:
				// Recorded at the next turn as any outcome is: failed,
				// with the alert (done has room for every claimed row).
				done <- outcome{row: r, err: killedError(r.ID, r.deaths), untried: true}
				continue
			case r.suspect:
				l.alone = r.ID
			}
			work <- r
		}
		if wait >= 0 {
			timer.Reset(wait)
		} else {
			timer.Stop()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-w.kick:
		case <-timer.C:
		case o := <-done:
			l.outcomes = append(l.outcomes, o)
		}
	}
}

// loop is Run's state; only Run's goroutine touches it.
type loop struct {
	busy     map[uint64]int // claimed rows not yet recorded, and their sizes
	alone    uint64         // a suspect claimed (guard.go): nothing more is while it is busy
	inflight int            // the sum of those sizes
	outcomes []outcome      // come back from the senders, to record
}

// take collects the outcomes waiting in done without blocking.
func (l *loop) take(done <-chan outcome) {
	for {
		select {
		case o := <-done:
			l.outcomes = append(l.outcomes, o)
		default:
			return
		}
	}
}

// recoverSending turns rows left in "sending" by a stopped process back into
// queued rows due now (docs/threat-model.md A3: retry "sending" rows at start-up).
func (w *Worker) recoverSending() error {
	now := w.opts.Now()
	var n int
	err := w.db.Update(func(tx *bolt.Tx) error {
		bk, err := open(tx)
		if err != nil {
			return err
		}
		type found struct {
			id  uint64
			rec *record
		}
		var todo []found
		err = bk.rows.ForEach(func(k, v []byte) error {
			rec, err := decode(k, v)
			if err != nil {
				return err
			}
			if rec.State == StateSending {
				todo = append(todo, found{binary.BigEndian.Uint64(k), rec})
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, f := range todo {
			rec := *f.rec
			rec.State = StateQueued
			if rec.NextAttempt.After(now) {
				rec.NextAttempt = now
			}
			if err := bk.put(f.id, f.rec, &rec); err != nil {
				return err
			}
			w.log.Warn("outbound resend after restart", append(attrs(f.id, &rec), "result", "recovered")...)
		}
		n = len(todo)
		return nil
	})
	if err != nil {
		return fmt.Errorf("queue: recover rows in flight: %w", err)
	}
	if n > 0 {
		w.log.Info("outbound rows recovered", "count", n)
	}
	return nil
}

// commit records outcomes and claims up to free due rows that are not
// busy, in one Update: the group commit of Run's turn. With busy nil it
// records only. It returns the claimed rows, the NextAttempt of the first
// row it did not take, and whether a due row waits for room.
//
// Should the shared transaction fail (a Failed hook refusing one outcome),
// each outcome is recorded in an Update of its own, so that one cannot hold
// back the others, and the claim is tried alone; an outcome that still
// fails leaves its row "sending" under its lease.
//
// A turn with no outcome looks for due rows in a View first: an Update
// commits (and syncs) even when it changes nothing, and most wake-ups find
// nothing to do.
func (w *Worker) commit(outcomes []outcome, busy map[uint64]int, free, room int) ([]Row, time.Time, bool, error) {
	now := w.opts.Now()
	rec := outcomes[:0:0]
	for _, o := range outcomes {
		if !o.interrupted {
			rec = append(rec, o)
		}
	}
	var c claim
	if busy != nil && free > 0 && len(rec) == 0 {
		var ids []uint64
		err := w.db.View(func(tx *bolt.Tx) error {
			bk, err := open(tx)
			if err != nil {
				return err
			}
			ids, c.next = bk.dueIDs(now, free, func(id uint64) bool { _, ok := busy[id]; return ok })
			return nil
		})
		if err != nil || len(ids) == 0 {
			return nil, c.next, false, err
		}
	}
	if len(rec) == 0 && (busy == nil || free <= 0) {
		return nil, time.Time{}, false, nil
	}
	var notes []func()
	err := w.opts.Update(func(tx *bolt.Tx) error {
		notes = notes[:0]
		bk, err := open(tx)
		if err != nil {
			return err
		}
		for _, o := range rec {
			if err := w.record(tx, bk, o, now, &notes); err != nil {
				return err
			}
		}
		if busy != nil && free > 0 {
			return w.claim(tx, bk, &c, busy, free, room, now)
		}
		return nil
	})
	if err != nil && len(rec) > 0 {
		// Alone, each outcome stands or falls by itself.
		for _, o := range rec {
			w.recordAlone(o)
		}
		if busy == nil || free <= 0 {
			return nil, time.Time{}, false, nil
		}
		return w.commit(nil, busy, free, room)
	}
	if err != nil {
		return nil, time.Time{}, false, err
	}
	for _, n := range notes {
		n()
	}
	return c.rows, c.next, c.full, nil
}

// recordAlone records one outcome in an Update of its own.
func (w *Worker) recordAlone(o outcome) {
	var notes []func()
	err := w.opts.Update(func(tx *bolt.Tx) error {
		notes = notes[:0]
		bk, err := open(tx)
		if err != nil {
			return err
		}
		return w.record(tx, bk, o, w.opts.Now(), &notes)
	})
	if err != nil {
		// The row stays "sending" under its lease: it is sent again once the
		// lease is over, or at the next start.
		w.log.Error("outbound outcome not recorded", append(rowAttrs(o.row), "err", err)...)
		return
	}
	for _, n := range notes {
		n()
	}
}

// claim is what one claim took.
type claim struct {
	rows []Row
	next time.Time
	full bool
}

// claim marks up to free due rows that are not busy "sending", with the
// attempt counted (so a crash mid-send is visible at the next start, and
// the count survives it: docs/threat-model.md A6), and returns them with
// their Data (a shared body is read at delivery).
//
// Rows are taken in due order while their sizes fit in room; the first that
// does not fit stops the claim (full), so that a large row is not starved by
// small ones behind it. With nothing busy, the first row is taken whatever
// its size.
func (w *Worker) claim(tx *bolt.Tx, bk buckets, c *claim, busy map[uint64]int, free, room int, now time.Time) error {
	*c = claim{}
	inFlight := func(id uint64) bool { _, ok := busy[id]; return ok }
	ids, _ := bk.dueIDs(now, free, inFlight)
	left := room
	taken := make(map[uint64]bool, len(ids))
	for _, id := range ids {
		old, err := bk.get(id)
		if errors.Is(err, ErrNotFound) {
			continue // an index entry without its row: skip it, as dueIDs skips what is not ours
		}
		if err != nil {
			return err
		}
		if old.State == StateFailed || old.NextAttempt.After(now) {
			continue // the index and the row disagree; the row is right
		}
		v, deaths := w.verdict(id, old, now)
		if v == Suspect && len(busy)+len(c.rows) > 0 {
			// Alone (guard.go): it waits for the rows in flight, and the
			// rows behind it wait for it, or it would never be alone.
			c.full = true
			break
		}
		if v != Killer && old.Size > left && len(busy)+len(c.rows) > 0 {
			c.full = true
			break
		}
		if v != Killer {
			left -= old.Size
		}
		rec := *old
		rec.State = StateSending
		rec.Attempts++
		rec.LastAttempt = now
		// A lease: should the outcome never be recorded (the Failed hook
		// refuses, the disk is full), the row comes back after a backoff
		// instead of being resent in a tight loop. A restart does not
		// wait for it (recoverSending).
		rec.NextAttempt = now.Add(w.backoff(rec.Attempts))
		if err := bk.put(id, old, &rec); err != nil {
			return err
		}
		r := rec.row(id)
		r.suspect, r.killer, r.deaths = v == Suspect, v == Killer, deaths
		if !r.killer { // a killer is failed, never read
			r.Data = bytes.Clone(bk.data.Get(idKey(id)))
			r.blob, _ = rec.blobKey()
			if w.opts.Claimed != nil {
				if err := w.opts.Claimed(tx, &r); err != nil {
					return fmt.Errorf("queue: claim hook for row %d: %w", id, err)
				}
			}
		}
		c.rows = append(c.rows, r)
		taken[id] = true
		if r.suspect {
			break // and nothing more while it is in flight (Run)
		}
	}
	_, c.next = bk.dueIDs(now, 0, func(id uint64) bool { return inFlight(id) || taken[id] })
	return nil
}

// backoff is the delay after the attempts-th failed attempt: MinBackoff
// doubling up to MaxBackoff, less up to a quarter at random so that rows that
// failed together (a relay outage) do not retry in lockstep.
//
// RFC 5321 §4.5.4.1 asks a sender to wait at least 30 minutes between
// retries to a destination. Our next hop is our own smarthost, which does the
// long-haul retrying, so the first retries come sooner and settle at
// MaxBackoff.
func (w *Worker) backoff(attempts int) time.Duration {
	d := w.opts.MinBackoff
	for i := 1; i < attempts && d < w.opts.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, w.opts.MaxBackoff)
	if q := d / 4; q > 0 {
		d -= rand.N(q)
	}
	return d
}

// attrs are the log attributes of a stored row: IDs and counts, never content.
func attrs(id uint64, rec *record) []any {
	a := []any{"id", id}
	if rec != nil {
		a = append(a, "kind", rec.Kind, "incident", rec.Incident, "message_id", rec.MessageID,
			"attempt", rec.Attempts, "rcpts", len(rec.To))
	}
	return a
}

func rowAttrs(r Row) []any {
	return []any{"id", r.ID, "kind", r.Kind, "incident", r.Incident, "message_id", r.MessageID,
		"attempt", r.Attempts, "rcpts", len(r.To)}
}
