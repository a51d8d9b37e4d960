package queue

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue/queuetest"
)

var errRollback = errors.New("roll back")

func TestEnqueueRolledBackSendsNothing(t *testing.T) {
	db := tempDB(t)
	rec := queuetest.NewRecorder(t)
	w := start(t, db, smtpRelayTo(t, rec), Options{})

	rolled := testMsg(1)
	err := db.Update(func(tx *bolt.Tx) error {
		if err := w.Enqueue(tx, rolled); err != nil {
			return err
		}
		return errRollback
	})
	if !errors.Is(err, errRollback) {
		t.Fatalf("Update = %v, want %v", err, errRollback)
	}
	if rows := listRows(t, db); len(rows) != 0 {
		t.Fatalf("after rollback: %d rows, want 0", len(rows))
	}

	committed := testMsg(2)
	if err := db.Update(func(tx *bolt.Tx) error { return w.Enqueue(tx, committed) }); err != nil {
		t.Fatalf("Update: %v", err)
	}
	rec.WaitFor(1, 5*time.Second)
	waitUntil(t, "empty queue", emptyQueue(t, db))
	w.Kick() // a spurious wake-up must not resend anything
	msgs := rec.Messages()
	if len(msgs) != 1 {
		t.Fatalf("recorder got %d messages, want 1", len(msgs))
	}
	got := msgs[0]
	if !bytes.Equal(got.Data, committed.Data) {
		t.Errorf("data differs:\n got %q\nwant %q", got.Data, committed.Data)
	}
	if got.From != committed.From || !slices.Equal(got.To, committed.To) {
		t.Errorf("envelope = %q %q, want %q %q", got.From, got.To, committed.From, committed.To)
	}
	if err := queuetest.CheckCRLF(got.Data); err != nil {
		t.Error(err)
	}
}

func TestEnqueueRefusesEmpty(t *testing.T) {
	tests := []struct {
		name string
		msg  Msg
	}{
		{"no recipients", Msg{Data: []byte("x\r\n")}},
		{"no data", Msg{To: []string{"a@b.test"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := tempDB(t)
			ok := testMsg(1)
			err := db.Update(func(tx *bolt.Tx) error { return Enqueue(tx, time.Now(), ok, tt.msg) })
			if err == nil {
				t.Fatal("Enqueue = nil, want an error")
			}
			if rows := listRows(t, db); len(rows) != 0 {
				t.Errorf("%d rows after a failed Update, want 0", len(rows))
			}
		})
	}
}

func TestTemporaryFailureIsRetriedWithBackoff(t *testing.T) {
	db := tempDB(t)
	clock := newClock()
	rec := queuetest.NewRecorder(t)
	const rcpt = "busy@src.test"
	rec.FailRcpt(rcpt, 451)
	hook := &hookRecorder{}
	opts := Options{Now: clock.Now, MinBackoff: time.Minute, MaxBackoff: 10 * time.Minute, Failed: hook.Failed}
	w := start(t, db, smtpRelayTo(t, rec), opts)

	ids := enqueueNow(t, db, clock.Now(), testMsg(1, rcpt))
	w.Kick()
	for attempt, want := range []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute} {
		n := attempt + 1
		var r Row
		waitUntil(t, "a deferred attempt", func() bool {
			var err error
			r, err = getRow(t, db, ids[0])
			return err == nil && r.Attempts == n && r.State == StateQueued
		})
		delay := r.NextAttempt.Sub(clock.Now())
		if delay < want*3/4 || delay > want {
			t.Errorf("attempt %d: next attempt in %v, want within [%v, %v]", n, delay, want*3/4, want)
		}
		if !strings.Contains(r.LastError, "451") {
			t.Errorf("attempt %d: LastError = %q, want the 451", n, r.LastError)
		}
		if n == 3 {
			rec.FailRcpt(rcpt, 0)
		}
		clock.Advance(want)
		w.Kick()
	}
	rec.WaitFor(1, 5*time.Second)
	waitUntil(t, "empty queue", emptyQueue(t, db))
	if got := len(rec.Refused()); got != 3 {
		t.Errorf("RCPT refused %d times, want 3", got)
	}
	if got := len(rec.Messages()); got != 1 {
		t.Errorf("delivered %d times, want 1", got)
	}
	if calls := hook.Calls(); len(calls) != 0 {
		t.Errorf("Failed hook called %d times, want 0", len(calls))
	}
}

