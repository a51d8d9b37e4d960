package queue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/internal/chunk"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue/queuetest"
)

// sharedCopies are n plaintext copies of one body, one row per member, as
// listd makes them: each its own header, all one Body slice.
func sharedCopies(n int, body []byte) []Msg {
	var out []Msg
	for i := range n {
		to := fmt.Sprintf("m%d@src.test", i)
		out = append(out, Msg{
			From:      "security-bounces@embargo.test",
			To:        []string{to},
			Data:      fmt.Appendf(nil, "From: security@embargo.test\r\nTo: %s\r\nDate: Mon, 23 Nov 2026 09:00:00 +0000\r\nMessage-ID: <%d.copy@embargo.test>\r\n", to, i),
			Body:      body,
			MessageID: fmt.Sprintf("<%d.copy@embargo.test>", i),
			Kind:      "report-copy",
		})
	}
	return out
}

// bigBody is a canonical entity of about n bytes.
func bigBody(n int) []byte {
	var b bytes.Buffer
	b.WriteString("Content-Type: text/plain; charset=utf-8\r\n\r\n")
	for b.Len() < n {
		b.WriteString("The parser overflows when given a long header line.\r\n")
	}
	return b.Bytes()
}

// storedBodies counts the chunks and the bodies the store holds.
func storedBodies(t testing.TB, db *bolt.DB) (chunks, bodies int, refs []uint64) {
	t.Helper()
	db.View(func(tx *bolt.Tx) error {
		bk, err := open(tx)
		if err != nil {
			t.Fatal(err)
		}
		chunks = bk.blobs.Stats().KeyN
		bk.refs.ForEach(func(k, v []byte) error {
			n, _ := bk.bodyRefs(k)
			refs = append(refs, n)
			return nil
		})
		bodies = len(refs)
		return nil
	})
	return chunks, bodies, refs
}

// TestSharedBodyStoredOnce: six copies of a 300 KB body are one stored body
// counted six times; each delivery is its header then the body, and the
// body goes with the last row.
func TestSharedBodyStoredOnce(t *testing.T) {
	db := tempDB(t)
	rec := queuetest.NewRecorder(t)
	body := bigBody(300 << 10)
	msgs := sharedCopies(6, body)
	enqueueNow(t, db, time.Now(), msgs...)
	chunks, bodies, refs := storedBodies(t, db)
	if want := (len(body) + chunk.Size - 1) / chunk.Size; bodies != 1 || chunks != want || !slices.Equal(refs, []uint64{6}) {
		t.Fatalf("stored %d bodies in %d chunks, refs %v; want 1 in %d, [6]", bodies, chunks, refs, want)
	}
	for _, r := range listRows(t, db) {
		if r.Size != len(msgs[0].Data)+len(body) || r.BodySize != len(body) || r.Data != nil {
			t.Errorf("List row %d: Size %d BodySize %d", r.ID, r.Size, r.BodySize)
		}
	}
	if r, err := getRow(t, db, 1); err != nil || !bytes.Equal(r.Body, body) || !bytes.Equal(r.Data, msgs[0].Data) {
		t.Fatalf("Get: %d data, %d body bytes, %v", len(r.Data), len(r.Body), err)
	}

	start(t, db, smtpRelayTo(t, rec), Options{})
	got := rec.WaitFor(6, 30*time.Second)
	waitUntil(t, "empty queue", emptyQueue(t, db))
	for _, m := range got {
		i := slices.IndexFunc(msgs, func(q Msg) bool { return q.To[0] == m.To[0] })
		if i < 0 || !bytes.Equal(m.Data, append(bytes.Clone(msgs[i].Data), body...)) {
			t.Errorf("delivery to %v is not its header followed by the body", m.To)
		}
	}
	if chunks, bodies, _ := storedBodies(t, db); chunks != 0 || bodies != 0 {
		t.Errorf("after delivery: %d chunks of %d bodies left, want none", chunks, bodies)
	}
}

