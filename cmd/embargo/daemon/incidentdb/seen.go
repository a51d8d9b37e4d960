package incidentdb

import (
	"bytes"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/workflow"
)

// MarkSeen records a delivery's duplicate key (a client that lost our 250
// sends the same again, RFC 1047), for Seen. listd keys a delivery by the
// message's bytes and its recipients: the same bytes for other recipients
// are another delivery. AddMessage no longer marks the SHA-256 of the
// bytes alone, the key of earlier versions, which nothing read: a second
// random key a report, each a leaf of its own rewritten at every commit
// (the Record keeps the SHA-256).
func MarkSeen(tx *bolt.Tx, key [32]byte) error {
	return tx.Bucket(bucketSeen).Put(key[:], []byte{})
}

// bucketSeenKeys holds every OpenPGP key that arrived in a reporter's mail,
// by incident and fingerprint; which one is pinned is the incident's
// (workflow.Incident.PinnedReporterKey). Incidents from before keys were tracked
// have their one key in bucketRepKeys (ReporterKey).
var bucketSeenKeys = []byte("reporter_keys_seen") // "ID/FPR" → armored public key

func seenKeyID(id workflow.ID, fpr string) []byte { return []byte(string(id) + "/" + fpr) }

// AddReporterKeySeen keeps a key that arrived for an incident. The first
// copy of a fingerprint stays.
func AddReporterKeySeen(tx *bolt.Tx, id workflow.ID, fpr string, armored []byte) error {
	b, err := tx.CreateBucketIfNotExists(bucketSeenKeys)
	if err != nil {
		return err
	}
	if b.Get(seenKeyID(id, fpr)) != nil {
		return nil
	}
	return b.Put(seenKeyID(id, fpr), bytes.Clone(armored))
}

// ReporterKeySeen returns the armored key with fingerprint fpr that arrived
// for an incident.
func ReporterKeySeen(tx *bolt.Tx, id workflow.ID, fpr string) ([]byte, bool) {
	b := tx.Bucket(bucketSeenKeys)
	if b == nil {
		return nil, false
	}
	v := b.Get(seenKeyID(id, fpr))
	if v == nil {
		return nil, false
	}
	return bytes.Clone(v), true
}
