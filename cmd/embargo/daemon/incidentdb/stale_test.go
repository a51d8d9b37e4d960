package incidentdb

import (
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TestStaleRecords: the records of the limits and the replay cache are
// found stale once their window has passed, and only then; DeleteStale
// deletes them but spares one renewed since they were found; max bounds a
// batch.
func TestStaleRecords(t *testing.T) {
	db := openDB(t)
	t0 := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	update := func(f func(tx *bolt.Tx) error) {
		t.Helper()
		if err := db.Update(f); err != nil {
			t.Fatal(err)
		}
	}
	update(func(tx *bolt.Tx) error {
		for _, who := range []string{"a@x.test", "b@x.test"} {
			if err := CountOpened(tx, LimitKey("sender", who), t0, t0.Add(-time.Hour), 3); err != nil {
				return err
			}
		}
		if err := CountOpened(tx, LimitKey("client", "192.0.2.1"), t0.Add(50*time.Minute), t0, 3); err != nil {
			return err
		}
		for _, addr := range []string{"a@x.test", "c@x.test"} {
			if _, err := Ack(tx, addr, t0, 1, 0); err != nil {
				return err
			}
		}
		if _, err := Ack(tx, "late@x.test", t0.Add(20*time.Hour), 1, 0); err != nil {
			return err
		}
		if _, err := SeenSignature(tx, "sig1", t0.Add(24*time.Hour), t0); err != nil {
			return err
		}
		_, err := SeenSignature(tx, "sig2", t0.Add(48*time.Hour), t0)
		return err
	})
	find := func(now, since time.Time, max int) (s Stale) {
		db.View(func(tx *bolt.Tx) error { s = FindStale(tx, now, since, max); return nil })
		return s
	}
	names := func(keys [][]byte) []string {
		var out []string
		for _, k := range keys {
			out = append(out, string(k))
		}
		return out
	}
	// Within every window: nothing.
	if s := find(t0.Add(30*time.Minute), t0.Add(-30*time.Minute), 10); s.Len() != 0 {
		t.Fatalf("stale within the windows: %+v", s)
	}
	// A day and a half later, with limit windows counted from 10:00: both
	// senders (09:00) and the client (09:50), the two acknowledgements of
	// 09:00 (not late@'s, whose window opened at 05:00 the next day), and
	// the signature that expired.
	now := t0.Add(36 * time.Hour)
	s := find(now, t0.Add(time.Hour), 10)
	if got := names(s.Limits); !slices.Equal(got, []string{"client/192.0.2.1", "sender/a@x.test", "sender/b@x.test"}) {
		t.Errorf("stale limits %q", got)
	}
	if got := names(s.Acks); !slices.Equal(got, []string{"a@x.test", "c@x.test"}) {
		t.Errorf("stale acks %q", got)
	}
	if got := names(s.Replay); !slices.Equal(got, []string{"sig1"}) {
		t.Errorf("stale replay entries %q", got)
	}
	if b := find(now, t0.Add(time.Hour), 1); len(b.Limits) != 1 || len(b.Acks) != 1 {
		t.Errorf("max 1 found %d limits, %d acks", len(b.Limits), len(b.Acks))
	}
	// b@ opens an incident between the read and the delete: kept.
	update(func(tx *bolt.Tx) error {
		if err := CountOpened(tx, LimitKey("sender", "b@x.test"), now, now.Add(-time.Hour), 3); err != nil {
			return err
		}
		n, err := DeleteStale(tx, s, now, t0.Add(time.Hour))
		if err != nil || n != 5 {
			t.Errorf("deleted %d (%v), want 5", n, err)
		}
		return nil
	})
	db.View(func(tx *bolt.Tx) error {
		if n, _ := OpenedSince(tx, LimitKey("sender", "b@x.test"), now.Add(-time.Hour)); n != 1 {
			t.Errorf("b@'s renewed count: %d", n)
		}
		if n, _ := OpenedSince(tx, LimitKey("sender", "a@x.test"), time.Time{}); n != 0 {
			t.Errorf("a@'s count survived: %d", n)
		}
		for _, k := range []string{"a@x.test", "c@x.test"} {
			if tx.Bucket(bucketAcks).Get([]byte(k)) != nil {
				t.Errorf("ack record %s survived", k)
			}
		}
		if tx.Bucket(bucketAcks).Get([]byte("late@x.test")) == nil || tx.Bucket(bucketReplay).Get([]byte("sig2")) == nil {
			t.Error("a record within its window was deleted")
		}
		if tx.Bucket(bucketReplay).Get([]byte("sig1")) != nil {
			t.Error("the expired signature survived")
		}
		return nil
	})
	// A deleted acknowledgement record reads as none: the next one goes.
	update(func(tx *bolt.Tx) error {
		if ok, err := AllowAck(tx, "a@x.test", now, 1); err != nil || !ok {
			t.Errorf("ack after the record was pruned: %v %v", ok, err)
		}
		return nil
	})
}
