package workflow

import (
	"slices"
	"time"
)

// NextTick is the earliest instant at which Tick would change inc as it is
// now: the scheduler files each open incident under it (daemon/listd's
// deadline index), so that a sweep reads only the incidents that are due
// instead of every open one. Zero means never, until the incident changes.
// The instant may lie in the past (a reminder not yet sent, a daemon that was
// down): the incident is due at the next tick. It does not depend on the
// clock, only on the incident and env.Holidays (working days): a change of
// either needs it computed again.
//
// Tick's outcome depends on the clock only through comparisons with a few
// instants: each one-off reminder's instant, the occurrences of a repeating
// reminder (of which only the first after the last one sent matters: from
// there on it is due until sent), and around T the opening of the
// final-notice window, T-24 h, T and T + ReleaseGrace. Between two of them
// it does not change. So the earliest of them at which Tick applies is the
// earliest instant at all; TestNextTickNeverLate checks it against the
// property simulation's own list of instants.
func NextTick(inc Incident, env Env) time.Time {
	if inc.Phase == PhaseClosed || inc.Phase == PhaseUnset {
		return time.Time{}
	}
	var cands []time.Time
	add := func(t time.Time) {
		if !t.IsZero() {
			cands = append(cands, t)
		}
	}
	// A zero clock places each repeating reminder at its first occurrence,
	// base + one period (every, with min 1).
	for _, r := range Reminders(inc, time.Time{}, env.Holidays) {
		last, sent := inc.Reminded[r.Key]
		if !r.repeats {
			if !sent || !last.Equal(r.At) {
				add(r.At)
			}
			continue
		}
		base := staleBase(inc)
		if r.Key == "asap" {
			base = asapSince(inc)
		}
		p := r.At.Sub(base)
		if p <= 0 {
			continue
		}
		at := r.At
		if sent && !last.Before(at) {
			// The first occurrence after the last one sent.
			at = base.Add(time.Duration(int64(last.Sub(base)/p)+1) * p)
		}
		add(at)
	}
	if !inc.T.IsZero() && (inc.Phase == PhaseEmbargo || inc.Phase == PhaseFix) {
		finalBy := inc.T.Add(-FinalNoticeBefore)
		add(inc.T.Add(-FinalNoticeWindow))
		add(finalBy)
		add(finalBy.Add(time.Nanosecond))
		add(inc.T)
		add(inc.T.Add(ReleaseGrace + time.Nanosecond))
	}
	slices.SortFunc(cands, func(a, b time.Time) int { return a.Compare(b) })
	for i, c := range cands {
		if i > 0 && c.Equal(cands[i-1]) {
			continue
		}
		if Tick(inc, c, env).Applied {
			return c
		}
	}
	return time.Time{}
}
