package queue

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/internal/pipeline"
	"github.com/embargo-project/embargo/smtpd"
)

// sinkHandler is an smtpd.Handler that takes every recipient and counts the
// messages.
type sinkHandler struct {
	mu   sync.Mutex
	msgs int
}

func (h *sinkHandler) Recipient(context.Context, string, string) error { return nil }
func (h *sinkHandler) Handle(context.Context, smtpd.Envelope, []byte) error {
	h.mu.Lock()
	h.msgs++
	h.mu.Unlock()
	return nil
}

func (h *sinkHandler) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.msgs
}

// startListener runs embargo's own SMTP listener (smtpd) on loopback.
func startListener(t *testing.T) (*sinkHandler, string) {
	t.Helper()
	h := &sinkHandler{}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := smtpd.New(smtpd.Options{Domain: "mx.embargo.test"}, h, nil)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return h, l.Addr().String()
}

// TestRelayLoopToOwnListener: a relay URL that leads to this process's own
// listener (a real smtpd on loopback, whose EHLO reply carries
// smtpd.InstanceToken) fails every connection with pipeline.ErrLoop,
// temporarily: nothing is delivered, the rows stay queued for the retry and
// the expiry alert, no hook fires, and the relay reports the loop once, not
// per row (docs/threat-model.md B9). A listener whose token differs is
// another embargo, and takes the mail.
func TestRelayLoopToOwnListener(t *testing.T) {
	for _, tc := range []struct {
		name     string
		instance string
		loop     bool
	}{
		{"own listener", smtpd.InstanceToken(), true},
		{"another instance", strings.Repeat("0", 24), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, addr := startListener(t)
			var loops atomic.Int32
			var loopErr atomic.Value
			relay, err := NewRelay("smtp://"+addr, RelayOptions{
				HeloName: "embargo.test", CommandTimeout: 5 * time.Second, Instance: tc.instance,
				Loop: func(err error) { loops.Add(1); loopErr.Store(err) },
			})
			if err != nil {
				t.Fatal(err)
			}
			db := tempDB(t)
			hook := &hookRecorder{}
			w := start(t, db, relay, Options{Failed: hook.Failed})
			ids := enqueueNow(t, db, time.Now(), testMsg(1), testMsg(2), testMsg(3))
			w.Kick()
			if !tc.loop {
				waitUntil(t, "delivery", emptyQueue(t, db))
				if n := h.count(); n != 3 {
					t.Errorf("listener took %d messages, want 3", n)
				}
				if n := loops.Load(); n != 0 {
					t.Errorf("Loop called %d times, want 0", n)
				}
				return
			}
			// deferred: every row queued again after one failed attempt
			// that began after since.
			deferred := func(since time.Time) func() bool {
				return func() bool {
					for _, id := range ids {
						r, _ := getRow(t, db, id)
						if r.Attempts != 1 || r.State != StateQueued || !r.LastAttempt.After(since) {
							return false
						}
					}
					return true
				}
			}
			waitUntil(t, "a deferred attempt of every row", deferred(time.Time{}))
			// A second round (Retry makes the rows due at once and counts
			// afresh), on new connections: still reported once.
			second := time.Now()
			for _, id := range ids {
				if err := w.Retry(id); err != nil {
					t.Fatal(err)
				}
			}
			waitUntil(t, "a second deferred attempt of every row", deferred(second))
			for _, id := range ids {
				r, err := getRow(t, db, id)
				if err != nil || !strings.Contains(r.LastError, "mail would loop") {
					t.Errorf("row %d: LastError = %q (%v), want the loop named", id, r.LastError, err)
				}
			}
			if n := h.count(); n != 0 {
				t.Errorf("listener took %d messages, want 0", n)
			}
			if n := len(hook.Calls()); n != 0 {
				t.Errorf("Failed hook called %d times, want 0: the rows stay queued", n)
			}
			if n := loops.Load(); n != 1 {
				t.Errorf("Loop called %d times for 3 rows tried twice, want once", n)
			}
			if err, _ := loopErr.Load().(error); !errors.Is(err, pipeline.ErrLoop) || IsPermanent(err) {
				t.Errorf("Loop's error = %v, want pipeline.ErrLoop, temporary", err)
			}
		})
	}
}
