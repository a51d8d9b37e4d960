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
	// Concurrency is how many rows are delivered at once. Default 4.
	Concurrency int
	// Failed is called inside the bbolt Update that marks a row failed
	// (permanent refusal, expiry or a bad row), so that the caller can enqueue
	// an alert to the committee atomically with the failure. r.Data is nil: an
	// alert must not carry the message. An error rolls the whole outcome back;
	// the row is then sent again later. Not called for NoAlert rows.
	Failed func(tx *bolt.Tx, r Row, reason string) error
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
	err := w.db.Update(func(tx *bolt.Tx) error { return Retry(tx, id, w.opts.Now()) })
	if err == nil {
		w.Kick()
	}
	return err
}

// Drop deletes a row (for `embargo queue drop`).
func (w *Worker) Drop(id uint64) error {
	return w.db.Update(func(tx *bolt.Tx) error { return Drop(tx, id) })
}

// Run delivers due rows until ctx is done, then waits for the deliveries in
// flight, which the cancel interrupts, and returns nil. It returns an error
// only if the database fails for good.
//
// A row found in state "sending" at start was with the relay when the last
// process stopped: it may have been delivered. It is sent again at once, with
// the same Message-ID (at-least-once; see the package doc).
func (w *Worker) Run(ctx context.Context) error {
	if !w.running.CompareAndSwap(false, true) {
		return errors.New("queue: worker already running")
	}
	defer w.running.Store(false)
	if err := w.recoverSending(); err != nil {
		return err
	}

	var wg sync.WaitGroup
	defer wg.Wait()
	busy := make(map[uint64]int) // rows with a delivery in flight, and their sizes; only this goroutine touches it
	inflight := 0                // the sum of those sizes
	// At most Concurrency deliveries are in flight and each reports once, so
	// these sends never block, not even after Run has stopped reading.
	done := make(chan uint64, w.opts.Concurrency)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()

	for {
		if ctx.Err() != nil {
			// select picks at random among ready cases: a delivery that ended
			// because of the cancel must not lead to claiming more rows.
			return nil
		}
		wait := time.Duration(-1) // no timer: a kick or a finished delivery wakes us
		if free := w.opts.Concurrency - len(busy); free > 0 {
			rows, next, full, err := w.claim(busy, free, w.opts.MaxInflightBytes-inflight)
			switch {
			case errors.Is(err, berrors.ErrDatabaseNotOpen):
				return fmt.Errorf("queue: %w", err)
			case err != nil:
				w.log.Error("outbound queue read failed", "err", err)
				wait = w.opts.MinBackoff
			case full:
				// A due row waits for room: a finished delivery wakes us.
			case !next.IsZero() && len(busy)+len(rows) < w.opts.Concurrency:
				wait = max(0, next.Sub(w.opts.Now()))
			}
			for _, r := range rows {
				busy[r.ID] = r.Size
				inflight += r.Size
				wg.Add(1)
				go func() {
					defer wg.Done()
					w.deliver(ctx, r)
					done <- r.ID
				}()
			}
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
		case id := <-done:
			inflight -= busy[id]
			delete(busy, id)
		}
	}
}

// recoverSending turns rows left in "sending" by a stopped process back into
// queued rows due now (docs/threats.md A3: retry "sending" rows at start-up).
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

