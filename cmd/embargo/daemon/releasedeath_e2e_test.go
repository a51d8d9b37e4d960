package daemon_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
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

// releaseClockEnv is the child's clock for the release: the instant it
// reads at a real time anchor (RFC 3339, then the anchor's unix
// nanoseconds), and on from there, across restarts.
const releaseClockEnv = "EMBARGO_TEST_RELEASE_CLOCK"

// withReleaseClock sets the child's clock and has it tick every second.
func withReleaseClock(o daemon.Options) daemon.Options {
	clock := strings.Fields(os.Getenv(releaseClockEnv))
	if len(clock) != 2 {
		return o
	}
	at, _ := time.Parse(time.RFC3339Nano, clock[0])
	var anchor int64
	fmt.Sscan(clock[1], &anchor)
	o.Now = func() time.Time { return at.Add(time.Since(time.Unix(0, anchor))) }
	o.TickSpec = "@every 1s"
	return o
}

// releaseChannel is the release fixture's outside channel (oss-security).
const releaseChannel = "oss-security@lists.invalid"

// releaseFixture is an approved incident whose T is set, with a
// distributor holding a key, an outside channel, three subscribers and
// the reporter: prepared once by an in-process daemon, then stopped. Each
// run releases its own copy of the data directory in child daemons.
type releaseFixture struct {
	f      *cmdFixture
	dist   *distributor
	subs   []string
	T      time.Time
	bounce string // the release's bounce address: the subscribers' copies come from it
}

func newReleaseFixture(t *testing.T) *releaseFixture {
	t.Helper()
	d := &distributor{addr: "one@vendor1.test"}
	f := newCmdFixtureWith(t, []*distributor{d}, "\n[[channels]]\naddress = \""+releaseChannel+"\"\nsubject_tag = \"[example]\"\n")
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
	warmUp(t, f.h, T)
	return &releaseFixture{f: f, dist: d, subs: subs, T: T,
		bounce: announce.BounceAddress(daemon.Roster(cfg).List(lists.Announce), f.id)}
}

// releaseWarmUp is how long before T the fixture's daemon last ran
// (warmUp): far more than a slow warm-up takes, far less than
// workflow.MaxClockJump (10 min) less the seconds from T to a run's
// last start.
const releaseWarmUp = 3 * time.Minute

// warmUp starts the fixture's daemon once more, its clock releaseWarmUp
// before T, until its tick and its announce fan-out have each stored their
// heartbeat, and stops it. The fixture was prepared on the real clock,
// days before T. Without this, a child killed before its first tick stored
// a heartbeat (a start takes seconds on powerfs under the race detector on
// a busy machine, and a run gives it two) left a store whose daemon, for
// all the next start could tell, had been down from days before T until
// after it: the release was held, as docs/threat-model.md G4 requires, and
// never finished. With it every run's child starts, two seconds before T,
// on a store last run minutes before: what a daemon running up to T has.
func warmUp(t *testing.T, h *daemontest.Harness, T time.Time) {
	t.Helper()
	from, anchor, opts := T.Add(-releaseWarmUp), time.Now(), h.Opts
	h.Opts.Now = func() time.Time { return from.Add(time.Since(anchor)) }
	h.Start()
	daemontest.WaitForWithin(t, time.Minute, "the tick's and the fan-out's heartbeats before T", func() bool {
		tick, fanout := heartbeats(h.D)
		return !tick.Before(from) && !fanout.Before(from)
	})
	h.Stop()
	h.Opts = opts
	if now := from.Add(time.Since(anchor)); !now.Before(T.Add(-time.Minute)) {
		t.Fatalf("the warm-up ran until %s, too close to T %s", now, T)
	}
}

// heartbeats reads the wall clock the scheduler's tick and the announce
// fan-out last stored (zero for none): a start compares its clock with
// them (docs/threat-model.md G4).
func heartbeats(d *daemon.Daemon) (tick, fanout time.Time) {
	d.View(func(tx *bolt.Tx) error {
		tick, _ = time.Parse(time.RFC3339Nano, incidentdb.Meta(tx, "tick_heartbeat"))
		if b := tx.Bucket([]byte("announce_meta")); b != nil {
			if v := b.Get([]byte("heartbeat")); len(v) == 8 {
				fanout = time.Unix(0, int64(binary.BigEndian.Uint64(v)))
			}
		}
		return nil
	})
	return tick, fanout
}

