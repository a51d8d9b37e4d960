package daemon_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/announce"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue/queuetest"
	"github.com/embargo-project/embargo/lists"
	"github.com/embargo-project/embargo/workflow"
)

// The child's environment for the kill -9 at the release: its clock (the
// instant it reads at the real time anchor, and on from there, across
// restarts), T, the kill point, the incident and the file that makes the
// kill happen once.
const (
	releaseClockEnv  = "EMBARGO_TEST_RELEASE_CLOCK" // RFC 3339 instant, real unix nanoseconds
	releaseKillEnv   = "EMBARGO_TEST_RELEASE_KILL"  // point, incident, T, target address
	releaseMarkerEnv = "EMBARGO_TEST_RELEASE_MARKER"
)

// withReleaseFailpoints sets the child's clock and ticks every second, and
// sends SIGKILL to the child itself once at the kill point: the tick that
// releases the incident ("tick": before the release's transaction), the
// fan-out's first batch ("batch": the advisory job exists, nothing sent to
// the subscribers), the copy to one address ("row": a distributor's final
// notice, the outside channel's copy).
func withReleaseFailpoints(o daemon.Options) daemon.Options {
	clock := strings.Fields(os.Getenv(releaseClockEnv))
	if len(clock) != 2 {
		return o
	}
	at, _ := time.Parse(time.RFC3339Nano, clock[0])
	var anchor int64
	fmt.Sscan(clock[1], &anchor)
	o.Now = func() time.Time { return at.Add(time.Since(time.Unix(0, anchor))) }
	o.TickSpec = "@every 1s"
	kill := strings.Fields(os.Getenv(releaseKillEnv))
	if len(kill) != 4 {
		return o
	}
	T, _ := time.Parse(time.RFC3339, kill[2])
	die := func() {
		marker := os.Getenv(releaseMarkerEnv)
		if _, err := os.Stat(marker); err == nil {
			return
		}
		os.WriteFile(marker, nil, 0o600)
		fmt.Fprintln(os.Stderr, "failpoint: kill -9 at the release:", kill[0])
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		time.Sleep(time.Minute)
	}
	switch kill[0] {
	case "tick":
		o = daemon.WithTick(o, func(id workflow.ID) {
			if string(id) == kill[1] && !o.Now().Before(T) {
				die()
			}
		})
	case "batch":
		o = daemon.WithBatch(o, func(string, []string) { die() })
	case "row":
		o = daemon.WithSend(o, func(to []string, _ []byte) {
			if slices.Contains(to, strings.TrimSuffix(kill[3], ".")) {
				die()
			}
		})
	}
	return o
}