// claim picks up to free due rows that are not in flight, marks them sending
// with the attempt counted (so a crash mid-send is visible at the next start,
// and the count survives it: docs/threat-model.md A6), and returns them with
// their Data (a shared body is read at delivery). next is the NextAttempt of
// the first row it did not take.
//
// Rows are taken in due order while their sizes fit in room; the first that
// does not fit stops the claim (full), so that a large row is not starved by
// small ones behind it. With nothing in flight, the first row is taken
// whatever its size.
//
// The lookup runs in a View: an Update commits (and syncs) even when it
// changes nothing, and most wake-ups find nothing to do.
func (w *Worker) claim(busy map[uint64]int, free, room int) ([]Row, time.Time, bool, error) {
	now := w.opts.Now()
	inFlight := func(id uint64) bool { _, ok := busy[id]; return ok }
	var ids []uint64
	var next time.Time
	err := w.db.View(func(tx *bolt.Tx) error {
		bk, err := open(tx)
		if err != nil {
			return err
		}
		ids, next = bk.dueIDs(now, free, inFlight)
		return nil
	})
	if err != nil || len(ids) == 0 {
		return nil, next, false, err
	}

	var rows []Row
	var full bool
	err = w.db.Update(func(tx *bolt.Tx) error {
		rows, full = rows[:0], false
		bk, err := open(tx)
		if err != nil {
			return err
		}
		left := room
		taken := make(map[uint64]bool, len(ids))
		for _, id := range ids {
			old, err := bk.get(id)
			if errors.Is(err, ErrNotFound) {
				continue // dropped since the View
			}
			if err != nil {
				return err
			}
			if old.State == StateFailed || old.NextAttempt.After(now) {
				continue // retried or failed since the View
			}
			if old.Size > left && len(busy)+len(rows) > 0 {
				full = true
				break
			}
			left -= old.Size
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
			r.Data = bytes.Clone(bk.data.Get(idKey(id)))
			r.blob, _ = rec.blobKey()
			rows = append(rows, r)
			taken[id] = true
		}
		_, next = bk.dueIDs(now, 0, func(id uint64) bool { return inFlight(id) || taken[id] })
		return nil
	})
	if err != nil {
		return nil, time.Time{}, false, err
	}
	return rows, next, full, nil
}

// deliver sends one claimed row and records the outcome in its own Update,
// right after the relay's answer (docs/threats.md A3).
func (w *Worker) deliver(ctx context.Context, r Row) {
	err := checkEnvelope(r.From, r.To)
	var data []byte
	if err == nil {
		data, err = w.message(&r)
	}
	if err == nil {
		err = checkData(data)
	}
	if err == nil {
		err = w.send(ctx, r, data)
	}
	var rcptErr *RcptError
	if err != nil && ctx.Err() != nil && !errors.As(err, &rcptErr) && !IsPermanent(err) {
		// Stopped mid-delivery. The row stays "sending" and the next start
		// sends it again: the relay may or may not have it.
		w.log.Info("outbound delivery interrupted", append(rowAttrs(r), "result", "interrupted")...)
		return
	}
	if rerr := w.record(r, err); rerr != nil {
		// The row stays "sending" under its lease: it is sent again once the
		// lease is over, or at the next start.
		w.log.Error("outbound outcome not recorded", append(rowAttrs(r), "err", rerr)...)
		return
	}
	if w.opts.Delivered != nil && (err == nil || errors.As(err, &rcptErr) && len(rcptErr.Failed) < len(r.To)) {
		w.opts.Delivered(r, w.opts.Now())
	}
}

// send calls the relay, turning a panic into a temporary error so that one
// bad row cannot take the daemon down (docs/threats.md A6); it is then
// retried with backoff and expires with an alert like any failing row.
func (w *Worker) send(ctx context.Context, r Row, data []byte) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("queue: relay panicked: %v", p)
		}
	}()
	return w.relay.Send(ctx, r.From, r.To, data)
}

