package daemon

import (
	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/announce"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/workflow"
)

// The failpoints of the end-to-end tests (package daemon_test). They exist in
// the test build only: Options has no exported field for them, so no
// deployment can switch one on.

// WithBeforeCommit returns o with f run at the end of each inbound message's
// transaction; an error from f rolls it back (the storage-failure tests).
func WithBeforeCommit(o Options, f func(tx *bolt.Tx) error) Options {
	o.hooks.beforeCommit = f
	return o
}

// WithGroupCommit returns o with f run before each group commit of the
// list service, with the number of transactions in the group; an error
// fails the whole group as a failed commit does.
func WithGroupCommit(o Options, f func(tx *bolt.Tx, n int) error) Options {
	o.hooks.groupCommit = f
	return o
}

// WithPanic returns o with f run first on every inbound message (the
// poison-message tests).
func WithPanic(o Options, f func(raw []byte)) Options {
	o.hooks.panic = f
	return o
}

// WithFreeSpace returns o with f in place of statfs on data_dir for the
// free-space check at MAIL ([smtp] min_free_bytes): the tests say how much is
// free rather than fill a disk. Its answers are cached as statfs's are.
func WithFreeSpace(o Options, f func(dir string) (uint64, error)) Options {
	o.hooks.freeSpace = f
	return o
}

// WithSend returns o with f run on each outbound message before the relay
// takes it, inside the queue's record of the rows in flight (the tests of
// a row that kills the process).
func WithSend(o Options, f func(to []string, data []byte)) Options {
	o.hooks.send = f
	return o
}

// WithTick returns o with f run before each incident's tick, inside its
// record in the in-flight file.
func WithTick(o Options, f func(id workflow.ID)) Options {
	o.hooks.tick = f
	return o
}

// WithJob returns o with f run before the governance tick and the weekly
// digest ("governance tick", "weekly digest"), inside their record in the
// in-flight file.
func WithJob(o Options, f func(name string)) Options {
	o.hooks.job = f
	return o
}

// WithBatch returns o with f run before each announce batch is sent,
// inside its record in the in-flight file.
func WithBatch(o Options, f func(release string, rcpts []string)) Options {
	o.hooks.batch = f
	return o
}

// The step boundaries of the tests that kill the process at each step
// (docs/design.md §1). Each f runs where the process would die there.

// WithOpened returns o with f run on each inbound message once it is
// routed and opened, before its transaction (after the parse).
func WithOpened(o Options, f func(raw []byte)) Options {
	o.hooks.opened = f
	return o
}

// WithAccepted returns o with f run on each inbound message once its
// transaction committed, before smtpd answers 250.
func WithAccepted(o Options, f func(raw []byte)) Options {
	o.hooks.accepted = f
	return o
}

// WithTicked returns o with f run once an incident's tick that did
// something committed, with its actions' kinds ("release" at T).
func WithTicked(o Options, f func(id workflow.ID, actions []string)) Options {
	o.hooks.ticked = f
	return o
}

// WithJobStep returns o with f run at the step boundaries of the
// governance tick and the weekly digest (listd.JobGov, listd.JobDigest):
// "saved" or "marked" and "queued" inside the job's transaction, before
// its commit; "committed" after it; "refreshed" once the governance tick
// swapped in the roster it changed (listd.TestHooks.JobStep).
func WithJobStep(o Options, f func(name, step string)) Options {
	o.hooks.jobStep = f
	return o
}

// WithRowHooks returns o with the delivery worker's failpoints: after a
// claim's commit, after the relay's 250 before the outcome's commit, after
// that commit (queue.TestHooks).
func WithRowHooks(o Options, h queue.TestHooks) Options {
	o.hooks.rows = h
	return o
}

// WithReleaseHooks returns o with the announce fan-out's failpoints: after
// the commit that begins a release, after a batch's answer before its
// commit, after that commit (announce.TestHooks).
func WithReleaseHooks(o Options, h announce.TestHooks) Options {
	o.hooks.release = h
	return o
}

// WithCtl returns o with f run at the step boundaries of each control
// request that writes (queue retry and drop, release resume, subscribers
// add, remove and import): step "begin" once the request is read, before
// the write; "done" once the write returned, before the answer is written;
// and for an import, "chunk" once each of its transactions but the last
// committed.
func WithCtl(o Options, f func(cmd, step string)) Options {
	o.hooks.ctl = f
	return o
}

// WithOneClick returns o with f run at the step boundaries of an RFC 8058
// one-click unsubscribe POST: step "begin" before its transaction, "done"
// once it committed, before the HTTP answer.
func WithOneClick(o Options, f func(step string)) Options {
	o.hooks.oneClick = f
	return o
}

// ImportChunk is how many entries of a listing one transaction of
// `embargo subscribers import` applies.
const ImportChunk = importChunk

// DB is the daemon's store, for tests that write to it directly.
func DB(d *Daemon) *bolt.DB { return d.db }

// SampleCount is how many observations the histogram name holds, read from
// the daemon's metrics registry as /metrics would.
func SampleCount(d *Daemon, name string) uint64 {
	fams, _ := d.metrics.reg.Gather()
	for _, f := range fams {
		if f.GetName() == name && len(f.GetMetric()) == 1 {
			return f.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	return 0
}

// CounterValue is the value of the counter name with the label value
// label, read from the daemon's metrics registry as /metrics would.
func CounterValue(d *Daemon, name, label string) float64 {
	fams, _ := d.metrics.reg.Gather()
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetValue() == label {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return -1
}
