package incidentdb

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/workflow"
)

func openDB(t *testing.T) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "t.db"), 0o600, &bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Update(Init); err != nil {
		t.Fatal(err)
	}
	return db
}

func TestNextIDPerYear(t *testing.T) {
	db := openDB(t)
	var got []workflow.ID
	db.Update(func(tx *bolt.Tx) error {
		for _, y := range []int{2026, 2026, 2027, 2026} {
			id, err := NextID(tx, y)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, id)
		}
		return nil
	})
	want := []workflow.ID{"SEC-2026-0001", "SEC-2026-0002", "SEC-2027-0001", "SEC-2026-0003"}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("NextID #%d = %s, want %s", i, got[i], want[i])
		}
	}
}

func TestRollbackBurnsNoID(t *testing.T) {
	db := openDB(t)
	db.Update(func(tx *bolt.Tx) error { _, err := NextID(tx, 2026); return errors.Join(err, errors.New("rollback")) })
	var id workflow.ID
	db.Update(func(tx *bolt.Tx) error { var err error; id, err = NextID(tx, 2026); return err })
	if id != "SEC-2026-0001" {
		t.Errorf("after a rolled-back allocation NextID = %s, want SEC-2026-0001", id)
	}
}

func TestIncidentsAndMessages(t *testing.T) {
	db := openDB(t)
	now := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	err := db.Update(func(tx *bolt.Tx) error {
		for _, id := range []workflow.ID{"SEC-2026-10000", "SEC-2026-9999", "SEC-2025-0001"} {
			if err := Put(tx, &workflow.Incident{ID: id, Phase: workflow.PhaseTriage, Opened: now}); err != nil {
				return err
			}
		}
		if err := Put(tx, &workflow.Incident{ID: "bogus"}); err == nil {
			t.Error("Put accepted an invalid ID")
		}
		raw := []byte("From: a@b\r\n\r\nx\r\n")
		rec, err := AddMessage(tx, Record{Incident: "SEC-2026-9999", MessageID: "m1@x", Received: now}, raw, sha256.Sum256(raw))
		if err != nil {
			return err
		}
		if rec.Seq != 1 || rec.Size != len(raw) {
			t.Errorf("AddMessage = %+v", rec)
		}
		// The delivery's key is the caller's (MarkSeen): archiving marks
		// no key of its own.
		if Seen(tx, sha256.Sum256(raw)) {
			t.Error("Seen after AddMessage alone = true")
		}
		if err := MarkSeen(tx, sha256.Sum256(raw)); err != nil || !Seen(tx, sha256.Sum256(raw)) {
			t.Errorf("Seen after MarkSeen = false (%v)", err)
		}
		if err := IndexMessageID(tx, "m1@x", "SEC-2026-10000"); err != nil {
			return err
		}
		if id, ok := IncidentOf(tx, "m1@x"); !ok || id != "SEC-2026-9999" {
			t.Errorf("IncidentOf = %s %v: the first owner of a Message-ID must win", id, ok)
		}
		got, err := Raw(tx, 1)
		if err != nil || string(got) != string(raw) {
			t.Errorf("Raw = %q %v", got, err)
		}
		if r, err := Message(tx, 1); err != nil || r.MessageID != "m1@x" || r.Size != len(raw) {
			t.Errorf("Message = %+v %v", r, err)
		}
		if _, err := Message(tx, 2); !errors.Is(err, ErrNotFound) {
			t.Errorf("Message(missing) = %v, want ErrNotFound", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	db.View(func(tx *bolt.Tx) error {
		l, _ := List(tx)
		var ids []workflow.ID
		for _, i := range l {
			ids = append(ids, i.ID)
		}
		if len(ids) != 3 || ids[0] != "SEC-2025-0001" || ids[1] != "SEC-2026-9999" || ids[2] != "SEC-2026-10000" {
			t.Errorf("List order = %v, want numeric within the year", ids)
		}
		recs, _ := Messages(tx, "SEC-2026-9999")
		if len(recs) != 1 || recs[0].MessageID != "m1@x" {
			t.Errorf("Messages = %+v", recs)
		}
		if _, err := Get(tx, "SEC-2026-0404"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get missing = %v", err)
		}
		return nil
	})
}

func TestAllowAck(t *testing.T) {
	db := openDB(t)
	t0 := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	steps := []struct {
		at   time.Duration
		addr string
		want bool
	}{
		{0, "a@x", true},
		{time.Hour, "A@X", false},
		{2 * time.Hour, "b@x", true},
		{23*time.Hour + 59*time.Minute, "a@x", false},
		{24 * time.Hour, "a@x", true},
	}
	for _, s := range steps {
		db.Update(func(tx *bolt.Tx) error {
			got, err := AllowAck(tx, s.addr, t0.Add(s.at), 1)
			if err != nil || got != s.want {
				t.Errorf("AllowAck(%s, +%v) = %v %v, want %v", s.addr, s.at, got, err, s.want)
			}
			return nil
		})
	}
	// Three a day: three in the 24 hours from the first, then a new count;
	// the record stays 12 bytes however many were allowed.
	db.Update(func(tx *bolt.Tx) error {
		for i, want := range []bool{true, true, true, false, false} {
			if got, _ := AllowAck(tx, "c@x", t0.Add(time.Duration(i)*time.Hour), 3); got != want {
				t.Errorf("3 a day, ack %d: %v, want %v", i, got, want)
			}
		}
		if got, _ := AllowAck(tx, "c@x", t0.Add(24*time.Hour), 3); !got {
			t.Error("3 a day: refused 24 hours after the first")
		}
		for i := range 1000 {
			AllowAck(tx, "d@x", t0.Add(time.Duration(i)*time.Second), 1000000)
		}
		if n := len(tx.Bucket(bucketAcks).Get([]byte("d@x"))); n != 12 {
			t.Errorf("the record of 1000 acknowledgements is %d bytes", n)
		}
		// A record of the older form, a JSON list of instants.
		old, _ := json.Marshal([]time.Time{t0.Add(-30 * time.Hour), t0.Add(-2 * time.Hour)})
		tx.Bucket(bucketAcks).Put([]byte("e@x"), old)
		if got, _ := AllowAck(tx, "e@x", t0, 1); got {
			t.Error("an older record with an ack 2 hours ago allowed another")
		}
		if got, _ := AllowAck(tx, "e@x", t0.Add(22*time.Hour), 1); !got {
			t.Error("an older record: refused 24 hours after its last ack")
		}
		return nil
	})
}

// TestArchiveLargeMessages: large messages are archived as received, read
// back whole, and each is written once: in chunks, archiving the next one
// does not rewrite the last (a leaf of single values holds up to four, and
// every write to it rewrote them all).
func TestArchiveLargeMessages(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(Init); err != nil {
		t.Fatal(err)
	}
	const n, size = 6, 3 << 20
	var stored [][]byte
	for i := range n {
		raw := make([]byte, size)
		for j := range raw {
			raw[j] = byte('a' + (i+j)%26)
		}
		stored = append(stored, raw)
		if err := db.Update(func(tx *bolt.Tx) error {
			_, err := AddMessage(tx, Record{Received: time.Now()}, raw, sha256.Sum256(raw))
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	db.View(func(tx *bolt.Tx) error {
		for i, want := range stored {
			got, err := Raw(tx, uint64(i+1))
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("message %d: %d bytes read back, err %v", i+1, len(got), err)
			}
		}
		return nil
	})
	// The high-water mark of pages used, not the file, which bbolt grows
	// ahead in steps of 16 MB.
	var used int64
	db.View(func(tx *bolt.Tx) error { used = tx.Size(); return nil })
	if limit := int64(n*size) * 12 / 10; used > limit {
		t.Errorf("store uses %d bytes after %d messages of %d: more than %d, so messages were written again", used, n, size, limit)
	}
}

// TestRawReadsUnchunkedArchive: a store written before chunks keeps each
// message as one value, which Raw still reads.
func TestRawReadsUnchunkedArchive(t *testing.T) {
	db := openDB(t)
	db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRaw).Put(be(7), []byte("From: a@b.test\r\n\r\nold\r\n"))
	})
	db.View(func(tx *bolt.Tx) error {
		if got, err := Raw(tx, 7); err != nil || string(got) != "From: a@b.test\r\n\r\nold\r\n" {
			t.Errorf("Raw(old layout) = %q, %v", got, err)
		}
		if _, err := Raw(tx, 8); !errors.Is(err, ErrNotFound) {
			t.Errorf("Raw(missing) = %v, want ErrNotFound", err)
		}
		return nil
	})
}

// TestArchivePagesFull: the archive only appends, so its pages are filled
// before a new one starts. Split half full (bbolt's default), 1.3 KB
// messages committed six at a time (a group commit) took two to a page
// where three fit, and every commit wrote the half-empty pages of its new
// messages.
func TestArchivePagesFull(t *testing.T) {
	db := openDB(t)
	raw := []byte("From: a@b.test\r\n\r\n" + strings.Repeat("x", 1300) + "\r\n")
	const n = 90
	for i := 0; i < n; i += 6 {
		db.Update(func(tx *bolt.Tx) error {
			for j := i; j < i+6; j++ {
				id := workflow.FormatID(2026, uint64(j+1))
				if _, err := AddMessage(tx, Record{Incident: id, MessageID: fmt.Sprintf("m%d@x", j)}, raw, sha256.Sum256(append(raw, byte(j)))); err != nil {
					return err
				}
			}
			return nil
		})
	}
	db.View(func(tx *bolt.Tx) error {
		if got := tx.Bucket(bucketRaw).Stats().LeafPageN; got > n/3+2 {
			t.Errorf("%d messages of 1.3 KB take %d leaf pages, want at most %d (three to a page)", n, got, n/3+2)
		}
		return nil
	})
}
