package announce

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// A batch whose sending kills the whole process (a fatal error no
// recover() sees: a stack overflow in a dependency, out of memory, the
// kernel's OOM killer) is sent again at the next start, since its outcome
// was never recorded, and kills the process again: a crash loop that stops
// all intake as well as the release (docs/threat-model.md A6).
// Options.Guard counts those deaths: while a connection sends a batch, the
// batch is in the guard's in-flight record, and a batch found there at a
// start had a death. The Fanout then, once per process (judge):
//
//   - sends a batch with a death (a suspect) alone: before any other batch
//     of its release, with nothing else of that release in flight, and the
//     guard keeps every other piece of work (other batches, messages, rows,
//     ticks) out while it is sent, so that its next death, if any, is its
//     own. The batches in flight beside the killer were in flight at its
//     death as well: each is sent alone once and forgotten when it
//     survives. They are the batches a death sends again anyway, so a kill
//     -9 mid-release still sends at most one batch per connection again;
//   - sets aside a batch that was in progress at BatchPoisonDeaths deaths
//     since the release was last resumed (a killer): its subscribers are
//     not sent to, every other subscriber of the release is, and then the
//     release is held (HoldKilled) with one alert to the SRC through
//     Options.Held. `embargo release resume ID` sends the batches set
//     aside once more, each alone; a death then sets it aside again.
//
// A suspect's sending is bounded by aloneTimeout, because everything else
// waits meanwhile.

// BatchPoisonDeaths is how many deaths of the process a batch may be in
// progress at before it is set aside: as for a queue row
// (listd.RowPoisonDeaths), one more than for a message. A batch is in
// progress for as long as the relay takes to answer it, Connections
// batches at once; after a death each is sent alone in turn, and one
// unrelated kill in that window must not hold a release.
const BatchPoisonDeaths = 3

// aloneTimeout bounds a suspect batch's sending: new mail, other batches,
// rows and the tick wait meanwhile.
const aloneTimeout = 2 * time.Minute

// Batch names a batch by the stretch of the delivery order it covers: the
// places after Lo, up to and including Hi. A batch of the retry set
// (Retry) covers the places of its recipients.
type Batch struct {
	Lo, Hi uint64
	Retry  bool
}

// BatchDeaths is a batch of a release that was in progress at deaths of
// the process, as the Guard counted them.
type BatchDeaths struct {
	Batch
	Deaths int
	Last   time.Time
}

// BatchGuard counts the deaths of the process while batches are sent;
// listd.Attempts.Batches is the daemon's. Its methods may be called
// concurrently.
type BatchGuard interface {
	// Deaths lists the batches of release id in progress at deaths of the
	// process, as of now.
	Deaths(id string, now time.Time) []BatchDeaths
	// Begin records that batch b of release id is being sent, until end is
	// called. With alone (a suspect), it first waits until no other work
	// is in progress, and keeps new work waiting until end; it may give up
	// (an error), and the batch is then sent later.
	Begin(ctx context.Context, id string, b Batch, alone bool) (end func(), err error)
	// Survived is called in the transaction that records the outcome of
	// a suspect that was sent without a death: its count is forgotten.
	Survived(tx *bolt.Tx, id string, b Batch) error
}

// Label is the guard's name of batch b of release id, as `embargo status`
// shows it: "<id> <lo>-<hi>", "r" before lo for a batch of the retry set.
// At most 40+1+1+20+1+20 bytes.
func (b Batch) Label(id string) string {
	r := ""
	if b.Retry {
		r = "r"
	}
	return strings.ToLower(id) + " " + r + strconv.FormatUint(b.Lo, 10) + "-" + strconv.FormatUint(b.Hi, 10)
}

// ParseBatchLabel reads a Label.
func ParseBatchLabel(label string) (id string, b Batch, ok bool) {
	id, rest, ok := strings.Cut(label, " ")
	if !ok {
		return "", Batch{}, false
	}
	rest, b.Retry = strings.CutPrefix(rest, "r")
	lo, hi, ok := strings.Cut(rest, "-")
	if !ok {
		return "", Batch{}, false
	}
	var err1, err2 error
	b.Lo, err1 = strconv.ParseUint(lo, 10, 64)
	b.Hi, err2 = strconv.ParseUint(hi, 10, 64)
	return id, b, err1 == nil && err2 == nil && validJobID(id)
}

// aside is a batch set aside: it was in progress at BatchPoisonDeaths
// deaths. Seqs are the places of a retry batch's recipients (a cursor
// batch's are its stretch); Again is set by Resume: it is sent once more,
// alone.
type aside struct {
	Batch  Batch    `json:"batch"`
	Seqs   []uint64 `json:"seqs,omitempty"`
	Rcpts  int      `json:"rcpts"`
	Deaths int      `json:"deaths"`
	Again  bool     `json:"again,omitempty"`
}

func (r *jobRecord) asideIndex(b Batch) int {
	for i, a := range r.Aside {
		if a.Batch == b {
			return i
		}
	}
	return -1
}

