package listd

import (
	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/workflow"
)

// TestHooks are failpoints for tests, which set them with SetTestHooks. They
// are not part of Options: no configuration of a running daemon can carry
// them, and production code never sets them.
type TestHooks struct {
	// Panic runs first on every message Handle gets: the failpoint of the
	// poison-message tests (its panic must quarantine the message).
	Panic func(raw []byte)
	// BeforeCommit runs at the end of each message's transaction; an error
	// rolls the transaction back. It is the failpoint of the
	// storage-failure tests (smtpd must answer 451, never 250).
	BeforeCommit func(tx *bolt.Tx) error
	// GroupCommit runs once per group commit, after every message of the
	// group was stored, with their number; an error rolls the whole group
	// back as a failed commit does (every message of it answered 451).
	GroupCommit func(tx *bolt.Tx, n int) error
	// Tick runs before each incident's tick, inside its record in the
	// in-flight file: the failpoint of the tests of a tick that kills the
	// process (work.go).
	Tick func(id workflow.ID)
	// Job runs before the tick's own jobs ("governance tick", "weekly
	// digest"), inside their record in the in-flight file (tickjobs.go).
	Job func(name string)
	// Opened runs once a message is routed and opened (parsed, decrypted,
	// verified), before its transaction: the step boundary "after the
	// parse" of the tests that kill the process at each step.
	Opened func(raw []byte)
	// Ticked runs once an incident's tick that did something committed,
	// with the kinds of its actions ("release" at T): the boundary after
	// the release's transaction (the commit has kicked the fan-out and
	// the queue, which may have begun).
	Ticked func(id workflow.ID, actions []string)
	// JobStep runs at the step boundaries of the tick's own jobs, with the
	// job's name (JobGov, JobDigest) and the step:
	//   - "saved" (the governance tick: the record with its decisions
	//     written) and "marked" (the digest: the week's marker written),
	//     inside the job's transaction, before its mail is rendered;
	//   - "queued": its mail queued, at the end of the transaction
	//     function, before the commit;
	//   - "committed": the transaction committed, before anything after it;
	//   - "refreshed" (the governance tick): the roster it changed swapped
	//     in, before the tick goes on.
	// A death inside the transaction must roll the whole step back; after
	// the commit, the step is done once (docs/design.md §6).
	JobStep func(name, step string)
}

// The names of the tick's own jobs, in the log, the alert and JobStep.
const (
	JobGov    = "governance tick"
	JobDigest = "weekly digest"
)

// jobStep runs the JobStep failpoint, if a test set one.
func (s *Service) jobStep(name, step string) {
	if f := s.sh.hooks.JobStep; f != nil {
		f(name, step)
	}
}

// SetTestHooks installs failpoints, for tests only. Call it before the
// Service handles any mail.
func (s *Service) SetTestHooks(h TestHooks) {
	s.sh.hooks = h
	s.sh.writer.groupHook = h.GroupCommit
}