func TestPermanentFailure(t *testing.T) {
	tests := []struct {
		name     string
		noAlert  bool
		wantHook int
	}{
		{"alerting row", false, 1},
		{"NoAlert row", true, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := tempDB(t)
			clock := newClock()
			rec := queuetest.NewRecorder(t)
			const rcpt = "gone@src.test"
			rec.FailRcpt(rcpt, 550)
			var w *running
			hook := &hookRecorder{}
			failed := func(tx *bolt.Tx, r Row, reason string) error {
				// The alert commits with the failure, or neither does.
				alert := testMsg(99, "src@src.test")
				alert.Kind, alert.NoAlert = "alert", true
				if err := w.Enqueue(tx, alert); err != nil {
					return err
				}
				return hook.Failed(tx, r, reason)
			}
			w = start(t, db, smtpRelayTo(t, rec), Options{Now: clock.Now, Failed: failed})

			m := testMsg(1, rcpt)
			m.NoAlert = tt.noAlert
			ids := enqueueNow(t, db, clock.Now(), m)
			w.Kick()
			var r Row
			waitUntil(t, "a failed row", func() bool {
				var err error
				r, err = getRow(t, db, ids[0])
				return err == nil && r.State == StateFailed
			})
			if !strings.Contains(r.LastError, "550") || r.Attempts != 1 {
				t.Errorf("row = attempts %d, LastError %q; want 1 and the 550", r.Attempts, r.LastError)
			}
			if !r.NextAttempt.IsZero() {
				t.Errorf("failed row has NextAttempt %v, want zero", r.NextAttempt)
			}
			if tt.wantHook > 0 {
				rec.WaitFor(1, 5*time.Second) // the alert
			}

			// No further attempts, however long we wait.
			for range 3 {
				clock.Advance(2 * time.Hour)
				w.Kick()
			}
			waitUntil(t, "only the failed row left", func() bool { return len(listRows(t, db)) == 1 })
			w.stop(t)
			if got := len(rec.Refused()); got != 1 {
				t.Errorf("RCPT refused %d times, want 1 (no retry after a 5xx)", got)
			}
			calls := hook.Calls()
			if len(calls) != tt.wantHook {
				t.Fatalf("Failed hook called %d times, want %d", len(calls), tt.wantHook)
			}
			if tt.wantHook == 0 {
				if n := len(rec.Messages()); n != 0 {
					t.Errorf("%d messages sent, want none", n)
				}
				return
			}
			c := calls[0]
			if !c.writable || c.row.ID != ids[0] || c.row.MessageID != m.MessageID || c.row.Data != nil {
				t.Errorf("hook got writable=%v id=%d message-id=%q data=%d bytes; want true, %d, %q, nil",
					c.writable, c.row.ID, c.row.MessageID, len(c.row.Data), ids[0], m.MessageID)
			}
			if !strings.Contains(c.reason, "550") {
				t.Errorf("hook reason = %q, want the 550", c.reason)
			}
			if msgs := rec.Messages(); len(msgs) != 1 || msgs[0].To[0] != "src@src.test" {
				t.Errorf("sent %v, want only the alert to src@src.test", msgs)
			}
		})
	}
}

func TestExpiry(t *testing.T) {
	db := tempDB(t)
	clock := newClock()
	var attempts atomic.Int32
	relay := relayFunc(func(context.Context, string, []string, []byte) error {
		attempts.Add(1)
		return errors.New("connection refused")
	})
	hook := &hookRecorder{}
	opts := Options{Now: clock.Now, Lifetime: time.Hour, MinBackoff: 10 * time.Minute, MaxBackoff: 20 * time.Minute, Failed: hook.Failed}
	w := start(t, db, relay, opts)
	created := clock.Now()
	ids := enqueueNow(t, db, created, testMsg(1))
	w.Kick()

	var r Row
	for i := 0; ; i++ {
		if i > 20 {
			t.Fatalf("row not expired after %d attempts", attempts.Load())
		}
		waitUntil(t, "an attempt recorded", func() bool {
			var err error
			r, err = getRow(t, db, ids[0])
			return err == nil && r.State != StateSending && r.Attempts == i+1
		})
		if r.State == StateFailed {
			break
		}
		if r.NextAttempt.After(created.Add(time.Hour)) {
			t.Errorf("NextAttempt %v is after the expiry %v", r.NextAttempt, created.Add(time.Hour))
		}
		clock.Advance(r.NextAttempt.Sub(clock.Now()))
		w.Kick()
	}
	if clock.Now().Before(created.Add(time.Hour)) {
		t.Errorf("failed at %v, before the expiry at %v", clock.Now(), created.Add(time.Hour))
	}
	if r.LastError != "connection refused" {
		t.Errorf("LastError = %q, want the last temporary error", r.LastError)
	}
	calls := hook.Calls()
	if len(calls) != 1 || calls[0].reason != ReasonExpired {
		t.Fatalf("hook calls = %+v, want one with reason %q", calls, ReasonExpired)
	}
	n := attempts.Load()
	clock.Advance(24 * time.Hour)
	w.Kick()
	w.stop(t)
	if attempts.Load() != n {
		t.Errorf("%d attempts after expiry, want none", attempts.Load()-n)
	}
}

