package daemon_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
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
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest/powerfs"
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
// docs/design.md §1). Twice more with the data directory on powerfs and the
// power cut, torn, under the killed child: what it had not synced is gone.
func TestProcessKilledAtRelease(t *testing.T) {
	const channel = "oss-security@lists.invalid"
	for _, point := range []struct {
		name, kill, target string
		power              bool // and the power cut under the child (powerfs)
	}{
		{"before the release", "tick", "", false},
		{"job created", "batch", "", false},
		{"distributor notice", "row", "one@vendor1.test", false},
		{"channel copy", "row", channel, false},
		{"reporter told", "row", "rep@out.test", false},
		{"job created, power cut", "batch", "", true},
		{"distributor notice, power cut", "row", "one@vendor1.test", true},
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
			dataDir := f.h.Dir
			var power *powerDisk
			if point.power {
				power = newPowerDisk(t, f.h.Dir)
				dataDir = power.dataDir
			}
			bounce := announce.BounceAddress(daemon.Roster(cfg).List(lists.Announce), f.id)

			addr := daemontest.FreePort(t)
			file := filepath.Join(t.TempDir(), "embargo.toml")
			toml := strings.Replace(f.h.TOML, `listen = "127.0.0.1:0"`, fmt.Sprintf("listen = %q", addr), 1)
			toml = strings.Replace(toml, fmt.Sprintf("data_dir = %q", f.h.Dir), fmt.Sprintf("data_dir = %q", dataDir), 1)
			daemontest.WriteFile(t, file, toml)
			env := []string{
				fmt.Sprintf("%s=%s %d", releaseClockEnv, T.Add(-2*time.Second).Format(time.RFC3339Nano), time.Now().UnixNano()),
				fmt.Sprintf("%s=%s %s %s %s", releaseKillEnv, point.kill, f.id, T.Format(time.RFC3339), point.target+"."),
				releaseMarkerEnv + "=" + filepath.Join(t.TempDir(), "killed"),
			}
			c := startDying(t, file, env...)
			if err := waitKilled(c); err != nil {
				t.Fatal(err)
			}
			if power != nil {
				power.cut(t)
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
			if power != nil {
				dataDir = power.copyOut(t) // bbolt maps it: not in the process serving powerfs
			}
			checkRelease(t, f, dataDir, T, before, bounce, subs, []string{channel, d.addr, f.reporterAddr}, point.kill == "tick")
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
// before anything was sent; the SRC told once; the incident disclosed once,
// not before T.
func checkRelease(t *testing.T, f *cmdFixture, dataDir string, T time.Time, before int, bounce string, subs, others []string, exact bool) {
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
	db, err := daemon.OpenStore(dataDir, true)
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
				if c.At.Before(T) {
					t.Errorf("released at %s, before T %s", c.At, T)
				}
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

// powerDisk is a data directory on powerfs whose power is cut after the
// kill: what the killed child had not synced is gone, torn at random.
type powerDisk struct {
	disk    *powerfs.Disk
	m       *powerfs.Mount
	mnt     string
	dataDir string
}

// newPowerDisk mounts powerfs and copies the data directory src onto it,
// synced (or skips the test without FUSE).
func newPowerDisk(t *testing.T, src string) *powerDisk {
	t.Helper()
	if err := powerfs.Available(); err != nil {
		t.Skipf("SKIP: the power-loss file system needs FUSE: %v", err)
	}
	p := &powerDisk{disk: powerfs.New(), mnt: t.TempDir()}
	var err error
	if p.m, err = p.disk.Mount(p.mnt); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.m.Unmount() })
	p.dataDir = filepath.Join(p.mnt, "data")
	if err := copyDurable(src, p.dataDir); err != nil {
		t.Fatal(err)
	}
	return p
}

// cut cuts the power (torn) and mounts what survived.
func (p *powerDisk) cut(t *testing.T) {
	t.Helper()
	r, err := p.m.Cut(rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7)))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("power cut: %d bytes unsynced, %d pages dropped, %d torn in", r.Unsynced, r.DroppedPages, r.TornPages)
	if p.m, err = p.disk.Mount(p.mnt); err != nil {
		t.Fatal(err)
	}
}

// copyOut copies the data directory off powerfs and returns the copy.
func (p *powerDisk) copyOut(t *testing.T) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "data")
	if err := copyDurable(p.dataDir, dst); err != nil {
		t.Fatal(err)
	}
	return dst
}

// copyDurable copies the regular files and directories under src to dst,
// each file and directory synced.
func copyDurable(src, dst string) error {
	var dirs []string
	err := filepath.Walk(src, func(path string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		to := filepath.Join(dst, rel)
		switch {
		case fi.IsDir():
			dirs = append(dirs, to)
			return os.MkdirAll(to, 0o700)
		case !fi.Mode().IsRegular():
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_EXCL, fi.Mode().Perm())
		if err != nil {
			return err
		}
		_, err = out.Write(data)
		return errors.Join(err, out.Sync(), out.Close())
	})
	dirs = append(dirs, filepath.Dir(dst))
	for _, d := range dirs {
		if err == nil {
			var f *os.File
			if f, err = os.Open(d); err == nil {
				err = errors.Join(f.Sync(), f.Close())
			}
		}
	}
	return err
}
