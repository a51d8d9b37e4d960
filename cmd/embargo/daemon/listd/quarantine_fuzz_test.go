package listd

import (
	"context"
	"crypto/sha256"
	"fmt"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// quarantineCanary ends every message FuzzQuarantineAlert quarantines,
// and every panic value: an alert about a message in quarantine names it
// by number, size and SHA-256 alone (docs/threat-model.md A6, G6).
const quarantineCanary = "CANARY-quarantine-41c9"

// The ways FuzzQuarantineAlert puts a message in quarantine.
const (
	quarantinePanic  = iota // a panic in Handle (hooks.Panic): "quarantined"
	quarantineStore         // a panic in the message's transaction (hooks.BeforeCommit): "quarantined"
	quarantineKiller        // PoisonDeaths deaths of the process with it in progress: "poison"
	quarantineWays
)

// FuzzQuarantineAlert puts a message in quarantine through
// Service.Handle, each way the daemon does, and checks the SRC's alert
// (the quarantined and poison templates, keepPoison). The message's
// bytes (with quarantineCanary after them), its envelope sender and
// recipient, the way, and the clock (up to fuzzYears ahead: the instant
// the alert names) come from the fuzzer. A panic on arrival and the
// deaths of the process always quarantine the message; a panic in the
// transaction does when the message got that far (one refused on arrival
// is answered, and alerts nobody). Each quarantine must queue exactly one
// alert per member, sealed and checked by checkAlerts, without the
// canary.
func FuzzQuarantineAlert(f *testing.F) {
	k := newStoreKeys(f)
	f.Add(byte(quarantinePanic), uint32(0), "rep@out.test", "security@ex.test",
		string(plainMail("rep@out.test", "security@ex.test", "crash", "q@out.test", "Steps.\n")))
	// More in testdata/fuzz/FuzzQuarantineAlert: each way, with messages
	// that do not parse, hold NULs, "/" command lines, escape sequences,
	// bidi overrides and encoded-word lookalikes; hostile envelopes;
	// clocks at a year's end and far ahead.
	f.Fuzz(func(t *testing.T, how byte, minutes uint32, from, to, message string) {
		now := fuzzClock(minutes)
		raw := []byte(message + "\r\n" + quarantineCanary + "\r\n")
		env := Envelope{From: from, To: []string{to}, Client: "192.0.2.1"}
		way := int(how) % quarantineWays
		s, db := quarantineService(t, k, way, raw, now)
		err := s.Handle(context.Background(), env, raw)
		kind, want := "alert-quarantined", 2
		switch {
		case way == quarantineKiller:
			kind = "alert-poison"
		case way == quarantineStore && err != nil:
			want = 0 // refused before its transaction
		}
		if err != nil && want > 0 {
			t.Fatalf("a message quarantined is answered %v, want 250", err)
		}
		checkAlerts(t, s, db, k, 0, kind, want, quarantineCanary)
	})
}

// quarantineService is a store service on the clock now that quarantines
// raw the way way says.
func quarantineService(t *testing.T, k *storeKeys, way int, raw []byte, now time.Time) (*Service, *bolt.DB) {
	t.Helper()
	dir := t.TempDir()
	s, db := storeService(t, k, func(o *Options) {
		o.Now = func() time.Time { return now }
		if way != quarantineKiller {
			return
		}
		a := openAttempts(t, o.DB, dir, now.Add(-time.Hour))
		for i := range PoisonDeaths {
			beginT(a, sha256.Sum256(raw), now.Add(time.Duration(i-PoisonDeaths)*time.Minute))
			die(a)
			a = openAttempts(t, o.DB, dir, now.Add(time.Duration(i+1-PoisonDeaths)*time.Minute))
		}
		o.Attempts = a
	})
	boom := func() { panic(fmt.Sprintf("%s %s", raw, quarantineCanary)) } // a panic value can quote the message
	switch way {
	case quarantinePanic:
		s.SetTestHooks(TestHooks{Panic: func([]byte) { boom() }})
	case quarantineStore:
		s.SetTestHooks(TestHooks{BeforeCommit: func(*bolt.Tx) error { boom(); return nil }})
	}
	return s, db
}
