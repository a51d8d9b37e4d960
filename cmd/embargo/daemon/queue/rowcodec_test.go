package queue

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Rows written as JSON by schema versions 2 to 4 are still read, each
// field as it was stored: header blocks as base64 (2), as text or, not
// UTF-8, as base64 (3), a composed spec as a JSON value (4). A JSON row
// that claims version 5 or none is refused.
func TestJSONRowsStillRead(t *testing.T) {
	outer := []byte("From: <security@ex.test>\r\nSubject: Encrypted message\r\n")
	inner := []byte("Subject: [SEC-2026-0001] Grüße & more\r\n")
	b64 := base64.StdEncoding.EncodeToString
	head := `"from":"a@ex.test","to":["b@ex.test"],"state":"queued","created":"2026-11-23T09:00:00Z","next_attempt":"2026-11-23T09:05:00Z"`
	for _, tc := range []struct {
		name, row    string
		outer, inner []byte
		compose      string
	}{
		{"v2 base64", `{"v":2,` + head + `,"seal":{"signer":"security","to":"ABCD","outer":"` + b64(outer) + `","inner":"` + b64(inner) + `"}}`, outer, inner, ""},
		{"v3 text", `{"v":3,` + head + `,"seal":{"signer":"security","to":"ABCD","outer_text":"From: <security@ex.test>\r\nSubject: Encrypted message\r\n","inner_text":"Subject: [SEC-2026-0001] Grüße & more\r\n"}}`, outer, inner, ""},
		{"v3 not UTF-8", `{"v":3,` + head + `,"seal":{"signer":"security","to":"ABCD","outer_text":"From: <security@ex.test>\r\nSubject: Encrypted message\r\n","inner":"` + b64([]byte("Subject: \xff\xfe\r\n")) + `"}}`, outer, []byte("Subject: \xff\xfe\r\n"), ""},
		{"v4 composed", `{"v":4,` + head + `,"seal":{"signer":"security","to":"ABCD","compose":{"subject":"[SEC-2026-0001] <x>"}}}`, nil, nil, `{"subject":"[SEC-2026-0001] <x>"}`},
	} {
		rec, err := decode(idKey(1), []byte(tc.row))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		s := rec.Seal
		if s == nil || s.Signer != "security" || s.To != "ABCD" || !bytes.Equal(s.Outer, tc.outer) || !bytes.Equal(s.Inner, tc.inner) || string(s.Compose) != tc.compose {
			t.Errorf("%s: seal read as %+v", tc.name, s)
		}
		if rec.From != "a@ex.test" || rec.To[0] != "b@ex.test" || rec.State != StateQueued || !rec.NextAttempt.Equal(time.Date(2026, 11, 23, 9, 5, 0, 0, time.UTC)) {
			t.Errorf("%s: read as %+v", tc.name, rec)
		}
	}
	for _, v := range []string{`{"v":5,` + head + `}`, `{` + head + `}`} {
		if _, err := decode(idKey(1), []byte(v)); err == nil {
			t.Errorf("JSON row %s read, want refused", v)
		}
	}
}

// TestRecordKeepsEveryField fills every field of a record and its seal spec
// and reads it back through the binary form: a field added to record or
// Seal but not to the codec fails here. Every shorter prefix of the record,
// and the record with a byte more, is refused rather than misread.
func TestRecordKeepsEveryField(t *testing.T) {
	rec := &record{V: binaryVersion, Seal: &Seal{}}
	at := time.Date(2026, 11, 23, 9, 0, 0, 123456789, time.UTC)
	fill := func(v reflect.Value) {
		for i := range v.NumField() {
			f, name := v.Field(i), v.Type().Field(i).Name
			switch {
			case name == "V" || name == "Seal":
			case f.Type() == reflect.TypeOf(time.Time{}):
				at = at.Add(time.Hour + time.Nanosecond)
				f.Set(reflect.ValueOf(at))
			case f.Kind() == reflect.String:
				f.SetString("value of " + name + " é")
			case f.Kind() == reflect.Bool:
				f.SetBool(true)
			case f.Kind() == reflect.Int, f.Kind() == reflect.Uint64:
				if f.Kind() == reflect.Int {
					f.SetInt(int64(300 + i))
				} else {
					f.SetUint(uint64(1<<40 + i))
				}
			case f.Type() == reflect.TypeOf([]byte(nil)):
				f.SetBytes([]byte("Field-" + name + ": x\r\n"))
			case f.Type() == reflect.TypeOf([]string(nil)):
				f.Set(reflect.ValueOf([]string{"a@ex.test", "b@ex.test"}))
			default:
				t.Fatalf("%s: type %s not covered by this test", name, f.Type())
			}
		}
	}
	fill(reflect.ValueOf(rec).Elem())
	fill(reflect.ValueOf(rec.Seal).Elem())
	v, err := encodeRecord(rec)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decode(idKey(1), v)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, rec) {
		t.Errorf("the stored form changes the record:\n got %+v %+v\nwant %+v %+v", *got, *got.Seal, *rec, *rec.Seal)
	}
	for n := range len(v) {
		if _, err := decode(idKey(1), v[:n]); err == nil {
			t.Fatalf("a record cut to %d of %d bytes was read", n, len(v))
		}
	}
	if _, err := decode(idKey(1), append(v, 0)); err == nil {
		t.Error("a record with a byte more was read")
	}
	plain := &record{V: binaryVersion, To: []string{}, State: StateQueued, Created: at}
	v, _ = encodeRecord(plain)
	if got, err := decode(idKey(1), v); err != nil || !reflect.DeepEqual(got, plain) {
		t.Errorf("a record without seal or instants read back as %+v, %v", got, err)
	}
}

