package daemon_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/announce"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue/queuetest"
)

// TestProcessKilledAtCtl: a child daemon is killed with SIGKILL at a step
// boundary of a write through the control socket (docs/design.md §1,
// docs/threat-model.md A2): once the request is read, before the write
// ("begin"), and once the write returned, before the answer ("done"), for
// `embargo subscribers add`, `remove` and `import` (and between the
// import's transactions, "chunk"), `embargo queue retry` and `drop`, and
// `embargo release resume` (a release the relay refused, held); and at the
// same two boundaries of the RFC 8058 one-click unsubscribe POST over HTTP.
// The operator's command (or the mail client's POST) gets no answer (an
// error, never OK) and is run again against the restarted daemon, as an
// operator (or a one-click client) would. Then: the store holds what the
// death allowed (nothing at "begin", the whole write at "done", whole
// transactions at "chunk"), the second run answers OK or, where the first
// took effect, says so accurately, and the end is that of one command:
// each subscriber once with one notice, never a second; a removed or
// unsubscribed one gone with one record of leaving, nothing sent, the
// one-click URI replayed changing nothing; a dropped row gone with its
// body and never delivered (unless the second drop's answer said an
// attempt was under way); bob's failed copy delivered once; each
// subscriber's advisory once (again only if the relay had it when the
// daemon died and the store had not recorded it); the store passes its
// check.
func TestProcessKilledAtCtl(t *testing.T) {
	both := []string{"begin", "done"}
	for _, c := range []struct {
		name  string
		steps []string
		run   func(t *testing.T, step string)
	}{
		{"subscribers-add", both, func(t *testing.T, step string) { killedAtCtl(t, "subscribers-add", step) }},
		{"queue-retry", both, func(t *testing.T, step string) { killedAtCtl(t, "queue-retry", step) }},
		{"release-resume", both, killedAtResume},
		{"subscribers-remove", both, killedAtRemove}, // ctldeath_subs_e2e_test.go
		{"subscribers-import", []string{"begin", "chunk", "done"}, killedAtImport},
		{"queue-drop", both, killedAtDrop},    // ctldeath_drop_e2e_test.go
		{"one-click", both, killedAtOneClick}, // ctldeath_oneclick_e2e_test.go
	} {
		for _, step := range c.steps {
			t.Run(c.name+" "+step, func(t *testing.T) {
				t.Parallel()
				c.run(t, step)
			})
		}
	}
}

// ctlDeath is one case of TestProcessKilledAtCtl: the harness, stopped,
// whose store holds what the command needs, the command as the operator
// runs it, and the kill point.
type ctlDeath struct {
	h         *daemontest.Harness
	cmd, step string
	point     string // the kill point, when not the control socket's (killAtEnv)
	run       func() (string, error)
	more      func()            // what the operator does next, against the restarted child; nil: nothing
	bounces   map[string]string // release ID → bounce address (checkResent)
	cfg       string
	addr      string
	relayed   int // the relay's messages before the first child
	snaps     []killSnapshot
}

// kill starts a child that dies at the kill point, runs the command, which
// must get no answer, and waits for the death.
func (c *ctlDeath) kill(t *testing.T) {
	t.Helper()
	c.addr = daemontest.FreePort(t)
	c.cfg = filepath.Join(t.TempDir(), "embargo.toml")
	daemontest.WriteFile(t, c.cfg, strings.Replace(c.h.TOML, `listen = "127.0.0.1:0"`, fmt.Sprintf("listen = %q", c.addr), 1))
	point := c.point
	if point == "" {
		point = "ctl-" + c.step + " " + c.cmd
	}
	env := []string{killAtEnv + "=" + point, killMarkerEnv + "=" + filepath.Join(t.TempDir(), "killed")}
	c.relayed = len(c.h.Rec.Messages())
	// The harness's stop may have cut a delivery short after the relay
	// took the message: that copy may come again, as after a death.
	c.snaps = []killSnapshot{deathSnapshot(t, c.h.Dir, c.relayed, c.bounces)}
	ch := startDying(t, c.cfg, env...)
	waitListen(t, ch, c.addr)
	if out, err := c.run(); err == nil {
		t.Fatalf("the command was answered by a child killed before its answer: %q", out)
	}
	if err := waitKilled(ch); err != nil {
		t.Fatal(err)
	}
	c.snaps = append(c.snaps, deathSnapshot(t, c.h.Dir, len(c.h.Rec.Messages()), c.bounces))
}

