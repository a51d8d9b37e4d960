package announce

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest/powerfs"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue/queuetest"
)

// TestPowerLossMidRelease is TestKillMidRelease with power cuts
// (docs/threat-model.md A3): the fan-out runs in a child process on a store
// on powerfs, which keeps what was not fsynced in memory; the child is
// killed and the power cut three times mid-release, the second time at a
// random fsync (between the steps of recording a batch), the third torn.
// After each cut the store holds every copy the relay took but at most one
// batch per connection, and at most one stretch done above the cursor per
// connection; a last run completes the release: every subscriber has the
// advisory, none more than once per cut again.
func TestPowerLossMidRelease(t *testing.T) {
	if testing.Short() {
		t.Skip("kills a child process and cuts the power three times")
	}
	if err := powerfs.Available(); err != nil {
		t.Skipf("SKIP: the power-loss file system needs FUSE: %v", err)
	}
	const n, conns, batch = 3000, 4, 50
	db, path := newDB(t)
	addSubscribers(t, db, n, t0)
	startRelease(t, db, "r", advisory(t, announceKey(t), t0), time.Now().Add(-time.Second))
	db.Close()

	disk := powerfs.New()
	mnt := t.TempDir()
	m, err := disk.Mount(mnt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Unmount() })
	onDisk := filepath.Join(mnt, "embargo.db")
	if err := copyFile(path, onDisk, true); err != nil { // synced, with its name
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	rec := queuetest.NewRecorder(t)
	for kill, at := range []int{400, 1200, 2000} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestKillMidRelease$")
		cmd.Env = append(os.Environ(), "EMBARGO_FANOUT_CHILD=1", "EMBARGO_FANOUT_DB="+onDisk,
			"EMBARGO_FANOUT_RELAY="+rec.Addr(), fmt.Sprintf("EMBARGO_FANOUT_SHAPE=%d,%d", conns, batch))
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if got := len(rec.WaitFor(at, time.Minute)); got < at {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("cut %d: the child sent %d copies, want %d: %s", kill+1, got, at, out.String())
		}
		if kill == 1 {
			disk.FailAtSync(1 + rng.IntN(6))
			for end := time.Now().Add(5 * time.Second); !disk.Failed() && time.Now().Before(end); {
				time.Sleep(time.Millisecond)
			}
		}
		var tear *rand.Rand
		if kill == 2 {
			tear = rng
		}
		// Killed, then cut: a thread waiting in a sync the failed disk never
		// answers dies only once the cut answers it.
		r, err := m.KillAndCut(cmd, tear)
		if err != nil {
			t.Fatal(err)
		}
		if m, err = disk.Mount(mnt); err != nil {
			t.Fatal(err)
		}
		// Read in a copy: a page fault on a FUSE mount this process serves
		// can deadlock it.
		cp := filepath.Join(t.TempDir(), "embargo.db")
		if err := copyFile(onDisk, cp, false); err != nil {
			t.Fatal(err)
		}
		db = openDB(t, cp)
		j := jobRecordOf(t, db, "r")
		db.Close()
		unrecorded := 0
		for a := range rcptCounts(rec.Messages()) {
			if !covered(j, seqOf(a)) {
				unrecorded++
			}
		}
		t.Logf("cut %d after %d copies (%d unsynced bytes, %d pages dropped, %d kept torn): cursor %d, %d stretches done above it, %d copies not recorded",
			kill+1, len(rec.Messages()), r.Unsynced, r.DroppedPages, r.TornPages, j.Cursor, len(j.Done), unrecorded)
		if unrecorded > conns*batch {
			t.Errorf("cut %d: %d copies sent and not recorded, want at most %d (one batch per connection)", kill+1, unrecorded, conns*batch)
		}
		if len(j.Done) > conns {
			t.Errorf("cut %d: %d done stretches above the cursor, want at most %d", kill+1, len(j.Done), conns)
		}
	}

	// The last run, on what survived (copied out, as above).
	last := filepath.Join(t.TempDir(), "embargo.db")
	if err := copyFile(onDisk, last, false); err != nil {
		t.Fatal(err)
	}
	db = openDB(t, last)
	defer db.Close()
	o := Options{List: testList, SMTP: smtpConfig(rec), Connections: conns, BatchSize: batch}
	oneClick(&o)
	drain(t, New(db, nil, o))
	if j := job(t, db, "r"); j.State != JobReleased || j.Cursor != j.UpTo {
		t.Fatalf("job %+v", j)
	}
	counts := rcptCounts(rec.Messages())
	dups := 0
	for i := range n {
		a := fmt.Sprintf("sub%05d@s%d.example.net", i, i%7)
		switch c := counts[a]; {
		case c == 0:
			t.Errorf("%s got nothing", a)
		case c > 1+3:
			t.Errorf("%s got %d copies", a, c)
		default:
			dups += c - 1
		}
	}
	if dups > 3*conns*batch {
		t.Errorf("%d copies sent twice, want at most %d", dups, 3*conns*batch)
	}
	t.Logf("%d subscribers, %d copies, %d sent again after 3 power cuts", n, len(rec.Messages()), dups)
}

// copyFile copies src to dst; with sync, dst and its directory are synced.
func copyFile(src, dst string, sync bool) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if sync {
		if err := out.Sync(); err != nil {
			out.Close()
			return err
		}
	}
	if err := out.Close(); err != nil || !sync {
		return err
	}
	d, err := os.Open(filepath.Dir(dst))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
