package announce

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/workflow"
)

// Fanout delivers releases: for each job at its T, one stored message to
// every active subscriber, BatchSize recipients per SMTP transaction, with
// the job's cursor committed once per batch. Only one Fanout may run on a
// database.
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
	fails     map[string]int       // job key → consecutive failed transactions
	failUntil map[string]time.Time // job key → no transaction before then
	// unrecorded is an outcome whose Update failed; it is recorded before
	// anything else is sent. A crash loses it: the batch goes again.
	unrecorded *unrecorded
}

type unrecorded struct {
	w   *work
	out outcome
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

// Run works until ctx is done, then returns nil once the transaction in
// flight is over (a cancel interrupts it; its batch is sent again at the
// next start). It returns an error only if the database is closed.
func (f *Fanout) Run(ctx context.Context) error {
	if !f.running.CompareAndSwap(false, true) {
		return errors.New("announce: fan-out already running")
	}
	defer f.running.Store(false)
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

// step does one thing: the clock check and the start of due jobs, then
// one transaction of the first releasing job. It returns 0 if there may be
// more to do at once, else how long to sleep.
func (f *Fanout) step(ctx context.Context) (time.Duration, error) {
	wake, err := f.tick()
	if err != nil {
		return 0, err
	}
	if p := f.unrecorded; p != nil {
		// The relay answered but the store did not take the outcome:
		// record it again rather than send the batch again.
		if err := f.record(p.w, p.out); err != nil {
			return 0, err
		}
		f.unrecorded = nil
		return 0, nil
	}
	w, next, err := f.pick()
	if err != nil {
		return 0, err
	}
	if w != nil {
		out := f.send(ctx, w)
		if out.handled == 0 && ctx.Err() != nil {
			// Stopped mid-transaction: nothing is recorded, and the next
			// start sends this batch again (at most one extra copy each).
			f.log.Info("announce batch interrupted", "release", w.job.ID, "rcpts", len(w.rcpts))
			return 0, nil
		}
		if err := f.record(w, out); err != nil {
			f.unrecorded = &unrecorded{w, out}
			return 0, err
		}
		return 0, nil
	}
	now := f.o.Now()
	since, _ := f.clock.SinceBeat(f.o.Mono())
	wait := f.o.Heartbeat - since
	for _, t := range []time.Time{wake, next} {
		if !t.IsZero() {
			wait = min(wait, t.Sub(now))
		}
	}
	return max(wait, 10*time.Millisecond), nil
}

// tick persists the heartbeat and starts the jobs that are due, holding
// those that a forward jump of the wall clock made due (threats.md G4). It
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

	err = f.db.Update(func(tx *bolt.Tx) error {
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
				if err := b.hold(tx, r, reason, f.o); err != nil {
					return err
				}
				continue
			}
			if err := f.begin(tx, b, k, r, now); err != nil {
				return err
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
	return next, nil
}

// begin moves a due job to releasing: it checks and prepares the message
// and fixes the subscribers it covers (those active now; later ones wait
// for the next release).
func (f *Fanout) begin(tx *bolt.Tx, b *buckets, k []byte, r *jobRecord, now time.Time) error {
	if !r.Prepared {
		msg, err := prepareRelease(b.jobdata.Get(k), f.o.List, f.o.Key, f.o, now)
		if err != nil {
			return b.hold(tx, r, "the message cannot be released: "+err.Error(), f.o)
		}
		if err := b.jobdata.Put(k, msg); err != nil {
			return err
		}
		r.Prepared, r.Size = true, len(msg)
		delete(f.cache, string(k))
	}
	r.State, r.Started = JobReleasing, now
	r.UpTo, r.Total, r.Cursor = b.lastSeq(), b.activeCount(), 0
	f.log.Info("announce release started", "release", r.ID, "subscribers", r.Total, "size", r.Size)
	return f.finishIfDone(tx, b, r, now)
}

// target is one recipient of a batch.
type target struct {
	seq   uint64
	addr  string // as subscribed: the RCPT
	key   string // address key
	token string // one-click token (OneClick mode only)
}

// work is one transaction to make (or, in OneClick mode, one per target).
type work struct {
	key   string // job key
	job   Job
	retry bool     // targets come from the retry set, not the cursor
	rcpts []target // empty with skip set: nothing left under the cursor
	skip  bool     // advance the cursor to UpTo (subscribers left meanwhile)
	msg   *prepared
}

// pick chooses the next transaction: the due retries of the first
// releasing job, else its next batch under the cursor. next is the
// earliest moment something else becomes due (a retry or a backoff).
func (f *Fanout) pick() (*work, time.Time, error) {
	now := f.o.Now()
	var w *work
	var next time.Time
	later := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	err := f.db.View(func(tx *bolt.Tx) error {
		b, err := open(tx)
		if err != nil {
			return err
		}
		var jobs []*jobRecord
		err = b.openjobs.ForEach(func(k, _ []byte) error {
			r, err := b.getJob(k)
			if err != nil {
				return err
			}
			if r.State == JobReleasing {
				jobs = append(jobs, r)
			}
			return nil
		})
		if err != nil {
			return err
		}
		slices.SortFunc(jobs, func(a, c *jobRecord) int {
			if d := a.At.Compare(c.At); d != 0 {
				return d
			}
			return strings.Compare(strings.ToLower(a.ID), strings.ToLower(c.ID))
		})
		for _, r := range jobs {
			k := string(jobKey(r.ID))
			if t := f.failUntil[k]; t.After(now) {
				later(t)
				continue
			}
			cand := &work{key: k, job: r.Job}
			due, nextRetry, err := b.dueRetries(k, now, f.o.BatchSize)
			if err != nil {
				return err
			}
			if !nextRetry.IsZero() {
				later(nextRetry)
			}
			if len(due) > 0 {
				cand.retry, cand.rcpts = true, due
			} else if r.Cursor < r.UpTo {
				cand.rcpts = b.batch(r.Cursor, r.UpTo, f.o.BatchSize)
				cand.skip = len(cand.rcpts) == 0
			} else {
				continue // only retries that are not due yet
			}
			if f.o.OneClick {
				if err := b.tokensFor(cand.rcpts); err != nil {
					return err
				}
			}
			if cand.msg, err = f.message(b, k); err != nil {
				return err
			}
			w = cand
			return nil
		}
		return nil
	})
	return w, next, err
}

// batch reads up to n active subscribers after cursor, up to upTo.
func (b *buckets) batch(cursor, upTo uint64, n int) []target {
	var out []target
	c := b.active.Cursor()
	for k, v := c.Seek(seqKey(cursor + 1)); k != nil && len(out) < n; k, v = c.Next() {
		if len(k) != 8 {
			continue
		}
		seq := binary.BigEndian.Uint64(k)
		if seq > upTo {
			break
		}
		addr := string(v) // a copy: v is valid only inside the transaction
		out = append(out, target{seq: seq, addr: addr, key: strings.ToLower(addr)})
	}
	return out
}

func (b *buckets) tokensFor(ts []target) error {
	for i := range ts {
		r, err := b.getSub(ts[i].key)
		if err != nil {
			return err
		}
		if r != nil {
			ts[i].token = r.OneClick
		}
	}
	return nil
}

// message returns the job's copies, read from the store once per job.
func (f *Fanout) message(b *buckets, k string) (*prepared, error) {
	if p := f.cache[k]; p != nil {
		return p, nil
	}
	body := bytes.Clone(b.jobdata.Get([]byte(k)))
	if len(body) == 0 {
		return nil, fmt.Errorf("announce: release %s has no message", k)
	}
	prefix, err := genericUnsubscribe(f.o.List, f.o.UnsubscribeURL)
	if err != nil {
		return nil, err
	}
	p := &prepared{body: body, generic: append(prefix, body...)}
	f.cache[k] = p
	return p, nil
}

// outcome is what a relay said about a work item.
type outcome struct {
	handled int              // rcpts[:handled] have a final answer for this attempt
	refused map[string]error // RCPT refusals, by address
	stop    error            // why rcpts[handled:] were not sent (nil: all were)
}

func (f *Fanout) send(ctx context.Context, w *work) outcome {
	if len(w.rcpts) == 0 {
		return outcome{}
	}
	if !f.o.OneClick {
		to := make([]string, len(w.rcpts))
		for i, rc := range w.rcpts {
			to[i] = rc.addr
		}
		return classify(len(to), f.relaySend(ctx, w.job.From, to, w.msg.generic))
	}
	// One transaction per recipient, each with its own List-Unsubscribe.
	out := outcome{refused: map[string]error{}}
	for i, rc := range w.rcpts {
		data := w.msg.generic
		if rc.token != "" {
			prefix, err := oneClickUnsubscribe(f.o.List, f.o.OneClickBase, rc.token)
			if err != nil {
				out.handled, out.stop = i, queue.Permanent(err)
				return out
			}
			data = make([]byte, 0, len(prefix)+len(w.msg.body))
			data = append(append(data, prefix...), w.msg.body...)
		}
		one := classify(1, f.relaySend(ctx, w.job.From, []string{rc.addr}, data))
		if one.stop != nil {
			out.handled, out.stop = i, one.stop
			return out
		}
		if err, ok := one.refused[rc.addr]; ok {
			out.refused[rc.addr] = err
		}
	}
	out.handled = len(w.rcpts)
	return out
}

// classify turns a relay's answer to one transaction of n recipients into
// an outcome. Refusals at RCPT concern their recipient; a failure at MAIL or
// DATA concerns the message and every recipient the relay accepted.
func classify(n int, err error) outcome {
	if err == nil {
		return outcome{handled: n}
	}
	var re *queue.RcptError
	if !errors.As(err, &re) {
		return outcome{stop: err}
	}
	out := outcome{handled: n, refused: map[string]error{}}
	for rcpt, e := range re.Failed {
		if atRcpt(e) {
			out.refused[rcpt] = e
		} else if out.stop == nil || (queue.IsPermanent(e) && !queue.IsPermanent(out.stop)) {
			out.stop = e
		}
	}
	if out.stop != nil {
		out.handled = 0
	}
	return out
}

// atRcpt reports whether a per-recipient error is the relay's reply to RCPT
// TO (the queue's SMTP relay names the stage in its errors).
func atRcpt(err error) bool { return strings.Contains(err.Error(), "RCPT TO") }

// relaySend calls the relay, turning a panic into a temporary error.
func (f *Fanout) relaySend(ctx context.Context, from string, to []string, data []byte) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("announce: relay panicked: %v", p)
		}
	}()
	return f.relay.Send(ctx, from, to, data)
}