// again runs the command again against a restarted child, as the operator
// would, waits until done, stops the child and checks what came again
// (checkResent). It returns the relay's messages since the first child
// started, and the second answer.
func (c *ctlDeath) again(t *testing.T, done func(msgs []queuetest.Message) bool) ([]queuetest.Message, string, error) {
	t.Helper()
	ch := startDying(t, c.cfg)
	waitListen(t, ch, c.addr)
	out, err := c.run()
	t.Logf("run again: %q, %v", out, err)
	if c.more != nil {
		c.more()
	}
	daemontest.WaitForWithin(t, 30*time.Second, "the command's mail", func() bool { return done(c.h.Rec.Messages()[c.relayed:]) })
	time.Sleep(500 * time.Millisecond) // nothing more should come
	ch.cmd.Process.Signal(syscall.SIGTERM)
	if err := ch.cmd.Wait(); err != nil {
		t.Errorf("the last run did not stop cleanly: %v\n%.3000s", err, ch.out.String())
	}
	msgs := c.h.Rec.Messages()
	checkResent(t, msgs, c.snaps, c.bounces) // a copy again only if the relay had it and the store had not recorded it
	return msgs[c.relayed:], out, err
}

// distinctTo counts the distinct messages (by Message-ID) to rcpt.
func distinctTo(t *testing.T, msgs []queuetest.Message, rcpt string) int {
	t.Helper()
	ids := map[string]bool{}
	for _, m := range daemontest.To(msgs, rcpt) {
		ids[messageID(t, m)] = true
	}
	return len(ids)
}

func killedAtCtl(t *testing.T, cmd, step string) {
	const reader, bob = "reader@out.test", "bob@ex.test"
	h := daemontest.New(t, daemontest.Config{}, daemon.Options{})
	var row uint64
	if cmd == "queue-retry" {
		// bob's copy fails for good, with an alert to alice.
		h.Rec.FailRcpt(bob, 550)
		h.MustSend("rep@out.test", []string{"security@ex.test"}, daemontest.Report("rep@out.test", "x", "y"))
		h.Settle(3) // the acknowledgement, alice's copy, alice's alert
		h.Rec.FailRcpt(bob, 0)
	}
	h.Stop()
	// bob's first failed row: the report's copy (his alert fails too).
	for id := range failedRows(t, h.Dir, bob) {
		if row == 0 || id < row {
			row = id
		}
	}
	if cmd == "queue-retry" && row == 0 {
		t.Fatal("bob's copy did not fail")
	}
	c := &ctlDeath{h: h, cmd: cmd, step: step, run: func() (string, error) {
		if cmd == "queue-retry" {
			return daemon.QueueRetry(h.Dir, row, time.Now())
		}
		return daemon.Subscribers(h.Config(), daemon.CtlSubscribersAdd, []string{reader}, nil)
	}}
	c.kill(t)
	subscribed, notices := subscriberState(t, h.Dir, reader)
	notices += len(daemontest.To(h.Rec.Messages()[c.relayed:], reader)) // sent before the death
	stillFailed := failedRows(t, h.Dir, bob)[row]
	switch wrote := step == "done"; {
	case cmd == "subscribers-add" && (subscribed != wrote || (notices > 0) != wrote):
		t.Errorf("after the death: %s subscribed %v with %d notices queued or sent, want %v with its notice", reader, subscribed, notices, wrote)
	case cmd == "queue-retry" && stillFailed == wrote:
		t.Errorf("after the death: bob's row failed %v, want %v", stillFailed, !wrote)
	}

	want := map[string]int{reader: 0, bob: 0}
	if cmd == "queue-retry" {
		want[bob] = 1
	} else {
		want[reader] = 1
	}
	msgs, _, err := c.again(t, func(msgs []queuetest.Message) bool {
		return len(daemontest.To(msgs, reader)) >= want[reader] && len(daemontest.To(msgs, bob)) >= want[bob]
	})
	// A retried row the restarted daemon is sending, or has sent, is
	// refused, saying so and how to check; anything else is answered OK.
	if err != nil && !(cmd == "queue-retry" && step == "done" && (strings.Contains(err.Error(), "being delivered right now") || isRowGone(err, row))) {
		t.Errorf("the command run again: %v", err)
	}
	for to, n := range want {
		if got := distinctTo(t, msgs, to); got != n {
			t.Errorf("%s got %d distinct messages after the death, want %d", to, got, n)
		}
	}
	if subscribed, _ := subscriberState(t, h.Dir, reader); subscribed != (cmd == "subscribers-add") {
		t.Errorf("%s subscribed: %v", reader, subscribed)
	}
}

