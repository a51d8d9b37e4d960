package announce

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/lists"
)

// JobState is where a release stands (docs/threat-model.md G4: persisted states).
type JobState string

const (
	// JobScheduled: waiting for T (and a plausible clock).
	JobScheduled JobState = "scheduled"
	// JobReleasing: the cursor walks the subscribers; copies are leaving.
	JobReleasing JobState = "releasing"
	// JobHeld: stopped until Resume (Job.Held says why); nothing leaves.
	JobHeld JobState = "held"
	// JobReleased: every subscriber was served (delivered, refused, or given up).
	JobReleased JobState = "released"
)

// HoldCause says what held a job, so that the SRC's alert and the operator
// can tell how to fix it before Resume.
type HoldCause string

const (
	// HoldClock: T fell in a forward jump of the wall clock
	// (docs/threat-model.md G4); check the clock, then resume.
	HoldClock HoldCause = "clock"
	// HoldMessage: at T the stored message no longer verified against the
	// list key (it was checked when it was stored): a changed key or a bug.
	HoldMessage HoldCause = "message"
	// HoldRelay: the relay refused the message itself, permanently.
	HoldRelay HoldCause = "relay"
	// HoldKilled: a batch was in progress at BatchPoisonDeaths deaths of
	// the process; it was set aside and every other subscriber served
	// (guard.go, docs/threat-model.md A6).
	HoldKilled HoldCause = "killed"
)

// Job is one release: one stored, signed message and a cursor over the
// subscribers in delivery order.
type Job struct {
	ID    string
	From  string // envelope sender: the release's bounce address
	State JobState
	At    time.Time // T: nothing leaves before it
	// Started is when releasing began; UpTo is the last place in the
	// delivery order it covers (fixed then) and Total the active
	// subscribers at that moment.
	Started time.Time
	UpTo    uint64
	Total   int
	// Cursor is the place in the delivery order up to which every copy
	// was handed to the relay and recorded. A crash re-sends what was in
	// flight after it: at most one batch per connection.
	Cursor   uint64
	Finished time.Time
	// Counters, updated once per batch.
	Transactions int // SMTP transactions recorded
	Sent         int // recipients the relay accepted
	Refused      int // recipients refused permanently at RCPT
	Deferred     int // recipients now in the retry set
	Expired      int // recipients given up after RetryLifetime
	// Held says why the job is held, HeldFor what kind of cause it is
	// (empty in records written before it was kept); Resumed is set by
	// Resume, after which a clock jump no longer holds it.
	Held      string
	HeldFor   HoldCause `json:",omitempty"`
	Resumed   bool
	ResumedAt time.Time `json:",omitzero"` // the last Resume: deaths before it make no killer
	LastError string    // the last temporary failure of a whole transaction
	Size      int       // bytes of the stored message
}

type jobRecord struct {
	V int `json:"v"`
	Job
	// HeldFrom is the state to return to on Resume.
	HeldFrom JobState `json:"held_from,omitempty"`
	// Prepared: the stored message has the list's header fields.
	Prepared bool `json:"prepared,omitempty"`
	// Done are the stretches above Cursor already served: connections
	// finish their batches out of order (see addDone).
	Done []span `json:"done,omitempty"`
	// Aside are the batches set aside after deaths of the process
	// (guard.go): their places count as done, their subscribers wait for
	// Resume.
	Aside []aside `json:"aside,omitempty"`
}

func jobKey(id string) []byte { return []byte(strings.ToLower(id)) }

// validJobID: a release ID becomes part of an address (announce+bounces-<id>@),
// which lists.Route compares without case.
func validJobID(id string) bool {
	if id == "" || len(id) > 40 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_') {
			return false
		}
	}
	return id[0] != '.' && id[len(id)-1] != '.'
}

// ValidJobID reports whether id can name a release (see StartRelease).
func ValidJobID(id string) bool { return validJobID(id) }

// BounceAddress is the envelope sender of release id: announce+bounces-<id>@.
// The DSNs it receives go to HandleBounce. One address per release, not per
// recipient: a transaction with many RCPTs has one return path.
func BounceAddress(l lists.List, id string) string {
	return l.SubAddress(DetailBouncesPrefix + strings.ToLower(id))
}

