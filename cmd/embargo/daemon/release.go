package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/announce"
	"github.com/embargo-project/embargo/workflow"
)

// CtlReleaseResume is the control request behind `embargo release resume`.
const CtlReleaseResume = "release resume"

// A release the announce fan-out held (a clock jump across T, a message
// the list key does not verify, the relay's refusal of the message) stays
// held until an operator has fixed the cause and resumes it
// (docs/threat-model.md G4): the SRC's alert, announce-held, says how.
// /approve and /disclose do not resume it; they act on the incident, whose
// release has happened.

// ReleaseResume resumes the held announce release id: through the running
// daemon, which kicks its fan-out, or on the store when none runs (the
// daemon sends it when it starts). It returns a sentence saying what
// happens next.
func ReleaseResume(dataDir, id string, now time.Time) (string, error) {
	if !announce.ValidJobID(id) {
		return "", fmt.Errorf("%q is not a release ID; `embargo release list` shows them", id)
	}
	if c := DialCtl(dataDir); c != nil {
		defer c.Close()
		_, br, err := c.Call(CtlReleaseResume, []string{id})
		if err != nil {
			return "", err
		}
		var b strings.Builder
		_, err = br.WriteTo(&b)
		return b.String(), err
	}
	db, err := openStore(dataDir, modeWrite, slog.Default())
	if err != nil {
		return "", err
	}
	defer db.Close()
	return resumed(db, id, now, "; the daemon sends it when it starts",
		db.Update(func(tx *bolt.Tx) error { return announce.Resume(tx, id, now) }))
}

// releaseResume answers CtlReleaseResume: the fan-out resumes the job and
// is kicked at once.
func (s *ctlServer) releaseResume(args []string) (string, error) {
	id := strings.Join(args, " ")
	if !announce.ValidJobID(id) {
		return "", fmt.Errorf("%q is not a release ID; `embargo release list` shows them", id)
	}
	if s.fanout == nil {
		return "", errors.New("this daemon has no announce fan-out")
	}
	out, err := resumed(s.db, id, s.now(), "", s.fanout.Resume(id))
	if err == nil {
		s.log.Info("announce release resumed", "release", id)
	}
	return out, err
}

// resumed turns the outcome of a Resume into a sentence an operator can
// act on, naming the state of a release that was not held.
func resumed(db *bolt.DB, id string, now time.Time, offline string, err error) (string, error) {
	var j announce.Job
	if rerr := db.View(func(tx *bolt.Tx) error {
		var gerr error
		j, gerr = announce.GetJob(tx, id)
		return gerr
	}); rerr != nil && err == nil {
		return "", rerr
	}
	switch {
	case errors.Is(err, announce.ErrNoJob):
		return "", fmt.Errorf("no announce release %s; `embargo release list` shows them", id)
	case errors.Is(err, announce.ErrNotHeld) && j.Resumed:
		// A resume run again after its answer was lost (the daemon died
		// between the commit and the answer) took effect the first time:
		// answered OK, saying so, as `subscribers add` answers an address
		// already subscribed. A release that was never held is refused.
		return alreadyResumed(j, now), nil
	case errors.Is(err, announce.ErrNotHeld):
		return "", fmt.Errorf("release %s is %s, not held: only a held release can be resumed (`embargo release list` shows each one's state)", j.ID, j.State)
	case err != nil:
		return "", err
	}
	next := "it goes on from where it stopped"
	switch {
	case j.State != announce.JobScheduled:
	case j.At.After(now):
		next = "it waits for T, " + workflow.FormatInstant(j.At)
	default:
		next = "it leaves now (T, " + workflow.FormatInstant(j.At) + ", has passed)"
	}
	return fmt.Sprintf("release %s resumed: %s%s\n", j.ID, next, offline), nil
}

// alreadyResumed says that release j was resumed before, when, and where
// it stands now.
func alreadyResumed(j announce.Job, now time.Time) string {
	when := ""
	if !j.ResumedAt.IsZero() {
		when = " on " + workflow.FormatInstant(j.ResumedAt)
	}
	var state string
	switch {
	case j.State == announce.JobReleased:
		state = fmt.Sprintf("it is released (%d of %d copies sent, finished %s)", j.Sent, j.Total, workflow.FormatInstant(j.Finished))
	case j.State == announce.JobReleasing:
		state = fmt.Sprintf("it is being sent (%d of %d copies sent so far)", j.Sent, j.Total)
	case j.State == announce.JobScheduled && j.At.After(now):
		state = "it waits for T, " + workflow.FormatInstant(j.At)
	case j.State == announce.JobScheduled:
		state = "it leaves now (T, " + workflow.FormatInstant(j.At) + ", has passed)"
	default:
		state = "it is " + string(j.State)
	}
	return fmt.Sprintf("release %s was resumed already%s: %s; nothing to do.\n", j.ID, when, state)
}
