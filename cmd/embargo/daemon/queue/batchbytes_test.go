package queue

import (
	"bytes"
	"context"
	"sync"
	"testing"
)

// batchRecorder is a BatchRelay that accepts everything and notes the total
// size of each batch it is handed.
type batchRecorder struct {
	mu      sync.Mutex
	batches [][2]int // copies and bytes of message data per SendBatch
	sent    int
}

func (b *batchRecorder) Send(ctx context.Context, from string, to []string, data []byte) error {
	return b.SendBatch(ctx, []Outgoing{{From: from, To: to, Data: data}})[0]
}

func (b *batchRecorder) MaxBatch() int { return 8 }

func (b *batchRecorder) SendBatch(_ context.Context, msgs []Outgoing) []error {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, m := range msgs {
		n += len(m.Data)
	}
	b.batches = append(b.batches, [2]int{len(msgs), n})
	b.sent += len(msgs)
	return make([]error, len(msgs))
}

func (b *batchRecorder) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sent
}

// TestBatchBytes: a backlog of large copies is not prepared a whole batch at
// once — a batch holds at most batchBytes of them (one copy when a copy
// alone is near the bound) — while small copies still share batches.
func TestBatchBytes(t *testing.T) {
	db := tempDB(t)
	now := newClock().Now()
	big := func(n int) Msg {
		m := testMsg(n)
		m.Data = append(m.Data, bytes.Repeat([]byte("0123456789abcdef\r\n"), (3<<20)/18)...)
		return m
	}
	var msgs []Msg
	for i := range 6 {
		msgs = append(msgs, big(i))
	}
	for i := range 40 {
		msgs = append(msgs, testMsg(100+i))
	}
	enqueueNow(t, db, now, msgs...)
	rec := &batchRecorder{}
	start(t, db, rec, Options{Concurrency: 1})
	waitUntil(t, "every copy sent", func() bool { return rec.count() == len(msgs) })
	rec.mu.Lock()
	defer rec.mu.Unlock()
	shared := false
	for _, b := range rec.batches {
		if b[0] > 1 && b[1] > batchBytes {
			t.Errorf("a batch of %d copies, %d bytes: want at most %d bytes unless it is one copy", b[0], b[1], batchBytes)
		}
		shared = shared || b[0] > 1
	}
	if !shared {
		t.Errorf("copies never shared a batch: %v", rec.batches)
	}
}