func TestPartialRecipients(t *testing.T) {
	const ok, perm, temp = "ok@src.test", "perm@src.test", "temp@src.test"
	tests := []struct {
		name       string
		to         []string
		wantQueued []string // recipients left on the original row
		wantFailed []string // recipients of the failed row
	}{
		{"one refused permanently", []string{ok, perm}, nil, []string{perm}},
		{"one refused temporarily", []string{ok, temp}, []string{temp}, nil},
		{"one of each", []string{ok, perm, temp}, []string{temp}, []string{perm}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := tempDB(t)
			clock := newClock()
			rec := queuetest.NewRecorder(t)
			rec.FailRcpt(perm, 550)
			rec.FailRcpt(temp, 452)
			hook := &hookRecorder{}
			w := start(t, db, smtpRelayTo(t, rec), Options{Now: clock.Now, Failed: hook.Failed})
			enqueueNow(t, db, clock.Now(), testMsg(1, tt.to...))
			w.Kick()
			msgs := rec.WaitFor(1, 5*time.Second)
			if !slices.Equal(msgs[0].To, []string{ok}) {
				t.Errorf("delivered to %q, want only %q", msgs[0].To, ok)
			}
			want := len(tt.wantFailed) + min(len(tt.wantQueued), 1)
			var rows []Row
			waitUntil(t, "the outcome", func() bool {
				rows = listRows(t, db)
				return len(rows) == want && !slices.ContainsFunc(rows, func(r Row) bool { return r.State == StateSending })
			})
			var queued, failed []string
			for _, r := range rows {
				switch r.State {
				case StateQueued:
					queued = append(queued, r.To...)
				case StateFailed:
					failed = append(failed, r.To...)
					if got, _ := getRow(t, db, r.ID); !bytes.Equal(got.Data, testMsg(1, tt.to...).Data) {
						t.Errorf("failed row %d lost its data", r.ID)
					}
				}
			}
			if !slices.Equal(queued, tt.wantQueued) || !slices.Equal(failed, tt.wantFailed) {
				t.Errorf("queued %q, failed %q; want %q, %q", queued, failed, tt.wantQueued, tt.wantFailed)
			}
			calls := hook.Calls()
			if len(calls) != len(tt.wantFailed) {
				t.Fatalf("hook called %d times, want %d", len(calls), len(tt.wantFailed))
			}
			if len(calls) == 1 && !slices.Equal(calls[0].row.To, tt.wantFailed) {
				t.Errorf("hook row To = %q, want %q", calls[0].row.To, tt.wantFailed)
			}
			if len(tt.wantQueued) == 0 {
				return
			}
			// The temporary refusal clears: only that recipient gets the retry.
			rec.FailRcpt(temp, 0)
			clock.Advance(time.Hour)
			w.Kick()
			msgs = rec.WaitFor(2, 5*time.Second)
			if !slices.Equal(msgs[1].To, []string{temp}) {
				t.Errorf("retry went to %q, want %q", msgs[1].To, temp)
			}
			waitUntil(t, "only failed rows left", func() bool { return len(listRows(t, db)) == len(tt.wantFailed) })
		})
	}
}