// TestBodiesSharedWithinOneEnqueue: the copies of one call that carry the
// same slice share a body; another call, or another slice, stores its own.
func TestBodiesSharedWithinOneEnqueue(t *testing.T) {
	db := tempDB(t)
	body := bigBody(200 << 10)
	enqueueNow(t, db, time.Now(), sharedCopies(2, body)...)
	enqueueNow(t, db, time.Now(), sharedCopies(1, body)...)
	enqueueNow(t, db, time.Now(), append(sharedCopies(1, bigBody(100<<10)), sharedCopies(1, bigBody(100<<10))...)...)
	if _, bodies, refs := storedBodies(t, db); bodies != 4 || !slices.Equal(refs, []uint64{2, 1, 1, 1}) {
		t.Errorf("%d bodies with refs %v, want 4 bodies, counted 2, 1, 1, 1", bodies, refs)
	}
}

// TestDropReleasesBody: failed rows keep their body for `queue retry`; the
// body goes when the last row using it is dropped.
func TestDropReleasesBody(t *testing.T) {
	db := tempDB(t)
	rec := queuetest.NewRecorder(t)
	hook := &hookRecorder{}
	msgs := sharedCopies(2, bigBody(300<<10))
	for _, m := range msgs {
		rec.FailRcpt(m.To[0], 550)
	}
	ids := enqueueNow(t, db, time.Now(), msgs...)
	w := start(t, db, smtpRelayTo(t, rec), Options{Failed: hook.Failed})
	waitUntil(t, "two failed rows", func() bool {
		rows := listRows(t, db)
		return len(rows) == 2 && rows[0].State == StateFailed && rows[1].State == StateFailed
	})
	if _, bodies, refs := storedBodies(t, db); bodies != 1 || refs[0] != 2 {
		t.Fatalf("failed rows: %d bodies, refs %v; want the body kept, counted twice", bodies, refs)
	}
	if err := w.Drop(ids[0]); err != nil {
		t.Fatal(err)
	}
	if _, bodies, refs := storedBodies(t, db); bodies != 1 || refs[0] != 1 {
		t.Fatalf("after one drop: %d bodies, refs %v; want it counted once", bodies, refs)
	}
	if err := w.Drop(ids[1]); err != nil {
		t.Fatal(err)
	}
	if chunks, bodies, _ := storedBodies(t, db); chunks != 0 || bodies != 0 {
		t.Errorf("after the last drop: %d chunks of %d bodies left", chunks, bodies)
	}
}

// TestSplitRowKeepsBody: a row refused for some recipients and not others
// splits; both halves keep the shared body.
func TestSplitRowKeepsBody(t *testing.T) {
	db := tempDB(t)
	clock := newClock()
	rec := queuetest.NewRecorder(t)
	rec.FailRcpt("perm@src.test", 550)
	rec.FailRcpt("temp@src.test", 452)
	body := bigBody(100 << 10)
	m := sharedCopies(1, body)[0]
	m.To = []string{"ok@src.test", "perm@src.test", "temp@src.test"}
	enqueueNow(t, db, clock.Now(), m)
	start(t, db, smtpRelayTo(t, rec), Options{Now: clock.Now})
	rec.WaitFor(1, 5*time.Second)
	waitUntil(t, "a failed and a queued row", func() bool {
		rows := listRows(t, db)
		return len(rows) == 2 && rows[0].State == StateQueued && rows[1].State == StateFailed
	})
	if _, bodies, refs := storedBodies(t, db); bodies != 1 || refs[0] != 2 {
		t.Fatalf("after the split: %d bodies, refs %v; want 1, [2]", bodies, refs)
	}
	for _, r := range listRows(t, db) {
		if got, _ := getRow(t, db, r.ID); !bytes.Equal(got.Body, body) || !bytes.Equal(got.Data, m.Data) {
			t.Errorf("row %d (%s) lost its header or body", r.ID, r.State)
		}
	}
}

// fakeSealer "seals" by prefixing the spec's outer header and upper-casing
// the body, and records what it was given.
type fakeSealer struct {
	mu    sync.Mutex
	specs []Seal
	err   error
	calls atomic.Int32
}