// record writes the outcome of one work item in one Update: the cursor,
// the retry set, bounce counts and the counters.
func (f *Fanout) record(w *work, out outcome) error {
	now := f.o.Now()
	var released bool
	err := f.db.Update(func(tx *bolt.Tx) error {
		released = false
		b, err := open(tx)
		if err != nil {
			return err
		}
		r, err := b.getJob([]byte(w.key))
		if err != nil {
			return err
		}
		if r.State != JobReleasing {
			return nil // held or changed meanwhile: the batch counts as not sent
		}
		for rcpt, e := range out.refused {
			// A permanent refusal counts once per release, even when the
			// batch is sent again.
			if queue.IsPermanent(e) {
				if _, err := b.bounce(strings.ToLower(rcpt), w.key, f.o); err != nil {
					return err
				}
			}
		}
		handled := w.rcpts[:out.handled]
		for _, rc := range handled {
			e, refused := out.refused[rc.addr]
			switch {
			case !refused:
				r.Sent++
				if w.retry {
					if err := b.dropRetry(w.key, rc.key, r); err != nil {
						return err
					}
				}
			case queue.IsPermanent(e):
				r.Refused++
				if w.retry {
					if err := b.dropRetry(w.key, rc.key, r); err != nil {
						return err
					}
				}
			default:
				if err := b.deferRetry(w.key, rc, e, now, r, f.o); err != nil {
					return err
				}
			}
		}
		if !w.retry && len(handled) > 0 {
			r.Cursor = max(r.Cursor, handled[len(handled)-1].seq)
		}
		if w.skip {
			r.Cursor = r.UpTo
		}
		if len(handled) > 0 {
			if f.o.OneClick {
				r.Transactions += len(handled)
			} else {
				r.Transactions++
			}
		}
		if out.stop != nil {
			if queue.IsPermanent(out.stop) {
				return b.hold(tx, r, "the relay refused the message: "+out.stop.Error(), f.o)
			}
			r.LastError = out.stop.Error()
		} else {
			r.LastError = ""
		}
		if err := f.finishIfDone(tx, b, r, now); err != nil {
			return err
		}
		released = r.State == JobReleased
		return nil
	})
	if err != nil {
		return err
	}
	switch {
	case out.stop != nil && !queue.IsPermanent(out.stop):
		f.fails[w.key]++
		d := backoff(f.fails[w.key], f.o)
		f.failUntil[w.key] = now.Add(d)
		f.log.Warn("announce batch deferred", "release", w.job.ID, "rcpts", len(w.rcpts)-out.handled, "retry_in", d, "err", out.stop)
	default:
		delete(f.fails, w.key)
		delete(f.failUntil, w.key)
	}
	f.log.Debug("announce batch", "release", w.job.ID, "retry", w.retry, "rcpts", len(w.rcpts), "handled", out.handled, "refused", len(out.refused))
	if released {
		delete(f.cache, w.key)
	}
	return nil
}

