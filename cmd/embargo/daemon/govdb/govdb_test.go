package govdb

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/lists/governance"
)

func open(t *testing.T) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "g.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestRoundTrip: an empty store reads as the empty record; a saved record
// reads back with its schema version.
func TestRoundTrip(t *testing.T) {
	db := open(t)
	db.View(func(tx *bolt.Tx) error {
		if st, err := Load(tx); err != nil || len(st.Overrides) != 0 {
			t.Errorf("empty store: %+v, %v", st, err)
		}
		return nil
	})
	want := governance.State{Year: 2026, Seq: 3, Overrides: []governance.Entry{{Email: "a@ex.test", Origin: governance.OriginCommand, Since: time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)}}}
	if err := db.Update(func(tx *bolt.Tx) error { return Save(tx, want) }); err != nil {
		t.Fatal(err)
	}
	db.View(func(tx *bolt.Tx) error {
		st, err := Load(tx)
		if err != nil || st.Version != governance.SchemaVersion || st.Seq != 3 || st.Overrides[0].Email != "a@ex.test" || !st.Overrides[0].Since.Equal(want.Overrides[0].Since) {
			t.Errorf("read back %+v, %v", st, err)
		}
		return nil
	})
}

// TestRefusesWhatItCannotRead: a damaged record or one from a newer schema
// is an error, never the empty roster (a removal must not come undone).
func TestRefusesWhatItCannotRead(t *testing.T) {
	for _, tt := range []struct{ value, want string }{
		{"{not json", "cannot be read"},
		{`{"v": 99}`, "schema version 99"},
	} {
		db := open(t)
		db.Update(func(tx *bolt.Tx) error {
			b, _ := tx.CreateBucketIfNotExists(bucket)
			return b.Put(key, []byte(tt.value))
		})
		db.View(func(tx *bolt.Tx) error {
			if _, err := Load(tx); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("%q: %v, want %q", tt.value, err, tt.want)
			}
			return nil
		})
	}
}

// BenchmarkLoad reads a record of 200 decided proposals and 100 entries
// pinned by mail, each with a 1 KB key: what resolving a signer costs on
// every signed message (listd.signerOf).
func BenchmarkLoad(b *testing.B) {
	db, err := bolt.Open(filepath.Join(b.TempDir(), "g.db"), 0o600, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	key := strings.Repeat("k", 1024)
	var st governance.State
	for i := range 200 {
		st.Proposals = append(st.Proposals, governance.Proposal{ID: "GOV-2026-" + strings.Repeat("0", 4), Kind: governance.KindAdd,
			Email: "m@ex.test", Key: &governance.KeyVerdict{Fingerprint: strings.Repeat("A", 40), Armored: key}, Status: governance.StatusPassed})
		if i < 100 {
			st.Overrides = append(st.Overrides, governance.Entry{Email: "m@ex.test", Fingerprint: strings.Repeat("A", 40), Key: key})
		}
	}
	if err := db.Update(func(tx *bolt.Tx) error { return Save(tx, st) }); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		db.View(func(tx *bolt.Tx) error { _, err := Load(tx); return err })
	}
}
