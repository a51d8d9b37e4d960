// Package govdb keeps the governance record (lists/governance.State) in the
// store: one JSON value, schema-versioned, in a bucket of its own. The
// configuration file is the bootstrap roster; this record is what signed
// mail changed since (docs/design.md §1), so it is never reset: a record
// that cannot be read is an error, never an empty roster.
package govdb

import (
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/lists/governance"
)

var (
	bucket = []byte("governance")
	key    = []byte("state")
)

// Load reads the governance record; a store that never had one gives the
// empty State (the file's roster alone). It works in read-only transactions
// and on stores made before governance existed.
func Load(tx *bolt.Tx) (governance.State, error) {
	var st governance.State
	b := tx.Bucket(bucket)
	if b == nil {
		return st, nil
	}
	v := b.Get(key)
	if v == nil {
		return st, nil
	}
	if err := json.Unmarshal(v, &st); err != nil {
		return governance.State{}, fmt.Errorf("govdb: the governance record (roster changes by mail) cannot be read (%v): restore the store from a backup", err)
	}
	if st.Version > governance.SchemaVersion {
		return governance.State{}, fmt.Errorf("govdb: the governance record has schema version %d, newer than this embargo reads (%d): run the newer binary, or restore the backup taken before the upgrade", st.Version, governance.SchemaVersion)
	}
	return st, nil
}

// Save stores st, stamped with the current schema version, in tx.
func Save(tx *bolt.Tx, st governance.State) error {
	b, err := tx.CreateBucketIfNotExists(bucket)
	if err != nil {
		return fmt.Errorf("govdb: %w", err)
	}
	st.Version = governance.SchemaVersion
	v, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("govdb: %w", err)
	}
	return b.Put(key, v)
}