func TestBadRowFailsWithoutSending(t *testing.T) {
	base := testMsg(1)
	tests := []struct {
		name    string
		mutate  func(m *Msg)
		wantErr string
	}{
		{"bare CR", func(m *Msg) { m.Data = []byte("Subject: x\r\n\r\nsmuggle\r.\rMAIL FROM:<a@b>\r\n") }, "bare CR"},
		{"bare LF", func(m *Msg) { m.Data = []byte("Subject: x\r\n\r\nline\n.\nMAIL FROM:<a@b>\r\n") }, "bare LF"},
		{"CR at the end", func(m *Msg) { m.Data = []byte("Subject: x\r\n\r\nbody\r") }, "bare CR"},
		{"recipient with CRLF", func(m *Msg) { m.To = []string{"a@b.test>\r\nRCPT TO:<evil@x.test"} }, "recipient"},
		{"recipient without domain", func(m *Msg) { m.To = []string{"member"} }, "recipient"},
		{"sender with space", func(m *Msg) { m.From = "a b@c.test" }, "sender"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := tempDB(t)
			rec := queuetest.NewRecorder(t)
			hook := &hookRecorder{}
			w := start(t, db, smtpRelayTo(t, rec), Options{Failed: hook.Failed})
			m := base
			tt.mutate(&m)
			ids := enqueueNow(t, db, time.Now(), m)
			w.Kick()
			var r Row
			waitUntil(t, "a failed row", func() bool {
				var err error
				r, err = getRow(t, db, ids[0])
				return err == nil && r.State == StateFailed
			})
			if !strings.Contains(r.LastError, tt.wantErr) {
				t.Errorf("LastError = %q, want it to mention %q", r.LastError, tt.wantErr)
			}
			if n := len(hook.Calls()); n != 1 {
				t.Errorf("hook called %d times, want 1", n)
			}
			if n := len(rec.Messages()); n != 0 {
				t.Errorf("relay received %d messages, want 0", n)
			}
		})
	}
}

func TestNeverTwoDeliveriesOfOneRow(t *testing.T) {
	db := tempDB(t)
	var mu sync.Mutex
	sent := map[string]int{}
	var inFlight, maxInFlight atomic.Int32
	relay := relayFunc(func(_ context.Context, _ string, _ []string, data []byte) error {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for {
			m := maxInFlight.Load()
			if n <= m || maxInFlight.CompareAndSwap(m, n) {
				break
			}
		}
		time.Sleep(time.Millisecond)
		mu.Lock()
		sent[string(data)]++
		mu.Unlock()
		return nil
	})
	w := start(t, db, relay, Options{Concurrency: 4})
	const n = 60
	stopKicking := make(chan struct{})
	go func() { // spurious wake-ups from everywhere
		for {
			select {
			case <-stopKicking:
				return
			default:
				w.Kick()
				time.Sleep(100 * time.Microsecond)
			}
		}
	}()
	for i := range n {
		if err := db.Update(func(tx *bolt.Tx) error { return w.Enqueue(tx, testMsg(i)) }); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, "empty queue", emptyQueue(t, db))
	close(stopKicking)
	mu.Lock()
	defer mu.Unlock()
	if len(sent) != n {
		t.Errorf("%d distinct messages sent, want %d", len(sent), n)
	}
	for data, c := range sent {
		if c != 1 {
			t.Errorf("message %q sent %d times, want 1", messageIDString(data), c)
		}
	}
	if m := maxInFlight.Load(); m > 4 {
		t.Errorf("%d deliveries at once, want at most 4", m)
	}
}

func TestRetryAndDrop(t *testing.T) {
	db := tempDB(t)
	rec := queuetest.NewRecorder(t)
	rec.FailRcpt("gone@src.test", 550)
	w := start(t, db, smtpRelayTo(t, rec), Options{})
	ids := enqueueNow(t, db, time.Now(), testMsg(1, "gone@src.test"), testMsg(2, "gone@src.test"))
	w.Kick()
	waitUntil(t, "two failed rows", func() bool {
		rows := listRows(t, db)
		return len(rows) == 2 && rows[0].State == StateFailed && rows[1].State == StateFailed
	})

	rec.FailRcpt("gone@src.test", 0) // the operator fixed the address at the relay
	if err := w.Retry(ids[0]); err != nil {
		t.Fatalf("Retry: %v", err)
	}
	msgs := rec.WaitFor(1, 5*time.Second)
	if messageID(t, msgs[0].Data) != testMsg(1).MessageID {
		t.Errorf("retried the wrong row")
	}
	if err := w.Drop(ids[1]); err != nil {
		t.Fatalf("Drop: %v", err)
	}
	waitUntil(t, "empty queue", emptyQueue(t, db))
	if err := w.Retry(ids[1]); !errors.Is(err, ErrNotFound) {
		t.Errorf("Retry(dropped) = %v, want ErrNotFound", err)
	}
	if err := w.Drop(12345); !errors.Is(err, ErrNotFound) {
		t.Errorf("Drop(unknown) = %v, want ErrNotFound", err)
	}
}

