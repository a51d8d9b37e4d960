package incidentdb

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/workflow"
)

// The deadline index: each open incident filed under the next instant the
// scheduler's tick has something to do for it (workflow.NextTick), so that a
// tick reads only what is due instead of every open incident
// (docs/design.md §1). Keys sort by time: big-endian Unix nanoseconds, then
// the ID. The second bucket maps each ID to its key's instant, to move the
// entry when the incident changes. Both are written in the transaction that
// writes the incident (PutNext), so they can never disagree with it.
var (
	bucketDue     = []byte("incident_due")       // instant (8 bytes, big-endian Unix ns) ‖ ID → nil
	bucketDueByID = []byte("incident_due_by_id") // ID → instant (8 bytes)
)

// dueNow is the instant of an incident written by Put, which does not know
// when it is due: the first tick looks at it and files it properly.
const dueNow = 0

func initDue(tx *bolt.Tx) error {
	for _, b := range [][]byte{bucketDue, bucketDueByID} {
		if _, err := tx.CreateBucketIfNotExists(b); err != nil {
			return fmt.Errorf("incidentdb: create bucket %s: %w", b, err)
		}
	}
	return nil
}

// PutNext stores an incident and files it in the deadline index under next,
// the instant its next tick is due (workflow.NextTick); a zero next (closed,
// or nothing ahead) removes it from the index.
func PutNext(tx *bolt.Tx, inc *workflow.Incident, next time.Time) error {
	if err := put(tx, inc); err != nil {
		return err
	}
	if next.IsZero() {
		return setDue(tx, inc.ID, 0, false)
	}
	return setDue(tx, inc.ID, dueKey(next), true)
}

// SetNext files an incident that did not change under next (the tick found
// it earlier than it needed to, or the index is being rebuilt).
func SetNext(tx *bolt.Tx, id workflow.ID, next time.Time) error {
	if next.IsZero() {
		return setDue(tx, id, 0, false)
	}
	return setDue(tx, id, dueKey(next), true)
}

// dueKey is an instant as the index sorts it; instants before 1970 (never
// produced by the workflow) count as due now.
func dueKey(t time.Time) uint64 {
	if ns := t.UnixNano(); ns > 0 {
		return uint64(ns)
	}
	return dueNow
}

func setDue(tx *bolt.Tx, id workflow.ID, at uint64, filed bool) error {
	byID, due := tx.Bucket(bucketDueByID), tx.Bucket(bucketDue)
	if byID == nil || due == nil {
		return fmt.Errorf("incidentdb: the deadline index is missing (Init not run)")
	}
	if old := byID.Get([]byte(id)); len(old) == 8 {
		if filed && binary.BigEndian.Uint64(old) == at {
			return nil
		}
		if err := due.Delete(indexKey(binary.BigEndian.Uint64(old), id)); err != nil {
			return err
		}
	}
	if !filed {
		return byID.Delete([]byte(id))
	}
	if err := due.Put(indexKey(at, id), nil); err != nil {
		return err
	}
	return byID.Put([]byte(id), be(at))
}

func indexKey(at uint64, id workflow.ID) []byte {
	return append(be(at), id...)
}

// DueBy returns the incidents filed at or before now, earliest first, at
// most limit of them (0: all). It reads the index only.
func DueBy(tx *bolt.Tx, now time.Time, limit int) []workflow.ID {
	b := tx.Bucket(bucketDue)
	if b == nil {
		return nil
	}
	end := be(dueKey(now) + 1)
	var out []workflow.ID
	c := b.Cursor()
	for k, _ := c.First(); k != nil && bytes.Compare(k[:8], end) < 0; k, _ = c.Next() {
		out = append(out, workflow.ID(string(k[8:])))
		if limit > 0 && len(out) == limit {
			break
		}
	}
	return out
}

// Next is the instant an incident is filed under, and whether it is filed.
// Incidents written by Put are filed at the Unix epoch: due now.
func Next(tx *bolt.Tx, id workflow.ID) (time.Time, bool) {
	b := tx.Bucket(bucketDueByID)
	if b == nil {
		return time.Time{}, false
	}
	v := b.Get([]byte(id))
	if len(v) != 8 {
		return time.Time{}, false
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(v))).UTC(), true
}

// DueIndex returns the whole index as the ID → instant map, checking that
// its two buckets agree: for tests and the index's rebuild.
func DueIndex(tx *bolt.Tx) (map[workflow.ID]time.Time, error) {
	out := map[workflow.ID]time.Time{}
	if tx.Bucket(bucketDue) == nil {
		return out, nil
	}
	err := tx.Bucket(bucketDue).ForEach(func(k, _ []byte) error {
		if len(k) <= 8 {
			return fmt.Errorf("incidentdb: deadline index key %x too short", k)
		}
		id := workflow.ID(string(k[8:]))
		at := binary.BigEndian.Uint64(k[:8])
		if v := tx.Bucket(bucketDueByID).Get([]byte(id)); len(v) != 8 || binary.BigEndian.Uint64(v) != at {
			return fmt.Errorf("incidentdb: deadline index: %s filed at %d, its entry says %x", id, at, v)
		}
		if _, dup := out[id]; dup {
			return fmt.Errorf("incidentdb: deadline index: %s filed twice", id)
		}
		out[id] = time.Unix(0, int64(at)).UTC()
		return nil
	})
	if err == nil && tx.Bucket(bucketDueByID).Stats().KeyN != len(out) {
		err = fmt.Errorf("incidentdb: deadline index: %d IDs, %d entries", tx.Bucket(bucketDueByID).Stats().KeyN, len(out))
	}
	return out, err
}

// ClearDue empties the deadline index (before a rebuild).
func ClearDue(tx *bolt.Tx) error {
	for _, b := range [][]byte{bucketDue, bucketDueByID} {
		if tx.Bucket(b) != nil {
			if err := tx.DeleteBucket(b); err != nil {
				return err
			}
		}
	}
	return initDue(tx)
}

// IDsAfter returns up to limit incident IDs in key order after from ("" for
// the first): a rebuild walks the incidents in short transactions with it.
func IDsAfter(tx *bolt.Tx, from workflow.ID, limit int) []workflow.ID {
	c := tx.Bucket(bucketIncidents).Cursor()
	var k []byte
	if from == "" {
		k, _ = c.First()
	} else if k, _ = c.Seek([]byte(from)); k != nil && string(k) == string(from) {
		k, _ = c.Next()
	}
	var out []workflow.ID
	for ; k != nil && len(out) < limit; k, _ = c.Next() {
		out = append(out, workflow.ID(string(k)))
	}
	return out
}
