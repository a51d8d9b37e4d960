package queue

import (
	"bytes"
	"encoding/base64"
	"reflect"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// A seal spec's headers are stored as text, "<" and ">" as they are, and
// read back byte for byte; what is not UTF-8 keeps base64; rows of schema
// version 2 (base64 under "outer" and "inner") are still read.
func TestSealStoredAsText(t *testing.T) {
	outer := []byte("From: <security@ex.test>\r\nSubject: Encrypted message\r\n")
	inner := []byte("Subject: [SEC-2026-0001] Grüße & more\r\n")
	rec := &record{V: schemaVersion, From: "a@ex.test", To: []string{"b@ex.test"}, State: StateQueued,
		Seal: storedSeal(&Seal{Signer: "security", To: "ABCD", Outer: outer, Inner: inner})}
	v, err := encodeRecord(rec)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(v, []byte(`"outer_text":"From: <security@ex.test>\r\nSubject`)) || bytes.Contains(v, []byte(`\u003c`)) {
		t.Errorf("outer not stored as plain text: %s", v)
	}
	back, err := decode(idKey(1), v)
	if err != nil {
		t.Fatal(err)
	}
	if got := back.Seal.seal(); !bytes.Equal(got.Outer, outer) || !bytes.Equal(got.Inner, inner) || got.To != "ABCD" {
		t.Errorf("read back %+v", got)
	}

	bad := []byte("Subject: \xff\xfe\r\n")
	rec.Seal = storedSeal(&Seal{Signer: "security", To: "ABCD", Outer: outer, Inner: bad})
	v, _ = encodeRecord(rec)
	back, err = decode(idKey(1), v)
	if err != nil || !bytes.Equal(back.Seal.seal().Inner, bad) {
		t.Errorf("a header that is not UTF-8 read back as %q, %v", back.Seal.seal().Inner, err)
	}

	v2 := []byte(`{"v":2,"from":"a@ex.test","to":["b@ex.test"],"state":"queued","created":"2026-11-23T09:00:00Z",` +
		`"seal":{"signer":"security","to":"ABCD","outer":"` + base64.StdEncoding.EncodeToString(outer) +
		`","inner":"` + base64.StdEncoding.EncodeToString(inner) + `"}}`)
	old, err := decode(idKey(2), v2)
	if err != nil || !bytes.Equal(old.Seal.seal().Outer, outer) || !bytes.Equal(old.Seal.seal().Inner, inner) {
		t.Errorf("schema 2 row read as %+v, %v", old.Seal, err)
	}
	old.Seal = storedSeal(old.Seal.seal())
	j, _ := encodeRecord(old)
	if len(j) >= len(v2) {
		t.Errorf("stored as text (%d bytes) is not smaller than base64 (%d)", len(j), len(v2))
	}
}

// TestSealJSONKeepsEveryField fills every field of a Seal and reads it back
// through the stored form: a field added to Seal but not to sealJSON (a
// carried key lost, so the copy could not be sealed) fails here.
func TestSealJSONKeepsEveryField(t *testing.T) {
	var s Seal
	v := reflect.ValueOf(&s).Elem()
	for i := range v.NumField() {
		f := v.Field(i)
		switch f.Kind() {
		case reflect.String:
			f.SetString("value of " + v.Type().Field(i).Name)
		case reflect.Bool:
			f.SetBool(true)
		case reflect.Slice:
			f.SetBytes([]byte("Field-" + v.Type().Field(i).Name + ": x\r\n"))
		default:
			t.Fatalf("Seal.%s: kind %s not covered by this test", v.Type().Field(i).Name, f.Kind())
		}
	}
	if got := storedSeal(&s).seal(); !reflect.DeepEqual(*got, s) {
		t.Errorf("the stored form changes the spec:\n got %+v\nwant %+v", *got, s)
	}
}

// TestComposedSpecStoredAsJSON: a composed spec goes into the row as the
// JSON value it is (no string to quote and unquote), comes back byte for
// byte through Enqueue and Get, and the row says schema version 4, which
// an older embargo refuses rather than sealing a spec it cannot read.
func TestComposedSpecStoredAsJSON(t *testing.T) {
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
	if !bytes.Equal(got.Seal.Compose, spec) || len(got.Seal.Outer) != 0 {
		t.Errorf("composed spec read back as %q (outer %q)", got.Seal.Compose, got.Seal.Outer)
	}
	if !bytes.Contains(stored, append([]byte(`"compose":`), spec...)) || !bytes.HasPrefix(stored, []byte(`{"v":4,`)) {
		t.Errorf("row stored as %s", stored)
	}
}
