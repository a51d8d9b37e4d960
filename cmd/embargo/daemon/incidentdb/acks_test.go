package incidentdb

import (
	"fmt"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TestAckCap: the global cap on acknowledgements (docs/threat-model.md B8).
// With a cap of 3, three acknowledgements to three addresses go in 24
// hours, the next ones are held back, only the first of them marked First;
// 24 hours after the first a new window takes three more. The cap is
// independent of the per-address records: an address the cap held back
// keeps no record of its own, an address its own limit held back counts
// nothing towards the cap, and the cap's record stays 12 bytes.
func TestAckCap(t *testing.T) {
	db := openDB(t)
	t0 := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	ack := func(tx *bolt.Tx, addr string, at time.Duration) AckVerdict {
		t.Helper()
		v, err := Ack(tx, addr, t0.Add(at), 1, 3)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	db.Update(func(tx *bolt.Tx) error {
		for i := range 3 {
			if v := ack(tx, fmt.Sprintf("r%d@x", i), time.Duration(i)*time.Minute); !v.Allowed() {
				t.Errorf("acknowledgement %d within the cap held back: %+v", i, v)
			}
		}
		// r0 again: its own limit holds it back, and the cap counts nothing.
		if v := ack(tx, "R0@x", time.Hour); v.Held != AckSender || v.First {
			t.Errorf("r0's second acknowledgement: %+v, want held by the per-address limit", v)
		}
		for i, want := range []bool{true, false, false} {
			v := ack(tx, fmt.Sprintf("over%d@x", i), 2*time.Hour+time.Duration(i)*time.Minute)
			if v.Held != AckGlobal || v.First != want {
				t.Errorf("acknowledgement %d beyond the cap: %+v, want held by the cap, First %v", i, v, want)
			}
			if v.Asked != 4+i || !v.Until.Equal(t0.Add(AckWindow)) {
				t.Errorf("beyond the cap %d: asked %d until %v, want %d until %v", i, v.Asked, v.Until, 4+i, t0.Add(AckWindow))
			}
			if rec := tx.Bucket(bucketAcks).Get([]byte(fmt.Sprintf("over%d@x", i))); rec != nil {
				t.Errorf("the cap held over%d@x back, yet its own record was written", i)
			}
		}
		if n := len(tx.Bucket(bucketAcks).Get(ackAllKey)); n != 12 {
			t.Errorf("the cap's record is %d bytes, want 12", n)
		}
		// A new window 24 hours after the first acknowledgement: the
		// addresses the cap held back get theirs, three more in all.
		for i := range 3 {
			if v := ack(tx, fmt.Sprintf("over%d@x", i), AckWindow+time.Duration(i)*time.Minute); !v.Allowed() {
				t.Errorf("the next window, acknowledgement %d: %+v", i, v)
			}
		}
		if v := ack(tx, "late@x", AckWindow+time.Hour); v.Held != AckGlobal || !v.First || !v.Until.Equal(t0.Add(2*AckWindow)) {
			t.Errorf("the next window's fourth: %+v, want the first held by the cap, until %v", v, t0.Add(2*AckWindow))
		}
		// The per-address records are untouched by the cap's: r1 was
		// acknowledged in the first window and still is not again in it.
		if v := ack(tx, "r1@x", 23*time.Hour); v.Held != AckSender {
			t.Errorf("r1 within its own 24 hours: %+v, want held by the per-address limit", v)
		}
		return nil
	})
	// No cap (0): every address gets its acknowledgement, and no cap
	// record is written.
	db2 := openDB(t)
	db2.Update(func(tx *bolt.Tx) error {
		for i := range 500 {
			if v, err := Ack(tx, fmt.Sprintf("n%d@x", i), t0, 1, 0); err != nil || !v.Allowed() {
				t.Fatalf("no cap, acknowledgement %d: %+v %v", i, v, err)
			}
		}
		if tx.Bucket(bucketAcks).Get(ackAllKey) != nil {
			t.Error("a cap record was written without a cap")
		}
		return nil
	})
}