// TestProcessKilledAtRelease: an approved incident reaches T in a child
// daemon, which is killed with SIGKILL once during the release: before the
// release's transaction, once the advisory job exists, as the distributor's
// final notice or the outside channel's copy is handed to the relay. The
// next start finishes the release: the incident is disclosed once, every
// subscriber gets the advisory (again at most for the batch in flight at the
// kill), the distributor and the channel get theirs (again at most the copy
// in flight), and the SRC is not told twice (docs/threat-model.md G4,
// docs/design.md §1).
func TestProcessKilledAtRelease(t *testing.T) {
	const channel = "oss-security@lists.invalid"
	for _, point := range []struct{ name, kill, target string }{
		{"before the release", "tick", ""},
		{"job created", "batch", ""},
		{"distributor notice", "row", "one@vendor1.test"},
		{"channel copy", "row", channel},
		{"reporter told", "row", "rep@out.test"},
	} {
		t.Run(point.name, func(t *testing.T) {
			d := &distributor{addr: "one@vendor1.test"}
			f := newCmdFixtureWith(t, []*distributor{d}, "\n[[channels]]\naddress = \""+channel+"\"\nsubject_tag = \"[example]\"\n")
			cfg := f.h.Config()
			subs := []string{"reader1@out.test", "reader2@out.test", "reader3@out.test"}
			for _, s := range subs {
				if _, err := daemon.Subscribers(cfg, daemon.CtlSubscribersAdd, []string{s}, nil); err != nil {
					t.Fatal(err)
				}
			}
			f.next(len(subs))
			T := f.prepare(t)
			f.h.Stop()
			before := len(f.h.Rec.Messages())
			bounce := announce.BounceAddress(daemon.Roster(cfg).List(lists.Announce), f.id)

			addr := daemontest.FreePort(t)
			file := filepath.Join(t.TempDir(), "embargo.toml")
			daemontest.WriteFile(t, file, strings.Replace(f.h.TOML, `listen = "127.0.0.1:0"`, fmt.Sprintf("listen = %q", addr), 1))
			env := []string{
				fmt.Sprintf("%s=%s %d", releaseClockEnv, T.Add(-2*time.Second).Format(time.RFC3339Nano), time.Now().UnixNano()),
				fmt.Sprintf("%s=%s %s %s %s", releaseKillEnv, point.kill, f.id, T.Format(time.RFC3339), point.target+"."),
				releaseMarkerEnv + "=" + filepath.Join(t.TempDir(), "killed"),
			}
			c := startDying(t, file, env...)
			if err := waitKilled(c); err != nil {
				t.Fatal(err)
			}
			c = startDying(t, file, env...)
			waitListen(t, c, addr)
			daemontest.WaitForWithin(t, 30*time.Second, "every copy of the release", func() bool {
				msgs := f.h.Rec.Messages()[before:]
				for _, s := range subs {
					if !sentFrom(msgs, bounce, s) {
						return false
					}
				}
				return len(daemontest.To(msgs, channel)) > 0 && len(daemontest.To(msgs, d.addr)) > 0 &&
					len(daemontest.To(msgs, f.reporterAddr)) > 0
			})
			time.Sleep(time.Second) // nothing more should come
			c.cmd.Process.Signal(syscall.SIGTERM)
			if err := c.cmd.Wait(); err != nil {
				t.Errorf("the last run did not stop cleanly: %v\n%.3000s", err, c.out.String())
			}
			checkRelease(t, f, before, bounce, subs, []string{channel, d.addr, f.reporterAddr}, point.kill == "tick")
		})
	}
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
		return fmt.Errorf("the child was not killed at the release:\n%.3000s", c.out.String())
	}
}

func sentFrom(msgs []queuetest.Message, from, to string) bool {
	for _, m := range msgs {
		if m.From == from && slices.Contains(m.To, to) {
			return true
		}
	}
	return false
}

// checkRelease checks what the release sent and stored: each subscriber's
// advisory once, or twice at most (the batch in flight at the kill), each
// other copy once, or twice at most (the row in flight) unless the kill came
// before anything was sent; the SRC told once; the incident disclosed once.
func checkRelease(t *testing.T, f *cmdFixture, before int, bounce string, subs, others []string, exact bool) {
	t.Helper()
	msgs := f.h.Rec.Messages()[before:]
	for _, s := range subs {
		n := 0
		for _, m := range msgs {
			if m.From == bounce && slices.Contains(m.To, s) {
				n++
			}
		}
		if n < 1 || n > 2 || exact && n != 1 {
			t.Errorf("%s got the advisory %d times", s, n)
		}
	}
	for _, o := range others {
		if n := len(daemontest.To(msgs, o)); n < 1 || n > 2 || exact && n != 1 {
			t.Errorf("%s got %d copies of the release", o, n)
		}
	}
	subjects := innerSubjects(t, f.alice, msgs)
	seen := map[string]int{}
	for _, s := range subjects {
		seen[s]++
		if seen[s] > 1 {
			t.Errorf("alice was told %q twice", s)
		}
	}
	db, err := daemon.OpenStore(f.h.Dir, true)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.View(func(tx *bolt.Tx) error {
		inc, err := incidentdb.Get(tx, workflow.ID(f.id))
		if err != nil {
			t.Fatal(err)
		}
		if inc.Phase != workflow.PhaseDisclosed {
			t.Errorf("the incident is %s, want disclosed", inc.Phase)
		}
		n := 0
		for _, c := range inc.History {
			if strings.Contains(strings.ToLower(c.What), "disclosed") {
				n++
			}
		}
		if n != 1 {
			t.Errorf("disclosed %d times in the history, want once", n)
		}
		j, err := announce.GetJob(tx, f.id)
		if err != nil || j.State != announce.JobReleased || j.Sent < len(subs) {
			t.Errorf("the advisory job: %+v, %v", j, err)
		}
		return nil
	})
}
