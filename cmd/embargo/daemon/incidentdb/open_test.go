package incidentdb

import (
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/workflow"
)

// TestOpenIncidents: closed incidents are skipped, open ones come back in
// order, and text that looks like a closed phase inside a field fools nothing.
func TestOpenIncidents(t *testing.T) {
	db := openDB(t)
	t0 := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	incs := []workflow.Incident{
		{ID: "SEC-2026-10000", Phase: workflow.PhaseFix, Opened: t0},
		{ID: "SEC-2026-0002", Phase: workflow.PhaseClosed, Opened: t0},
		{ID: "SEC-2026-0003", Phase: workflow.PhaseTriage, Opened: t0, Subject: `x","phase":"closed"`},
		{ID: "SEC-2026-0001", Phase: workflow.PhaseDisclosed, Opened: t0},
	}
	db.Update(func(tx *bolt.Tx) error {
		for i := range incs {
			if err := Put(tx, &incs[i]); err != nil {
				t.Fatal(err)
			}
		}
		return nil
	})
	var got []workflow.ID
	db.View(func(tx *bolt.Tx) error {
		open, err := OpenIncidents(tx)
		if err != nil {
			t.Fatal(err)
		}
		for _, inc := range open {
			got = append(got, inc.ID)
		}
		return nil
	})
	if want := []workflow.ID{"SEC-2026-0001", "SEC-2026-0003", "SEC-2026-10000"}; len(got) != 3 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Errorf("OpenIncidents = %v, want %v", got, want)
	}
}
