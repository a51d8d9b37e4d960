package incidentdb

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/workflow"
)

// TestDueIndex: filing, moving and unfiling incidents keeps the two
// buckets in step, DueBy returns what is filed at or before an instant in
// time order (IDs as strings sort SEC-2026-10000 before SEC-2026-9999; the
// index must not), and Put files an incident as due now.
func TestDueIndex(t *testing.T) {
	db := openDB(t)
	base := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	r := rand.New(rand.NewPCG(1, 2))
	want := map[workflow.ID]time.Time{}
	err := db.Update(func(tx *bolt.Tx) error {
		for range 2000 {
			id := workflow.FormatID(2026, uint64(9990+r.IntN(30)))
			inc := &workflow.Incident{Version: workflow.SchemaVersion, ID: id, Phase: workflow.PhaseTriage}
			switch r.IntN(4) {
			case 0:
				if err := PutNext(tx, inc, time.Time{}); err != nil {
					return err
				}
				delete(want, id)
			case 1:
				if err := Put(tx, inc); err != nil {
					return err
				}
				want[id] = time.Unix(0, 0).UTC()
			default:
				at := base.Add(time.Duration(r.IntN(100)) * time.Minute)
				if err := PutNext(tx, inc, at); err != nil {
					return err
				}
				want[id] = at
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	db.View(func(tx *bolt.Tx) error {
		got, err := DueIndex(tx)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("index %v, want %v", got, want)
		}
		now := base.Add(50 * time.Minute)
		due := DueBy(tx, now, 0)
		var exp []workflow.ID
		for id, at := range want {
			if !at.After(now) {
				exp = append(exp, id)
			}
		}
		if len(due) != len(exp) {
			t.Fatalf("DueBy: %d incidents, want %d", len(due), len(exp))
		}
		for i := 1; i < len(due); i++ {
			if want[due[i]].Before(want[due[i-1]]) {
				t.Fatalf("DueBy out of time order at %d: %v", i, due)
			}
		}
		slices.Sort(exp)
		slices.Sort(due)
		if !slices.Equal(due, exp) {
			t.Fatalf("DueBy %v, want %v", due, exp)
		}
		if n := len(DueBy(tx, now, 3)); n != min(3, len(exp)) {
			t.Errorf("DueBy with a limit of 3: %d", n)
		}
		return nil
	})
}

// TestSortIncidents: numbers past 9999 sort after 9999, years apart.
func TestSortIncidents(t *testing.T) {
	var l []workflow.Incident
	for _, id := range []string{"SEC-2027-0001", "SEC-2026-10000", "SEC-2026-1000", "SEC-2026-9999", "SEC-2026-0002", "SEC-2026-10001"} {
		l = append(l, workflow.Incident{ID: workflow.ID(id)})
	}
	sortIncidents(l)
	var got []string
	for _, inc := range l {
		got = append(got, string(inc.ID))
	}
	want := "[SEC-2026-0002 SEC-2026-1000 SEC-2026-9999 SEC-2026-10000 SEC-2026-10001 SEC-2027-0001]"
	if fmt.Sprint(got) != want {
		t.Errorf("sorted %v, want %s", got, want)
	}
}

// TestLimitCounts: the counts keep the instants within the window, at most
// the limit of them, and pruning drops the keys whose last one is old.
func TestLimitCounts(t *testing.T) {
	db := openDB(t)
	t0 := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	key := LimitKey("sender", "rep@out.test")
	err := db.Update(func(tx *bolt.Tx) error {
		for i := range 5 {
			now := t0.Add(time.Duration(i) * 20 * time.Minute)
			if err := CountOpened(tx, key, now, now.Add(-time.Hour), 3); err != nil {
				return err
			}
		}
		// At 10:20: 09:40, 10:00, 10:20 within the hour (09:20 is not).
		n, oldest := OpenedSince(tx, key, t0.Add(80*time.Minute-time.Hour))
		if n != 3 || !oldest.Equal(t0.Add(40*time.Minute)) {
			t.Errorf("OpenedSince: %d, oldest %v", n, oldest)
		}
		if err := CountOpened(tx, LimitKey("client", "192.0.2.1"), t0, t0.Add(-time.Hour), 3); err != nil {
			return err
		}
		cut := t0.Add(30 * time.Minute)
		pruned, err := DeleteStale(tx, FindStale(tx, cut, cut, 100), cut, cut)
		if err != nil || pruned != 1 {
			t.Errorf("pruned %d (%v), want the client's key alone", pruned, err)
		}
		if n, _ := OpenedSince(tx, key, t0); n != 3 {
			t.Errorf("the sender's count after pruning: %d", n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
