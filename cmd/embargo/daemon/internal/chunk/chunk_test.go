package chunk

import (
	"bytes"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func TestPutReadDelete(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "c.db"), 0o600, &bolt.Options{Timeout: time.Second, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	values := map[string][]byte{
		"empty": {},
		"small": []byte("hello"),
		"exact": bytes.Repeat([]byte{'x'}, Size),
		"large": bytes.Repeat([]byte("0123456789"), 3*Size/10+7),
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte("b"))
		if err != nil {
			return err
		}
		for name, v := range values {
			if err := Put(b, []byte(name), v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("b"))
		for name, v := range values {
			got, ok := Read(b, []byte(name))
			if !ok || !bytes.Equal(got, v) {
				t.Errorf("%s: read %d bytes (ok %v), want %d", name, len(got), ok, len(v))
			}
		}
		if n := b.Stats().KeyN; n != 1+1+1+4 {
			t.Errorf("%d chunks stored, want 7 (one per started %d bytes, one for the empty value)", n, Size)
		}
		if _, ok := Read(b, []byte("missing")); ok {
			t.Error("a missing value reads as present")
		}
		if err := Delete(b, []byte("large")); err != nil {
			return err
		}
		if Exists(b, []byte("large")) || !Exists(b, []byte("exact")) {
			t.Error("Delete removed the wrong value")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
