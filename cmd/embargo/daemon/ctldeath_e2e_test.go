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
)

// TestProcessKilledAtCtl: a child daemon is killed with SIGKILL at a step
// boundary of a write through the control socket (docs/design.md §1,
// docs/threat-model.md A2): once the request is read, before the write
// ("begin"), and once the write returned, before the answer ("done"), for
// `embargo subscribers add` and `embargo queue retry`. The operator's
// command gets no answer (an error, never OK) and is run again against the
// restarted daemon, as an operator would. Then: the store holds what the
// death allowed (nothing at "begin", the whole write at "done": the
// subscriber with their signed notice queued, the row due again), the
// second run answers OK, and the end is that of one command: one
// subscriber, one notice; bob's failed copy delivered once (again only if
// the relay had it when the daemon died and the store had not recorded
// it); the store passes its check.
func TestProcessKilledAtCtl(t *testing.T) {
	for _, cmd := range []string{"subscribers-add", "queue-retry"} {
		for _, step := range []string{"begin", "done"} {
			t.Run(cmd+" "+step, func(t *testing.T) {
				t.Parallel()
				killedAtCtl(t, cmd, step)
			})
		}
	}
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
	addr := daemontest.FreePort(t)
	cfg := filepath.Join(t.TempDir(), "embargo.toml")
	daemontest.WriteFile(t, cfg, strings.Replace(h.TOML, `listen = "127.0.0.1:0"`, fmt.Sprintf("listen = %q", addr), 1))
	env := []string{killAtEnv + "=ctl-" + step + " " + cmd, killMarkerEnv + "=" + filepath.Join(t.TempDir(), "killed")}
	run := func() (string, error) {
		if cmd == "queue-retry" {
			return daemon.QueueRetry(h.Dir, row, time.Now())
		}
		return daemon.Subscribers(h.Config(), daemon.CtlSubscribersAdd, []string{reader}, nil)
	}
	relayed := len(h.Rec.Messages())

	c := startDying(t, cfg, env...)
	waitListen(t, c, addr)
	if out, err := run(); err == nil {
		t.Fatalf("the command was answered by a child killed before its answer: %q", out)
	}
	if err := waitKilled(c); err != nil {
		t.Fatal(err)
	}
	snaps := []killSnapshot{deathSnapshot(t, h.Dir, len(h.Rec.Messages()), nil)}
	subscribed, notices := subscriberState(t, h.Dir, reader)
	notices += len(daemontest.To(h.Rec.Messages()[relayed:], reader)) // sent before the death
	stillFailed := failedRows(t, h.Dir, bob)[row]
	switch wrote := step == "done"; {
	case cmd == "subscribers-add" && (subscribed != wrote || (notices > 0) != wrote):
		t.Errorf("after the death: %s subscribed %v with %d notices queued or sent, want %v with its notice", reader, subscribed, notices, wrote)
	case cmd == "queue-retry" && stillFailed == wrote:
		t.Errorf("after the death: bob's row failed %v, want %v", stillFailed, !wrote)
	}

	c = startDying(t, cfg, env...)
	waitListen(t, c, addr)
	out, err := run()
	// A retried row the restarted daemon is sending, or has sent, is
	// refused, saying so; anything else is answered OK.
	if err != nil && !(cmd == "queue-retry" && step == "done" && (strings.Contains(err.Error(), "being delivered right now") || strings.Contains(err.Error(), "no queue row"))) {
		t.Errorf("the command run again: %v", err)
	}
	t.Logf("run again: %q, %v", out, err)
	want := map[string]int{reader: 0, bob: 0}
	if cmd == "queue-retry" {
		want[bob] = 1
	} else {
		want[reader] = 1
	}
	daemontest.WaitForWithin(t, 30*time.Second, "the command's mail", func() bool {
		return len(daemontest.To(h.Rec.Messages()[relayed:], reader)) >= want[reader] && len(daemontest.To(h.Rec.Messages()[relayed:], bob)) >= want[bob]
	})
	time.Sleep(500 * time.Millisecond) // nothing more should come
	c.cmd.Process.Signal(syscall.SIGTERM)
	if err := c.cmd.Wait(); err != nil {
		t.Errorf("the last run did not stop cleanly: %v\n%.3000s", err, c.out.String())
	}
	msgs := h.Rec.Messages()
	checkResent(t, msgs, snaps, nil) // a copy again only if the relay had it and the store had not recorded it
	for to, n := range want {
		distinct := map[string]bool{}
		for _, m := range daemontest.To(msgs[relayed:], to) {
			distinct[messageID(t, m)] = true
		}
		if len(distinct) != n {
			t.Errorf("%s got %d distinct messages after the death, want %d", to, len(distinct), n)
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
