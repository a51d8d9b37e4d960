package cron

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// TestEveryMinute: on synctest's fake clock (which starts 2000-01-01 00:00
// UTC), ten minutes give ten ticks, each at a whole minute, plus the one at
// start; stopping waits for the tick in progress.
func TestEveryMinute(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		ctx, cancel := context.WithCancel(t.Context())
		var mu sync.Mutex
		var got []time.Time
		done := make(chan error)
		go func() {
			done <- Run(ctx, Options{AtStart: true}, func(_ context.Context, now time.Time) {
				mu.Lock()
				got = append(got, now)
				mu.Unlock()
			})
		}()
		time.Sleep(10*time.Minute + 30*time.Second)
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if len(got) != 11 {
			t.Fatalf("ticks = %d, want 11 (one at start, then one a minute): %v", len(got), got)
		}
		if !got[0].Equal(start) {
			t.Errorf("first tick at %v, want at start %v", got[0], start)
		}
		for i, g := range got[1:] {
			if want := start.Add(time.Duration(i+1) * time.Minute); !g.Equal(want) || g.Location() != time.UTC {
				t.Errorf("tick %d at %v, want %v UTC", i+1, g, want)
			}
		}
	})
}

// TestNowOption: the time handed to the function is Options.Now's, not the
// scheduler's (the drill and the daemon's tests run on a virtual clock).
func TestNowOption(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		virtual := time.Date(2026, 11, 23, 9, 0, 0, 0, time.FixedZone("X", 3600))
		ctx, cancel := context.WithCancel(t.Context())
		var got atomic.Value
		go Run(ctx, Options{Now: func() time.Time { return virtual }}, func(_ context.Context, now time.Time) { got.Store(now) })
		time.Sleep(time.Minute + time.Second)
		cancel()
		synctest.Wait()
		if g, _ := got.Load().(time.Time); !g.Equal(virtual) || g.Location() != time.UTC {
			t.Errorf("now = %v, want %v in UTC", g, virtual)
		}
	})
}

// TestPanicRecovered: a panicking tick is logged (stack only, never the panic
// value) and the next tick still runs.
func TestPanicRecovered(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var logs bytes.Buffer
		var mu sync.Mutex
		ctx, cancel := context.WithCancel(t.Context())
		var n atomic.Int32
		go Run(ctx, Options{Logger: slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &mu}, nil))}, func(context.Context, time.Time) {
			if n.Add(1) == 1 {
				panic("SECRET-SUBJECT")
			}
		})
		time.Sleep(3*time.Minute + time.Second)
		cancel()
		synctest.Wait()
		if n.Load() != 3 {
			t.Errorf("ticks = %d, want 3: a panic must not stop the ticker", n.Load())
		}
		mu.Lock()
		defer mu.Unlock()
		if s := logs.String(); !strings.Contains(s, "panic in a tick") || strings.Contains(s, "SECRET-SUBJECT") {
			t.Errorf("log:\n%s", s)
		}
	})
}

// TestSlowTickSkipped: a tick that outlasts a minute is not run twice at
// once; Run's return waits for it.
func TestSlowTickSkipped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		var running, most, n atomic.Int32
		done := make(chan struct{})
		go func() {
			Run(ctx, Options{}, func(context.Context, time.Time) {
				if r := running.Add(1); r > most.Load() {
					most.Store(r)
				}
				n.Add(1)
				time.Sleep(150 * time.Second)
				running.Add(-1)
			})
			close(done)
		}()
		time.Sleep(6*time.Minute + time.Second)
		cancel()
		<-done
		if most.Load() != 1 || running.Load() != 0 {
			t.Errorf("at most %d ticks ran at once, %d still running after Run returned", most.Load(), running.Load())
		}
		if n.Load() != 2 { // minutes 1 and 4 (2, 3, 5, 6 skipped while one runs)
			t.Errorf("ticks = %d, want 2", n.Load())
		}
	})
}

func TestBadSpec(t *testing.T) {
	for _, spec := range []string{"CRON_TZ=UTC", "* * *", "0 0 0 * * * *"} {
		if err := Run(t.Context(), Options{Spec: spec}, func(context.Context, time.Time) {}); !errors.Is(err, ErrSpec) {
			t.Errorf("Run(%q) = %v, want ErrSpec", spec, err)
		}
	}
}

type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
