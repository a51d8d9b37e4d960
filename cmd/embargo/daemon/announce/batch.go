package announce

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/internal/pipeline"
)

// target is one recipient of a batch.
type target struct {
	seq   uint64
	addr  string // as subscribed: the RCPT
	key   string // address key
	token string // one-click token (OneClick mode only)
}

// span is a stretch of the delivery order: the places after Lo, up to and
// including Hi.
type span struct {
	Lo uint64 `json:"lo"`
	Hi uint64 `json:"hi"`
}

// work is one batch for one connection: one transaction, or with OneClick
// one per target.
type work struct {
	ctx   context.Context
	key   string // job key
	job   Job
	retry bool     // targets come from the retry set, not the cursor
	rcpts []target // empty: nobody left in span (they left the list meanwhile)
	span  span     // cursor work: the stretch the batch covers
	msg   *prepared
	// batch names the batch for Options.Guard; suspect: it is sent alone
	// (a suspect, or again: a batch set aside, sent once more, guard.go).
	batch   Batch
	suspect bool
	again   bool
}

// lane is what one releasing job has in flight, in memory: a new process
// starts from the stored cursor and done stretches, and sends again what
// was in flight (at most one batch per connection).
type lane struct {
	next     uint64          // every place up to next is done, in flight or in redo
	redo     []span          // stretches a connection gave back unsent, sent first
	retrying map[string]bool // retry-set entries in flight, by address key
	busy     int
	alone    int // batches in flight that are sent alone (guard.go)
}

func (f *Fanout) lane(k string, r *jobRecord) *lane {
	l := f.lanes[k]
	if l == nil {
		l = &lane{next: r.Cursor, retrying: map[string]bool{}}
		f.lanes[k] = l
	}
	return l
}

// giveBack puts an unsent stretch back, in delivery order.
func (l *lane) giveBack(s span) {
	if s.Hi <= s.Lo {
		return
	}
	i, _ := slices.BinarySearchFunc(l.redo, s, func(a, b span) int { return cmpU64(a.Lo, b.Lo) })
	l.redo = slices.Insert(l.redo, i, s)
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// addDone records that the places in s were served, and moves the cursor
// over every done stretch that now follows it. Connections finish out of
// order, so stretches above the cursor wait in Done (one per connection
// at most, merged when they touch).
func (r *jobRecord) addDone(s span) {
	if s.Hi <= r.Cursor {
		return
	}
	s.Lo = max(s.Lo, r.Cursor)
	i, _ := slices.BinarySearchFunc(r.Done, s, func(a, b span) int { return cmpU64(a.Lo, b.Lo) })
	r.Done = slices.Insert(r.Done, i, s)
	merged := r.Done[:1]
	for _, d := range r.Done[1:] {
		if last := &merged[len(merged)-1]; d.Lo <= last.Hi {
			last.Hi = max(last.Hi, d.Hi)
		} else {
			merged = append(merged, d)
		}
	}
	r.Done = merged
	for len(r.Done) > 0 && r.Done[0].Lo <= r.Cursor {
		r.Cursor = max(r.Cursor, r.Done[0].Hi)
		r.Done = r.Done[1:]
	}
	if len(r.Done) == 0 {
		r.Done = nil
	}
}

// dispatch hands a batch to each free connection and returns the earliest
// moment something else becomes due (a retry, the end of a backoff).
// Batches with nobody to send to go straight to pending.
func (f *Fanout) dispatch(ctx context.Context) (time.Time, error) {
	var next time.Time
	for f.pool.free() > 0 {
		w, n, err := f.pick()
		if err != nil {
			return next, err
		}
		if !n.IsZero() && (next.IsZero() || n.Before(next)) {
			next = n
		}
		if w == nil {
			return next, nil
		}
		w.ctx = ctx
		if len(w.rcpts) == 0 {
			f.pending = append(f.pending, result{wk: w})
			continue
		}
		f.pool.start(f, w)
	}
	return next, nil
}

// pick chooses the next batch: the due retries of the first releasing job
// that has any not in flight, else its next stretch under the cursor. next
// is the earliest moment something else becomes due.
func (f *Fanout) pick() (*work, time.Time, error) {
	now := f.o.Now()
	var w *work
	var next time.Time
	var commit func()
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
			if err == nil && r.State == JobReleasing {
				jobs = append(jobs, r)
			}
			return err
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
			l := f.lane(k, r)
			// A batch set aside, or a suspect's, may have moved the
			// cursor past the walk (guard.go).
			l.next = max(l.next, r.Cursor)
			cand := &work{key: k, job: r.Job}
			alone, ok, blocked, err := f.pickAlone(b, k, r, l, cand)
			switch {
			case err != nil:
				return err
			case blocked:
				continue
			}
			due, nextRetry, err := b.dueRetries(k, now, f.o.BatchSize, l.retrying)
			if err != nil {
				return err
			}
			if !nextRetry.IsZero() {
				later(nextRetry)
			}
			switch {
			case ok:
				commit = alone
			case len(due) > 0:
				cand.retry, cand.rcpts = true, due
				commit = func() {
					for _, rc := range due {
						l.retrying[rc.key] = true
					}
				}
			case len(l.redo) > 0:
				s := l.redo[0]
				var end uint64
				cand.rcpts, end = b.batch(s.Lo, s.Hi, f.o.BatchSize, r.Done)
				cand.span = span{s.Lo, end}
				commit = func() {
					if end >= s.Hi {
						l.redo = l.redo[1:]
					} else {
						l.redo[0].Lo = end
					}
				}
			case l.next < r.UpTo:
				var end uint64
				cand.rcpts, end = b.batch(l.next, r.UpTo, f.o.BatchSize, r.Done)
				cand.span = span{l.next, end}
				commit = func() { l.next = end }
			case l.busy == 0 && r.Cursor >= r.UpTo && !b.hasRetries(k):
				// All served while the job was held: an empty batch lets
				// the commit mark it released.
				cand.span = span{r.UpTo, r.UpTo}
			default:
				continue // only retries that are in flight or not due yet
			}
			if f.o.OneClick {
				if err := b.tokensFor(cand.rcpts); err != nil {
					return err
				}
			}
			if cand.msg, err = f.message(b, k); err != nil {
				return err
			}
			if !ok {
				cand.batch = batchOf(cand)
			}
			w = cand
			l.busy++
			return nil
		}
		return nil
	})
	if err != nil {
		return nil, next, err
	}
	if commit != nil {
		commit()
	}
	return w, next, nil
}

