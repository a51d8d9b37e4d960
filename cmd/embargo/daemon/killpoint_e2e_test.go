package daemon_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/announce"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue/queuetest"
	"github.com/embargo-project/embargo/workflow"
)

// The child's environment for a kill -9 at a step boundary: the point and
// what it must match ("point arg", and T for the tick), and the file that
// makes the kill happen once across restarts.
const (
	killAtEnv     = "EMBARGO_TEST_KILL_AT"
	killMarkerEnv = "EMBARGO_TEST_KILL_MARKER"
)

// withKillPoint has the child send SIGKILL to itself, once, at one step
// boundary of the paths a death must not break (docs/design.md §1):
//
//   - intake: "opened" (a message holding arg routed and opened, before
//     its transaction), "stored" (at the end of a message's transaction
//     function, before the commit), "accepted" (a message holding arg
//     committed, before its 250); the death after the 250 is the test's
//     own kill once its client has read the 250;
//   - delivery: "claimed" (a claim holding the row to arg committed, before
//     any sender has it), "answered" (the relay's 250 for that row, before
//     its outcome's commit), "recorded" (after that commit), "row" (as the
//     relay is handed the copy to arg);
//   - the release: "tick" (incident arg's tick at or after T, before the
//     release's transaction), "ticked" (that transaction committed),
//     "begun" (the fan-out's commit that begins release arg), "batch" (a
//     batch about to be sent), "batch-answered" (the relay answered a
//     batch of release arg, before the cursor's commit), "batch-recorded"
//     (after it);
//   - the control socket's writes: "ctl-begin" (the request read, before
//     the write), "ctl-done" (the write returned, before the answer),
//     "ctl-chunk" (an import's transaction committed, more to come), for
//     the request arg with "-" for its spaces ("queue-retry");
//   - the one-click unsubscribe POST: "oneclick-begin" (before its
//     transaction), "oneclick-done" (committed, before the HTTP answer);
//     arg is not read;
//   - the tick's own jobs: "job" with arg the job's name, "-" for its
//     spaces, and a step ("weekly-digest:queued"): "start" (the job about
//     to run, inside its record in the in-flight file), or a step of
//     listd.TestHooks.JobStep ("saved", "marked", "queued", "committed",
//     "refreshed").
func withKillPoint(o daemon.Options) daemon.Options {
	f := strings.Fields(os.Getenv(killAtEnv))
	if len(f) < 2 {
		return o
	}
	point, arg := f[0], f[1]
	die := func() { killOnce(point) }
	has := func(raw []byte) bool { return bytes.Contains(raw, []byte(arg)) }
	rowTo := func(rows []queue.Row) {
		for _, r := range rows {
			if slices.Contains(r.To, arg) {
				die()
			}
		}
	}
	ours := func(release string) bool { return strings.EqualFold(release, arg) }
	switch point {
	case "opened":
		o = daemon.WithOpened(o, func(raw []byte) {
			if has(raw) {
				die()
			}
		})
	case "stored":
		o = daemon.WithBeforeCommit(o, func(*bolt.Tx) error { die(); return nil })
	case "accepted":
		o = daemon.WithAccepted(o, func(raw []byte) {
			if has(raw) {
				die()
			}
		})
	case "claimed":
		o = daemon.WithRowHooks(o, queue.TestHooks{Claimed: rowTo})
	case "answered":
		o = daemon.WithRowHooks(o, queue.TestHooks{Answered: rowTo})
	case "recorded":
		o = daemon.WithRowHooks(o, queue.TestHooks{Recorded: rowTo})
	case "row":
		o = daemon.WithSend(o, func(to []string, _ []byte) {
			if slices.Contains(to, arg) {
				die()
			}
		})
	case "tick":
		var T time.Time
		if len(f) > 2 {
			T, _ = time.Parse(time.RFC3339, f[2])
		}
		o = daemon.WithTick(o, func(id workflow.ID) {
			if string(id) == arg && !o.Now().Before(T) {
				die()
			}
		})
	case "ticked":
		o = daemon.WithTicked(o, func(id workflow.ID, actions []string) {
			if string(id) == arg && slices.Contains(actions, "release") {
				die()
			}
		})
	case "begun":
		o = daemon.WithReleaseHooks(o, announce.TestHooks{Begun: func(r string) {
			if ours(r) {
				die()
			}
		}})
	case "batch":
		o = daemon.WithBatch(o, func(string, []string) { die() })
	case "batch-answered", "batch-recorded":
		hook := func(r string, _ []string) {
			if ours(r) {
				die()
			}
		}
		h := announce.TestHooks{Answered: hook}
		if point == "batch-recorded" {
			h = announce.TestHooks{Recorded: hook}
		}
		o = daemon.WithReleaseHooks(o, h)
	case "oneclick-begin", "oneclick-done":
		o = daemon.WithOneClick(o, func(step string) {
			if "oneclick-"+step == point {
				die()
			}
		})
	case "ctl-begin", "ctl-done", "ctl-chunk":
		o = daemon.WithCtl(o, func(cmd, step string) {
			if "ctl-"+step == point && strings.ReplaceAll(cmd, " ", "-") == arg {
				die()
			}
		})
	case "job":
		name, step, _ := strings.Cut(strings.ReplaceAll(arg, "-", " "), ":")
		if step == "start" {
			o = daemon.WithJob(o, func(n string) {
				if n == name {
					die()
				}
			})
			break
		}
		o = daemon.WithJobStep(o, func(n, s string) {
			if n == name && s == step {
				die()
			}
		})
	default:
		fmt.Fprintln(os.Stderr, "failpoint: unknown kill point", point)
		os.Exit(3)
	}
	return o
}

