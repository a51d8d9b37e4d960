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
// functions the tick decides with (workflow.NextTick,
// governance.NextDeadline), and errs early: a minute ticked in vain costs a
// tick; one skipped in error would change the timeline.
// TestSkipMatchesEveryMinute plays a scenario both ways and compares;
// Options.EveryMinute (embargo drill --every-minute) ticks every minute.

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
// workflow.NextTick, the instant the daemon's deadline index files it under
// (TestNextTickNeverLate proves it against the property simulation); the
// governance tick at a proposal's deadline (governance.NextDeadline); the
// Monday digest, which is also when the on-call shift and a pending
// handover end; and the delivery it kicks: a queued row's next attempt and a
// release the announce fan-out holds for later. It is limit when nothing
// may be due before.
func (dr *drill) nextDue(now, limit time.Time) (time.Time, error) {
	next := limit
	cand := func(t time.Time) {
		if t.After(now) && t.Before(next) {
			next = t
		}
	}
	cand(workflow.ShiftStart(now).Add(workflow.ShiftLength))
	env := workflow.Env{Holidays: dr.cfg.HolidayTimes()}
	gov := governance.Config{Quorum: dr.cfg.Governance.Quorum, LazyConsensus: dr.cfg.Governance.LazyConsensus()}
	err := dr.d.View(func(tx *bolt.Tx) error {
		incs, err := incidentdb.List(tx)
		if err != nil {
			return err
		}
		for _, inc := range incs {
			switch t := workflow.NextTick(inc, env); {
			case t.IsZero(): // nothing until the incident changes
			case !t.After(now):
				// Due already and the tick at now left it so (a reminder
				// behind its marker): tick again at the next minute.
				cand(now.Add(time.Nanosecond))
			default:
				cand(t)
			}
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
		// Delivery held for later: a retry, or the public copies waiting
		// LiftGrace behind "embargo lifted" (docs/threat-model.md G5). The
		// drill's relay accepts everything and LiftGrace is a minute, so
		// in a drill these fall on the next minute; they are here so that
		// the skipping stays right if either changes.
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