func TestRetryResetsLifetime(t *testing.T) {
	db := tempDB(t)
	clock := newClock()
	ids := enqueueNow(t, db, clock.Now(), testMsg(1))
	clock.Advance(10 * 24 * time.Hour)
	if err := db.Update(func(tx *bolt.Tx) error { return Retry(tx, ids[0], clock.Now()) }); err != nil {
		t.Fatal(err)
	}
	r, err := getRow(t, db, ids[0])
	if err != nil {
		t.Fatal(err)
	}
	rec := record{Created: r.Created, Requeued: r.Requeued}
	if got, want := rec.expires(time.Hour), clock.Now().Add(time.Hour); !got.Equal(want) {
		t.Errorf("expires = %v, want %v (an hour after the retry)", got, want)
	}
	if !r.NextAttempt.Equal(clock.Now()) || r.Attempts != 0 {
		t.Errorf("after Retry: next %v attempts %d, want now and 0", r.NextAttempt, r.Attempts)
	}
}

func TestListGetStats(t *testing.T) {
	db := tempDB(t)
	clock := newClock()
	first := clock.Now()
	ids := enqueueNow(t, db, first, testMsg(1), testMsg(2))
	clock.Advance(time.Minute)
	ids = append(ids, enqueueNow(t, db, clock.Now(), testMsg(3))...)
	// Fail row 1 by hand, as the worker would.
	if err := db.Update(func(tx *bolt.Tx) error {
		bk, _ := open(tx)
		old, err := bk.get(ids[0])
		if err != nil {
			return err
		}
		rec := *old
		rec.State, rec.NextAttempt = StateFailed, time.Time{}
		return bk.put(ids[0], old, &rec)
	}); err != nil {
		t.Fatal(err)
	}

	rows := listRows(t, db)
	if len(rows) != 3 {
		t.Fatalf("List: %d rows, want 3", len(rows))
	}
	for _, r := range rows {
		if r.Data != nil || r.Size != len(testMsg(1).Data) {
			t.Errorf("List row %d: data %d bytes, size %d; want nil and %d", r.ID, len(r.Data), r.Size, len(testMsg(1).Data))
		}
	}
	r, err := getRow(t, db, ids[1])
	if err != nil || !bytes.Equal(r.Data, testMsg(2).Data) || r.MessageID != testMsg(2).MessageID {
		t.Errorf("Get(%d) = %q, %v; want message 2", ids[1], r.MessageID, err)
	}
	if _, err := getRow(t, db, 999); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(999) = %v, want ErrNotFound", err)
	}
	var s Counts
	if err := db.View(func(tx *bolt.Tx) error { s, err = Stats(tx); return err }); err != nil {
		t.Fatal(err)
	}
	want := Counts{Queued: 2, Failed: 1, Oldest: first}
	if s.Queued != want.Queued || s.Sending != 0 || s.Failed != want.Failed || !s.Oldest.Equal(want.Oldest) {
		t.Errorf("Stats = %+v, want %+v", s, want)
	}
	// The index holds exactly the rows that are not failed, in due order.
	var due []uint64
	db.View(func(tx *bolt.Tx) error {
		bk, _ := open(tx)
		due, _ = bk.dueIDs(clock.Now(), 10, func(uint64) bool { return false })
		return nil
	})
	if !slices.Equal(due, ids[1:]) {
		t.Errorf("due index = %v, want rows 2 and 3", due)
	}
}

func TestBackoff(t *testing.T) {
	w := New(nil, nil, Options{MinBackoff: time.Minute, MaxBackoff: time.Hour})
	tests := []struct {
		attempts int
		want     time.Duration
	}{
		{1, time.Minute},
		{2, 2 * time.Minute},
		{3, 4 * time.Minute},
		{6, 32 * time.Minute},
		{7, time.Hour},
		{100, time.Hour},
	}
	for _, tt := range tests {
		for range 50 {
			got := w.backoff(tt.attempts)
			if got < tt.want*3/4 || got > tt.want {
				t.Fatalf("backoff(%d) = %v, want within [%v, %v]", tt.attempts, got, tt.want*3/4, tt.want)
			}
		}
	}
}

