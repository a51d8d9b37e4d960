package listd

import (
	"context"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/announce"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/lists"
	"github.com/embargo-project/embargo/workflow"
)

// Rows and ticks in the attempt table (docs/threat-model.md A6). The daemon
// starts them itself, and again at every start: the worker claims the rows
// left "sending" at once, the tick runs at start. So a row whose sealing or
// sending kills the process, or an incident whose tick does, brings it down
// at every start, as a message does at every arrival. They are counted as
// messages are, in the same in-flight file and the same table, under a key
// of their own (labelKey: a secret, the kind, the row's ID or the
// incident's), with the label kept beside it so that `embargo status` can
// name them.

// Rows is the queue's view of the attempts (queue.Guard): a row in
// progress at a death is sealed and sent alone, and one in progress at
// RowPoisonDeaths deaths since it was queued or retried fails with an
// alert.
// Nil when a is nil.
func (a *Attempts) Rows() queue.Guard {
	if a == nil {
		return nil
	}
	return rowGuard{a}
}

type rowGuard struct{ a *Attempts }

func rowLabel(id uint64) string { return strconv.FormatUint(id, 10) }

// Verdict: Killer at RowPoisonDeaths deaths, the last after since (an
// operator's retry); Suspect with any death.
func (g rowGuard) Verdict(id uint64, since, now time.Time) (queue.Verdict, int) {
	if !g.a.anyKnown() {
		return queue.Clean, 0 // the normal path: no key to compute
	}
	r, ok := g.a.lookup(g.a.labelKey(workRow, rowLabel(id)), now)
	switch {
	case !ok:
		return queue.Clean, 0
	case r.deaths >= RowPoisonDeaths && r.last.After(since):
		return queue.Killer, r.deaths
	}
	return queue.Suspect, r.deaths
}

// Begin takes the gate once for the rows (a sender's batch) and a slot for
// each.
func (g rowGuard) Begin(ctx context.Context, ids []uint64, alone bool) (func(), error) {
	a := g.a
	if err := a.enter(ctx, alone); err != nil {
		return nil, err
	}
	slots := make([]int64, len(ids))
	for i, id := range ids {
		label := rowLabel(id)
		slots[i] = a.take(a.labelKey(workRow, label), workRow, label)
	}
	return func() {
		for _, s := range slots {
			a.release(s)
		}
		a.leave(alone)
	}, nil
}

// Survived forgets the row's count with the outcome's commit.
func (g rowGuard) Survived(tx *bolt.Tx, id uint64) error {
	key := g.a.labelKey(workRow, rowLabel(id))
	if err := g.a.forget(tx, key); err != nil {
		return err
	}
	tx.OnCommit(func() { g.a.forgotten(key) })
	return nil
}

// Suspect is work that was in progress at a death of the process, as the
// store holds it: a message, a queue row or an incident's tick.
type Suspect struct {
	Kind   string `json:"kind"`             // "message", "row", "tick", "batch", "governance" or "digest"
	SHA256 string `json:"sha256,omitempty"` // a message's, of its bytes, hex
	Row    uint64 `json:"row,omitempty"`
	// RowKind and Incident are a row's, as the queue holds it (RowKind
	// empty once the row is gone), or a tick's incident.
	RowKind  string    `json:"row_kind,omitempty"`
	Incident string    `json:"incident,omitempty"`
	Deaths   int       `json:"deaths"`
	Last     time.Time `json:"last_death"`
	// Release and Batch are a fan-out batch's: its release's ID and its
	// stretch of the delivery order ("12-112"; "r" first for the retry
	// set).
	Release string `json:"release,omitempty"`
	Batch   string `json:"batch,omitempty"`
	// State is a governance tick's or a digest's: the state it died with,
	// digested (tickjobs.go).
	State string `json:"state,omitempty"`
	// Alerted: the SRC was told that the incident's tick, the governance
	// tick or the digest is skipped.
	Alerted bool `json:"alerted,omitempty"`
}

// Suspects lists the attempt table, expired entries included until the
// next start drops them (`embargo status` shows them).
func Suspects(tx *bolt.Tx) []Suspect {
	b := tx.Bucket(bucketAttempts)
	if b == nil {
		return nil
	}
	var out []Suspect
	b.ForEach(func(k, v []byte) error {
		if len(k) != len([32]byte{}) {
			return nil
		}
		r := decodeDeaths(v)
		s := Suspect{Kind: "message", Deaths: r.deaths, Last: r.last.UTC(), Alerted: r.alerted}
		switch r.kind {
		case workRow:
			s.Kind = "row"
			s.Row, _ = strconv.ParseUint(r.label, 10, 64)
			if row, err := queue.Info(tx, s.Row); err == nil {
				s.RowKind, s.Incident = row.Kind, row.Incident
			}
		case workTick:
			s.Kind, s.Incident = "tick", r.label
		case workBatch:
			s.Kind = "batch"
			if id, b, ok := announce.ParseBatchLabel(r.label); ok {
				s.Release, s.Batch = id, strings.TrimPrefix(b.Label(id), strings.ToLower(id)+" ")
			}
		case workGov, workDigest:
			s.Kind, s.State = jobKinds[r.kind], r.label
		default:
			s.SHA256 = hex.EncodeToString(k)
		}
		out = append(out, s)
		return nil
	})
	return out
}