// StartRelease stores a release inside the caller's transaction: msg is
// the complete advisory (RFC 5322 header, then the PGP/MIME multipart/signed
// body made by keys.Sign, CRLF line ends), stored once; from is the
// envelope sender (BounceAddress(list, id)); at is T, before which nothing
// leaves. The Fanout worker takes it from there: it checks the signature,
// sets the list header fields and walks the subscribers at T. Kick the
// worker after the commit.
//
// id names the release (the incident ID, say): letters, digits, "-", "_",
// "." up to 40 characters, unique without case (ErrJobExists).
func StartRelease(tx *bolt.Tx, id string, from string, msg []byte, at time.Time) error {
	b, err := open(tx)
	if err != nil {
		return err
	}
	if !validJobID(id) {
		return fmt.Errorf("%w: ID %q", ErrBadJob, id)
	}
	if _, _, ok := normAddress(from); !ok {
		return fmt.Errorf("%w: envelope sender %q", ErrBadJob, from)
	}
	if len(msg) == 0 || at.IsZero() {
		return fmt.Errorf("%w: empty message or no T", ErrBadJob)
	}
	if _, err := checked(msg); err != nil {
		return fmt.Errorf("%w: %v", ErrBadJob, err)
	}
	k := jobKey(id)
	if b.jobs.Get(k) != nil {
		return fmt.Errorf("%w: %s", ErrJobExists, id)
	}
	rec := &jobRecord{Job: Job{ID: id, From: from, State: JobScheduled, At: at, Size: len(msg)}}
	if err := b.jobdata.Put(k, bytes.Clone(msg)); err != nil {
		return err
	}
	if err := b.openjobs.Put(k, nil); err != nil {
		return err
	}
	return b.putJob(rec)
}

// GetJob returns release id.
func GetJob(tx *bolt.Tx, id string) (Job, error) {
	b, err := open(tx)
	if err != nil {
		return Job{}, err
	}
	r, err := b.getJob(jobKey(id))
	if err != nil {
		return Job{}, err
	}
	return r.Job, nil
}

// Jobs returns every release, in ID order.
func Jobs(tx *bolt.Tx) ([]Job, error) {
	b, err := open(tx)
	if err != nil {
		return nil, err
	}
	var out []Job
	err = b.jobs.ForEach(func(k, v []byte) error {
		r, err := decodeJob(v)
		if err != nil {
			return err
		}
		out = append(out, r.Job)
		return nil
	})
	return out, err
}

// Resume releases a held job: the SRC confirmed that the clock is right, or
// the relay or the message was fixed. A job held before it started goes
// back to scheduled (and leaves at T if T has passed); one held while
// releasing continues from its cursor. Kick the worker after the commit.
func Resume(tx *bolt.Tx, id string, now time.Time) error {
	b, err := open(tx)
	if err != nil {
		return err
	}
	r, err := b.getJob(jobKey(id))
	if err != nil {
		return err
	}
	if r.State != JobHeld {
		return fmt.Errorf("%w: release %s is %s", ErrNotHeld, r.ID, r.State)
	}
	r.State, r.Held, r.HeldFor, r.Resumed, r.ResumedAt = r.HeldFrom, "", "", true, now
	for i := range r.Aside {
		r.Aside[i].Again = true // once more, alone
	}
	if r.State == "" {
		r.State = JobScheduled
	}
	r.HeldFrom = ""
	return b.putJob(r)
}

func (b *buckets) getJob(k []byte) (*jobRecord, error) {
	v := b.jobs.Get(k)
	if v == nil {
		return nil, fmt.Errorf("%w: %s", ErrNoJob, k)
	}
	return decodeJob(v)
}

func decodeJob(v []byte) (*jobRecord, error) {
	var r jobRecord
	if err := json.Unmarshal(v, &r); err != nil {
		return nil, fmt.Errorf("announce: decode release: %w", err)
	}
	if r.V != schemaVersion {
		return nil, fmt.Errorf("announce: release record has schema version %d, want %d", r.V, schemaVersion)
	}
	return &r, nil
}

func (b *buckets) putJob(r *jobRecord) error {
	r.V = schemaVersion
	v, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return b.jobs.Put(jobKey(r.ID), v)
}

// hold stops a job and calls the Held hook in the same transaction.
func (b *buckets) hold(tx *bolt.Tx, r *jobRecord, cause HoldCause, reason string, o Options) error {
	if r.State == JobHeld {
		return nil
	}
	r.HeldFrom, r.State, r.Held, r.HeldFor = r.State, JobHeld, reason, cause
	if err := b.putJob(r); err != nil {
		return err
	}
	o.Logger.Error("announce release held", "release", r.ID, "cause", string(cause), "reason", reason)
	if o.Held != nil {
		if err := o.Held(tx, r.Job, reason); err != nil {
			return fmt.Errorf("announce: held hook: %w", err)
		}
	}
	return nil
}