// others are the release's copies besides the subscribers': the outside
// channel's, the distributor's public copy, the reporter's notice.
func (rf *releaseFixture) others() []string {
	return []string{releaseChannel, rf.dist.addr, rf.f.reporterAddr}
}

// releaseRun is one release of the fixture: its own copy of the data
// directory (on powerfs, with power), its own relay, child configuration
// and clock, which starts at T − 2 s now and runs on across the
// restarts. Runs are independent of one another: they run in parallel.
type releaseRun struct {
	rf         *releaseFixture
	rec        *queuetest.Recorder
	dataDir    string
	power      *powerDisk
	file, addr string
	clock      string         // the child's environment for its clock
	at         time.Time      // the real instant the child's clock reads T
	snaps      []killSnapshot // what each death left behind
	children   []*child       // each start's, for the log on a failure
}

func (rf *releaseFixture) newRun(t *testing.T, power bool) *releaseRun {
	t.Helper()
	r := &releaseRun{rf: rf, rec: queuetest.NewRecorder(t)}
	rf.f.h.Expect(r.rec)
	if power {
		r.power = newPowerDisk(t, rf.f.h.Dir)
		r.dataDir = r.power.dataDir
	} else {
		r.dataDir = filepath.Join(t.TempDir(), "data")
		if err := copyDurable(rf.f.h.Dir, r.dataDir); err != nil {
			t.Fatal(err)
		}
	}
	r.addr = daemontest.FreePort(t)
	r.file = filepath.Join(t.TempDir(), "embargo.toml")
	toml := strings.Replace(rf.f.h.TOML, `listen = "127.0.0.1:0"`, fmt.Sprintf("listen = %q", r.addr), 1)
	toml = strings.Replace(toml, fmt.Sprintf("data_dir = %q", rf.f.h.Dir), fmt.Sprintf("data_dir = %q", r.dataDir), 1)
	toml = strings.Replace(toml, "smtp://"+rf.f.h.Rec.Addr(), "smtp://"+r.rec.Addr(), 1)
	daemontest.WriteFile(t, r.file, toml)
	now := time.Now()
	r.at = now.Add(2 * time.Second)
	r.clock = fmt.Sprintf("%s=%s %d", releaseClockEnv, rf.T.Add(-2*time.Second).Format(time.RFC3339Nano), now.UnixNano())
	return r
}

// start starts a child on the run's data directory, with env besides its
// clock.
func (r *releaseRun) start(t *testing.T, env ...string) *child {
	t.Helper()
	c := startDying(t, r.file, append([]string{r.clock}, env...)...)
	r.children = append(r.children, c)
	return c
}

// died notes a death of the child, which has ended: with powerfs the
// power is cut, torn as rng says; then what the store holds for the next
// start. It returns the data directory it read (a copy, with powerfs).
func (r *releaseRun) died(t *testing.T, rng *rand.Rand) string {
	t.Helper()
	dir := r.dataDir
	if r.power != nil {
		r.power.cut(t, rng)
		dir = r.power.copyOut(t) // bbolt maps it: not in the process serving powerfs
	}
	r.snaps = append(r.snaps, deathSnapshot(t, dir, len(r.rec.Messages()), map[string]string{r.rf.f.id: r.rf.bounce}))
	return dir
}