// record writes the outcome of one attempt. Outcomes of concurrent deliveries
// (and inbound messages being stored) share a commit through db.Batch: the fn
// only reads and writes inside its transaction, so bbolt may re-run it alone
// if another fn of the batch fails.
func (w *Worker) record(r Row, sendErr error) error {
	now := w.opts.Now()
	return w.db.Batch(func(tx *bolt.Tx) error {
		bk, err := open(tx)
		if err != nil {
			return err
		}
		old, err := bk.get(r.ID)
		if errors.Is(err, ErrNotFound) {
			w.log.Info("outbound row dropped during delivery", rowAttrs(r)...)
			return nil
		}
		if err != nil {
			return err
		}
		if sendErr == nil {
			w.log.Info("outbound delivered", append(rowAttrs(r), "result", "delivered")...)
			return bk.delete(r.ID, old)
		}

		var rcptErr *RcptError
		if !errors.As(sendErr, &rcptErr) {
			if IsPermanent(sendErr) {
				rec := *old
				rec.LastError = sendErr.Error()
				return w.fail(tx, bk, r.ID, old, &rec, sendErr.Error())
			}
			rec := *old
			return w.retryLater(tx, bk, r.ID, old, &rec, sendErr, now)
		}

		// Some recipients refused: cross off the delivered ones (Postfix keeps
		// a per-recipient "done" mark the same way), fail the permanently
		// refused ones and keep the rest queued.
		var perm, temp []string
		var permErrs, tempErrs []error
		for _, rcpt := range old.To {
			err, refused := rcptErr.Failed[rcpt]
			switch {
			case !refused:
			case IsPermanent(err):
				perm = append(perm, rcpt)
				permErrs = append(permErrs, fmt.Errorf("<%s>: %w", rcpt, err))
			default:
				temp = append(temp, rcpt)
				tempErrs = append(tempErrs, fmt.Errorf("<%s>: %w", rcpt, err))
			}
		}
		if len(perm)+len(temp) < len(old.To) {
			w.log.Info("outbound delivered", append(rowAttrs(r), "result", "partial",
				"rcpts_done", len(old.To)-len(perm)-len(temp))...)
		}
		if len(perm) == 0 && len(temp) == 0 {
			return bk.delete(r.ID, old) // the refusals named no recipient of this row
		}
		if len(perm) > 0 && len(temp) > 0 {
			// Split: the failed recipients go to a new failed row, so that
			// `queue retry` can act on them, and this row keeps the others.
			failedRec := *old
			failedRec.To = perm
			failedRec.LastError = errors.Join(permErrs...).Error()
			id, err := bk.rows.NextSequence()
			if err != nil {
				return fmt.Errorf("queue: next sequence: %w", err)
			}
			if d := bk.data.Get(idKey(r.ID)); d != nil {
				if err := bk.data.Put(idKey(id), bytes.Clone(d)); err != nil {
					return fmt.Errorf("queue: put data %d: %w", id, err)
				}
			}
			if key, ok := old.blobKey(); ok {
				if err := bk.addRef(key); err != nil {
					return err
				}
			}
			if err := w.fail(tx, bk, id, nil, &failedRec, failedRec.LastError); err != nil {
				return err
			}
		}
		rec := *old
		if len(temp) > 0 {
			rec.To = temp
			return w.retryLater(tx, bk, r.ID, old, &rec, errors.Join(tempErrs...), now)
		}
		rec.To = perm
		rec.LastError = errors.Join(permErrs...).Error()
		return w.fail(tx, bk, r.ID, old, &rec, rec.LastError)
	})
}

// retryLater schedules the next attempt after a temporary failure, or fails the
// row as expired once its lifetime is over.
func (w *Worker) retryLater(tx *bolt.Tx, bk buckets, id uint64, old, rec *record, sendErr error, now time.Time) error {
	rec.LastError = sendErr.Error()
	expires := rec.expires(w.opts.Lifetime)
	if !now.Before(expires) {
		return w.fail(tx, bk, id, old, rec, ReasonExpired)
	}
	rec.State = StateQueued
	// The last attempt falls at the expiry instant rather than up to a
	// MaxBackoff after it, so the alert comes on time.
	rec.NextAttempt = now.Add(w.backoff(rec.Attempts))
	if rec.NextAttempt.After(expires) {
		rec.NextAttempt = expires
	}
	if err := bk.put(id, old, rec); err != nil {
		return err
	}
	w.log.Warn("outbound deferred", append(attrs(id, rec), "result", "deferred",
		"next_attempt", rec.NextAttempt, "err", rec.LastError)...)
	return nil
}

// fail marks a row failed and calls the Failed hook in the same transaction.
func (w *Worker) fail(tx *bolt.Tx, bk buckets, id uint64, old, rec *record, reason string) error {
	rec.State = StateFailed
	rec.NextAttempt = time.Time{}
	if err := bk.put(id, old, rec); err != nil {
		return err
	}
	a := append(attrs(id, rec), "result", "failed", "reason", reason, "failed_rcpts", rec.To)
	if rec.LastError != reason {
		a = append(a, "err", rec.LastError)
	}
	w.log.Error("outbound failed", a...)
	if rec.NoAlert || w.opts.Failed == nil {
		return nil
	}
	if err := w.opts.Failed(tx, rec.row(id), reason); err != nil {
		return fmt.Errorf("queue: failed hook for row %d: %w", id, err)
	}
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
