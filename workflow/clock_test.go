package workflow

import (
	"testing"
	"time"
)

// TestClockCheck: a forward step of the wall clock beyond Max that the
// monotonic clock did not see is a jump, from where the heartbeat plus the
// monotonic time says the clock should be; smaller steps and backward ones
// are not. Just after a start, a gap beyond Max since the stored heartbeat
// counts as a jump from it.
func TestClockCheck(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 15, 0, 0, 0, time.UTC)
	tests := []struct {
		name      string
		beat      bool          // a Beat at t0, monotonic 1 h
		now       time.Time     // the wall clock at the check
		mono      time.Duration // the monotonic clock at the check
		persisted time.Time     // the stored heartbeat
		from      time.Time
		back      time.Duration
	}{
		{"walking clock", true, t0.Add(time.Minute), time.Hour + time.Minute, time.Time{}, time.Time{}, 0},
		{"9 min step", true, t0.Add(10 * time.Minute), time.Hour + time.Minute, time.Time{}, time.Time{}, 0},
		{"30 day jump", true, t0.Add(30 * 24 * time.Hour), time.Hour + time.Minute, time.Time{}, t0.Add(time.Minute), 0},
		{"just over the limit", true, t0.Add(11*time.Minute + time.Second), time.Hour + time.Minute, time.Time{}, t0.Add(time.Minute), 0},
		{"back a day", true, t0.Add(-24 * time.Hour), time.Hour + time.Minute, time.Time{}, time.Time{}, 24*time.Hour + time.Minute},
		{"stored heartbeat ignored after a beat", true, t0.Add(time.Minute), time.Hour + time.Minute, t0.Add(-time.Hour), time.Time{}, 0},
		{"start, no heartbeat", false, t0, 0, time.Time{}, time.Time{}, 0},
		{"start, recent heartbeat", false, t0, 0, t0.Add(-time.Minute), time.Time{}, 0},
		{"start, old heartbeat", false, t0, 0, t0.Add(-2 * time.Hour), t0.Add(-2 * time.Hour), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c ClockCheck
			if tt.beat {
				c.Beat(t0, time.Hour)
			}
			from, back := c.Check(tt.now, tt.mono, tt.persisted)
			if !from.Equal(tt.from) || back != tt.back {
				t.Errorf("Check(%v, %v, %v) = %v, %v; want %v, %v", tt.now, tt.mono, tt.persisted, from, back, tt.from, tt.back)
			}
		})
	}
}

// TestClockCheckMax: Max replaces the default limit; SinceBeat counts from
// the last Beat.
func TestClockCheckMax(t *testing.T) {
	base := time.Date(2026, 12, 3, 15, 0, 0, 0, time.UTC)
	c := ClockCheck{Max: time.Hour}
	if _, ok := c.SinceBeat(time.Minute); ok {
		t.Error("SinceBeat before any Beat: a beat")
	}
	c.Beat(base, time.Minute)
	if d, ok := c.SinceBeat(3 * time.Minute); !ok || d != 2*time.Minute {
		t.Errorf("SinceBeat = %v, %v; want 2m, true", d, ok)
	}
	if from, _ := c.Check(base.Add(30*time.Minute), time.Minute, time.Time{}); !from.IsZero() {
		t.Error("Max of 1 h: a 30 min step held")
	}
	if from, _ := c.Check(base.Add(2*time.Hour), time.Minute, time.Time{}); !from.Equal(base) {
		t.Errorf("Max of 1 h: a 2 h step held from %v, want %v", from, base)
	}
}