func (f *fakeSealer) Seal(r *Row, body io.Reader) ([]byte, error) {
	f.calls.Add(1)
	f.mu.Lock()
	f.specs = append(f.specs, *r.Seal)
	err := f.err
	f.mu.Unlock()
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(body)
	if err != nil {
		return nil, err
	}
	if len(b) != r.BodySize {
		return nil, fmt.Errorf("read %d body bytes, row says %d", len(b), r.BodySize)
	}
	return append(append(bytes.Clone(r.Seal.Outer), "\r\n"...), bytes.ToUpper(b)...), nil
}

func sealedCopies(n int, body []byte) []Msg {
	msgs := sharedCopies(n, body)
	for i := range msgs {
		msgs[i].Seal = &Seal{Signer: "security", To: fmt.Sprintf("%040X", i), Outer: msgs[i].Data}
		msgs[i].Data = nil
	}
	return msgs
}

// TestSealedRowsGoThroughTheSealer: a sealed row is sent as the Sealer
// made it, from the whole stored body, with its own spec.
func TestSealedRowsGoThroughTheSealer(t *testing.T) {
	db := tempDB(t)
	rec := queuetest.NewRecorder(t)
	body := bigBody(300 << 10)
	msgs := sealedCopies(3, body)
	enqueueNow(t, db, time.Now(), msgs...)
	s := &fakeSealer{}
	start(t, db, smtpRelayTo(t, rec), Options{Sealer: s})
	got := rec.WaitFor(3, 10*time.Second)
	waitUntil(t, "empty queue", emptyQueue(t, db))
	for _, m := range got {
		i := slices.IndexFunc(msgs, func(q Msg) bool { return q.To[0] == m.To[0] })
		want := append(append(bytes.Clone(msgs[i].Seal.Outer), "\r\n"...), bytes.ToUpper(body)...)
		if !bytes.Equal(m.Data, want) {
			t.Errorf("delivery to %v is not what the Sealer made", m.To)
		}
	}
	if len(s.specs) != 3 || s.specs[0].Signer != "security" || len(s.specs[0].To) != 40 {
		t.Errorf("Sealer got %+v", s.specs)
	}
}

// TestUnsealableRowFailsAndAlerts: a permanent Sealer error (a key removed
// or expired since the row was queued), or no Sealer at all, fails the row
// at once with an alert, and nothing reaches the relay: the body is never
// sent as it is.
func TestUnsealableRowFailsAndAlerts(t *testing.T) {
	keyGone := Permanent(errors.New("key 0123 expired"))
	for _, tc := range []struct {
		name   string
		sealer Sealer
		reason string
	}{
		{"key expired", &fakeSealer{err: keyGone}, "expired"},
		{"no sealer", nil, "no sealer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := tempDB(t)
			var sent atomic.Int32
			relay := relayFunc(func(context.Context, string, []string, []byte) error { sent.Add(1); return nil })
			hook := &hookRecorder{}
			ids := enqueueNow(t, db, time.Now(), sealedCopies(1, bigBody(10<<10))...)
			start(t, db, relay, Options{Sealer: tc.sealer, Failed: hook.Failed})
			waitUntil(t, "a failed row", func() bool {
				r, err := getRow(t, db, ids[0])
				return err == nil && r.State == StateFailed
			})
			if sent.Load() != 0 {
				t.Errorf("%d messages reached the relay, want none", sent.Load())
			}
			calls := hook.Calls()
			if len(calls) != 1 || !strings.Contains(calls[0].reason, tc.reason) || calls[0].row.Attempts != 1 {
				t.Errorf("alerts %+v, want one naming %q after one attempt", calls, tc.reason)
			}
		})
	}
}

