package listd

import (
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
)

// staleBatch bounds the records one tick deletes: a short transaction
// through the group commit, so mail arriving meanwhile waits for little.
// At one tick a minute that is 30,000 records an hour, more than the
// intake limits let a flood leave behind.
const staleBatch = 512

// pruneStale deletes the per-address records of the limits and the replay
// cache whose windows have passed (incidentdb/stale.go; docs/threat-model.md
// B7, B8, G2, E3): without it each sender ever counted kept its record for
// ever. It reads first, so a tick with nothing stale writes nothing.
func (s *Service) pruneStale(now time.Time) (int, error) {
	since := now.Add(-max(LimitWindow, WarnWindow))
	var st incidentdb.Stale
	if err := s.o.DB.View(func(tx *bolt.Tx) error {
		st = incidentdb.FindStale(tx, now, since, staleBatch)
		return nil
	}); err != nil {
		return 0, fmt.Errorf("find stale records: %w", err)
	}
	if st.Len() == 0 {
		return 0, nil
	}
	var n int
	err := s.sh.writer.do(func(tx *bolt.Tx) error {
		var err error
		n, err = incidentdb.DeleteStale(tx, st, now, since)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("delete stale records: %w", err)
	}
	s.log.Debug("stale limit and replay records deleted", "count", n)
	return n, nil
}