// failedRows are the IDs of the failed queue rows to rcpt in the store in
// dir (the daemon stopped), which OpenStore checks.
func failedRows(t *testing.T, dir, rcpt string) map[uint64]bool {
	t.Helper()
	db, err := daemon.OpenStore(dir, true)
	if err != nil {
		t.Fatalf("the store: %v", err)
	}
	defer db.Close()
	ids := map[uint64]bool{}
	db.View(func(tx *bolt.Tx) error {
		rows, err := queue.List(tx)
		for _, r := range rows {
			if r.State == queue.StateFailed && len(r.To) == 1 && r.To[0] == rcpt {
				ids[r.ID] = true
			}
		}
		return err
	})
	return ids
}

// subscriberState says whether addr is an active subscriber in the store
// in dir (the daemon stopped), and how many queue rows are addressed to it.
func subscriberState(t *testing.T, dir, addr string) (active bool, rows int) {
	t.Helper()
	db, err := daemon.OpenStore(dir, true)
	if err != nil {
		t.Fatalf("the store: %v", err)
	}
	defer db.Close()
	db.View(func(tx *bolt.Tx) error {
		s, ok, err := announce.Lookup(tx, addr)
		active = err == nil && ok && s.State == announce.StateActive
		all, _ := queue.List(tx)
		for _, r := range all {
			if len(r.To) == 1 && r.To[0] == addr {
				rows++
			}
		}
		return nil
	})
	return active, rows
}

// killedAtResume is TestProcessKilledAtCtl's case of `embargo release
// resume`: a release whose announce copy the relay refused (554 to its
// bounce sender) is held; the relay fixed, the resume is killed at step.
func killedAtResume(t *testing.T, step string) {
	f := newCmdFixture(t)
	subs := []string{"reader1@out.test", "reader2@out.test"}
	bounce, _ := refusedRelease(t, f, subs)
	job := func(db interface {
		View(func(*bolt.Tx) error) error
	}) (j announce.Job) {
		db.View(func(tx *bolt.Tx) error {
			j, _ = announce.GetJob(tx, f.id)
			return nil
		})
		return j
	}
	daemontest.WaitFor(t, "the announce fan-out to hold the release", func() bool { return job(f.h.D).State == announce.JobHeld })
	f.h.Stop()
	f.h.Rec.FailMail(bounce, 0)

	c := &ctlDeath{h: f.h, cmd: "release-resume", step: step, bounces: map[string]string{f.id: bounce},
		run: func() (string, error) { return daemon.ReleaseResume(f.h.Dir, f.id, time.Now()) }}
	c.kill(t)
	db, err := daemon.OpenStore(f.h.Dir, true)
	if err != nil {
		t.Fatalf("the store after the death: %v", err)
	}
	if held := job(db).State == announce.JobHeld; held != (step == "begin") {
		t.Errorf("after the death: the release is %s", job(db).State)
	}
	db.Close()
	msgs, out, err := c.again(t, func(msgs []queuetest.Message) bool {
		for _, s := range subs {
			if len(daemontest.To(msgs, s)) == 0 {
				return false
			}
		}
		return true
	})
	// A resume whose answer was lost took effect: the second says so,
	// with its instant, exit 0.
	if wrote := step == "done"; err != nil || strings.Contains(out, "resumed already on") != wrote {
		t.Errorf("the resume run again: %q, %v; want OK, saying it was resumed already: %v", out, err, wrote)
	}
	for _, s := range subs {
		if n := distinctTo(t, msgs, s); n != 1 {
			t.Errorf("%s got %d distinct messages after the death, want the advisory", s, n)
		}
	}
	db, err = daemon.OpenStore(f.h.Dir, true)
	if err != nil {
		t.Fatalf("the store at the end: %v", err)
	}
	defer db.Close()
	if j := job(db); j.State != announce.JobReleased || j.Sent != len(subs) {
		t.Errorf("at the end: %+v", j)
	}
}