// againPending: some batch set aside is to be sent once more.
func (r *jobRecord) againPending() bool {
	for _, a := range r.Aside {
		if a.Again {
			return true
		}
	}
	return false
}

// asideReason is the hold's reason once everything but the batches set
// aside was sent.
func (r *jobRecord) asideReason() string {
	n, deaths := 0, 0
	for _, a := range r.Aside {
		n += a.Rcpts
		deaths = max(deaths, a.Deaths)
	}
	return fmt.Sprintf("%d subscriber(s) set aside: their batch was in progress at %d deaths of the daemon (a fatal error or the out-of-memory killer; its log names it); every other subscriber had the release sent",
		n, deaths)
}

// judge sorts the batches the guard found in progress at deaths of the
// process, once per process (deaths are counted only at a start): killers
// are set aside, suspects go to their release's lane, to be sent alone.
func (f *Fanout) judge() error {
	if f.o.Guard == nil || f.judged {
		return nil
	}
	now := f.o.Now()
	suspects := map[string][]Batch{}
	err := f.db.Update(func(tx *bolt.Tx) error {
		clear(suspects)
		b, err := open(tx)
		if err != nil {
			return err
		}
		var jobs []*jobRecord
		err = b.openjobs.ForEach(func(k, _ []byte) error {
			r, err := b.getJob(k)
			if err == nil && (r.State == JobReleasing || r.State == JobHeld && r.HeldFrom == JobReleasing) {
				jobs = append(jobs, r)
			}
			return err
		})
		if err != nil {
			return err
		}
		for _, r := range jobs {
			k := string(jobKey(r.ID))
			changed := false
			ds := f.o.Guard.Deaths(r.ID, now)
			slices.SortFunc(ds, func(a, c BatchDeaths) int { return cmpU64(a.Lo, c.Lo) }) // in delivery order
			for _, d := range ds {
				killer := d.Deaths >= BatchPoisonDeaths && d.Last.After(r.ResumedAt)
				switch i := r.asideIndex(d.Batch); {
				case i >= 0 && killer && r.Aside[i].Again: // sent once more, and died
					r.Aside[i].Again, r.Aside[i].Deaths, changed = false, d.Deaths, true
				case i >= 0: // set aside already, or sent once more anyway
				case killer:
					if err := b.setAside(k, r, d); err != nil {
						return err
					}
					changed = true
					f.log.Error("announce batch set aside: the process died while it was sent, and would again",
						"release", r.ID, "batch", d.Label(r.ID), "deaths", d.Deaths)
				default:
					suspects[k] = append(suspects[k], d.Batch)
				}
			}
			if changed {
				if err := f.finishIfDone(tx, b, r, now); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	f.judged = true
	f.suspects = suspects
	return nil
}

// setAside takes a killer batch out of the release: a cursor batch's
// stretch counts as done, a retry batch's recipients leave the retry set.
func (b *buckets) setAside(k string, r *jobRecord, d BatchDeaths) error {
	a := aside{Batch: d.Batch, Deaths: d.Deaths}
	if d.Retry {
		ts, err := b.retriesIn(k, d.Lo, d.Hi, nil)
		if err != nil {
			return err
		}
		for _, t := range ts {
			a.Seqs = append(a.Seqs, t.seq)
			if err := b.dropRetry(k, t.key, r); err != nil {
				return err
			}
		}
		a.Rcpts = len(ts)
	} else {
		var ts []target
		if lo := max(d.Lo, r.Cursor); lo < d.Hi { // below the cursor: recorded before the death
			ts, _ = b.batch(lo, d.Hi, math.MaxInt, r.Done)
		}
		a.Rcpts = len(ts)
		r.addDone(span{d.Lo, d.Hi})
	}
	r.Aside = append(r.Aside, a)
	return nil
}

// retriesIn returns the retry entries of job whose places are in (lo, hi]
// and not in flight (busy), due or not.
func (b *buckets) retriesIn(job string, lo, hi uint64, busy map[string]bool) ([]target, error) {
	var out []target
	p := retryKey(job, "")
	c := b.retry.Cursor()
	for k, v := c.Seek(p); k != nil && strings.HasPrefix(string(k), string(p)); k, v = c.Next() {
		var rr retryRecord
		if err := json.Unmarshal(v, &rr); err != nil {
			return nil, fmt.Errorf("announce: decode retry: %w", err)
		}
		if key := string(k[len(p):]); lo < rr.Seq && rr.Seq <= hi && !busy[key] {
			out = append(out, target{seq: rr.Seq, addr: rr.Address, key: key})
		}
	}
	return out, nil
}

// pickAlone forms the next batch of a release that must be sent alone: a
// suspect of the lane, or a batch set aside that Resume sends once more.
// ok is false when there is none; blocked when there is one but the
// release has batches in flight (it waits for them), or a batch alone is
// in flight (everything of the release waits for it).
func (f *Fanout) pickAlone(b *buckets, k string, r *jobRecord, l *lane, cand *work) (commit func(), ok, blocked bool, err error) {
	if l.alone > 0 {
		return nil, false, true, nil
	}
	sus := f.suspects[k]
	again := -1
	for i, a := range r.Aside {
		if a.Again && r.State == JobReleasing {
			again = i
			break
		}
	}
	if len(sus) == 0 && again < 0 {
		return nil, false, false, nil
	}
	if l.busy > 0 {
		return nil, false, true, nil
	}
	cand.suspect = true
	switch {
	case len(sus) > 0 && sus[0].Retry:
		s := sus[0]
		cand.batch, cand.retry = s, true
		if cand.rcpts, err = b.retriesIn(k, s.Lo, s.Hi, l.retrying); err != nil {
			return nil, false, false, err
		}
		commit = func() {
			f.suspects[k] = f.suspects[k][1:]
			for _, rc := range cand.rcpts {
				l.retrying[rc.key] = true
			}
		}
	case len(sus) > 0:
		s := sus[0]
		lo, end := max(s.Lo, r.Cursor), s.Hi // below the cursor: recorded before the death
		cand.batch = s
		if lo < s.Hi {
			cand.rcpts, end = b.batch(lo, s.Hi, f.o.BatchSize, r.Done)
		}
		cand.span = span{lo, end}
		// What it leaves unsent (more than BatchSize now, a failure) is
		// not done: the walk from the cursor, which waits for the
		// suspects, sends it with the others.
		commit = func() { f.suspects[k] = f.suspects[k][1:] }
	default:
		a := r.Aside[again]
		cand.batch, cand.again = a.Batch, true
		if a.Seqs != nil {
			cand.rcpts = b.atPlaces(a.Seqs)
		} else {
			cand.rcpts, _ = b.batch(a.Batch.Lo, a.Batch.Hi, math.MaxInt, nil)
		}
		commit = func() {}
	}
	inner := commit
	commit = func() { inner(); l.alone++ }
	return commit, true, false, nil
}

// atPlaces reads the active subscribers at seqs (those still active).
func (b *buckets) atPlaces(seqs []uint64) []target {
	var out []target
	for _, seq := range seqs {
		if v := b.active.Get(seqKey(seq)); v != nil {
			addr, tok := activeEntry(v)
			out = append(out, target{seq: seq, addr: addr, key: strings.ToLower(addr), token: tok})
		}
	}
	return out
}

// batchOf names a batch of ordinary work for the guard: its stretch, or
// for the retry set the places of its recipients.
func batchOf(w *work) Batch {
	if !w.retry {
		return Batch{Lo: w.span.Lo, Hi: w.span.Hi}
	}
	b := Batch{Lo: math.MaxUint64, Retry: true}
	for _, rc := range w.rcpts {
		b.Lo, b.Hi = min(b.Lo, max(rc.seq, 1)-1), max(b.Hi, rc.seq)
	}
	return b
}

// guardedSend sends w with its batch in the guard's in-flight record; a
// suspect waits to be alone, and its sending is bounded by aloneTimeout.
func (f *Fanout) guardedSend(s *slot, w *work) outcome {
	if f.o.Guard == nil {
		return f.send(w.ctx, s, w)
	}
	ctx := w.ctx
	if w.suspect {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, aloneTimeout)
		defer cancel()
	}
	end, err := f.o.Guard.Begin(ctx, w.job.ID, w.batch, w.suspect)
	if err != nil {
		return outcome{stop: err, unsent: true}
	}
	defer end()
	if f.o.OnBatch != nil {
		to := make([]string, len(w.rcpts))
		for i, rc := range w.rcpts {
			to[i] = rc.addr
		}
		f.o.OnBatch(w.job.ID, to)
	}
	return f.send(ctx, s, w)
}

// applyAlone records, in apply's transaction, what becomes of a batch sent
// alone: the guard forgets a suspect that was sent (the process survived
// it), and a batch set aside leaves the release's list with what the relay
// answered.
func (f *Fanout) applyAlone(tx *bolt.Tx, r *jobRecord, w *work, out outcome) error {
	if out.unsent {
		return nil // not alone in time: counted as before, sent later
	}
	if err := f.o.Guard.Survived(tx, r.ID, w.batch); err != nil {
		return err
	}
	i := r.asideIndex(w.batch)
	if !w.again || i < 0 {
		return nil
	}
	switch {
	case out.handled == len(w.rcpts) && out.stop == nil:
		r.Aside = append(r.Aside[:i], r.Aside[i+1:]...)
		if len(r.Aside) == 0 {
			r.Aside = nil
		}
	case out.handled > 0:
		last := w.rcpts[out.handled-1].seq
		a := &r.Aside[i]
		if a.Seqs != nil {
			done := map[uint64]bool{}
			for _, rc := range w.rcpts[:out.handled] {
				done[rc.seq] = true
			}
			a.Seqs = slices.DeleteFunc(a.Seqs, func(s uint64) bool { return done[s] })
		} else {
			a.Batch.Lo = last // keeps its guard label: the count was forgotten above
		}
		a.Rcpts -= out.handled
	}
	return nil
}
