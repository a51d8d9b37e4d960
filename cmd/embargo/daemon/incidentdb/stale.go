package incidentdb

import (
	"bytes"
	"encoding/binary"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Records that only a limit reads, kept per address: the intake limits and
// distributor warnings (bucketLimits, docs/threat-model.md B7, G2), the
// acknowledgement limits (bucketAcks, B8) and the replay cache
// (bucketReplay, E3). Each is written when an address acts, and each stops
// mattering once its window has passed; nothing else deletes them, so a
// store that has seen many senders (a flood forging a new one per report)
// would keep one record for each for ever. The daemon's tick finds the
// stale ones (FindStale, a read) and deletes them (DeleteStale) in a short
// transaction of its own, a batch at a time.

// Stale names, per bucket, records no limit reads any more.
type Stale struct {
	Limits, Acks, Replay [][]byte
}

// Len is how many records s names.
func (s Stale) Len() int { return len(s.Limits) + len(s.Acks) + len(s.Replay) }

// FindStale lists at most max records of each kind that are stale at now:
// a limit count whose latest instant is not after limitsSince (the start of
// the longest window that counts them), an acknowledgement record whose
// 24-hour window has ended (the next acknowledgement would start a new one
// anyway, ackNext), a replay entry that has expired. It only reads.
func FindStale(tx *bolt.Tx, now, limitsSince time.Time, max int) Stale {
	var s Stale
	s.Limits = staleKeys(tx.Bucket(bucketLimits), max, func(v []byte) bool { return limitStale(v, limitsSince) })
	s.Acks = staleKeys(tx.Bucket(bucketAcks), max, func(v []byte) bool { return ackStale(v, now) })
	s.Replay = staleKeys(tx.Bucket(bucketReplay), max, func(v []byte) bool { return replayStale(v, now) })
	return s
}

// DeleteStale deletes the records s names that are still stale in tx (an
// address may have acted since FindStale read them), and returns how many
// it deleted.
func DeleteStale(tx *bolt.Tx, s Stale, now, limitsSince time.Time) (int, error) {
	n := 0
	for _, g := range []struct {
		b     *bolt.Bucket
		keys  [][]byte
		stale func([]byte) bool
	}{
		{tx.Bucket(bucketLimits), s.Limits, func(v []byte) bool { return limitStale(v, limitsSince) }},
		{tx.Bucket(bucketAcks), s.Acks, func(v []byte) bool { return ackStale(v, now) }},
		{tx.Bucket(bucketReplay), s.Replay, func(v []byte) bool { return replayStale(v, now) }},
	} {
		if g.b == nil {
			continue
		}
		for _, k := range g.keys {
			if v := g.b.Get(k); v == nil || !g.stale(v) {
				continue
			}
			if err := g.b.Delete(k); err != nil {
				return n, err
			}
			n++
		}
	}
	return n, nil
}

func staleKeys(b *bolt.Bucket, max int, stale func([]byte) bool) [][]byte {
	if b == nil {
		return nil
	}
	var out [][]byte
	c := b.Cursor()
	for k, v := c.First(); k != nil && len(out) < max; k, v = c.Next() {
		if v != nil && stale(v) {
			out = append(out, bytes.Clone(k))
		}
	}
	return out
}

// limitStale: the record's instants are oldest first (CountOpened).
func limitStale(v []byte, since time.Time) bool {
	return len(v) < 8 || int64(binary.BigEndian.Uint64(v[len(v)-8:])) <= since.UnixNano()
}

// ackStale: the window ended; one that lies ahead (the clock went back)
// stays, as ackNext reads it.
func ackStale(v []byte, now time.Time) bool {
	start, count := ackWindow(v, now)
	return count == 0 || now.Sub(start) >= AckWindow
}

func replayStale(v []byte, now time.Time) bool {
	return len(v) != 8 || int64(binary.BigEndian.Uint64(v)) <= now.Unix()
}
