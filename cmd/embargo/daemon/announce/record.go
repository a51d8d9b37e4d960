package announce

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/internal/pipeline"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
)

// record writes the outcomes of finished batches in one Update: cursors,
// retry sets, bounce counts and counters. Then it gives back what was not
// sent and decides on backoffs.
func (f *Fanout) record(rs []result) error {
	now := f.o.Now()
	var released []string
	batchHook(f.hooks.Answered, rs)
	err := f.db.Update(func(tx *bolt.Tx) error {
		released = released[:0]
		b, err := open(tx)
		if err != nil {
			return err
		}
		for _, r := range rs {
			done, err := f.apply(tx, b, r, now)
			if err != nil {
				return err
			}
			if done {
				released = append(released, r.wk.key)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	batchHook(f.hooks.Recorded, rs)
	for _, r := range rs {
		f.settle(r, now)
	}
	for _, k := range released {
		delete(f.cache, k)
		delete(f.lanes, k)
		delete(f.fails, k)
		delete(f.failUntil, k)
		delete(f.loops, k)
	}
	return nil
}

// apply records one batch's outcome in tx and reports whether its job is
// now released.
func (f *Fanout) apply(tx *bolt.Tx, b *buckets, res result, now time.Time) (bool, error) {
	w, out := res.wk, res.out
	r, err := b.getJob([]byte(w.key))
	if err != nil {
		return false, err
	}
	// A job held while this batch was out still counts what it sent.
	if r.State != JobReleasing && (r.State != JobHeld || r.HeldFrom != JobReleasing) {
		return false, nil
	}
	for rcpt, e := range out.refused {
		// A permanent refusal counts once per release, even when the
		// batch is sent again.
		if queue.IsPermanent(e) {
			if _, err := b.bounce(strings.ToLower(rcpt), w.key, f.o); err != nil {
				return false, err
			}
		}
	}
	handled := w.rcpts[:out.handled]
	for _, rc := range handled {
		e, refused := out.refused[rc.addr]
		switch {
		case !refused:
			r.Sent++
		case queue.IsPermanent(e):
			r.Refused++
		default:
			if err := b.deferRetry(w.key, rc, e, now, r, f.o); err != nil {
				return false, err
			}
			continue
		}
		if w.retry {
			if err := b.dropRetry(w.key, rc.key, r); err != nil {
				return false, err
			}
		}
	}
	if w.suspect {
		if err := f.applyAlone(tx, r, w, out); err != nil {
			return false, err
		}
	}
	if !w.retry && !w.again && !out.unsent {
		switch {
		case out.handled == len(w.rcpts) && out.stop == nil:
			r.addDone(w.span)
		case out.handled > 0:
			r.addDone(span{w.span.Lo, handled[len(handled)-1].seq})
		}
	}
	if len(handled) > 0 {
		if f.o.OneClick {
			r.Transactions += len(handled)
		} else {
			r.Transactions++
		}
	}
	switch {
	case out.stop != nil && out.interrupted:
	case out.stop != nil && queue.IsPermanent(out.stop):
		if r.State == JobReleasing {
			return false, b.hold(tx, r, HoldRelay, "the relay refused the message: "+out.stop.Error(), f.o)
		}
	case out.stop != nil:
		r.LastError = out.stop.Error()
	default:
		r.LastError = ""
	}
	if err := f.finishIfDone(tx, b, r, now); err != nil {
		return false, err
	}
	return r.State == JobReleased, nil
}

// settle updates the in-memory state once an outcome is committed: what
// is no longer in flight, what goes again, and the job's backoff.
func (f *Fanout) settle(res result, now time.Time) {
	w, out := res.wk, res.out
	if l := f.lanes[w.key]; l != nil {
		l.busy--
		if w.suspect {
			l.alone--
		}
		if w.suspect && out.unsent && !w.again {
			// Not alone in time: still a suspect, sent alone later.
			f.suspects[w.key] = append([]Batch{w.batch}, f.suspects[w.key]...)
		}
		if w.retry {
			for _, rc := range w.rcpts {
				delete(l.retrying, rc.key)
			}
		} else if !w.suspect && (out.handled < len(w.rcpts) || out.stop != nil) {
			// A batch sent alone is given back by no stretch: its
			// suspect's unsent places wait for the walk from the cursor,
			// a batch set aside stays in the release's list.
			lo := w.span.Lo
			if out.handled > 0 {
				lo = w.rcpts[out.handled-1].seq
			}
			l.giveBack(span{lo, w.span.Hi})
		}
	}
	switch {
	case out.stop == nil:
		delete(f.fails, w.key)
		delete(f.failUntil, w.key)
	case out.interrupted || queue.IsPermanent(out.stop):
	case errors.Is(out.stop, pipeline.ErrLoop):
		// The relay is our own listener (docs/threat-model.md B9): every
		// connection fails so until relay.url is fixed. Said once per
		// release, not per connection or batch; the batches back off as
		// after any failure, and nothing is counted sent.
		f.fails[w.key]++
		f.failUntil[w.key] = now.Add(backoff(f.fails[w.key], f.o))
		if !f.loops[w.key] {
			f.loops[w.key] = true
			f.log.Error("announce: relay.url leads back to this embargo's own listener: mail would loop; the release waits until relay.url points at the MTA that sends mail out",
				"release", w.job.ID, "err", out.stop)
		}
	case out.handled > 0 || !out.fresh:
		// Progress, or a connection that had been idle: at once, anew.
		f.log.Info("announce batch cut short; the rest goes again", "release", w.job.ID, "rcpts", len(w.rcpts)-out.handled, "err", out.stop)
	default:
		f.fails[w.key]++
		d := backoff(f.fails[w.key], f.o)
		f.failUntil[w.key] = now.Add(d)
		f.log.Warn("announce batch deferred", "release", w.job.ID, "rcpts", len(w.rcpts)-out.handled, "retry_in", d, "err", out.stop)
	}
	f.log.Debug("announce batch", "release", w.job.ID, "retry", w.retry, "rcpts", len(w.rcpts), "handled", out.handled, "refused", len(out.refused))
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

// dueRetries returns up to n retry entries of job due at now and not in
// flight (busy, by address key), and the earliest Next of those not due.
func (b *buckets) dueRetries(job string, now time.Time, n int, busy map[string]bool) ([]target, time.Time, error) {
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
		if key := string(k[len(p):]); len(out) < n && !busy[key] {
			out = append(out, target{seq: rr.Seq, addr: rr.Address, key: key})
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
