package incidentdb

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// bucketLimits counts the incidents each sender and each client address
// opened lately, for the intake limits on new incidents (daemon/listd,
// docs/threat-model.md B7): key "sender/ADDR" or "client/IP", value the
// instants of those incidents, 8 bytes each (Unix nanoseconds, big-endian),
// oldest first, at most as many as the limit needs. The warnings to
// distributors@ posters count the same way under "distwarn/ADDR" (one a
// member per hour, docs/threat-model.md G2).
var bucketLimits = []byte("intake_limits")

func initLimits(tx *bolt.Tx) error {
	if _, err := tx.CreateBucketIfNotExists(bucketLimits); err != nil {
		return fmt.Errorf("incidentdb: create bucket %s: %w", bucketLimits, err)
	}
	return nil
}

// LimitKey names what a limit counts: a sender address or a client address.
func LimitKey(kind, who string) []byte { return []byte(kind + "/" + who) }

// OpenedSince returns how many incidents key opened after since, and the
// instant of the oldest of them (when the count next goes down).
func OpenedSince(tx *bolt.Tx, key []byte, since time.Time) (int, time.Time) {
	v := tx.Bucket(bucketLimits).Get(key)
	n, oldest := 0, time.Time{}
	for i := 0; i+8 <= len(v); i += 8 {
		t := time.Unix(0, int64(binary.BigEndian.Uint64(v[i:i+8]))).UTC()
		if t.After(since) {
			if n == 0 {
				oldest = t
			}
			n++
		}
	}
	return n, oldest
}

// CountOpened records that key opened an incident at now, forgetting the
// instants before since and keeping at most keep of the latest.
func CountOpened(tx *bolt.Tx, key []byte, now, since time.Time, keep int) error {
	b := tx.Bucket(bucketLimits)
	old := b.Get(key)
	var kept []byte
	for i := 0; i+8 <= len(old); i += 8 {
		if int64(binary.BigEndian.Uint64(old[i:i+8])) > since.UnixNano() {
			kept = append(kept, old[i:i+8]...)
		}
	}
	kept = append(kept, be(uint64(now.UnixNano()))...)
	if keep > 0 && len(kept) > 8*keep {
		kept = kept[len(kept)-8*keep:]
	}
	return b.Put(bytes.Clone(key), kept)
}