// tickGuarded ticks one incident (tickIncident) with its key in the
// in-flight file. An incident whose tick was in progress at PoisonDeaths
// deaths is skipped, with one alert to the SRC, until the incident changes
// (a command, a message filed to it: Updated after the last death), which
// makes the tick try it once more, alone, or until its count expires
// (AttemptTTL). A skipped tick holds back that incident's reminders,
// notices and release at T, which the alert asks the SRC to do by hand:
// without the skip the daemon would die at every start and hold back
// everything, intake included.
func (s *Service) tickGuarded(ctx context.Context, id workflow.ID, now time.Time) (n int, err error) {
	a := s.o.Attempts
	if a == nil {
		return s.tickIncident(id, now)
	}
	label := string(id)
	key := a.labelKey(workTick, label)
	r, suspect := a.lookup(key, now)
	if suspect && r.deaths >= PoisonDeaths {
		skip, err := s.skipKillerTick(id, key, r, now)
		if skip || err != nil {
			return 0, err
		}
	}
	return s.runGuarded(ctx, key, workTick, label, suspect, []any{"incident", id}, func() (int, error) {
		if s.sh.hooks.Tick != nil {
			s.sh.hooks.Tick(id)
		}
		return s.tickIncident(id, now)
	})
}

// runGuarded runs work the tick starts itself (an incident's tick, the
// governance tick, the digest) with key in the in-flight file: alone when
// it is a suspect, and its count dropped once it ran without a death. A
// suspect that cannot be alone in time returns the error and waits for the
// next sweep. attrs name the work in the log.
func (s *Service) runGuarded(ctx context.Context, key [32]byte, kind byte, label string, suspect bool, attrs []any, run func() (int, error)) (int, error) {
	a := s.o.Attempts
	if err := a.enter(ctx, suspect); err != nil {
		return 0, err
	}
	slot := a.take(key, kind, label)
	defer func() {
		// Deferred: a panic (recovered by the cron) is no death.
		a.release(slot)
		a.leave(suspect)
		if suspect {
			s.forgetWork(key, attrs)
		}
	}()
	return run()
}

// forgetWork drops the count of a suspect that ran without a death.
func (s *Service) forgetWork(key [32]byte, attrs []any) {
	a := s.o.Attempts
	if err := s.sh.writer.do(func(tx *bolt.Tx) error { return a.forget(tx, key) }); err != nil {
		// Kept: it runs alone again at the next sweep, and is forgotten then.
		s.log.Warn("work of the tick ran without a death after one but could not be cleared", append(attrs, "err", err)...)
		return
	}
	a.forgotten(key)
	s.log.Info("work of the tick ran without a death after one; cleared", attrs...)
}

// skipKillerTick decides whether the tick of id, in progress at
// r.deaths >= PoisonDeaths deaths, is skipped: yes unless the incident
// changed after the last death. The first skip after a death alerts the
// SRC, in the transaction that marks the count alerted.
func (s *Service) skipKillerTick(id workflow.ID, key [32]byte, r deathRecord, now time.Time) (bool, error) {
	var inc *workflow.Incident
	err := s.o.DB.View(func(tx *bolt.Tx) error {
		var err error
		inc, err = incidentdb.Get(tx, id)
		return err
	})
	if err != nil {
		return true, err
	}
	if inc.Updated.After(r.last) {
		return false, nil // changed since: tried once more, alone
	}
	if r.alerted {
		return true, nil
	}
	a := s.o.Attempts
	body := fmt.Sprintf("The scheduler's tick for %s is skipped: the daemon died %d times while it\n"+
		"ran it, the last at %s (a fatal error or the out-of-memory killer; the\n"+
		"daemon's log names it). Running it again would stop the daemon again.\n\n"+
		"Until the incident changes, the tick sends none of its reminders and\n"+
		"notices, and does not release it at T: `embargo incident show %s` lists\n"+
		"its deadlines; do by hand what falls due. Any change to the incident (a\n"+
		"command, a message filed to it) makes the tick try it once more, alone;\n"+
		"the skip also ends %s, five days after the last death.\n",
		id, r.deaths, workflow.FormatInstant(r.last), id, workflow.FormatInstant(r.last.Add(AttemptTTL)))
	sec := s.o.Roster.List(lists.Security)
	err = s.sh.writer.do(func(tx *bolt.Tx) error {
		out, err := s.sealedEach(sec, s.committee(), notice{Subject: fmt.Sprintf("[%s] tick skipped", id), Body: body,
			Kind: "alert-tick", Incident: id, Thread: inc.RootMsg}, now)
		if err != nil {
			return err
		}
		if err := a.markAlerted(tx, key); err != nil {
			return err
		}
		return s.enqueue(tx, now, out...)
	})
	if err != nil {
		return true, fmt.Errorf("alert of a skipped tick: %w", err)
	}
	a.alerted(key)
	s.o.Kick()
	s.log.Error("an incident's tick is skipped: the process died while it ran, and would again", "incident", id, "deaths", r.deaths)
	return true, nil
}

// markAlerted marks key's count as told to the SRC, in tx; alerted does so
// in memory once tx is committed.
func (a *Attempts) markAlerted(tx *bolt.Tx, key [32]byte) error {
	b, err := tx.CreateBucketIfNotExists(bucketAttempts)
	if err != nil {
		return err
	}
	r := decodeDeaths(b.Get(key[:]))
	if r.deaths == 0 {
		return nil
	}
	r.alerted = true
	return b.Put(key[:], encodeDeaths(r))
}

func (a *Attempts) alerted(key [32]byte) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if r, ok := a.known[key]; ok {
		r.alerted = true
		a.known[key] = r
	}
}