// finishIfDone marks a releasing job released once its cursor reached the
// end and its retry set is empty.
func (f *Fanout) finishIfDone(tx *bolt.Tx, b *buckets, r *jobRecord, now time.Time) error {
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

// retryRecord is a recipient refused temporarily: retried alone (in a
// transaction with the other due ones), never by sending its batch again.
type retryRecord struct {
	V         int       `json:"v"`
	Address   string    `json:"addr"`
	Seq       uint64    `json:"seq"`
	First     time.Time `json:"first"`
	Next      time.Time `json:"next"`
	Attempts  int       `json:"attempts"`
	LastError string    `json:"last_error,omitempty"`
}

func retryKey(job, key string) []byte {
	k := make([]byte, 0, len(job)+1+len(key))
	k = append(append(k, job...), 0)
	return append(k, key...)
}

func (b *buckets) hasRetries(job string) bool {
	p := retryKey(job, "")
	k, _ := b.retry.Cursor().Seek(p)
	return k != nil && bytes.HasPrefix(k, p)
}

// dueRetries returns up to n retry entries of job due at now, and the
// earliest Next of those not due.
func (b *buckets) dueRetries(job string, now time.Time, n int) ([]target, time.Time, error) {
	var out []target
	var next time.Time
	p := retryKey(job, "")
	c := b.retry.Cursor()
	for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
		var rr retryRecord
		if err := json.Unmarshal(v, &rr); err != nil {
			return nil, time.Time{}, fmt.Errorf("announce: decode retry: %w", err)
		}
		if rr.Next.After(now) {
			if next.IsZero() || rr.Next.Before(next) {
				next = rr.Next
			}
			continue
		}
		if len(out) < n {
			out = append(out, target{seq: rr.Seq, addr: rr.Address, key: string(k[len(p):])})
		}
	}
	return out, next, nil
}

