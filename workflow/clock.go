package workflow

import "time"

// MaxClockJump is how far the wall clock may run ahead of the monotonic
// clock between two heartbeats before what it made due is held
// (docs/threat-model.md G4).
const MaxClockJump = 10 * time.Minute

// ClockCheck tells a wall clock that jumped forward from one that moved with
// time (docs/threat-model.md G4): the scheduler's tick and the announce
// fan-out each keep one. The caller stores a heartbeat (the wall clock of
// its last check) and, just after a start, passes the stored one to Check;
// ClockCheck remembers the heartbeat this process wrote, with the monotonic
// clock of that moment. Both clocks come in as arguments.
type ClockCheck struct {
	// Max is the largest forward gap accepted; zero means MaxClockJump.
	Max time.Duration

	beat  time.Time     // the wall clock of the last heartbeat this process wrote
	mono  time.Duration // the monotonic clock then
	local bool          // beat and mono are set
}

// Check compares the wall clock now and the monotonic clock mono with the
// last heartbeat. After a Beat, the wall clock may run at most Max ahead of
// that heartbeat plus the monotonic time since. Before one (just after a
// start), persisted is the last heartbeat stored, zero for none: a gap of
// more than Max since then cannot be told from a jump (the daemon may have
// been down), and counts as one.
//
// jumpFrom is the instant after which the wall clock cannot be trusted, zero
// when it can: what falls due after it waits until people confirm the time.
// back is how far the wall clock went back against the monotonic clock,
// when that is more than Max (nothing falls due early that way; it is
// worth a log line).
func (c *ClockCheck) Check(now time.Time, mono time.Duration, persisted time.Time) (jumpFrom time.Time, back time.Duration) {
	// Wall clock only: Sub between two times that carry a monotonic
	// reading ignores the wall clock, which would hide the very jumps this
	// looks for (package time, "Monotonic Clocks").
	now = now.Round(0)
	limit := c.Max
	if limit <= 0 {
		limit = MaxClockJump
	}
	if !c.local {
		if !persisted.IsZero() && now.Sub(persisted.Round(0)) > limit {
			return persisted, 0
		}
		return time.Time{}, 0
	}
	expected := c.beat.Add(mono - c.mono)
	switch {
	case now.Sub(expected) > limit:
		return expected, 0
	case expected.Sub(now) > limit:
		return time.Time{}, expected.Sub(now)
	}
	return time.Time{}, 0
}

// Beat records the heartbeat the caller stored: the wall clock now and the
// monotonic clock mono of that moment.
func (c *ClockCheck) Beat(now time.Time, mono time.Duration) {
	c.beat, c.mono, c.local = now.Round(0), mono, true
}

// SinceBeat is the monotonic time since this process's last heartbeat (since
// the monotonic clock's origin before the first), and whether there was one.
func (c *ClockCheck) SinceBeat(mono time.Duration) (time.Duration, bool) {
	return mono - c.mono, c.local
}