// finish starts the child once more, waits for every copy of the release,
// stops the child and checks the release (checkRelease). It returns the
// copies sent again. The wait is long: the start sends again what was in
// flight, and a suspect of the deaths waits to be alone
// (listd.SuspectWait), on a busy machine under the race detector.
func (r *releaseRun) finish(t *testing.T) int {
	t.Helper()
	rf := r.rf
	from := len(r.rec.Messages())
	c := r.start(t)
	waitListen(t, c, r.addr)
	owed := r.owed(t)
	t.Cleanup(func() {
		if t.Failed() {
			r.logChildren(t)
		}
	})
	daemontest.WaitForWithin(t, 90*time.Second, "every copy of the release", func() bool {
		msgs := r.rec.Messages()
		for _, s := range rf.subs {
			if !sentFrom(msgs, rf.bounce, s) {
				return false
			}
		}
		for _, o := range rf.others() {
			if len(daemontest.To(msgs, o)) == 0 {
				return false
			}
		}
		return owed(c.out.String(), msgs[from:])
	})
	time.Sleep(500 * time.Millisecond) // nothing more should come
	c.cmd.Process.Signal(syscall.SIGTERM)
	if err := c.cmd.Wait(); err != nil {
		t.Errorf("the last run did not stop cleanly: %v\n%.3000s", err, c.out.String())
	}
	dataDir := r.dataDir
	if r.power != nil {
		dataDir = r.power.copyOut(t)
	}
	return checkRelease(t, r, dataDir)
}

// owed is what the last start must do beyond copies the relay may
// already hold from before the deaths: the store at the last death (after
// the power cut, what survived it) decides. A release its job had not
// recorded as released is finished by this start, which logs it; a queue
// row not recorded as delivered is sent by this start. Without it, the
// copies the relay took before a power cut that lost their record
// satisfied the wait at once, and the child was stopped before it sent
// them again (the job found "releasing", cursor 0).
func (r *releaseRun) owed(t *testing.T) func(log string, since []queuetest.Message) bool {
	t.Helper()
	if len(r.snaps) == 0 {
		return func(string, []queuetest.Message) bool { return true }
	}
	last := r.snaps[len(r.snaps)-1]
	release := last.sent[r.rf.bounce] < len(r.rf.subs)
	return func(log string, since []queuetest.Message) bool {
		if release && !strings.Contains(log, "announce release done") {
			return false
		}
		got := map[string]bool{}
		for _, m := range since {
			id := messageID(t, m)
			for _, to := range m.To {
				got[copyKey(to, id)] = true
			}
		}
		for k := range last.unrecorded {
			if !got[k] {
				return false
			}
		}
		return true
	}
}

// logChildren logs what each start of the run's child wrote and what the
// relay took: a release that never came says why there (a hold, a skip).
func (r *releaseRun) logChildren(t *testing.T) {
	for i, c := range r.children {
		out := c.out.String()
		t.Logf("start %d of the child wrote:\n%s", i+1, out[max(0, len(out)-6000):])
	}
	t.Logf("the relay took:\n%s", daemontest.Summary(r.rec.Messages()))
}

// TestProcessKilledAtRelease: an approved incident reaches T in a child
// daemon, which is killed with SIGKILL once during the release, at each
// of its step boundaries: before the release's transaction, once it
// committed (the incident disclosed, the advisory job and the copies
// queued), once the fan-out's commit began the release, before a batch
// to the subscribers is sent, after the relay's answer to it and before
// the cursor's commit, after that commit, and as the distributor's final
// notice, the outside channel's copy or the reporter's notice is handed
// to the relay. The next start finishes the release: the incident is
// disclosed once, every subscriber gets the advisory, the distributor,
// the channel and the reporter theirs, again only what the relay had
// taken and the store not recorded at the kill (the batch or the row in
// flight), and the SRC is not told twice (docs/threat-model.md G4,
// docs/design.md §1). Twice more with the data directory on powerfs and
// the power cut, torn, under the killed child: what it had not synced is
// gone.
func TestProcessKilledAtRelease(t *testing.T) {
	rf := newReleaseFixture(t)
	id := rf.f.id
	for _, point := range []struct {
		name, kill, arg string
		power           bool // and the power cut under the child (powerfs)
		again           int  // subscribers' copies that must come again (-1: any the deaths allow)
	}{
		{"before the release", "tick", id + " " + rf.T.Format(time.RFC3339), false, 0},
		{"release committed", "ticked", id, false, -1}, // the commit kicked the fan-out
		{"release begun", "begun", id, false, 0},
		{"batch about to be sent", "batch", id, false, 0},
		{"batch answered, cursor not committed", "batch-answered", id, false, len(rf.subs)},
		{"cursor committed", "batch-recorded", id, false, 0},
		{"distributor notice", "row", rf.dist.addr, false, -1},
		{"channel copy", "row", releaseChannel, false, -1},
		{"reporter told", "row", rf.f.reporterAddr, false, -1},
		{"batch about to be sent, power cut", "batch", id, true, -1},
		{"distributor notice, power cut", "row", rf.dist.addr, true, -1},
	} {
		t.Run(point.name, func(t *testing.T) {
			t.Parallel()
			r := rf.newRun(t, point.power)
			env := []string{killAtEnv + "=" + point.kill + " " + point.arg, killMarkerEnv + "=" + filepath.Join(t.TempDir(), "killed")}
			if err := waitKilled(r.start(t, env...)); err != nil {
				t.Fatal(err)
			}
			r.died(t, rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7)))
			r.finish(t)
			if again := r.subscribersAgain(); point.again >= 0 && again != point.again {
				t.Errorf("%d subscribers' copies came again, want %d", again, point.again)
			}
		})
	}
}