func (b *buckets) dropRetry(job, key string, r *jobRecord) error {
	k := retryKey(job, key)
	if b.retry.Get(k) == nil {
		return nil
	}
	r.Deferred--
	return b.retry.Delete(k)
}

// deferRetry adds a temporarily refused recipient to the job's retry set,
// or counts one more attempt, or gives it up after RetryLifetime.
func (b *buckets) deferRetry(job string, rc target, cause error, now time.Time, r *jobRecord, o Options) error {
	k := retryKey(job, rc.key)
	rr := retryRecord{V: schemaVersion, Address: rc.addr, Seq: rc.seq, First: now}
	if v := b.retry.Get(k); v != nil {
		if err := json.Unmarshal(v, &rr); err != nil {
			return fmt.Errorf("announce: decode retry: %w", err)
		}
	} else {
		r.Deferred++
	}
	rr.Attempts++
	rr.LastError = cause.Error()
	if now.Sub(rr.First) >= o.RetryLifetime {
		r.Expired++
		return b.dropRetry(job, rc.key, r)
	}
	rr.Next = now.Add(backoff(rr.Attempts, o))
	v, err := json.Marshal(rr)
	if err != nil {
		return err
	}
	return b.retry.Put(k, v)
}

// bounce counts one permanent failure of release job for the subscriber
// at key, once per release, and disables it at MaxBounces.
func (b *buckets) bounce(key, job string, o Options) (bool, error) {
	r, err := b.getSub(key)
	if err != nil || r == nil || r.State != StateActive {
		return false, err
	}
	if slices.Contains(r.BounceJobs, job) {
		return false, nil
	}
	r.Bounces++
	r.BounceJobs = append(r.BounceJobs, job)
	if len(r.BounceJobs) > 2*o.MaxBounces {
		r.BounceJobs = r.BounceJobs[len(r.BounceJobs)-2*o.MaxBounces:]
	}
	if r.Bounces >= o.MaxBounces {
		if err := b.leaveActive(r); err != nil {
			return false, err
		}
		r.State = StateDisabled
		o.Logger.Info("announce subscriber disabled", "bounces", r.Bounces)
	}
	return true, b.putSub(key, r)
}
