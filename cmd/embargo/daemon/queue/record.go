package queue

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// record writes the outcome of one attempt inside Run's commit. It only
// reads and writes inside tx; what it logs, and the Delivered callback,
// are appended to notes, which run once the commit succeeded.
func (w *Worker) record(tx *bolt.Tx, bk buckets, o outcome, now time.Time, notes *[]func()) error {
	r, sendErr := o.row, o.err
	if r.suspect && !o.untried && w.opts.Guard != nil {
		// Sealed and sent without a death: a bystander of another's.
		if err := w.opts.Guard.Survived(tx, r.ID); err != nil {
			return err
		}
	}
	old, err := bk.get(r.ID)
	if errors.Is(err, ErrNotFound) {
		*notes = append(*notes, func() { w.log.Info("outbound row dropped during delivery", rowAttrs(r)...) })
		return nil
	}
	if err != nil {
		return err
	}
	if sendErr == nil {
		*notes = append(*notes, func() {
			w.log.Info("outbound delivered", append(rowAttrs(r), "result", "delivered")...)
			w.delivered(r)
		})
		return bk.delete(r.ID, old)
	}

	var rcptErr *RcptError
	if !errors.As(sendErr, &rcptErr) {
		rec := *old
		if IsPermanent(sendErr) {
			rec.LastError = sendErr.Error()
			return w.fail(tx, bk, r.ID, old, &rec, sendErr.Error(), notes)
		}
		return w.retryLater(tx, bk, r.ID, old, &rec, sendErr, now, notes)
	}
	return w.recordRcpts(tx, bk, r, old, rcptErr, now, notes)
}

// recordRcpts records a delivery some recipients refused: it crosses off the
// delivered ones (Postfix keeps a per-recipient "done" mark the same way),
// fails the permanently refused ones and keeps the rest queued.
func (w *Worker) recordRcpts(tx *bolt.Tx, bk buckets, r Row, old *record, rcptErr *RcptError, now time.Time, notes *[]func()) error {
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
	if done := len(old.To) - len(perm) - len(temp); done > 0 {
		*notes = append(*notes, func() {
			w.log.Info("outbound delivered", append(rowAttrs(r), "result", "partial", "rcpts_done", done)...)
			w.delivered(r)
		})
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
		if err := w.fail(tx, bk, id, nil, &failedRec, failedRec.LastError, notes); err != nil {
			return err
		}
	}
	rec := *old
	if len(temp) > 0 {
		rec.To = temp
		return w.retryLater(tx, bk, r.ID, old, &rec, errors.Join(tempErrs...), now, notes)
	}
	rec.To = perm
	rec.LastError = errors.Join(permErrs...).Error()
	return w.fail(tx, bk, r.ID, old, &rec, rec.LastError, notes)
}

// delivered tells Options.Delivered, at Now.
func (w *Worker) delivered(r Row) {
	if w.opts.Delivered != nil {
		w.opts.Delivered(r, w.opts.Now())
	}
}

// retryLater schedules the next attempt after a temporary failure, or fails the
// row as expired once its lifetime is over.
func (w *Worker) retryLater(tx *bolt.Tx, bk buckets, id uint64, old, rec *record, sendErr error, now time.Time, notes *[]func()) error {
	rec.LastError = sendErr.Error()
	expires := rec.expires(w.opts.Lifetime)
	if !now.Before(expires) {
		return w.fail(tx, bk, id, old, rec, ReasonExpired, notes)
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
	a := append(attrs(id, rec), "result", "deferred", "next_attempt", rec.NextAttempt, "err", rec.LastError)
	*notes = append(*notes, func() { w.log.Warn("outbound deferred", a...) })
	return nil
}

// fail marks a row failed and calls the Failed hook in the same transaction.
func (w *Worker) fail(tx *bolt.Tx, bk buckets, id uint64, old, rec *record, reason string, notes *[]func()) error {
	rec.State = StateFailed
	rec.NextAttempt = time.Time{}
	if err := bk.put(id, old, rec); err != nil {
		return err
	}
	a := append(attrs(id, rec), "result", "failed", "reason", reason, "failed_rcpts", rec.To)
	if rec.LastError != reason {
		a = append(a, "err", rec.LastError)
	}
	*notes = append(*notes, func() { w.log.Error("outbound failed", a...) })
	if rec.NoAlert || w.opts.Failed == nil {
		return nil
	}
	if err := w.opts.Failed(tx, rec.row(id), reason); err != nil {
		return fmt.Errorf("queue: failed hook for row %d: %w", id, err)
	}
	return nil
}
