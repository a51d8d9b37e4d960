package queue

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue/queuetest"
)

// openDB opens (or reopens) a bbolt file with the queue's buckets. NoSync is
// for unit tests only; nothing here simulates power loss.
func openDB(t testing.TB, path string) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, NoSync: true})
	if err != nil {
		t.Fatalf("bolt.Open: %v", err)
	}
	if err := db.Update(Init); err != nil {
		t.Fatalf("Init: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func tempDB(t testing.TB) *bolt.DB {
	t.Helper()
	return openDB(t, filepath.Join(t.TempDir(), "embargo.db"))
}

// fakeClock is an injectable clock; tests move it and Kick the worker.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// running is a Worker started in the background.
type running struct {
	*Worker
	cancel context.CancelFunc
	done   chan error
}

func start(t testing.TB, db *bolt.DB, relay Relay, opts Options) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Worker: New(db, relay, opts), cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- r.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop cancels Run and waits for it; safe to call twice.
func (r *running) stop(t testing.TB) {
	t.Helper()
	r.cancel()
	select {
	case err, ok := <-r.done:
		if ok && err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
		if ok {
			close(r.done)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("Run did not return after cancel")
	}
}

// waitUntil polls cond; the worker's outcome is in bbolt, so tests watch it there.
func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func listRows(t testing.TB, db *bolt.DB) []Row {
	t.Helper()
	var rows []Row
	if err := db.View(func(tx *bolt.Tx) error {
		var err error
		rows, err = List(tx)
		return err
	}); err != nil {
		t.Fatalf("List: %v", err)
	}
	return rows
}

func getRow(t testing.TB, db *bolt.DB, id uint64) (Row, error) {
	t.Helper()
	var r Row
	err := db.View(func(tx *bolt.Tx) error {
		var err error
		r, err = Get(tx, id)
		return err
	})
	return r, err
}

func emptyQueue(t testing.TB, db *bolt.DB) func() bool {
	return func() bool { return len(listRows(t, db)) == 0 }
}

// enqueue commits msgs in one Update and returns their IDs.
func enqueueNow(t testing.TB, db *bolt.DB, now time.Time, msgs ...Msg) []uint64 {
	t.Helper()
	var ids []uint64
	if err := db.Update(func(tx *bolt.Tx) error {
		var err error
		ids, err = enqueue(tx, now, msgs)
		return err
	}); err != nil {
		t.Fatalf("Enqueue: %v", err)
	}
	return ids
}

// testMsg is a canonical message: CRLF lines, a line that needs dot-stuffing,
// 8-bit text, and a stable Message-ID.
func testMsg(n int, to ...string) Msg {
	if len(to) == 0 {
		to = []string{"member@src.test"}
	}
	id := fmt.Sprintf("<%d.test@embargo.test>", n)
	data := "From: security@embargo.test\r\n" +
		"To: " + to[0] + "\r\n" +
		"Subject: [SEC-2026-0001] copy\r\n" +
		"Message-ID: " + id + "\r\n" +
		"Date: Mon, 23 Nov 2026 09:00:00 +0000\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n" +
		"\r\n" +
		"Line one.\r\n" +
		".a line that starts with a dot\r\n" +
		".\r\n" +
		"Grüße\r\n"
	return Msg{
		From:      "security-bounces@embargo.test",
		To:        to,
		Data:      []byte(data),
		MessageID: id,
		Kind:      "report-copy",
		Incident:  "SEC-2026-0001",
	}
}

// smtpRelayTo is a plain relay to the recorder.
func smtpRelayTo(t testing.TB, rec *queuetest.Recorder) Relay {
	t.Helper()
	relay, err := NewRelay(rec.URL("", ""), RelayOptions{HeloName: "embargo.test", CommandTimeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("NewRelay: %v", err)
	}
	return relay
}

// relayFunc adapts a function to Relay.
type relayFunc func(ctx context.Context, from string, to []string, data []byte) error

func (f relayFunc) Send(ctx context.Context, from string, to []string, data []byte) error {
	return f(ctx, from, to, data)
}

// hookCall is one call of Options.Failed.
type hookCall struct {
	row      Row
	reason   string
	writable bool
}

// hookRecorder records Options.Failed calls.
type hookRecorder struct {
	mu    sync.Mutex
	calls []hookCall
}

func (h *hookRecorder) Failed(tx *bolt.Tx, r Row, reason string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls = append(h.calls, hookCall{row: r, reason: reason, writable: tx.Writable()})
	return nil
}

func (h *hookRecorder) Calls() []hookCall {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]hookCall(nil), h.calls...)
}
