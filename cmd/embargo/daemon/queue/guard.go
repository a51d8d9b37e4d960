package queue

import (
	"context"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// A row whose sealing or sending kills the whole process (a fatal error no
// recover() sees: a stack overflow in a dependency, out of memory, the
// kernel's OOM killer) stays "sending"; the next start makes it due at once
// and the process dies again: a crash loop that stops all intake
// (docs/threat-model.md A6). Options.Guard counts those deaths: while a
// sender seals and sends rows, they are in its in-flight record, and a row
// found there at a start has a death. The worker then
//
//   - claims a row with a death (a suspect) alone: only when no other row is
//     claimed, and no other row while it is, so that the suspect is sealed
//     and sent in a batch of its own and its next death, if any, is its own
//     (the Guard keeps messages and ticks out meanwhile too). Rows claimed
//     with the killer were in progress at its death: they are suspects as
//     well, each tried alone once, and forgotten when they survive;
//   - fails a row that was in progress at too many deaths (a killer) without
//     trying it: permanently, with ErrKilledProcess, so that Options.Failed
//     alerts the committee, naming the row. `embargo queue retry` tries it
//     again, once, alone: a death after the retry fails it again.
//
// A suspect's delivery is bounded by aloneTimeout, because everything else
// waits while it runs.

// Verdict is what the deaths of the process say of a row.
type Verdict int

const (
	// Clean: in progress at no death; sent with the others.
	Clean Verdict = iota
	// Suspect: in progress at a death; sealed and sent alone.
	Suspect
	// Killer: in progress at too many deaths since it was last queued or
	// retried; failed without an attempt.
	Killer
)

// Guard counts the deaths of the process while rows are sealed and sent;
// listd.Attempts.Rows is the daemon's. Its methods may be called
// concurrently.
type Guard interface {
	// Verdict judges row id at now from its deaths; since is when an
	// operator last retried it (zero if never): deaths before then make a
	// suspect, never a killer.
	Verdict(id uint64, since, now time.Time) (v Verdict, deaths int)
	// Begin records that rows are being sealed and sent, until end is
	// called. With alone (one suspect), it first waits until no other work
	// is in progress, and keeps new work waiting until end; it may give up
	// (an error), and the row is then tried again later.
	Begin(ctx context.Context, ids []uint64, alone bool) (end func(), err error)
	// Survived is called in the transaction that records the outcome of a
	// suspect that was sealed and sent without a death: its count is
	// forgotten.
	Survived(tx *bolt.Tx, id uint64) error
}

// ErrKilledProcess is the permanent failure of a row the Guard judged a
// killer.
var ErrKilledProcess = errors.New("the process died while this message was being sealed or sent")

// aloneTimeout bounds a suspect's sealing and sending: new mail, other rows
// and the tick wait meanwhile. A relay that takes longer for one message is
// hung; the row is retried later, with the others again.
const aloneTimeout = 2 * time.Minute

// killedError is the reason a killer fails with: what happened and what an
// operator can do.
func killedError(id uint64, deaths int) error {
	return Permanent(fmt.Errorf("%w, %d times (a fatal error or the OOM killer; docs/threat-model.md A6): it is not tried again; `embargo queue retry %d` tries it once more, alone",
		ErrKilledProcess, deaths, id))
}

// verdict is the Guard's verdict on a row about to be claimed; Clean
// without a Guard.
func (w *Worker) verdict(id uint64, rec *record, now time.Time) (Verdict, int) {
	if w.opts.Guard == nil {
		return Clean, 0
	}
	return w.opts.Guard.Verdict(id, rec.Requeued, now)
}

// guard records rows as being sealed and sent (Guard.Begin); a nil end
// without a Guard.
func (w *Worker) guard(ctx context.Context, rows []Row) (end func(), err error) {
	if w.opts.Guard == nil {
		return func() {}, nil
	}
	ids := make([]uint64, len(rows))
	for i, r := range rows {
		ids[i] = r.ID
	}
	return w.opts.Guard.Begin(ctx, ids, len(rows) == 1 && rows[0].suspect)
}
