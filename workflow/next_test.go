package workflow

import (
	"testing"
	"time"
)

// TestNextTickNeverLate: for every state an incident takes in the property
// cases (reports, commands, ticks, downtime, clock jumps), Tick applies at
// no instant before NextTick, and does apply at NextTick. The instants tried
// are the simulation's own list of where something may fall due (written
// independently of NextTick), with the minutes around T's window edges, and
// the instants around NextTick itself. A NextTick that is late would let the
// deadline index hold a reminder or a release back; one that is early would
// only cost the sweep a read.
func TestNextTickNeverLate(t *testing.T) {
	n, seed := propertyCases(t)
	if testing.Short() {
		n /= 3
	}
	states, due, never := 0, 0, 0
	for i := 0; i < n; i++ {
		c := genCase(seed + uint64(i))
		s := newSim(c)
		evs, err := s.run()
		if err != nil {
			t.Fatalf("seed %d: the generator made an invalid case: %v", c.Seed, err)
		}
		env := s.env()
		for _, ev := range evs {
			if ev.Kind != EventState {
				continue
			}
			inc := *ev.State
			states++
			next := NextTick(inc, env)
			if next.IsZero() {
				never++
			} else {
				due++
				if !Tick(inc, next, env).Applied {
					t.Fatalf("seed %d, %s at %s: NextTick %s, but Tick does not apply there", c.Seed, inc.ID, FormatInstant(ev.At), next)
				}
			}
			tries := s.candidates(inc, ev.At)
			tries = append(tries, ev.At, c.End)
			if !next.IsZero() {
				tries = append(tries, next.Add(-time.Nanosecond), next.Add(-time.Minute))
			}
			for _, x := range tries {
				if Tick(inc, x, env).Applied && (next.IsZero() || x.Before(next)) {
					t.Fatalf("seed %d, %s (phase %s) stored at %s: Tick applies at %s, NextTick says %s",
						c.Seed, inc.ID, inc.Phase, FormatInstant(ev.At), x, next)
				}
			}
		}
	}
	if due == 0 || never == 0 {
		t.Fatalf("the cases never exercised both kinds: %d states due some time, %d never", due, never)
	}
	t.Logf("%d cases, %d incident states: %d due some time, %d never", n, states, due, never)
}