// TestComposedSpecStored: a composed spec comes back byte for byte through
// Enqueue and Get, in a row of schema version 5 (binary: an older embargo,
// which reads JSON, refuses it rather than sealing a spec it cannot read).
func TestComposedSpecStored(t *testing.T) {
	db := tempDB(t)
	spec := []byte(`{"from":{"address":"security@ex.test"},"subject":"[SEC-2026-0001] <x> & \"y\""}`)
	msg := Msg{From: "a@ex.test", To: []string{"b@ex.test"}, Body: []byte("text\n"),
		Seal: &Seal{Signer: "security", SignOnly: true, Compose: spec}}
	var got Row
	var stored []byte
	if err := db.Update(func(tx *bolt.Tx) error {
		if err := Enqueue(tx, time.Now(), msg); err != nil {
			return err
		}
		stored = bytes.Clone(tx.Bucket(bucketRows).Get(idKey(1)))
		var err error
		got, err = Get(tx, 1)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Seal.Compose, spec) || len(got.Seal.Outer) != 0 || !got.Seal.SignOnly {
		t.Errorf("composed spec read back as %+v", got.Seal)
	}
	if stored[0] != 5 || !bytes.Contains(stored, spec) {
		t.Errorf("row stored as %q", stored)
	}
}

// TestJSONRowDeliveredFromOldStore: a store written before the binary
// records holds a JSON row (schema version 3, its message in queue_data);
// the worker claims it, a temporary refusal writes it back in the binary
// form with the attempt counted, and the next attempt delivers the same
// message.
func TestJSONRowDeliveredFromOldStore(t *testing.T) {
	db := tempDB(t)
	clock := newClock()
	msg := []byte("From: <security@ex.test>\r\nSubject: old\r\n\r\nqueued before the upgrade\r\n")
	created := clock.Now().Add(-time.Minute)
	row := `{"v":3,"from":"security+bounces@ex.test","to":["m@ex.test"],"message_id":"old.1@ex.test","kind":"alert",` +
		`"size":` + strconv.Itoa(len(msg)) + `,"state":"queued","created":"` + created.Format(time.RFC3339Nano) + `","next_attempt":"` + created.Format(time.RFC3339Nano) + `"}`
	if err := db.Update(func(tx *bolt.Tx) error {
		bk, _ := open(tx)
		if _, err := bk.rows.NextSequence(); err != nil {
			return err
		}
		if err := bk.rows.Put(idKey(1), []byte(row)); err != nil {
			return err
		}
		if err := bk.data.Put(idKey(1), msg); err != nil {
			return err
		}
		return bk.due.Put(dueKey(created, 1), nil)
	}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got [][]byte
	relay := relayFunc(func(_ context.Context, _ string, _ []string, data []byte) error {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, bytes.Clone(data))
		if len(got) == 1 {
			return errors.New("450 try again later")
		}
		return nil
	})
	w := start(t, db, relay, Options{Now: clock.Now, MinBackoff: time.Minute})
	waitUntil(t, "the refusal recorded", func() bool {
		r, err := getRow(t, db, 1)
		return err == nil && r.State == StateQueued && r.Attempts == 1
	})
	db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketRows).Get(idKey(1)); v[0] != binaryVersion {
			t.Errorf("row written back as %q, want the binary form", v)
		}
		return nil
	})
	clock.Advance(time.Hour)
	w.Kick()
	waitUntil(t, "empty queue", emptyQueue(t, db))
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 || !bytes.Equal(got[0], msg) || !bytes.Equal(got[1], msg) {
		t.Errorf("relay got %q, want the stored message twice", got)
	}
}

// TestRowPagesFull: rows are queued at the end of their bucket, so its
// pages are filled before a new one starts. Split half full (bbolt's
// default), rows of about a kilobyte queued six at a time (a group commit)
// took two to a page where three fit.
func TestRowPagesFull(t *testing.T) {
	db := tempDB(t)
	spec := []byte(`{"subject":"` + strings.Repeat("x", 900) + `"}`)
	const n = 96
	for i := 0; i < n; i += 6 {
		msgs := make([]Msg, 6)
		for j := range msgs {
			msgs[j] = Msg{From: "a@ex.test", To: []string{"b@ex.test"}, Body: []byte("text\n"),
				Seal: &Seal{Signer: "security", SignOnly: true, Compose: spec}}
		}
		enqueueNow(t, db, time.Now(), msgs...)
	}
	db.View(func(tx *bolt.Tx) error {
		if got := tx.Bucket(bucketRows).Stats().LeafPageN; got > n/3+2 {
			t.Errorf("%d rows of about 1 KB take %d leaf pages, want at most %d (three to a page)", n, got, n/3+2)
		}
		return nil
	})
}
