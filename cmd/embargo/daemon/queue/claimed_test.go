package queue

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

var bucketClaimTest = []byte("claim_test")

// TestClaimedHook: Options.Claimed runs in the claim's transaction for
// each row claimed; the envelope sender it sets is the one the relay
// gets, at every claim of the row, while the stored row keeps its own;
// what it writes is committed before the relay sees the row.
func TestClaimedHook(t *testing.T) {
	db := tempDB(t)
	clock := newClock()
	var mu sync.Mutex
	sent := map[uint64][]string{} // row → the senders the relay got
	fail := true                  // the first attempt of every row: a 451
	relay := relayFunc(func(_ context.Context, from string, to []string, data []byte) error {
		var id uint64
		fmt.Sscanf(from, "c-%d@", &id)
		var written []byte
		db.View(func(tx *bolt.Tx) error {
			if b := tx.Bucket(bucketClaimTest); b != nil {
				written = b.Get(idKey(id))
			}
			return nil
		})
		mu.Lock()
		defer mu.Unlock()
		if string(written) != from {
			t.Errorf("row %d sent from %q before its claim's write (%q) was committed", id, from, written)
		}
		sent[id] = append(sent[id], from)
		if fail {
			return errors.New("451 4.3.0 try later") // not Permanent: retried
		}
		return nil
	})
	claimed := func(tx *bolt.Tx, r *Row) error {
		if !tx.Writable() {
			t.Error("Claimed outside a write transaction")
		}
		b, err := tx.CreateBucketIfNotExists(bucketClaimTest)
		if err != nil {
			return err
		}
		r.From = fmt.Sprintf("c-%d@embargo.test", r.ID)
		return b.Put(idKey(r.ID), []byte(r.From))
	}
	w := start(t, db, relay, Options{Now: clock.Now, MinBackoff: time.Minute, Claimed: claimed})
	ids := enqueueNow(t, db, clock.Now(), testMsg(1, "a@src.test"), testMsg(2, "b@src.test"), testMsg(3, "c@src.test"))
	w.Kick()
	// Each row back in "queued" after its attempt (the count goes up at the
	// claim, while the row is still being sent).
	waitUntil(t, "three deferred rows", func() bool {
		rows := listRows(t, db)
		if len(rows) != 3 {
			return false
		}
		for _, r := range rows {
			if r.State != StateQueued || r.Attempts != 1 {
				return false
			}
		}
		return true
	})
	for _, r := range listRows(t, db) {
		if r.From != "security-bounces@embargo.test" {
			t.Errorf("row %d stored from %q: the hook's sender was written into the row", r.ID, r.From)
		}
	}
	mu.Lock()
	fail = false
	mu.Unlock()
	clock.Advance(time.Minute)
	w.Kick()
	waitUntil(t, "empty queue", emptyQueue(t, db))
	mu.Lock()
	defer mu.Unlock()
	for _, id := range ids {
		want := fmt.Sprintf("c-%d@embargo.test", id)
		if got := sent[id]; len(got) != 2 || got[0] != want || got[1] != want {
			t.Errorf("row %d sent from %v, want %s twice", id, got, want)
		}
	}
}

// TestClaimedHookFails: a hook that fails fails the claim: nothing is
// sent, no row is left "sending" nor has its attempt counted, and the
// rows go once the hook works again.
func TestClaimedHookFails(t *testing.T) {
	db := tempDB(t)
	clock := newClock()
	var mu sync.Mutex
	var sent int
	hookErr := errors.New("no room")
	relay := relayFunc(func(context.Context, string, []string, []byte) error {
		mu.Lock()
		defer mu.Unlock()
		sent++
		return nil
	})
	claimed := func(tx *bolt.Tx, r *Row) error {
		mu.Lock()
		defer mu.Unlock()
		return hookErr
	}
	w := start(t, db, relay, Options{Now: clock.Now, MinBackoff: 20 * time.Millisecond, Claimed: claimed})
	enqueueNow(t, db, clock.Now(), testMsg(1), testMsg(2))
	w.Kick()
	time.Sleep(100 * time.Millisecond) // several claims, each failing
	for _, r := range listRows(t, db) {
		if r.State != StateQueued || r.Attempts != 0 {
			t.Errorf("row %d after failed claims: %s, %d attempts", r.ID, r.State, r.Attempts)
		}
	}
	mu.Lock()
	if sent != 0 {
		t.Errorf("%d rows sent although their claim failed", sent)
	}
	hookErr = nil
	mu.Unlock()
	waitUntil(t, "empty queue", emptyQueue(t, db))
}
