package listd

import (
	"context"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/announce"
)

// The announce fan-out's batches in the attempt table (docs/threat-model.md
// A6). A batch whose outcome was not recorded is sent again at the next
// start, so one whose sending kills the process brings it down at every
// start. It is counted as a row is, under labelKey(workBatch, its label:
// the release's ID and its stretch of the delivery order); the fan-out
// sends a batch with a death alone and sets aside one at
// announce.BatchPoisonDeaths (announce/guard.go).

// Batches is the fan-out's view of the attempts (announce.BatchGuard).
// Nil when a is nil.
func (a *Attempts) Batches() announce.BatchGuard {
	if a == nil {
		return nil
	}
	return batchGuard{a}
}

type batchGuard struct{ a *Attempts }

// Deaths lists the counts of release id's batches: the fan-out asks once
// per start, so a walk of the table (at most maxAttempts) is cheap.
func (g batchGuard) Deaths(id string, now time.Time) []announce.BatchDeaths {
	a := g.a
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []announce.BatchDeaths
	for _, r := range a.known {
		if r.kind != workBatch || now.Sub(r.last) > AttemptTTL {
			continue
		}
		job, b, ok := announce.ParseBatchLabel(r.label)
		if ok && strings.EqualFold(job, id) {
			out = append(out, announce.BatchDeaths{Batch: b, Deaths: r.deaths, Last: r.last})
		}
	}
	return out
}

// Begin takes the gate (all of it when alone) and a slot for the batch.
func (g batchGuard) Begin(ctx context.Context, id string, b announce.Batch, alone bool) (func(), error) {
	a := g.a
	if err := a.enter(ctx, alone); err != nil {
		return nil, err
	}
	label := b.Label(id)
	slot := a.take(a.labelKey(workBatch, label), workBatch, label)
	return func() {
		a.release(slot)
		a.leave(alone)
	}, nil
}

// Survived forgets the batch's count with the outcome's commit.
func (g batchGuard) Survived(tx *bolt.Tx, id string, b announce.Batch) error {
	key := g.a.labelKey(workBatch, b.Label(id))
	if err := g.a.forget(tx, key); err != nil {
		return err
	}
	tx.OnCommit(func() { g.a.forgotten(key) })
	return nil
}