// subscribersAgain is how many of the subscribers' copies of the run's
// release came more than once.
func (r *releaseRun) subscribersAgain() int {
	n := 0
	for _, m := range r.rec.Messages() {
		if m.From == r.rf.bounce {
			n += len(m.To)
		}
	}
	return n - len(r.rf.subs)
}

func sentFrom(msgs []queuetest.Message, from, to string) bool {
	for _, m := range msgs {
		if m.From == from && slices.Contains(m.To, to) {
			return true
		}
	}
	return false
}

// nothingBeforeT fails the run if a copy of the release (the outside
// channel's, a subscriber's) reached the relay before T: the child's clock
// reads T at r.at, and the relay stamps each message with its MAIL
// command's instant. It reads the stamps, not the relay at a moment before
// T, which a start slower than the run's two seconds of lead passed. On
// the wall clock, as the child's clock runs (withReleaseClock).
func (r *releaseRun) nothingBeforeT(t *testing.T) {
	t.Helper()
	for _, m := range r.rec.Messages() {
		if m.At.Round(0).Before(r.at.Round(0)) && (m.From == r.rf.bounce || slices.Contains(m.To, releaseChannel)) {
			t.Errorf("a copy of the release reached the relay %s before T: from %s to %v", r.at.Sub(m.At), m.From, m.To)
		}
	}
}

// checkRelease checks what the run's release sent and stored: every
// subscriber's advisory and every other copy at least once, again only
// what the deaths allow (checkResent); nothing at the relay before T; the
// SRC told once; the incident disclosed once, not before T; the store
// whole. It returns the copies sent again.
func checkRelease(t *testing.T, r *releaseRun, dataDir string) int {
	t.Helper()
	rf, f := r.rf, r.rf.f
	r.nothingBeforeT(t)
	msgs := r.rec.Messages()
	for _, s := range rf.subs {
		if !sentFrom(msgs, rf.bounce, s) {
			t.Errorf("%s never got the advisory", s)
		}
	}
	for _, o := range rf.others() {
		if len(daemontest.To(msgs, o)) == 0 {
			t.Errorf("%s got no copy of the release", o)
		}
	}
	again := checkResent(t, msgs, r.snaps, map[string]string{f.id: rf.bounce})
	seen := map[string]int{}
	for _, s := range innerSubjects(t, f.alice, msgs) {
		if seen[s]++; seen[s] > 1 {
			t.Errorf("alice was told %q twice", s)
		}
	}
	db, err := daemon.OpenStore(dataDir, true) // the pre-open check and bbolt's
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
				if c.At.Before(rf.T) {
					t.Errorf("released at %s, before T %s", c.At, rf.T)
				}
			}
		}
		if n != 1 {
			t.Errorf("disclosed %d times in the history, want once", n)
		}
		j, err := announce.GetJob(tx, f.id)
		if err != nil || j.State != announce.JobReleased || j.Sent < len(rf.subs) {
			t.Errorf("the advisory job: %+v, %v", j, err)
		}
		return nil
	})
	return again
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

// cut cuts the power, torn as rng says, and mounts what survived.
func (p *powerDisk) cut(t *testing.T, rng *rand.Rand) {
	t.Helper()
	r, err := p.m.Cut(rng)
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
