package listd

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/govdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/lists"
	"github.com/embargo-project/embargo/workflow"
)

// The tick's jobs of its own in the attempt table (docs/threat-model.md
// A6): the governance tick and the weekly digest run at every sweep, the
// first one at start, so one that kills the process brings it down at
// every start, as an incident's tick does. They are counted as an
// incident's tick is (work.go), with one difference: there is one of each,
// so the key is the kind's alone and the label is the state the job reads,
// digested (govStateDigest, digestState). That state is what "changed" means: a
// job in progress at PoisonDeaths deaths is skipped, with one sealed alert
// to the SRC, while the state is the one it died with; once it changes (a
// governance command, a new week, an incident changed), the job is tried
// once more, alone; and the count expires after AttemptTTL, as every
// count does.

// tickJob is one of the tick's own jobs.
type tickJob struct {
	kind  byte
	name  string // for the log and the alert: "governance tick", "weekly digest"
	state string // the state it reads, digested: the slot's label
	// what is held back while it is skipped, for the alert.
	skipped string
}

// guardedJob runs j (run) with its key in the in-flight file, or skips it.
func (s *Service) guardedJob(ctx context.Context, j tickJob, now time.Time, run func() (int, error)) (int, error) {
	a := s.o.Attempts
	if a == nil {
		return run()
	}
	key := a.labelKey(j.kind, "")
	r, suspect := a.lookup(key, now)
	if suspect && r.deaths >= PoisonDeaths && r.label == j.state {
		return 0, s.skipKillerJob(j, key, r, now)
	}
	return s.runGuarded(ctx, key, j.kind, j.state, suspect, []any{"job", j.name}, func() (int, error) {
		if s.sh.hooks.Job != nil {
			s.sh.hooks.Job(j.name)
		}
		return run()
	})
}

// skipKillerJob skips j, in progress at r.deaths >= PoisonDeaths deaths
// with the state it has now; the first skip after a death alerts the SRC,
// sealed to each member, in the transaction that marks the count alerted.
func (s *Service) skipKillerJob(j tickJob, key [32]byte, r deathRecord, now time.Time) error {
	if r.alerted {
		return nil
	}
	a := s.o.Attempts
	body := fmt.Sprintf("The scheduler's %s is skipped: the daemon died %d times while it\n"+
		"ran it, the last at %s (a fatal error or the out-of-memory killer; the\n"+
		"daemon's log names it). Running it again would stop the daemon again.\n\n"+
		"Meanwhile %s. Once what it reads changes\n"+
		"(%s), the tick tries it once more, alone;\n"+
		"the skip also ends %s, five days after the last death.\n",
		j.name, r.deaths, workflow.FormatInstant(r.last), j.skipped, jobChange[j.kind], workflow.FormatInstant(r.last.Add(AttemptTTL)))
	sec := s.o.Roster.List(lists.Security)
	err := s.sh.writer.do(func(tx *bolt.Tx) error {
		out, err := s.sealedEach(sec, s.committee(), notice{Subject: "[embargo] " + j.name + " skipped", Body: body, Kind: "alert-" + jobKinds[j.kind]}, now)
		if err != nil {
			return err
		}
		if err := a.markAlerted(tx, key); err != nil {
			return err
		}
		return s.enqueue(tx, now, out...)
	})
	if err != nil {
		return fmt.Errorf("alert of a skipped %s: %w", j.name, err)
	}
	a.alerted(key)
	s.o.Kick()
	s.log.Error("a job of the tick is skipped: the process died while it ran, and would again", "job", j.name, "deaths", r.deaths)
	return nil
}

// jobKinds name the tick's jobs in `embargo status` and alert kinds.
var jobKinds = map[byte]string{workGov: "governance", workDigest: "digest"}

// jobChange says, in the alert, what change makes the tick try a job again.
var jobChange = map[byte]string{
	workGov:    "a governance command: a vote, a proposal, a withdrawal",
	workDigest: "a new week, an open incident changed, a handover",
}

// stateDigest is the label of a job's state: 16 hex digits of SHA-256.
func stateDigest(parts ...[]byte) string {
	h := sha256.New()
	for _, p := range parts {
		fmt.Fprintf(h, "%d:", len(p))
		h.Write(p)
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// govStateDigest is the governance tick's state: the governance record.
func govStateDigest(tx *bolt.Tx) (string, error) {
	st, err := govdb.Load(tx)
	if err != nil {
		return "", err
	}
	v, err := json.Marshal(st)
	if err != nil {
		return "", err
	}
	return stateDigest(v), nil
}

// digestState is the weekly digest's state: its week, the on-call record
// and each open incident's last change.
func digestState(tx *bolt.Tx, week time.Time) (string, error) {
	incs, err := incidentdb.OpenIncidents(tx)
	if err != nil {
		return "", err
	}
	parts := [][]byte{[]byte(week.Format(time.RFC3339)), []byte(incidentdb.Meta(tx, metaOnCall))}
	for _, inc := range incs {
		parts = append(parts, []byte(string(inc.ID)+" "+inc.Updated.UTC().Format(time.RFC3339Nano)))
	}
	return week.Format(time.DateOnly) + " " + stateDigest(parts...), nil
}

// govTickGuarded is govTick under the attempt table.
func (s *Service) govTickGuarded(ctx context.Context, now time.Time) (int, error) {
	if s.o.Attempts == nil {
		return s.govTick(now)
	}
	var state string
	if err := s.o.DB.View(func(tx *bolt.Tx) (err error) { state, err = govStateDigest(tx); return err }); err != nil {
		return 0, fmt.Errorf("governance: %w", err)
	}
	j := tickJob{kind: workGov, name: JobGov, state: state,
		skipped: "no application passes by lazy consensus and no proposal\nexpires: `embargo members list` shows the open proposals"}
	return s.guardedJob(ctx, j, now, func() (int, error) { return s.govTick(now) })
}

// digestGuarded is weeklyDigest under the attempt table, once the week's
// digest is due (the common case reads one meta entry and writes nothing).
func (s *Service) digestGuarded(ctx context.Context, now time.Time) (int, error) {
	if s.o.Attempts == nil {
		return s.weeklyDigest(now)
	}
	week := workflow.ShiftStart(now)
	var state string
	var done bool
	err := s.o.DB.View(func(tx *bolt.Tx) (err error) {
		t, perr := time.Parse(time.RFC3339, incidentdb.Meta(tx, metaDigest))
		if done = perr == nil && !t.Before(week); done {
			return nil
		}
		state, err = digestState(tx, week)
		return err
	})
	if err != nil {
		return 0, err
	}
	if done {
		// This week's digest is committed: a death after its commit (the
		// process killed before the guard cleared its count) is not the
		// digest's doing, and no run alone would come to clear it.
		key := s.o.Attempts.labelKey(workDigest, "")
		if _, suspect := s.o.Attempts.lookup(key, now); suspect {
			s.forgetWork(key, []any{"job", JobDigest})
		}
		return 0, nil
	}
	j := tickJob{kind: workDigest, name: JobDigest, state: state,
		skipped: "this week's digest is not sent: `embargo status` and\n`embargo incident list` show what it would list"}
	return s.guardedJob(ctx, j, now, func() (int, error) { return s.weeklyDigest(now) })
}
