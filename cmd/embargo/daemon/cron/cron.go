// Package cron is embargo's tick: it calls a function once a minute, in UTC,
// and knows nothing of incidents. The schedule itself lives in the store
// (docs/design.md §1; docs/dependencies.md §4): each tick reads the persisted deadlines and
// markers and decides what is due, so a restart loses nothing and a missed
// minute is caught up by the next tick. robfig/cron is used as the tick only:
//
//   - in UTC (cron.WithLocation: its default is time.Local);
//   - with cron.Recover, because its default chain does not recover panics
//     and a panicking job would kill the daemon;
//   - with cron.SkipIfStillRunning: a sweep that takes longer than a minute
//     is never run twice at once; the next tick catches up.
//
// It has no clock of its own to inject: tests run it inside
// testing/synctest, whose fake clock robfig/cron's timers follow, and the
// time handed to the function comes from Options.Now.
package cron

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	rcron "github.com/robfig/cron/v3"
)

// EveryMinute is the default schedule.
const EveryMinute = "* * * * *"

// Func is the work of one tick. now comes from Options.Now, in UTC; ctx is
// done when the ticker stops, and a long sweep should check it.
type Func func(ctx context.Context, now time.Time)

// Options configures Run. The zero value ticks every minute on the wall clock.
type Options struct {
	// Spec is a standard five-field cron spec or a descriptor ("@every 10s",
	// "@hourly"), evaluated in UTC. Default EveryMinute.
	Spec string
	// Now is the clock handed to Func. Default time.Now.
	Now func() time.Time
	// AtStart runs Func once as soon as Run starts, before the first
	// scheduled tick: after a restart, what fell due while the daemon was
	// down goes out at once rather than up to a minute later.
	AtStart bool
	// Logger receives panics (with their stack, never the panic value, which
	// could quote a message) and skipped ticks.
	Logger *slog.Logger
}

// ErrSpec is returned for a schedule that does not parse.
var ErrSpec = errors.New("cron: bad schedule")

// Run ticks until ctx is done, then waits for a tick in progress to finish
// and returns nil. It returns an error only for a bad Spec.
func Run(ctx context.Context, o Options, f Func) error {
	if o.Spec == "" {
		o.Spec = EveryMinute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := logger{log}
	c := rcron.New(
		rcron.WithLocation(time.UTC),
		rcron.WithLogger(l),
		// Skip outside Recover: a panic inside Skip's wrapper would never give
		// its semaphore back, and every later tick would be skipped.
		rcron.WithChain(rcron.SkipIfStillRunning(l), rcron.Recover(l)),
	)
	id, err := addFunc(c, o.Spec, func() { f(ctx, o.Now().UTC()) })
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	if o.AtStart {
		// The wrapped job shares the chain's skip semaphore and recovery.
		job := c.Entry(id).WrappedJob
		wg.Add(1)
		go func() {
			defer wg.Done()
			job.Run()
		}()
	}
	c.Start()
	<-ctx.Done()
	<-c.Stop().Done()
	wg.Wait()
	return nil
}

// addFunc parses spec; robfig/cron panics on some malformed specs
// ("CRON_TZ=UTC" alone, docs/dependencies.md §4), which is an error here.
func addFunc(c *rcron.Cron, spec string, f func()) (id rcron.EntryID, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w %q", ErrSpec, spec)
		}
	}()
	id, err = c.AddFunc(spec, f)
	if err != nil {
		return 0, fmt.Errorf("%w %q: %v", ErrSpec, spec, err)
	}
	return id, nil
}

// logger adapts slog to robfig/cron's Logger.
type logger struct{ l *slog.Logger }

func (l logger) Info(msg string, kv ...any) {
	if msg == "skip" {
		l.l.Warn("tick skipped: the previous one is still running")
	}
	// start, stop, schedule, wake, run: routine, once a minute; not logged.
}

func (l logger) Error(err error, msg string, kv ...any) {
	if msg == "panic" {
		// kv is "stack", the goroutine's stack: function names and lines.
		l.l.Error("panic in a tick; recovered", kv...)
		return
	}
	l.l.Error("cron: "+msg, append([]any{"err", err}, kv...)...)
}