// batch reads up to n active subscribers in (lo, hi], passing over the
// stretches in done. end is the place of the last one read if there were
// n, else hi: the batch covers (lo, end].
func (b *buckets) batch(lo, hi uint64, n int, done []span) ([]target, uint64) {
	var out []target
	c := b.active.Cursor()
	k, v := c.Seek(seqKey(lo + 1))
	for k != nil && len(out) < n {
		if len(k) != 8 {
			k, v = c.Next()
			continue
		}
		seq := binary.BigEndian.Uint64(k)
		if seq > hi {
			break
		}
		if d, ok := within(done, seq); ok {
			k, v = c.Seek(seqKey(d.Hi + 1))
			continue
		}
		addr, tok := activeEntry(v) // copies: v is valid only inside the transaction
		out = append(out, target{seq: seq, addr: addr, key: strings.ToLower(addr), token: tok})
		k, v = c.Next()
	}
	if len(out) == n {
		return out, out[n-1].seq
	}
	return out, hi
}

// within returns the stretch of done that holds seq.
func within(done []span, seq uint64) (span, bool) {
	for _, d := range done {
		if d.Lo < seq && seq <= d.Hi {
			return d, true
		}
	}
	return span{}, false
}

// tokensFor fills in the one-click tokens the delivery index lacks
// (entries written before it carried them) from the subscriber records.
func (b *buckets) tokensFor(ts []target) error {
	for i := range ts {
		if ts[i].token != "" {
			continue
		}
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

// message returns the job's prepared message, read from the store once per job.
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
	p := &prepared{body: body, generic: append(prefix, body...), genericHead: prefix}
	if f.o.SMTP != nil {
		// The fan-out's own connections: the body checked and stuffed
		// once, DKIM's body hash computed once.
		if p.shared, err = pipeline.NewBody(body); err != nil {
			return nil, err
		}
		if f.o.DKIM != nil {
			if p.dkim, err = newDKIMSigner(f.o.DKIM, body); err != nil {
				return nil, err
			}
			sig, err := p.dkim.sign(prefix)
			if err != nil {
				return nil, err
			}
			p.genericHead = append(sig, prefix...)
		}
	}
	f.cache[k] = p
	return p, nil
}
