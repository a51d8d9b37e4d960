package drill

import (
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/announce"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/govdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/lists/governance"
	"github.com/embargo-project/embargo/workflow"
)

// Skipping idle virtual time. The daemon's scheduler ticks every minute; in
// most minutes of a drill of weeks nothing is due, and the tick only writes
// its heartbeat. So the drill ticks at the minutes at which something may be
// due and moves the virtual clock over the others in one step: the wall
// clock and the monotonic clock together (vclock.mono), so the tick's clock
// check and the fan-out's see time pass, not a jump (docs/threat-model.md
// G4). It still ticks at the minute of every event and at the minute before
// it, as the minute-by-minute drill does: the heartbeat a "down" leaves
// behind, which the first tick after "up" compares with, is the same. For
// --check, each minute skipped is still a tick of the timeline (tickMark):
// the tick found nothing due then, which is what the checker is told.
//
// "May be due" is read from the store as the tick reads it, with the
// functions the tick decides with, and errs early: a minute ticked in vain
// costs a tick; one skipped in error would change the timeline.
// TestSkipMatchesEveryMinute plays scenarios both ways and compares.

// nextTick returns the minute after m at which the drill ticks next: the
// first at which something may be due (nextDue), but no later than the
// minute before the next event's (the event's own minute follows from it)
// and the scenario's last minute.
func (dr *drill) nextTick(m time.Time, next int) (time.Time, error) {
	step := m.Add(time.Minute)
	if dr.everyMinute {
		return step, nil
	}
	limit := dr.sc.end.Truncate(time.Minute)
	if next < len(dr.sc.events) {
		if e := ceilMinute(dr.sc.events[next].at).Add(-time.Minute); e.Before(limit) {
			limit = e
		}
	}
	if !limit.After(step) {
		return step, nil
	}
	due, err := dr.nextDue(m, limit)
	if err != nil {
		return time.Time{}, err
	}
	switch t := ceilMinute(due); {
	case t.Before(step):
		return step, nil
	case t.After(limit):
		return limit, nil
	default:
		return t, nil
	}
}

// ceilMinute is the first whole minute at or after t: the tick at which
// something due at t goes out.
func ceilMinute(t time.Time) time.Time {
	if m := t.Truncate(time.Minute); m.Before(t) {
		return m.Add(time.Minute)
	}
	return t
}

// nextDue returns the earliest instant after now, up to limit, at which the
// daemon's tick (listd's Service.Tick) may do something: for an incident,
// workflow.TickAfterGap (incidentDue); the governance tick at a proposal's
// deadline (governance.NextDeadline); the Monday digest, which is also when
// the on-call shift and a pending handover end; and the delivery it kicks:
// a queued row's next attempt and a release the announce fan-out holds for
// later. It is limit when nothing may be due before.
func (dr *drill) nextDue(now, limit time.Time) (time.Time, error) {
	next := limit
	cand := func(t time.Time) {
		if t.After(now) && t.Before(next) {
			next = t
		}
	}
	cand(workflow.ShiftStart(now).Add(workflow.ShiftLength))
	holidays := dr.cfg.HolidayTimes()
	gov := governance.Config{Quorum: dr.cfg.Governance.Quorum, LazyConsensus: dr.cfg.Governance.LazyConsensus()}
	err := dr.d.View(func(tx *bolt.Tx) error {
		incs, err := incidentdb.List(tx)
		if err != nil {
			return err
		}
		for _, inc := range incs {
			incidentDue(inc, now, limit, holidays, cand)
		}
		st, err := govdb.Load(tx)
		if err != nil {
			return err
		}
		cand(governance.NextDeadline(st, gov))
		for _, p := range st.Open() {
			// An application with an approval passes at its deadline; one
			// without expires lazy consensus later (NextDeadline's case).
			cand(p.Deadline)
			cand(p.Deadline.Add(gov.LazyConsensus))
		}
		rows, err := queue.List(tx)
		if err != nil {
			return err
		}
		for _, r := range rows {
			if r.State == queue.StateQueued {
				cand(r.NextAttempt)
				cand(r.NotBefore)
			}
		}
		jobs, err := announce.Jobs(tx)
		if err != nil {
			return err
		}
		for _, j := range jobs {
			if j.State == announce.JobScheduled {
				cand(j.At)
			}
		}
		return nil
	})
	return next, err
}

// incidentDue offers cand every instant after now, up to limit, at which
// workflow.TickAfterGap may act on inc: the edges of ticker.release (the
// final notice's window from T-25 h to T-24 h, the hold at T-24 h, the
// release at T, the hold of a release later than ReleaseGrace), each
// reminder's instant (workflow.Reminders), and the minute at which the
// reminders' list changes as time passes (a repeating reminder, stale or
// asap, moves on to its next occurrence).
func incidentDue(inc workflow.Incident, now, limit time.Time, holidays []time.Time, cand func(time.Time)) {
	if !inc.T.IsZero() {
		finalBy := inc.T.Add(-workflow.FinalNoticeBefore)
		cand(inc.T.Add(-workflow.FinalNoticeWindow))
		cand(finalBy)
		cand(finalBy.Add(time.Nanosecond)) // the window is closed after finalBy, not at it
		cand(inc.T)
		cand(inc.T.Add(workflow.ReleaseGrace).Add(time.Nanosecond))
	}
	rs := workflow.Reminders(inc, now, holidays)
	for _, r := range rs {
		switch {
		case r.At.After(now):
			cand(r.At)
		case !inc.Reminded[r.Key].Equal(r.At):
			// Due and not marked sent: the tick at now passed it over (a
			// repeating reminder behind its marker). Tick again at once
			// rather than guess.
			cand(now.Add(time.Nanosecond))
		}
	}
	if t, ok := remindersChange(inc, now, limit, holidays, rs); ok && false {
		cand(t)
	}
}

// remindersChange returns the first whole minute in (now, limit] at which
// workflow.Reminders lists something other than rs (its list at now), if
// it does by limit. What it lists depends on the time only through the
// repeating reminders' occurrences (the latest at or before the time), which
// only move forward: once changed, the list stays changed, so a bisection
// finds the first minute.
func remindersChange(inc workflow.Incident, now, limit time.Time, holidays []time.Time, rs []workflow.Reminder) (time.Time, bool) {
	changed := func(t time.Time) bool { return !sameReminders(workflow.Reminders(inc, t, holidays), rs) }
	lo, hi := now.Truncate(time.Minute), limit.Truncate(time.Minute)
	if !hi.After(lo) || !changed(hi) {
		return time.Time{}, false
	}
	// changed(hi), and lo is now's minute (unchanged, or now itself).
	for hi.Sub(lo) > time.Minute {
		mid := lo.Add(hi.Sub(lo) / time.Minute / 2 * time.Minute)
		if changed(mid) {
			hi = mid
		} else {
			lo = mid
		}
	}
	return hi, true
}

func sameReminders(a, b []workflow.Reminder) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Key != b[i].Key || !a[i].At.Equal(b[i].At) || !a[i].Due.Equal(b[i].Due) || a[i].To != b[i].To {
			return false
		}
	}
	return true
}