func TestRunTwiceRefused(t *testing.T) {
	db := tempDB(t)
	w := start(t, db, relayFunc(func(context.Context, string, []string, []byte) error { return nil }), Options{})
	waitUntil(t, "Run to start", w.running.Load)
	if err := w.Run(context.Background()); err == nil {
		t.Error("second Run = nil, want an error")
	}
}

// messageID reads the Message-ID header of raw message bytes.
func messageID(t testing.TB, data []byte) string {
	t.Helper()
	id := messageIDString(string(data))
	if id == "" {
		t.Fatalf("no Message-ID in %q", data)
	}
	return id
}

func messageIDString(data string) string {
	for line := range strings.SplitSeq(data, "\r\n") {
		if line == "" {
			break
		}
		if v, ok := strings.CutPrefix(line, "Message-ID: "); ok {
			return v
		}
	}
	return ""
}

// If the outcome cannot be recorded (here the Failed hook refuses), the row
// is not resent in a loop: it waits out the lease taken when it was claimed.
func TestUnrecordedOutcomeWaitsForLease(t *testing.T) {
	db := tempDB(t)
	clock := newClock()
	rec := queuetest.NewRecorder(t)
	rec.FailRcpt("gone@src.test", 550)
	var hookCalls atomic.Int32
	var refusing atomic.Bool
	refusing.Store(true)
	failed := func(*bolt.Tx, Row, string) error {
		hookCalls.Add(1)
		if refusing.Load() {
			return errors.New("alert template missing")
		}
		return nil
	}
	w := start(t, db, smtpRelayTo(t, rec), Options{Now: clock.Now, MinBackoff: time.Minute, Failed: failed})
	ids := enqueueNow(t, db, clock.Now(), testMsg(1, "gone@src.test"))
	w.Kick()
	// db.Batch runs a failing fn a second time alone: wait for any call.
	waitUntil(t, "the first hook call", func() bool { return hookCalls.Load() >= 1 })
	for range 5 {
		w.Kick()
		time.Sleep(10 * time.Millisecond)
	}
	if n := len(rec.Refused()); n != 1 {
		t.Fatalf("%d attempts before the lease ended, want 1", n)
	}
	r, _ := getRow(t, db, ids[0])
	if r.State != StateSending {
		t.Errorf("state = %s, want sending (outcome rolled back)", r.State)
	}
	refusing.Store(false)
	clock.Advance(time.Minute)
	w.Kick()
	waitUntil(t, "a failed row", func() bool {
		r, err := getRow(t, db, ids[0])
		return err == nil && r.State == StateFailed
	})
	if n := len(rec.Refused()); n != 2 {
		t.Errorf("%d attempts, want 2", n)
	}
}

// A delivery slower than its lease must not be started a second time while
// the first is still in flight.
func TestSlowDeliveryNotStartedTwice(t *testing.T) {
	db := tempDB(t)
	clock := newClock()
	var calls atomic.Int32
	release := make(chan struct{})
	relay := relayFunc(func(ctx context.Context, _ string, _ []string, _ []byte) error {
		calls.Add(1)
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	})
	w := start(t, db, relay, Options{Now: clock.Now, MinBackoff: time.Minute})
	enqueueNow(t, db, clock.Now(), testMsg(1))
	w.Kick()
	waitUntil(t, "the first send", func() bool { return calls.Load() == 1 })
	for range 5 {
		clock.Advance(time.Hour) // far past the lease
		w.Kick()
		time.Sleep(10 * time.Millisecond)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("%d concurrent sends of one row, want 1", n)
	}
	close(release)
	waitUntil(t, "empty queue", emptyQueue(t, db))
	if n := calls.Load(); n != 1 {
		t.Errorf("%d sends, want 1", n)
	}
}

func TestRelayPanicIsATemporaryFailure(t *testing.T) {
	db := tempDB(t)
	relay := relayFunc(func(context.Context, string, []string, []byte) error { panic("nil map") })
	w := start(t, db, relay, Options{})
	ids := enqueueNow(t, db, time.Now(), testMsg(1))
	w.Kick()
	waitUntil(t, "a deferred row", func() bool {
		r, err := getRow(t, db, ids[0])
		return err == nil && r.State == StateQueued && strings.Contains(r.LastError, "panicked")
	})
}

