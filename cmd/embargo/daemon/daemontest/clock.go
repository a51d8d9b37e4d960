package daemontest

import (
	"sync"
	"time"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
)

// Clock is a virtual clock for the daemon (daemon.Options Now and Mono):
// it stands at the instant it was set to (NewClock), or runs from it at the
// wall clock's pace (RunningClock). Mono moves with Now, so the tick's and
// the announce fan-out's clock-jump guards see no jump when a test moves it
// on.
type Clock struct {
	mu    sync.Mutex
	at    time.Time // the virtual instant at since
	since time.Time // the real instant of the last Set; zero: standing
}

// NewClock is a clock standing at at until Set.
func NewClock(at time.Time) *Clock { return &Clock{at: at} }

// RunningClock is a clock that shows at now and runs on from there: a
// replay of mail signed at at sees the signatures as fresh as they were.
func RunningClock(at time.Time) *Clock { return &Clock{at: at, since: time.Now()} }

// Now is the virtual instant.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.since.IsZero() {
		return c.at
	}
	return c.at.Add(time.Since(c.since))
}

// Mono is the time elapsed since a fixed origin on the virtual clock.
func (c *Clock) Mono() time.Duration {
	return c.Now().Sub(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC))
}

// Set moves the clock to at; a running clock runs on from there.
func (c *Clock) Set(at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.at = at
	if !c.since.IsZero() {
		c.since = time.Now()
	}
}

// Options returns o on this clock.
func (c *Clock) Options(o daemon.Options) daemon.Options {
	o.Now, o.Mono = c.Now, c.Mono
	return o
}
