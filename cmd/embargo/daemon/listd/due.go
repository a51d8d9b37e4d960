package listd

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/workflow"
)

// The sweep reads the deadline index (incidentdb: each open incident filed
// under workflow.NextTick, in the transaction that writes it), not every
// open incident: a tick costs what is due, however many incidents are open.
// What is due is then ticked one incident per transaction, through the
// group commit (commit.go), so the writer is never held for long: incoming
// mail shares those commits instead of waiting for a sweep. BenchmarkTick,
// 20,000 open incidents with nothing due, on the 2-core development VM:
// 24 µs a sweep; the scan it replaced took 33 s (an insertion sort of the
// open incidents among it), during which intake stalled.

// metaDueIndex marks the deadline index as built for one set of holidays
// (working days move the triage reminders): another value, or none (a store
// from before the index), makes the next tick rebuild it.
const metaDueIndex = "due_index"

// dueIndexVersion changes when what the index holds changes meaning.
const dueIndexVersion = "1"

// sweepWorkers is how many due incidents are ticked at once: their
// transactions then share commits.
const sweepWorkers = 8

// rebuildChunk is how many incidents one transaction of a rebuild files.
const rebuildChunk = 256

// putIncident stores an incident and files it in the deadline index: every
// write of an incident by the service goes through here (TestPutsFileTheIndex).
func (s *Service) putIncident(tx *bolt.Tx, inc *workflow.Incident) error {
	return incidentdb.PutNext(tx, inc, s.nextTick(*inc))
}

// nextTick is when the tick next has something to do for inc.
func (s *Service) nextTick(inc workflow.Incident) time.Time {
	return workflow.NextTick(inc, workflow.Env{Holidays: s.o.Holidays})
}

// dueIndexMark is the index's marker for the holidays in force.
func (s *Service) dueIndexMark() string {
	var b strings.Builder
	b.WriteString(dueIndexVersion)
	for _, h := range s.o.Holidays {
		b.WriteString(" " + h.UTC().Format(time.DateOnly))
	}
	return b.String()
}

// dueIncidents returns the incidents whose tick applies at now, reading
// only those the index files at or before now. Those filed early (a write
// by incidentdb.Put, which files as due now; a daemon that was down across
// a window) are filed again under their next instant.
func (s *Service) dueIncidents(now time.Time) ([]workflow.ID, error) {
	if err := s.ensureDueIndex(); err != nil {
		return nil, err
	}
	var due, refile []workflow.ID
	err := s.o.DB.View(func(tx *bolt.Tx) error {
		env := s.workflowEnv(tx)
		for _, id := range incidentdb.DueBy(tx, now, 0) {
			inc, err := incidentdb.Get(tx, id)
			switch {
			case errors.Is(err, incidentdb.ErrNotFound):
				refile = append(refile, id)
				continue
			case err != nil:
				return err
			}
			if inc.Phase != workflow.PhaseClosed && workflow.TickAfterGap(*inc, now, env, s.sh.jumpFrom).Applied {
				due = append(due, id)
				continue
			}
			if at, _ := incidentdb.Next(tx, id); !at.Equal(s.nextTick(*inc)) {
				refile = append(refile, id)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return due, s.refile(refile)
}

// refile files incidents again under their next instant, a short
// transaction per rebuildChunk of them.
func (s *Service) refile(ids []workflow.ID) error {
	for len(ids) > 0 {
		n := min(len(ids), rebuildChunk)
		chunk := ids[:n]
		ids = ids[n:]
		err := s.sh.writer.do(func(tx *bolt.Tx) error {
			for _, id := range chunk {
				inc, err := incidentdb.Get(tx, id)
				switch {
				case errors.Is(err, incidentdb.ErrNotFound):
					err = incidentdb.SetNext(tx, id, time.Time{})
				case err == nil:
					err = incidentdb.SetNext(tx, id, s.nextTick(*inc))
				}
				if err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("listd: deadline index: %w", err)
		}
	}
	return nil
}

// ensureDueIndex builds the deadline index when the store has none for the
// holidays in force: a store from before it, or a reload that changed the
// holidays. It walks every incident once, in short transactions; mail
// arriving meanwhile files its incidents itself.
func (s *Service) ensureDueIndex() error {
	mark := s.dueIndexMark()
	var built bool
	if err := s.o.DB.View(func(tx *bolt.Tx) error { built = incidentdb.Meta(tx, metaDueIndex) == mark; return nil }); err != nil || built {
		return err
	}
	start := time.Now()
	if err := s.sh.writer.do(func(tx *bolt.Tx) error {
		if err := incidentdb.SetMeta(tx, metaDueIndex, ""); err != nil {
			return err
		}
		return incidentdb.ClearDue(tx)
	}); err != nil {
		return fmt.Errorf("listd: deadline index: %w", err)
	}
	var last workflow.ID
	total := 0
	for {
		var ids []workflow.ID
		if err := s.o.DB.View(func(tx *bolt.Tx) error { ids = incidentdb.IDsAfter(tx, last, rebuildChunk); return nil }); err != nil {
			return err
		}
		if len(ids) == 0 {
			break
		}
		if err := s.refile(ids); err != nil {
			return err
		}
		last, total = ids[len(ids)-1], total+len(ids)
	}
	if err := s.sh.writer.do(func(tx *bolt.Tx) error { return incidentdb.SetMeta(tx, metaDueIndex, mark) }); err != nil {
		return fmt.Errorf("listd: deadline index: %w", err)
	}
	s.log.Info("deadline index built", "incidents", total, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// sweep ticks the due incidents, sweepWorkers at a time, each in its own
// transaction (tickIncident). It returns the messages queued and the
// incidents' errors; one incident's failure does not stop the others.
func (s *Service) sweep(ctx context.Context, due []workflow.ID, now time.Time) (int, []error) {
	var (
		mu   sync.Mutex
		sent int
		errs []error
		wg   sync.WaitGroup
		next = make(chan workflow.ID)
	)
	for range min(sweepWorkers, len(due)) {
		wg.Go(func() {
			for id := range next {
				n, err := s.tickGuarded(ctx, id, now) // work.go: counted, skipped after killing the process
				mu.Lock()
				sent += n
				if err != nil {
					s.log.Error("tick failed for an incident", "incident", id, "err", err)
					errs = append(errs, fmt.Errorf("tick %s: %w", id, err))
				}
				mu.Unlock()
			}
		})
	}
	for _, id := range due {
		if ctx.Err() != nil {
			mu.Lock()
			errs = append(errs, ctx.Err())
			mu.Unlock()
			break
		}
		next <- id
	}
	close(next)
	wg.Wait()
	return sent, errs
}
