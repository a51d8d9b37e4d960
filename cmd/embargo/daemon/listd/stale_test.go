package listd

import (
	"context"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
)

// TestTickDeletesStaleRecords: the tick deletes the intake-limit counts,
// acknowledgement records and replay entries whose windows have passed, and
// nothing else; a tick with nothing stale commits nothing of its own
// (docs/threat-model.md B7, B8, E3).
func TestTickDeletesStaleRecords(t *testing.T) {
	s, db := tickService(t)
	if err := s.Tick(context.Background(), mon); err != nil { // the digest marker, the heartbeat
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		if err := incidentdb.CountOpened(tx, incidentdb.LimitKey("sender", "rep@out.test"), mon, mon.Add(-LimitWindow), 10); err != nil {
			return err
		}
		if _, err := incidentdb.Ack(tx, "rep@out.test", mon, 1, 0); err != nil {
			return err
		}
		_, err := incidentdb.SeenSignature(tx, "sig", mon.Add(time.Hour), mon)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	commits := 0
	s.sh.writer.groupHook = func(*bolt.Tx, int) error { commits++; return nil }
	present := func() (limit, ack, replay bool) {
		db.View(func(tx *bolt.Tx) error {
			n, _ := incidentdb.OpenedSince(tx, incidentdb.LimitKey("sender", "rep@out.test"), time.Time{})
			limit = n > 0
			ack = tx.Bucket([]byte("acks")).Get([]byte("rep@out.test")) != nil
			replay = tx.Bucket([]byte("replay")).Get([]byte("sig")) != nil
			return nil
		})
		return limit, ack, replay
	}
	tick := func(at time.Time) {
		t.Helper()
		commits = 0
		if err := s.Tick(context.Background(), at); err != nil {
			t.Fatal(err)
		}
	}
	// Within every window: all kept, and the tick writes nothing.
	tick(mon.Add(30 * time.Minute))
	if l, a, r := present(); !l || !a || !r {
		t.Fatalf("a record within its window was deleted: limit %v ack %v replay %v", l, a, r)
	}
	if commits != 0 {
		t.Errorf("a tick with nothing stale committed %d groups", commits)
	}
	// Two hours on: the limit count and the replay entry are stale, the
	// acknowledgement's 24 hours are not over.
	tick(mon.Add(2 * time.Hour))
	if l, a, r := present(); l || !a || r {
		t.Errorf("after 2 h: limit count kept %v, ack record kept %v, replay entry kept %v (want false, true, false)", l, a, r)
	}
	if commits != 1 {
		t.Errorf("the clean-up took %d commits, want 1", commits)
	}
	tick(mon.Add(25 * time.Hour))
	if _, a, _ := present(); a {
		t.Error("the acknowledgement record outlived its window")
	}
}
