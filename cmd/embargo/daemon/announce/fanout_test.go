package announce

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue/queuetest"
	"github.com/embargo-project/embargo/keys"
)

// runUntil runs f until cond holds (checked on each relay transaction and
// every 10 ms), then stops it.
func runUntil(t *testing.T, f *Fanout, timeout time.Duration, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			cancel()
			<-done
			t.Fatalf("condition not reached after %v", timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
}

// TestFanout10000: 10,000 subscribers in batches of 100 through a real SMTP
// relay: 100 transactions, every subscriber exactly once, one identical
// signed body for all, the list fields in place.
func TestFanout10000(t *testing.T) {
	db, _ := newDB(t)
	c := newClock(t0)
	addrs := addSubscribers(t, db, 10_000, t0.Add(-time.Hour))
	rec := queuetest.NewRecorder(t)
	f := testFanout(t, db, recorderRelay(t, rec), c, nil)
	startRelease(t, db, "SEC-2026-0001", advisory(t, announceKey(t), t0), t0)
	runUntil(t, f, time.Minute, func() bool { return job(t, db, "SEC-2026-0001").State == JobReleased })

	msgs := rec.Messages()
	if len(msgs) != 100 {
		t.Errorf("%d SMTP transactions, want 100", len(msgs))
	}
	counts := rcptCounts(msgs)
	for _, a := range addrs {
		if counts[a] != 1 {
			t.Fatalf("%s got %d copies, want 1", a, counts[a])
		}
	}
	if len(counts) != len(addrs) {
		t.Errorf("%d distinct recipients, want %d", len(counts), len(addrs))
	}
	for i, m := range msgs {
		if len(m.To) != 100 {
			t.Errorf("transaction %d has %d RCPTs, want 100", i, len(m.To))
		}
		if m.From != "announce+bounces-sec-2026-0001@example.org" {
			t.Errorf("envelope sender %q", m.From)
		}
		if !bytes.Equal(m.Data, msgs[0].Data) {
			t.Fatalf("transaction %d carries other bytes than the first", i)
		}
	}
	data := msgs[0].Data
	if err := queuetest.CheckCRLF(data); err != nil {
		t.Error(err)
	}
	v, err := keys.Verify(data, keys.NewKeyring(announceKey(t)), keys.Options{Now: c.Now})
	if err != nil {
		t.Fatalf("copy does not verify: %v", err)
	}
	if !bytes.Contains(v.Bytes, []byte("heap overflow")) {
		t.Error("signed part lost the advisory")
	}
	for k, want := range map[string]string{
		"List-Id":          "<announce.example.org>",
		"List-Post":        "NO",
		"Precedence":       "list",
		"List-Unsubscribe": "<mailto:announce+unsubscribe@example.org?subject=unsubscribe>",
		"X-Loop":           "announce@example.org",
		"To":               "<announce@example.org>",
	} {
		if got := headerOf(data, k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if headerOf(data, "List-Unsubscribe-Post") != "" {
		t.Error("a shared copy claims RFC 8058 one-click")
	}
	j := job(t, db, "SEC-2026-0001")
	if j.Sent != 10_000 || j.Transactions != 100 || j.Total != 10_000 || j.Cursor != j.UpTo || j.Deferred != 0 {
		t.Errorf("job = %+v", j)
	}
}

// crashRelay forwards to next; at transaction crashAt (1-based) it forwards,
// then "dies" before the outcome can be recorded: it cancels the worker and
// reports an error, as a kill -9 right after the relay's 250 would leave it.
type crashRelay struct {
	next    queue.Relay
	crashAt int
	n       atomic.Int32
	cancel  context.CancelFunc
}

func (r *crashRelay) Send(ctx context.Context, from string, to []string, data []byte) error {
	if err := r.next.Send(ctx, from, to, data); err != nil {
		return err
	}
	if int(r.n.Add(1)) == r.crashAt {
		r.cancel()
		return context.Canceled
	}
	return nil
}

// TestCrashMidFanout: stop after k batches, reopen the store, resume: every
// subscriber served, duplicates only in the batch that was in flight.
func TestCrashMidFanout(t *testing.T) {
	const n, batch, k = 1000, 100, 4
	dir := t.TempDir()
	path := dir + "/embargo.db"
	db := openDB(t, path)
	c := newClock(t0)
	addSubscribers(t, db, n, t0.Add(-time.Hour))
	startRelease(t, db, "SEC-2026-0002", advisory(t, announceKey(t), t0), t0)
	rec := queuetest.NewRecorder(t)

	ctx, cancel := context.WithCancel(context.Background())
	cr := &crashRelay{next: recorderRelay(t, rec), crashAt: k, cancel: cancel}
	f := testFanout(t, db, cr, c, func(o *Options) { o.BatchSize = batch })
	if err := f.Run(ctx); err != nil {
		t.Fatal(err)
	}
	j := job(t, db, "SEC-2026-0002")
	if j.State != JobReleasing || j.Cursor == 0 || j.Transactions != k-1 {
		t.Fatalf("after the crash: %+v, want releasing with %d batches recorded", j, k-1)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	// A new process: reopen and resume.
	db = openDB(t, path)
	defer db.Close()
	c.Advance(time.Second)
	f = testFanout(t, db, recorderRelay(t, rec), c, func(o *Options) { o.BatchSize = batch })
	drain(t, f)
	if j := job(t, db, "SEC-2026-0002"); j.State != JobReleased {
		t.Fatalf("after resuming: %+v", j)
	}
	msgs := rec.Messages()
	counts := rcptCounts(msgs)
	if len(counts) != n {
		t.Errorf("%d subscribers served, want %d", len(counts), n)
	}
	inFlight := map[string]bool{}
	for _, r := range msgs[k-1].To {
		inFlight[r] = true
	}
	dups := 0
	for a, c := range counts {
		switch {
		case c == 2 && inFlight[a]:
			dups++
		case c != 1:
			t.Errorf("%s: %d copies", a, c)
		}
	}
	if dups != batch || len(msgs) != n/batch+1 {
		t.Errorf("%d duplicates in %d transactions, want %d (the batch in flight) in %d", dups, len(msgs), batch, n/batch+1)
	}
}

// TestNothingBeforeT: a job for T sends nothing at T−1 s, everything at T,
// and once only (a later restart or a backward clock sends nothing again).
func TestNothingBeforeT(t *testing.T) {
	db, path := newDB(t)
	_ = path
	T := t0.Add(time.Hour)
	c := newClock(T.Add(-10 * time.Minute))
	addSubscribers(t, db, 250, t0)
	rec := queuetest.NewRecorder(t)
	f := testFanout(t, db, recorderRelay(t, rec), c, nil)
	startRelease(t, db, "SEC-2026-0003", advisory(t, announceKey(t), t0), T)
	drain(t, f)
	for _, d := range []time.Duration{9 * time.Minute, 59 * time.Second} {
		c.Advance(d)
		drain(t, f)
		if got := len(rec.Messages()); got != 0 || job(t, db, "SEC-2026-0003").State != JobScheduled {
			t.Fatalf("at T-%v: %d transactions, state %s", T.Sub(c.Now()), got, job(t, db, "SEC-2026-0003").State)
		}
	}
	c.Advance(time.Second)
	drain(t, f)
	if got := len(rcptCounts(rec.Messages())); got != 250 || job(t, db, "SEC-2026-0003").State != JobReleased {
		t.Fatalf("at T: %d recipients, state %s", got, job(t, db, "SEC-2026-0003").State)
	}
	// The clock goes back a day, and a new worker starts: nothing again.
	c.Jump(-24 * time.Hour)
	drain(t, f)
	f2 := testFanout(t, db, recorderRelay(t, rec), c, nil)
	drain(t, f2)
	if got := len(rec.Messages()); got != 3 {
		t.Errorf("%d transactions after a backward jump and a restart, want 3", got)
	}
}

// TestClockJumpHolds: the wall clock leaps 30 days while the monotonic clock
// does not: the job is held, the hook is called, nothing leaves; Resume
// releases it.
func TestClockJumpHolds(t *testing.T) {
	db, _ := newDB(t)
	T := t0.Add(time.Hour)
	c := newClock(T.Add(-time.Hour))
	addSubscribers(t, db, 10, t0)
	rec := queuetest.NewRecorder(t)
	var held []string
	f := testFanout(t, db, recorderRelay(t, rec), c, func(o *Options) {
		o.Held = func(tx *bolt.Tx, j Job, reason string) error {
			held = append(held, j.ID+": "+reason)
			return nil
		}
	})
	startRelease(t, db, "SEC-2026-0004", advisory(t, announceKey(t), t0), T)
	drain(t, f)
	c.Advance(30 * time.Second)
	c.Jump(30 * 24 * time.Hour)
	drain(t, f)
	j := job(t, db, "SEC-2026-0004")
	if j.State != JobHeld || j.HeldFor != HoldClock || len(held) != 1 || !strings.Contains(held[0], "wall clock") {
		t.Fatalf("after a +30 d jump: state %s (%q), held %q", j.State, j.HeldFor, held)
	}
	if n := len(rec.Messages()); n != 0 {
		t.Fatalf("%d transactions while held", n)
	}
	// Later heartbeats do not release it either.
	c.Advance(time.Hour)
	drain(t, f)
	if job(t, db, "SEC-2026-0004").State != JobHeld || len(rec.Messages()) != 0 {
		t.Fatal("held job released without Resume")
	}
	if err := f.Resume("SEC-2026-0004"); err != nil {
		t.Fatal(err)
	}
	drain(t, f)
	if j := job(t, db, "SEC-2026-0004"); j.State != JobReleased || j.Sent != 10 || len(held) != 1 || j.Held != "" || j.HeldFor != "" {
		t.Fatalf("after Resume: %+v, holds %d", j, len(held))
	}
	// Only a held job resumes; the operator is told what it is instead.
	if err := f.Resume("SEC-2026-0004"); !errors.Is(err, ErrNotHeld) || !strings.Contains(err.Error(), "is released") {
		t.Errorf("Resume of a released job = %v, want ErrNotHeld naming its state", err)
	}
	if err := f.Resume("SEC-2026-0009"); !errors.Is(err, ErrNoJob) {
		t.Errorf("Resume of an unknown job = %v, want ErrNoJob", err)
	}
}

// TestJumpSmallerThanLimit: a 9-minute forward step (NTP, a slow clock put
// right) holds nothing.
func TestJumpSmallerThanLimit(t *testing.T) {
	db, _ := newDB(t)
	T := t0.Add(5 * time.Minute)
	c := newClock(t0)
	addSubscribers(t, db, 3, t0)
	rec := queuetest.NewRecorder(t)
	f := testFanout(t, db, recorderRelay(t, rec), c, nil)
	startRelease(t, db, "SEC-2026-0005", advisory(t, announceKey(t), t0), T)
	drain(t, f)
	c.Jump(9 * time.Minute)
	drain(t, f)
	if j := job(t, db, "SEC-2026-0005"); j.State != JobReleased {
		t.Fatalf("state %s, want released", j.State)
	}
}

// TestClockJumpWhileDown: the heartbeat persists across a restart. A
// worker that ran until T-70 s and restarts at T-10 s releases once at T;
// one whose last heartbeat is 2 h old at restart, with T inside the gap,
// holds the job (a long downtime and a jumped clock look the same).
func TestClockJumpWhileDown(t *testing.T) {
	T := t0.Add(time.Hour)
	for _, tc := range []struct {
		name      string
		lastBeat  time.Time // the first process ran until then
		restart   time.Time
		wantState JobState
		wantRcpts int
	}{
		{"restart at T-10s", T.Add(-70 * time.Second), T.Add(-10 * time.Second), JobScheduled, 5},
		{"restart 2 h after the last heartbeat", T.Add(-time.Hour), T.Add(time.Hour), JobHeld, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := t.TempDir() + "/embargo.db"
			db := openDB(t, path)
			c := newClock(T.Add(-time.Hour))
			addSubscribers(t, db, 5, t0)
			rec := queuetest.NewRecorder(t)
			startRelease(t, db, "SEC-2026-0006", advisory(t, announceKey(t), t0), T)
			f := testFanout(t, db, recorderRelay(t, rec), c, nil)
			for drain(t, f); c.Now().Before(tc.lastBeat); drain(t, f) {
				c.Advance(min(time.Minute, tc.lastBeat.Sub(c.Now())))
			}
			db.Close()

			// A new process: its monotonic clock starts again at zero.
			db = openDB(t, path)
			defer db.Close()
			c2 := newClock(tc.restart)
			f = testFanout(t, db, recorderRelay(t, rec), c2, nil)
			drain(t, f)
			if j := job(t, db, "SEC-2026-0006"); j.State != tc.wantState {
				t.Fatalf("after restart: %s, want %s (%s)", j.State, tc.wantState, j.Held)
			}
			c2.Advance(10 * time.Second)
			drain(t, f)
			if got := len(rcptCounts(rec.Messages())); got != tc.wantRcpts {
				t.Errorf("%d recipients served, want %d", got, tc.wantRcpts)
			}
			if got := len(rec.Messages()); tc.wantRcpts > 0 && got != 1 {
				t.Errorf("%d transactions, want 1", got)
			}
		})
	}
}

// TestPermanentRefusals: a recipient refused with 550 at RCPT counts one
// bounce per release (not per attempt) and is disabled at the third.
func TestPermanentRefusals(t *testing.T) {
	db, _ := newDB(t)
	c := newClock(t0)
	addrs := addSubscribers(t, db, 5, t0)
	rec := queuetest.NewRecorder(t)
	rec.FailRcpt(addrs[2], 550)
	f := testFanout(t, db, recorderRelay(t, rec), c, nil)
	for i, id := range []string{"r1", "r2", "r3", "r4"} {
		c.Advance(time.Minute)
		startRelease(t, db, id, advisory(t, announceKey(t), t0), c.Now())
		drain(t, f)
		j := job(t, db, id)
		if j.State != JobReleased {
			t.Fatalf("%s: %+v", id, j)
		}
		s, _ := subscriber(t, db, addrs[2])
		switch i {
		case 0, 1:
			if s.State != StateActive || s.Bounces != i+1 || j.Refused != 1 || j.Sent != 4 {
				t.Errorf("%s: subscriber %+v, job sent %d refused %d", id, s, j.Sent, j.Refused)
			}
		case 2:
			if s.State != StateDisabled || s.Bounces != 3 {
				t.Errorf("%s: subscriber %+v, want disabled", id, s)
			}
		case 3:
			if j.Total != 4 || j.Refused != 0 || j.Sent != 4 {
				t.Errorf("%s after disabling: %+v", id, j)
			}
		}
	}
	if got := len(rec.Refused()); got != 3 {
		t.Errorf("the refused address was tried %d times, want 3", got)
	}
	// A resent batch (after a crash) does not count twice.
	db.Update(func(tx *bolt.Tx) error {
		b, _ := open(tx)
		Activate(tx, addrs[0], c.Now(), Options{List: testList})
		for range 2 {
			if _, err := b.bounce(addrs[0], "r9", Options{}.withDefaults()); err != nil {
				t.Fatal(err)
			}
		}
		return nil
	})
	if s, _ := subscriber(t, db, addrs[0]); s.Bounces != 1 {
		t.Errorf("same release counted %d times", s.Bounces)
	}
}

// TestTemporaryRefusalRetried: a 450 for one recipient puts it in the
// retry set; it is retried alone later, the others get one copy.
func TestTemporaryRefusalRetried(t *testing.T) {
	db, _ := newDB(t)
	c := newClock(t0)
	addrs := addSubscribers(t, db, 30, t0)
	rec := queuetest.NewRecorder(t)
	rec.FailRcpt(addrs[7], 450)
	f := testFanout(t, db, recorderRelay(t, rec), c, func(o *Options) { o.BatchSize = 10 })
	startRelease(t, db, "SEC-2026-0007", advisory(t, announceKey(t), t0), t0)
	drain(t, f)
	j := job(t, db, "SEC-2026-0007")
	if j.State != JobReleasing || j.Deferred != 1 || j.Sent != 29 || j.Cursor != j.UpTo {
		t.Fatalf("after the walk: %+v", j)
	}
	if n := len(rec.Messages()); n != 3 {
		t.Fatalf("%d transactions, want 3 (no batch sent twice)", n)
	}
	// Not due yet; then still failing; then accepted.
	c.Advance(30 * time.Second)
	drain(t, f)
	c.Advance(time.Minute)
	drain(t, f)
	if got := len(rec.Refused()); got != 2 {
		t.Errorf("%d attempts for the deferred address, want 2", got)
	}
	rec.FailRcpt(addrs[7], 0)
	c.Advance(2 * time.Minute)
	drain(t, f)
	msgs := rec.Messages()
	last := msgs[len(msgs)-1]
	if len(msgs) != 4 || len(last.To) != 1 || last.To[0] != addrs[7] {
		t.Fatalf("retry transaction = %v (of %d), want only %s", last.To, len(msgs), addrs[7])
	}
	if j := job(t, db, "SEC-2026-0007"); j.State != JobReleased || j.Sent != 30 || j.Deferred != 0 {
		t.Errorf("after the retry: %+v", j)
	}
	for a, n := range rcptCounts(msgs) {
		if n != 1 {
			t.Errorf("%s: %d copies", a, n)
		}
	}
}

// TestRetryExpires: a recipient that keeps failing temporarily is given up
// after RetryLifetime, and the release completes.
func TestRetryExpires(t *testing.T) {
	db, _ := newDB(t)
	c := newClock(t0)
	addrs := addSubscribers(t, db, 3, t0)
	rec := queuetest.NewRecorder(t)
	rec.FailRcpt(addrs[1], 421)
	f := testFanout(t, db, recorderRelay(t, rec), c, func(o *Options) { o.RetryLifetime = 3 * time.Hour })
	startRelease(t, db, "r", advisory(t, announceKey(t), t0), t0)
	for range 10 {
		drain(t, f)
		c.Advance(time.Hour)
	}
	if j := job(t, db, "r"); j.State != JobReleased || j.Expired != 1 || j.Sent != 2 {
		t.Errorf("job = %+v", j)
	}
	if s, _ := subscriber(t, db, addrs[1]); s.Bounces != 0 {
		t.Error("temporary failures counted as bounces")
	}
}

// TestRelayRefusesMessage: a 554 after DATA concerns the message, not the
// recipients: the job is held with an alert, the cursor stays, nobody's
// bounce count moves.
func TestRelayRefusesMessage(t *testing.T) {
	db, _ := newDB(t)
	c := newClock(t0)
	addrs := addSubscribers(t, db, 20, t0)
	rec := queuetest.NewRecorder(t)
	rec.FailData(554)
	var reasons []string
	f := testFanout(t, db, recorderRelay(t, rec), c, func(o *Options) {
		o.Held = func(_ *bolt.Tx, _ Job, r string) error { reasons = append(reasons, r); return nil }
	})
	startRelease(t, db, "r", advisory(t, announceKey(t), t0), t0)
	drain(t, f)
	j := job(t, db, "r")
	if j.State != JobHeld || j.HeldFor != HoldRelay || j.Cursor != 0 || len(reasons) != 1 || !strings.Contains(reasons[0], "554") {
		t.Fatalf("job %+v, reasons %q", j, reasons)
	}
	if s, _ := subscriber(t, db, addrs[0]); s.Bounces != 0 {
		t.Error("a refused message counted as a bounce")
	}
	rec.FailData(0)
	if err := f.Resume("r"); err != nil {
		t.Fatal(err)
	}
	drain(t, f)
	if j := job(t, db, "r"); j.State != JobReleased || j.Sent != 20 {
		t.Errorf("after Resume: %+v", j)
	}
}

// TestTemporaryRelayFailure: the relay is down; the batch waits and is
// sent whole once it is back, the cursor never skips it.
func TestTemporaryRelayFailure(t *testing.T) {
	db, _ := newDB(t)
	c := newClock(t0)
	addSubscribers(t, db, 20, t0)
	rec := queuetest.NewRecorder(t)
	down := &flakyRelay{next: recorderRelay(t, rec)}
	down.fail.Store(true)
	f := testFanout(t, db, down, c, nil)
	startRelease(t, db, "r", advisory(t, announceKey(t), t0), t0)
	drain(t, f)
	if j := job(t, db, "r"); j.State != JobReleasing || j.Cursor != 0 || j.LastError == "" {
		t.Fatalf("relay down: %+v", j)
	}
	down.fail.Store(false)
	c.Advance(time.Minute)
	drain(t, f)
	if j := job(t, db, "r"); j.State != JobReleased || j.Sent != 20 || j.LastError != "" {
		t.Fatalf("relay back: %+v", j)
	}
}

type flakyRelay struct {
	next queue.Relay
	fail atomic.Bool
}

func (r *flakyRelay) Send(ctx context.Context, from string, to []string, data []byte) error {
	if r.fail.Load() {
		return errors.New("dial tcp: connection refused")
	}
	return r.next.Send(ctx, from, to, data)
}

// TestUnsignedReleaseHeld: a message the announce key did not sign never
// leaves.
func TestUnsignedReleaseHeld(t *testing.T) {
	other, err := keys.GenerateListKey("Other", "other@example.org", keys.Options{Now: func() time.Time { return t0.Add(-time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	db, _ := newDB(t)
	c := newClock(t0)
	addSubscribers(t, db, 2, t0)
	rec := queuetest.NewRecorder(t)
	f := testFanout(t, db, recorderRelay(t, rec), c, nil)
	startRelease(t, db, "r", advisory(t, other, t0), t0)
	drain(t, f)
	if j := job(t, db, "r"); j.State != JobHeld || j.HeldFor != HoldMessage || !strings.Contains(j.Held, "not signed") || len(rec.Messages()) != 0 {
		t.Errorf("job %+v, %d transactions", j, len(rec.Messages()))
	}
}

// TestOneClick: with OneClick, each copy has its own transaction and its
// own RFC 8058 URI, the signed body is the same, and the URI unsubscribes.
func TestOneClick(t *testing.T) {
	db, _ := newDB(t)
	c := newClock(t0)
	addrs := addSubscribers(t, db, 12, t0)
	rec := queuetest.NewRecorder(t)
	f := testFanout(t, db, recorderRelay(t, rec), c, func(o *Options) {
		o.OneClick, o.OneClickBase, o.BatchSize = true, "https://security.example.org/", 5
	})
	startRelease(t, db, "r", advisory(t, announceKey(t), t0), t0)
	drain(t, f)
	msgs := rec.Messages()
	if len(msgs) != 12 {
		t.Fatalf("%d transactions, want 12", len(msgs))
	}
	tokens := map[string]bool{}
	var body []byte
	for _, m := range msgs {
		if len(m.To) != 1 {
			t.Fatalf("a one-click copy with %d RCPTs", len(m.To))
		}
		if headerOf(m.Data, "List-Unsubscribe-Post") != "List-Unsubscribe=One-Click" {
			t.Error("no List-Unsubscribe-Post")
		}
		lu := headerOf(m.Data, "List-Unsubscribe")
		u, _, ok := strings.Cut(strings.TrimPrefix(lu, "<https://security.example.org/unsubscribe/"), ">")
		if !ok || !validToken(u) || !strings.Contains(lu, "mailto:announce+unsubscribe@example.org") {
			t.Fatalf("List-Unsubscribe = %q", lu)
		}
		tokens[u] = true
		b := m.Data[bytes.Index(m.Data, []byte("List-Id:")):]
		if body == nil {
			body = b
		} else if !bytes.Equal(b, body) {
			t.Error("copies differ beyond List-Unsubscribe")
		}
		if _, err := keys.Verify(m.Data, keys.NewKeyring(announceKey(t)), keys.Options{Now: c.Now}); err != nil {
			t.Errorf("copy does not verify: %v", err)
		}
		if m.To[0] == addrs[3] {
			if err := db.Update(func(tx *bolt.Tx) error { return Unsubscribe(tx, u, c.Now()) }); err != nil {
				t.Errorf("Unsubscribe(copy's token) = %v", err)
			}
		}
	}
	if len(tokens) != 12 {
		t.Errorf("%d distinct tokens, want 12", len(tokens))
	}
	if _, ok := subscriber(t, db, addrs[3]); ok {
		t.Error("the one-click URI did not unsubscribe")
	}
	if j := job(t, db, "r"); j.State != JobReleased || j.Transactions != 12 || j.Sent != 12 {
		t.Errorf("job %+v", j)
	}
}

// TestReleaseAdapter: Fanout.Release (the listd.Announcer) stores the job
// with the release's bounce address and reports the subscriber count.
func TestReleaseAdapter(t *testing.T) {
	db, _ := newDB(t)
	c := newClock(t0)
	addSubscribers(t, db, 7, t0)
	f := testFanout(t, db, nil, c, nil)
	var n int
	if err := db.Update(func(tx *bolt.Tx) (err error) {
		n, err = f.Release(tx, "SEC-2026-0009", advisory(t, announceKey(t), t0), t0.Add(-time.Hour))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	j := job(t, db, "sec-2026-0009")
	if n != 7 || j.From != "announce+bounces-sec-2026-0009@example.org" || !j.At.Equal(t0) || j.State != JobScheduled {
		t.Errorf("Release = %d, job %+v", n, j)
	}
	err := db.Update(func(tx *bolt.Tx) error {
		_, err := f.Release(tx, "sec-2026-0009", advisory(t, announceKey(t), t0), t0)
		return err
	})
	if !errors.Is(err, ErrJobExists) {
		t.Errorf("second Release = %v, want ErrJobExists", err)
	}
	other, err := keys.GenerateListKey("Other", "other@example.org", keys.Options{Now: func() time.Time { return t0.Add(-time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		_, err := f.Release(tx, "SEC-2026-0010", advisory(t, other, t0), t0)
		return err
	})
	if !errors.Is(err, ErrBadJob) {
		t.Errorf("Release(message signed by another key) = %v, want ErrBadJob", err)
	}
	for _, bad := range []string{"", "a b", "../x", strings.Repeat("x", 41)} {
		if err := db.Update(func(tx *bolt.Tx) error { return StartRelease(tx, bad, "b@example.org", []byte("x\r\n\r\ny\r\n"), t0) }); !errors.Is(err, ErrBadJob) {
			t.Errorf("StartRelease(%q) = %v", bad, err)
		}
	}
}

// TestSubscribersAfterStart: a release covers the subscribers active when
// it starts; one who joins meanwhile waits for the next.
func TestSubscribersAfterStart(t *testing.T) {
	db, _ := newDB(t)
	c := newClock(t0)
	addSubscribers(t, db, 10, t0)
	var mu sync.Mutex
	rec := queuetest.NewRecorder(t)
	joined := false
	relay := relayFunc(func(ctx context.Context, from string, to []string, data []byte) error {
		mu.Lock()
		defer mu.Unlock()
		if !joined {
			joined = true
			db.Update(func(tx *bolt.Tx) error { return Activate(tx, "late@example.net", c.Now(), Options{List: testList}) })
		}
		return recorderRelay(t, rec).Send(ctx, from, to, data)
	})
	f := testFanout(t, db, relay, c, func(o *Options) { o.BatchSize = 3 })
	startRelease(t, db, "r", advisory(t, announceKey(t), t0), t0)
	drain(t, f)
	if n := rcptCounts(rec.Messages())["late@example.net"]; n != 0 || job(t, db, "r").Sent != 10 {
		t.Errorf("late subscriber got %d copies", n)
	}
}

type relayFunc func(ctx context.Context, from string, to []string, data []byte) error

func (f relayFunc) Send(ctx context.Context, from string, to []string, data []byte) error {
	return f(ctx, from, to, data)
}

// TestWallClockOnly: Options.Now must strip the monotonic reading, or a
// comparison of two wall times would measure monotonic time and never see
// a jump.
func TestWallClockOnly(t *testing.T) {
	now := Options{}.withDefaults().Now()
	if strings.Contains(now.String(), "m=") {
		t.Errorf("Now() = %s carries a monotonic reading", now)
	}
	if strings.Contains(Options{Now: time.Now}.withDefaults().Now().String(), "m=") {
		t.Error("a caller's time.Now is not stripped")
	}
}

// TestRecordFailureNoResend: when the store refuses the outcome of a
// delivered batch, the worker records it again later instead of sending
// the batch again.
func TestRecordFailureNoResend(t *testing.T) {
	db, _ := newDB(t)
	c := newClock(t0)
	addSubscribers(t, db, 20, t0)
	rec := queuetest.NewRecorder(t)
	rec.FailData(554) // the outcome holds the job: the Held hook runs in record's Update
	fail := true
	f := testFanout(t, db, recorderRelay(t, rec), c, func(o *Options) {
		o.Held = func(*bolt.Tx, Job, string) error {
			if fail {
				return errors.New("alert queue full")
			}
			return nil
		}
	})
	startRelease(t, db, "r", advisory(t, announceKey(t), t0), t0)
	var err error
	for i := 0; i < 10 && err == nil; i++ { // send, then record
		_, err = f.step(context.Background())
	}
	if err == nil {
		t.Fatal("steps with a failing hook succeeded")
	}
	rec.FailData(0)
	fail = false
	drain(t, f)
	if j := job(t, db, "r"); j.State != JobHeld {
		t.Fatalf("job %+v, want held by the recorded outcome", j)
	}
	if n := len(rec.Messages()); n != 0 {
		t.Errorf("%d transactions after the failed record, want 0 (no resend)", n)
	}
}
