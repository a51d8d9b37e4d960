package daemon_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/listd"
)

// The environment of TestProcessKilledAtRandomInstant: the seed that
// replays a run (its kill instants and tears; the daemon's own timing is
// the machine's), the number of kills and of power cuts.
const (
	releaseKillSeedEnv  = "EMBARGO_RELEASEKILL_SEED"
	releaseKillItersEnv = "EMBARGO_RELEASEKILL_ITERATIONS"
	releaseKillCutsEnv  = "EMBARGO_RELEASEKILL_CUTS"
)

// releaseKillWindow is where the first kill falls: after the tick that
// releases, which the child runs at the first whole second of the real
// clock at or after T (its cron's "@every 1s"), within this, denser
// early (the release's transaction, the fan-out and the queue's copies
// take about 20 ms, 100 ms under the race detector). The second falls
// anywhere in the restart's start, or up to releaseKillWindow after it.
const releaseKillWindow = 150 * time.Millisecond

// TestProcessKilledAtRandomInstant: the release of TestProcessKilledAtRelease,
// in a child daemon killed with SIGKILL at a random instant (drawn from a
// seed) after the tick that releases at T, then once more at a random
// instant of its restart; a last start finishes the release. Nothing of
// the release reaches the relay before T, and each run checks the
// release's promises after the restarts (docs/threat-model.md G4,
// docs/design.md §1): the incident disclosed once and not before T;
// every subscriber, the distributor, the channel and the reporter served,
// again only what the relay had taken and the store not recorded at a
// death (the batch or the rows in flight); the SRC told once; the store
// passes its check. Then runs with the data directory on powerfs and the
// power cut, torn as the seed says, under each killed child.
//
// EMBARGO_RELEASEKILL_ITERATIONS runs (default 4; 1 with -short) and
// EMBARGO_RELEASEKILL_CUTS power-cut runs (default 2; 1 with -short), two
// deaths each; EMBARGO_RELEASEKILL_SEED replays the instants and tears of
// a run (not the daemon's own timing), and the log gives it on a failure.
func TestProcessKilledAtRandomInstant(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv(releaseKillSeedEnv); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("%s: %v", releaseKillSeedEnv, err)
		}
	}
	t.Logf("seed %d", seed)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("replay: %s=%d go test -run TestProcessKilledAtRandomInstant ./cmd/embargo/daemon/", releaseKillSeedEnv, seed)
		}
	})
	kills, cuts := envCount(t, releaseKillItersEnv, 4), envCount(t, releaseKillCutsEnv, 2)
	if testing.Short() {
		kills, cuts = min(kills, 1), min(cuts, 1)
	}
	rng := rand.New(rand.NewPCG(seed, 0x5ec))
	rf := newReleaseFixture(t)
	for i := range kills + cuts {
		// Drawn here, in order, whatever runs or is skipped: the seed
		// gives every run its instants.
		u := rng.Float64()
		first := time.Duration(u * u * float64(releaseKillWindow))
		second := rng.Float64() // of the restart's start and the window
		tears := [2]uint64{rng.Uint64(), rng.Uint64()}
		power := i >= kills
		name := fmt.Sprintf("kill at tick+%s", first.Round(time.Millisecond))
		if power {
			name = fmt.Sprintf("power cut at tick+%s", first.Round(time.Millisecond))
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := rf.newRun(t, power)
			begun := time.Now()
			c := r.start(t)
			waitListen(t, c, r.addr)
			startup := time.Since(begun)
			tick := r.at.Truncate(time.Second)
			if tick.Before(r.at) {
				tick = tick.Add(time.Second)
			}
			time.Sleep(time.Until(tick.Add(first)))
			for k := range 2 {
				if k > 0 {
					// From the start, not from listening: the start sends
					// again what was in flight, and may die doing it.
					c = r.start(t)
					time.Sleep(time.Duration(second * float64(startup+releaseKillWindow)))
				}
				c.cmd.Process.Signal(syscall.SIGKILL)
				if err := waitKilled(c); err != nil {
					t.Fatal(err)
				}
				dir := r.died(t, rand.New(rand.NewPCG(tears[k], 0x5ec)))
				sent, committed := r.snaps[k].sent[rf.bounce]
				t.Logf("death %d: the relay had %d copies; the release committed: %v, its subscriber copies recorded: %d",
					k+1, r.snaps[k].relayed, committed, sent)
				if k > 0 && tickSkipped(t, dir, rf.f.id, rf.T.Add(time.Since(r.at))) {
					// Both kills fell in the incident's tick, which then
					// ran alone: by design the next start skips it and
					// alerts the SRC (docs/threat-model.md A6), and the
					// release waits for a change to the incident.
					t.Logf("both deaths fell in the tick of %s, which is skipped from now on: the run ends here", rf.f.id)
					r.nothingBeforeT(t)
					return
				}
			}
			again := r.finish(t)
			t.Logf("second death %s into the restart (start-up %s); %d copies in all, %d sent again",
				time.Duration(second*float64(startup+releaseKillWindow)).Round(time.Millisecond), startup.Round(time.Millisecond), len(r.rec.Messages()), again)
		})
	}
}

// tickSkipped reports whether, counting the deaths the in-flight file in
// dir holds as the next start would (on a copy), incident id's tick is at
// PoisonDeaths: the next start skips it. now is the child's clock.
func tickSkipped(t *testing.T, dir, id string, now time.Time) bool {
	t.Helper()
	cp := filepath.Join(t.TempDir(), "data")
	if err := copyDurable(dir, cp); err != nil {
		t.Fatal(err)
	}
	db, err := daemon.OpenStore(cp, false)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	a, err := listd.OpenAttempts(db, cp, now, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	skipped := false
	db.View(func(tx *bolt.Tx) error {
		for _, s := range listd.Suspects(tx) {
			skipped = skipped || s.Kind == "tick" && s.Incident == id && s.Deaths >= listd.PoisonDeaths
		}
		return nil
	})
	return skipped
}

// envCount is the count the environment variable name gives, or def.
func envCount(t *testing.T, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		t.Fatalf("%s=%q: want a count", name, s)
	}
	return n
}