// killOnce sends SIGKILL to the process, unless the marker file says it
// was done before.
func killOnce(point string) {
	marker := os.Getenv(killMarkerEnv)
	if marker == "" {
		return
	}
	if _, err := os.Stat(marker); err == nil {
		return
	}
	os.WriteFile(marker, nil, 0o600)
	fmt.Fprintln(os.Stderr, "failpoint: kill -9 at", point)
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	time.Sleep(time.Minute)
}

// waitKilled waits for the child to die of SIGKILL.
func waitKilled(c *child) error {
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ProcessState.Sys().(syscall.WaitStatus).Signal() == syscall.SIGKILL {
			return nil
		}
		return fmt.Errorf("the child ended with %v, want SIGKILL:\n%.3000s", err, c.out.String())
	case <-time.After(30 * time.Second):
		return fmt.Errorf("the child was not killed:\n%.3000s", c.out.String())
	}
}

// killSnapshot is what one death left behind: how many messages the
// relay had taken, and what the store the next start reads had recorded
// of them.
type killSnapshot struct {
	relayed int // messages the relay had taken (of those the check reads)
	// unrecorded: recipient and Message-ID of each queue row the store
	// still holds (not recorded as delivered); a copy the relay took for
	// one of them may come again.
	unrecorded map[string]bool
	// sent: per release, by its bounce address, the subscriber copies its
	// job recorded as taken by the relay; none for a release whose job
	// the store did not hold.
	sent map[string]int
}

// deathSnapshot reads the store in dataDir after a death (the child is dead;
// with powerfs, a copy of what survived the cut). relayed is the number
// of relay messages the check will read that had arrived; bounces are
// the bounce addresses of the releases, by release ID.
func deathSnapshot(t *testing.T, dataDir string, relayed int, bounces map[string]string) killSnapshot {
	t.Helper()
	s := killSnapshot{relayed: relayed, unrecorded: map[string]bool{}, sent: map[string]int{}}
	db, err := daemon.OpenStore(dataDir, true)
	if err != nil {
		t.Fatalf("the store after the death: %v", err)
	}
	defer db.Close()
	db.View(func(tx *bolt.Tx) error {
		rows, err := queue.List(tx)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rows {
			if r.State != queue.StateFailed {
				for _, to := range r.To {
					s.unrecorded[copyKey(to, r.MessageID)] = true
				}
			}
		}
		for id, bounce := range bounces {
			if j, err := announce.GetJob(tx, id); err == nil {
				s.sent[bounce] = j.Sent
			}
		}
		return nil
	})
	return s
}

// copyKey names one copy: its recipient and Message-ID.
func copyKey(rcpt, messageID string) string {
	return strings.ToLower(rcpt) + " " + strings.Trim(messageID, "<> ")
}

// checkResent checks that every copy msgs holds more than once is one the
// deaths allow (docs/threat-model.md A3): a queue row's copy again only
// when the relay had taken it before a death and the store had not
// recorded it then, once per such death; a release's copies (from a
// bounce address) again at most as many times in all as the relay had
// taken copies that its job had not recorded at the deaths, and each
// subscriber's at most once per death. It returns the copies sent again.
func checkResent(t *testing.T, msgs []queuetest.Message, snaps []killSnapshot, bounces map[string]string) int {
	t.Helper()
	releases := map[string]bool{}
	for _, b := range bounces {
		releases[b] = true
	}
	type seen struct {
		first, n int
		from     string
	}
	copies := map[string]*seen{}
	fanned := map[string]int{}                         // subscriber copies per release, in all
	fannedBefore := make([]map[string]int, len(snaps)) // and before each death
	for i := range snaps {
		fannedBefore[i] = map[string]int{}
	}
	for i, m := range msgs {
		id := messageID(t, m)
		for _, to := range m.To {
			k := copyKey(to, id)
			if c := copies[k]; c != nil {
				c.n++
			} else {
				copies[k] = &seen{first: i, n: 1, from: m.From}
			}
			if releases[m.From] {
				fanned[m.From]++
				for j, s := range snaps {
					if i < s.relayed {
						fannedBefore[j][m.From]++
					}
				}
			}
		}
	}
	again := 0
	for k, c := range copies {
		if c.n == 1 {
			continue
		}
		again += c.n - 1
		if c.n-1 > len(snaps) {
			t.Errorf("%s arrived %d times after %d death(s)", k, c.n, len(snaps))
		}
		if releases[c.from] {
			continue // counted per release below
		}
		allowed := 0
		for _, s := range snaps {
			if c.first < s.relayed && s.unrecorded[k] {
				allowed++
			}
		}
		if c.n-1 > allowed {
			t.Errorf("%s arrived %d times; only %d death(s) found it taken by the relay and not recorded", k, c.n, allowed)
		}
	}
	for b := range releases {
		distinct := 0
		for _, c := range copies {
			if c.from == b {
				distinct++
			}
		}
		allowed := 0
		for j, s := range snaps {
			allowed += max(0, fannedBefore[j][b]-s.sent[b])
		}
		if extra := fanned[b] - distinct; extra > allowed {
			t.Errorf("release %s: %d subscriber copies sent again; the relay had taken %d its job had not recorded at the deaths", b, extra, allowed)
		}
	}
	return again
}