func TestLogsCarryIDsNotContent(t *testing.T) {
	db := tempDB(t)
	var logs syncBuffer
	rec := queuetest.NewRecorder(t)
	rec.FailRcpt("gone@src.test", 550)
	rec.FailRcpt("busy@src.test", 451)
	opts := Options{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	w := start(t, db, smtpRelayTo(t, rec), opts)
	enqueueNow(t, db, time.Now(), testMsg(1), testMsg(2, "gone@src.test"), testMsg(3, "busy@src.test"))
	w.Kick()
	waitUntil(t, "three outcomes", func() bool {
		return strings.Count(logs.String(), "result=") >= 3
	})
	w.stop(t)
	out := logs.String()
	for _, want := range []string{"result=delivered", "result=failed", "result=deferred", testMsg(1).MessageID, "incident=SEC-2026-0001", "kind=report-copy"} {
		if !strings.Contains(out, want) {
			t.Errorf("logs lack %q:\n%s", want, out)
		}
	}
	for _, leak := range []string{"Subject", "[SEC-2026-0001] copy", "Line one", "Grüße"} {
		if strings.Contains(out, leak) {
			t.Errorf("logs contain message content %q:\n%s", leak, out)
		}
	}
}

// A row with NotBefore waits until then (the announcement after "embargo
// lifted"), and goes as soon as the clock reaches it.
func TestNotBefore(t *testing.T) {
	db := tempDB(t)
	clock := newClock()
	rec := queuetest.NewRecorder(t)
	w := start(t, db, smtpRelayTo(t, rec), Options{Now: clock.Now})
	later := testMsg(2, "b@dst.test")
	later.NotBefore = clock.Now().Add(time.Minute)
	enqueueNow(t, db, clock.Now(), testMsg(1, "a@dst.test"), later)
	w.Kick()
	rec.WaitFor(1, 5*time.Second)
	time.Sleep(100 * time.Millisecond)
	if got := rec.Messages(); len(got) != 1 || got[0].To[0] != "a@dst.test" {
		t.Fatalf("before NotBefore: %d messages, want only the first", len(got))
	}
	clock.Advance(time.Minute)
	w.Kick()
	if got := rec.WaitFor(2, 5*time.Second); len(got) != 2 || got[1].To[0] != "b@dst.test" {
		t.Fatalf("after NotBefore: %d messages, want both", len(got))
	}
}

// TestWritesGoThroughUpdate: with Options.Update set, the worker's claims and
// outcomes are written through it (the daemon's group commit), and a
// transaction function run twice, as a group commit does when another
// function of its group fails, neither sends nor reports anything twice.
func TestWritesGoThroughUpdate(t *testing.T) {
	db := tempDB(t)
	rec := queuetest.NewRecorder(t)
	var calls atomic.Int64
	twice := func(fn func(*bolt.Tx) error) error {
		calls.Add(1)
		// The first run is rolled back, as when a group's other member fails.
		err := db.Update(func(tx *bolt.Tx) error {
			if err := fn(tx); err != nil {
				return err
			}
			return errRollback
		})
		if !errors.Is(err, errRollback) {
			return err
		}
		return db.Update(fn)
	}
	var delivered atomic.Int64
	w := start(t, db, smtpRelayTo(t, rec), Options{
		Update:    twice,
		Delivered: func(Row, time.Time) { delivered.Add(1) },
	})
	enqueueNow(t, db, time.Now(), testMsg(1), testMsg(2), testMsg(3))
	w.Kick()
	rec.WaitFor(3, 5*time.Second)
	waitUntil(t, "empty queue", emptyQueue(t, db))
	waitUntil(t, "3 reported", func() bool { return delivered.Load() == 3 })
	if n := len(rec.Messages()); n != 3 {
		t.Errorf("relay got %d messages, want 3", n)
	}
	if calls.Load() == 0 {
		t.Error("the worker never wrote through Options.Update")
	}
	time.Sleep(50 * time.Millisecond)
	if n := delivered.Load(); n != 3 {
		t.Errorf("Delivered called %d times, want 3", n)
	}
}