// TestTemporarySealerErrorIsRetried: an error that is not permanent (the
// store briefly unreadable) retries the row like a relay's 4xx.
func TestTemporarySealerErrorIsRetried(t *testing.T) {
	db := tempDB(t)
	clock := newClock()
	rec := queuetest.NewRecorder(t)
	s := &fakeSealer{err: errors.New("store busy")}
	ids := enqueueNow(t, db, clock.Now(), sealedCopies(1, bigBody(1<<10))...)
	w := start(t, db, smtpRelayTo(t, rec), Options{Now: clock.Now, Sealer: s, MinBackoff: time.Minute})
	waitUntil(t, "a deferred row", func() bool {
		r, err := getRow(t, db, ids[0])
		return err == nil && r.State == StateQueued && r.Attempts == 1
	})
	s.mu.Lock()
	s.err = nil
	s.mu.Unlock()
	clock.Advance(2 * time.Minute)
	w.Kick()
	rec.WaitFor(1, 5*time.Second)
	waitUntil(t, "empty queue", emptyQueue(t, db))
}

// TestEnqueueRefusesBadSeal: a spec that says neither "encrypt to this key"
// nor "signed only", or both, or goes with Data or without a body, fails
// the transaction: a forgotten fingerprint never becomes plaintext.
func TestEnqueueRefusesBadSeal(t *testing.T) {
	body := bigBody(1 << 10)
	outer := []byte("From: a@b.test\r\n")
	for _, tc := range []struct {
		name string
		msg  Msg
	}{
		{"no key, not signed-only", Msg{Body: body, Seal: &Seal{Signer: "distributors", Outer: outer}}},
		{"key and signed-only", Msg{Body: body, Seal: &Seal{Signer: "security", To: "AB", SignOnly: true, Outer: outer}}},
		{"no signer", Msg{Body: body, Seal: &Seal{To: "AB", Outer: outer}}},
		{"reporter without key", Msg{Body: body, Seal: &Seal{Signer: "security", Reporter: true, SignOnly: true, Outer: outer}}},
		{"no outer header", Msg{Body: body, Seal: &Seal{Signer: "security", To: "AB"}}},
		{"no body", Msg{Data: []byte("x\r\n"), Seal: &Seal{Signer: "security", To: "AB", Outer: outer}}},
		{"data beside the seal", Msg{Data: []byte("x\r\n"), Body: body, Seal: &Seal{Signer: "security", To: "AB", Outer: outer}}},
		{"header blocks and a composed spec", Msg{Body: body, Seal: &Seal{Signer: "security", To: "AB", Outer: outer, Compose: []byte(`{}`)}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := tempDB(t)
			tc.msg.To = []string{"m@src.test"}
			err := db.Update(func(tx *bolt.Tx) error { return Enqueue(tx, time.Now(), tc.msg) })
			if err == nil {
				t.Fatal("Enqueue = nil, want an error")
			}
			if chunks, _, _ := storedBodies(t, db); chunks != 0 || len(listRows(t, db)) != 0 {
				t.Error("something was stored")
			}
		})
	}
}

// TestInflightBytesBound: rows larger than half the budget are delivered
// one at a time, small ones several at once.
func TestInflightBytesBound(t *testing.T) {
	db := tempDB(t)
	var mu sync.Mutex
	var bigNow, bigPeak, rowsNow, rowsPeak int
	relay := relayFunc(func(ctx context.Context, _ string, _ []string, data []byte) error {
		big := len(data) > 500<<10
		mu.Lock()
		rowsNow++
		rowsPeak = max(rowsPeak, rowsNow)
		if big {
			bigNow++
			bigPeak = max(bigPeak, bigNow)
		}
		mu.Unlock()
		time.Sleep(20 * time.Millisecond)
		mu.Lock()
		rowsNow--
		if big {
			bigNow--
		}
		mu.Unlock()
		return nil
	})
	big := sharedCopies(4, bigBody(700<<10))
	small := sharedCopies(8, bigBody(10<<10))
	for i := range small {
		small[i].To = []string{fmt.Sprintf("s%d@src.test", i)}
	}
	enqueueNow(t, db, time.Now(), append(big, small...)...)
	start(t, db, relay, Options{Concurrency: 4, MaxInflightBytes: 1 << 20})
	waitUntil(t, "empty queue", emptyQueue(t, db))
	if bigPeak != 1 {
		t.Errorf("%d rows of 700 KiB in flight at once under a 1 MiB budget, want 1", bigPeak)
	}
	if rowsPeak < 2 {
		t.Errorf("at most %d rows in flight: small rows should share the budget", rowsPeak)
	}
}
